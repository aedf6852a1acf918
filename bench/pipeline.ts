/**
 * Step time of grng's RxJS pipeline against bare tfjs loops doing the same SGD steps, on the
 * same backend, in the same process. Rounds alternate between the variants so that drifts in
 * machine speed hit all of them alike; the figure per variant is the median over rounds.
 *
 *   npx tsx bench/pipeline.ts [--backend wasm] [--model mlp:784-512-512-10] [--batch 128]
 *                             [--steps 40] [--rounds 5] [--wasm-threads N] [--json]
 */
import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, toArray } from 'rxjs';
import { initBackend } from '../src/runtime/backend.js';
import { loadMnist } from '../src/data/mnist.js';
import { correctCount, softmaxCrossEntropy } from '../src/nn/losses.js';
import { mlp, parseModelSpec, type Sequential } from '../src/nn/sequential.js';
import type { DenseLayer } from '../src/nn/dense.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics, type MetricsOptions } from '../src/operators/metrics.js';
import { stepHealth } from '../src/operators/guardFinite.js';
import { update } from '../src/operators/update.js';
import { sgd } from '../src/optim/sgd.js';
import { batches } from '../src/streams/batches.js';
import { gatherRows, type Split } from '../src/data/dataset.js';
import type { Params } from '../src/types.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : fallback;
};
const backendName = flag('backend', 'wasm');
const spec = flag('model', 'mlp:784-512-512-10');
const batchSize = Number(flag('batch', '128'));
const steps = Number(flag('steps', '40'));
const rounds = Number(flag('rounds', '5'));
const lr = 0.05;

// Threads for the wasm backend; GRNG_WASM_THREADS does the same.
const wasmThreads = args.includes('--wasm-threads')
  ? Number(flag('wasm-threads', 'NaN'))
  : undefined;
const backend = await initBackend(backendName, wasmThreads === undefined ? {} : { wasmThreads });
const data = await loadMnist();
const model = mlp({ ...parseModelSpec(spec), seed: 1 });

/** grng: batches → forwardBackward → update(sgd) → metrics with the given statistics (and the NaN/Inf guard, as train() runs it). */
async function grngPipeline(options: MetricsOptions, { guard = false } = {}): Promise<number> {
  const started = performance.now();
  const health = stepHealth();
  await lastValueFrom(
    batches(data.train, { batchSize, steps, seed: 1 }).pipe(
      forwardBackward(model),
      // As train() guards an optimizer without fisherScan: loss, gradients and update checked
      // by update's guard in one read-back.
      update(
        model,
        sgd({ learningRate: lr }),
        guard ? { guard: health, checkGradients: true } : {},
      ),
      metrics(guard ? { ...options, health } : options),
      toArray(),
    ),
  );
  return (performance.now() - started) / steps;
}

/** The same step as a bare loop: host batch → variableGrads → manual SGD → await loss. */
async function bareLoop(matMul: 'tfjs' | 'grng', { accuracy = false } = {}): Promise<number> {
  const started = performance.now();
  const vars = Object.values(model.params);
  const order = shuffledRows(data.train, 1);
  for (let s = 0; s < steps; s++) {
    const { x, y } = hostBatch(data.train, order, s);
    let logits: tf.Tensor2D | undefined;
    const read = tf.tidy(() => {
      const oneHot = tf.cast(tf.oneHot(y, model.outputs), 'float32') as tf.Tensor2D;
      const { value, grads } = tf.variableGrads(() => {
        logits =
          matMul === 'grng'
            ? model.apply(model.params as Params, x).logits
            : plainForward(model, x);
        if (accuracy) tf.keep(logits);
        return softmaxCrossEntropy(logits, oneHot);
      }, vars);
      const scale = tf.scalar(lr);
      for (const v of vars) v.assign(tf.sub(v, tf.mul(grads[v.name]!, scale)));
      // What grng's metrics read back besides the loss: the batch's correct count.
      return accuracy ? tf.stack([value, correctCount(logits!, y)]) : value;
    });
    await read.data();
    // Kept out of variableGrads' tidy for the correct count (and only then).
    if (accuracy) logits?.dispose();
    tf.dispose([read, x, y]);
  }
  return (performance.now() - started) / steps;
}

