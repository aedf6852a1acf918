/**
 * The language-model benchmark of issue 12: one optimizer trains a gpt: model on Debian's fortunes
 * (bench/torch_lm.py is the PyTorch reference on the same bytes), and the validation loss is
 * measured at a fixed step count and again at a fixed training-time budget (evaluation time not
 * counted), whichever comes later ends the run. Validation is the whole held-out 10% (4,026
 * windows of 64) unless --eval-windows takes an evenly spaced subset (for tuning sweeps).
 *
 *   npx tsx bench/languageModel.ts --optimizer ring [--model gpt:L2-d128-h4-ctx64] [--batch 32]
 *       [--steps 300] [--seconds 120] [--seed 1] [--eval-windows 0] [--option key=value ...]
 *       [--backend wasm] [--prompt 'The '] [--sample-tokens 200] [--json]
 *
 * Options go to createOptimizer as given (numbers parsed): --option learningRate=3e-3
 * --option lambda=0.01. The last stdout line with --json is one JSON object: per checkpoint
 * (`steps`, `seconds`) the step, training seconds, validation loss (nats per token), bits per
 * character (loss / ln 2) and next-token accuracy, plus the resolved optimizer options and a
 * sample of generated text (temperature 0.8, seed 1) from the trained model.
 */
import * as tf from '@tensorflow/tfjs';
import { identity, lastValueFrom, takeWhile, tap } from 'rxjs';
import { loadFortunes } from '../src/data/textDataset.js';
import type { Split } from '../src/data/dataset.js';
import { buildModel } from '../src/nn/buildModel.js';
import { correctCount, softmaxCrossEntropyPerSample } from '../src/nn/losses.js';
import { parseGptSpec } from '../src/nn/modelSpec.js';
import type { Sequential } from '../src/nn/sequential.js';
import { fisherScan } from '../src/operators/fisherScan.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { acceptsOption, createOptimizer, type OptimizerName } from '../src/optim/registry.js';
import { generateText } from '../src/run/generate.js';
import { initBackend } from '../src/runtime/backend.js';
import { batches } from '../src/streams/batches.js';
import type { Params } from '../src/types.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : fallback;
};
const optimizerName = flag('optimizer', 'adamw');
const spec = flag('model', 'gpt:L2-d128-h4-ctx64');
const batchSize = Number(flag('batch', '32'));
const steps = Number(flag('steps', '300'));
const seconds = Number(flag('seconds', '0'));
const seed = Number(flag('seed', '1'));
const evalWindows = Number(flag('eval-windows', '0'));
const options: Record<string, number | string> = {};
args.forEach((arg, i) => {
  if (arg !== '--option') return;
  const [key, value] = (args[i + 1] ?? '').split('=');
  options[key!] = Number.isNaN(Number(value)) ? value! : Number(value);
});

const backend = await initBackend(flag('backend', 'wasm') as 'wasm');
const modelSpec = parseGptSpec(spec);
const data = loadFortunes({ context: modelSpec.inputShape[0]! });
const model = buildModel(modelSpec, { seed, description: spec });
const optimizer = createOptimizer(
  optimizerName,
  model,
  (acceptsOption(optimizerName as OptimizerName, 'seed') ? { seed, ...options } : options) as never,
);

/** Mean loss per token, bits per character and next-token accuracy over the validation windows. */
function validate(model: Sequential, split: Split, windows: number) {
  const context = model.labelsPerExample;
  const every = windows > 0 ? Math.max(1, Math.floor(split.n / windows)) : 1;
  const rows = Array.from({ length: Math.floor(split.n / every) }, (_, i) => i * every);
  let loss = 0;
  let correct = 0;
  for (let start = 0; start < rows.length; start += 64) {
    const chunk = rows.slice(start, start + 64);
    const x = new Float32Array(chunk.length * context);
    const y = new Int32Array(chunk.length * context);
    chunk.forEach((row, r) => {
      x.set(split.x.subarray(row * context, (row + 1) * context), r * context);
      y.set(split.y.subarray(row * context, (row + 1) * context), r * context);
    });
    const [l, c] = tf.tidy(() => {
      const logits = model.apply(
        model.params as Params,
        tf.tensor2d(x, [chunk.length, context]),
      ).logits;
      const labels = tf.tensor1d(y, 'int32');
      const oneHot = tf.cast(tf.oneHot(labels, model.outputs), 'float32') as tf.Tensor2D;
      return [
        tf.sum(softmaxCrossEntropyPerSample(logits, oneHot)).dataSync()[0]!,
        correctCount(logits, labels).dataSync()[0]!,
      ];
    });
    loss += l;
    correct += c;
  }
  const tokens = rows.length * context;
  return {
    loss: loss / tokens,
    bitsPerCharacter: loss / tokens / Math.LN2,
    accuracy: correct / tokens,
    windows: rows.length,
  };
}

type Checkpoint = ReturnType<typeof validate> & { step: number; seconds: number };
const checkpoints: Record<string, Checkpoint> = {};
let trainingMs = 0;
let last = performance.now();
let step = 0;
let diverged = false;
const budgetMs = seconds * 1000;
await lastValueFrom(
  batches(data.train, { batchSize, epochs: 1000, seed }).pipe(
    tap(() => (last = performance.now())),
    forwardBackward(model, { signals: optimizer.needsSignals }),
    optimizer.curvature
      ? fisherScan(model, optimizer.curvature.damping, optimizer.curvature.options)
      : identity,
    update(model, optimizer.transform),
    metrics({ norms: false }),
    tap((row) => {
      trainingMs += performance.now() - last;
      step = row.step + 1;
      if (!Number.isFinite(row.loss)) diverged = true;
      // Evaluation happens here, between steps, so its time is not training time.
      if (step === steps)
        checkpoints.steps = {
          step,
          seconds: trainingMs / 1000,
          ...validate(model, data.test, evalWindows),
        };
      if (budgetMs > 0 && trainingMs >= budgetMs && !checkpoints.seconds)
        checkpoints.seconds = {
          step,
          seconds: trainingMs / 1000,
          ...validate(model, data.test, evalWindows),
        };
      last = performance.now();
    }),
    takeWhile(() => !diverged && (step < steps || (budgetMs > 0 && !checkpoints.seconds))),
  ),
  { defaultValue: undefined },
);
// A sample of what was learned (docs/benchmarks.md shows the best run's): seeded, temperature 0.8.
const sample = await generateText(model, {
  prompt: flag('prompt', 'The '),
  tokens: Number(flag('sample-tokens', '200')),
  temperature: 0.8,
  seed: 1,
});
const out = {
  optimizer: optimizerName,
  options: optimizer.options,
  groups: Object.fromEntries(Object.entries(optimizer.groups).map(([g, keys]) => [g, keys.length])),
  model: spec,
  backend: backend.name,
  batchSize,
  seed,
  evalWindows,
  diverged,
  msPerStep: trainingMs / step,
  checkpoints,
  sample,
};
model.dispose();
if (args.includes('--json')) console.log(JSON.stringify(out));
else
  for (const [name, c] of Object.entries(checkpoints))
    console.log(
      `${optimizerName} ${name}: step ${c.step}, ${c.seconds.toFixed(1)} s, val ${c.loss.toFixed(4)} nats/token = ${c.bitsPerCharacter.toFixed(3)} bpc, accuracy ${c.accuracy.toFixed(3)}${diverged ? ' (diverged)' : ''}`,
    );