/** The model's forward pass with tfjs's own matMul, whose gradient uses transposed products. */
function plainForward(net: Sequential<DenseLayer>, x: tf.Tensor2D): tf.Tensor2D {
  let a: tf.Tensor2D = x;
  for (const layer of net.layers) {
    const s = tf.add(
      tf.matMul(a, net.params[layer.kernel] as tf.Tensor2D),
      net.params[layer.bias]!,
    ) as tf.Tensor2D;
    a = layer.activation === 'relu' ? tf.relu(s) : s;
  }
  return a;
}

function shuffledRows(split: Split, seed: number): Int32Array {
  const order = Int32Array.from({ length: split.n }, (_, i) => i);
  let state = seed;
  for (let i = order.length - 1; i > 0; i--) {
    state = (state * 1103515245 + 12345) % 2147483648;
    const j = state % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

function hostBatch(
  split: Split,
  order: Int32Array,
  step: number,
): { x: tf.Tensor2D; y: tf.Tensor1D } {
  const features = split.x.length / split.n;
  const perEpoch = Math.ceil(split.n / batchSize);
  const start = (step % perEpoch) * batchSize;
  const size = Math.min(batchSize, split.n - start);
  const rows = gatherRows(split, order, start, size);
  return { x: tf.tensor2d(rows.x, [size, features]), y: tf.tensor1d(rows.y, 'int32') };
}

const variants: Record<string, () => Promise<number>> = {
  grngDefaultMetrics: () => grngPipeline({}),
  grngEveryStepCorrelation: () => grngPipeline({ correlationEvery: 1 }),
  grngLossOnly: () => grngPipeline({ norms: false }),
  grngGuardedDefaultMetrics: () => grngPipeline({}, { guard: true }),
  bareLoopSameLayers: () => bareLoop('grng'),
  bareLoopSameLayersWithAccuracy: () => bareLoop('grng', { accuracy: true }),
  bareLoopTfjsMatMul: () => bareLoop('tfjs'),
};
const times: Record<string, number[]> = Object.fromEntries(
  Object.keys(variants).map((k) => [k, []]),
);
for (const run of Object.values(variants)) await run(); // warm-up: kernels, caches
const tensorsBefore = tf.memory().numTensors;
for (let r = 0; r < rounds; r++)
  for (const [name, run] of Object.entries(variants)) times[name]!.push(await run());
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
/**
 * Median over rounds of a's time ÷ b's time in the same round: variants of one round run seconds
 * apart, so a ratio within a round cancels the VM's drift between rounds, which a ratio of
 * medians taken over all rounds does not.
 */
const ratio = (a: string, b: string): number => median(times[a]!.map((t, i) => t / times[b]![i]!));
const result = {
  backend: backend.name,
  backendDetail: backend.detail,
  model: spec,
  batchSize,
  steps,
  rounds,
  msPerStep: ms,
  ratios: {
    grngLossOnlyOverBareLoop: ratio('grngLossOnly', 'bareLoopSameLayers'),
    /** The same work on both sides: grng's loss-only metrics read the loss and the correct count. */
    grngLossOnlyOverBareLoopWithAccuracy: ratio('grngLossOnly', 'bareLoopSameLayersWithAccuracy'),
    grngDefaultMetricsOverBareLoop: ratio('grngDefaultMetrics', 'bareLoopSameLayers'),
    grngEveryStepCorrelationOverBareLoop: ratio('grngEveryStepCorrelation', 'bareLoopSameLayers'),
    tfjsMatMulOverGrngLayers: ratio('bareLoopTfjsMatMul', 'bareLoopSameLayers'),
    /** What the NaN/Inf guard (one small read-back per step for SGD) costs: train() runs it by default. */
    guardedOverDefaultMetrics: ratio('grngGuardedDefaultMetrics', 'grngDefaultMetrics'),
  },
  tensorLeak: tf.memory().numTensors - tensorsBefore,
};
if (args.includes('--json')) console.log(JSON.stringify(result));
else {
  console.log(
    `backend ${result.backendDetail}, ${spec}, batch ${batchSize}, ${steps} steps × ${rounds} rounds (median ms/step)`,
  );
  for (const [k, v] of Object.entries(ms)) console.log(`  ${k.padEnd(22)} ${v.toFixed(2)} ms`);
  for (const [k, v] of Object.entries(result.ratios))
    console.log(`  ${k.padEnd(32)} ${v.toFixed(3)}`);
  console.log(`  tensors leaked: ${result.tensorLeak}`);
}
model.dispose();
