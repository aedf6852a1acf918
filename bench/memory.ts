/**
 * Memory over a long run through the whole pipeline (`prepareRun`: batches → forwardBackward →
 * fisherScan → update → evaluate → metrics with the default metrics): resident set, V8 heap,
 * external memory, and tfjs's live tensor count and bytes, sampled every `--every` steps.
 *
 *   npx tsx bench/memory.ts [--steps 10000] [--optimizer ring[,sgd,...]] [--every 100]
 *                           [--quick] [--json] [--no-gc] [--backend wasm]
 *                           [--dataset synthetic|mnist|fashion-mnist] [--model mlp:64-64-10]
 *                           [--batch 32] [--peak-steps 0] [--peak-batch 128]
 *
 * Set-up, chosen so that 10,000 ring steps take well under 3 minutes on the 2-core wasm machine:
 * the synthetic teacher–student set with 64 features and 10 classes (4,096 train / 512 test
 * rows), `mlp:64-64-10`, batch 32: 128 steps per epoch, so the test set is evaluated at every
 * epoch end (78 times in 10,000 steps) and the inverses are refreshed 1,000 times (~40 s).
 * `--dataset mnist` (mlp:784-64-10) is the heavier check: its 785×785 input factor makes a
 * refresh ~0.5–0.7 s, so ring takes ~80 ms a step (5,000 steps ≈ 7 minutes).
 *
 * Each sample is taken in the row's subscriber at steps 0, every, 2·every, … (the same phase of
 * the 10-step refresh cycle for every sample: between refreshes ring also holds a running ‖g‖²
 * scalar, so a sample at another phase would count one more tensor), after a forced V8 garbage
 * collection (unless `--no-gc`), so the heap figures are live memory, not garbage waiting for
 * collection. Reported per quantity: start (step 0), end, max, and the
 * least-squares slope per 1,000 steps over the second half of the run (after warm-up).
 * Flat means: live tensor count and bytes exactly constant over the second half, and the RSS
 * slope at most +1 MiB per 1,000 steps (10 MiB over 10,000 steps, ~5% of the ~190 MiB RSS; a
 * falling RSS, pages handed back to the OS, is not growth). The V8 heap slope (after forced GC)
 * is checked against ±0.1 MiB per 1,000 steps (≈ 100 bytes a step). RSS and heap settle only after
 * ~2,000–3,000 steps (JIT, the wasm heap reaching its high-water mark), so they are judged on runs
 * of at least 5,000 steps; `--quick` (1,000 steps) judges the tensor count only.
 *
 * `--peak-steps N` also runs N steps per optimizer at batch `--peak-batch` (default 128) inside
 * tf.profile and reports its peakBytes: the most tensor memory live at once in a step (forward,
 * backward, statistics, a refresh when N reaches one, update). Memory the native addon takes for
 * its float64 Cholesky (2·d² doubles for the widest factor, transiently) is outside tfjs and not
 * in it. The CNN check of issue 11:
 *
 *   npx tsx bench/memory.ts --dataset fashion-mnist --model cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10 \
 *     --optimizer kfac --steps 5000 --batch 32 --peak-steps 25
 */
import * as tf from '@tensorflow/tfjs';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { lastValueFrom, tap } from 'rxjs';
import { initBackend } from '../src/runtime/backend.js';
import { loadFashionMnist } from '../src/data/imageDatasets.js';
import { loadMnist } from '../src/data/mnist.js';
import { syntheticDataset } from '../src/data/synthetic.js';
import { prepareRun } from '../src/run/train.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] && !args[i + 1]!.startsWith('--') ? args[i + 1]! : fallback;
};
const quick = args.includes('--quick');
const json = args.includes('--json');
const steps = Number(flag('steps', quick ? '1000' : '10000'));
const every = Number(flag('every', '100'));
const optimizers = flag('optimizer', 'ring').split(',');
const backendName = flag('backend', 'wasm');
const useGc = !args.includes('--no-gc');
const RSS_LIMIT_MIB = 1;
const HEAP_LIMIT_MIB = 0.1;
/** RSS and the V8 heap rise for the first ~2,000–3,000 steps (JIT, wasm heap high-water mark). */
const MIN_STEPS_FOR_RSS = 5000;
const MIB = 1024 * 1024;

// A forced collection without --expose-gc on the command line (npx tsx passes no node flags).
let gc: (() => void) | undefined;
if (useGc) {
  setFlagsFromString('--expose_gc');
  gc = runInNewContext('gc') as () => void;
}

const datasetName = flag('dataset', 'synthetic');
const dataset =
  datasetName === 'mnist'
    ? await loadMnist()
    : datasetName === 'fashion-mnist'
      ? await loadFashionMnist()
      : syntheticDataset({ features: 64, classes: 10, train: 4096, test: 512, seed: 1 });
const model = flag('model', datasetName === 'mnist' ? 'mlp:784-64-10' : 'mlp:64-64-10');
const batchSize = Number(flag('batch', '32'));
const peakSteps = Number(flag('peak-steps', '0'));
const peakBatch = Number(flag('peak-batch', '128'));

interface Sample {
  step: number;
  wallMs: number;
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  numTensors: number;
  numBytes: number;
}
const QUANTITIES = [
  'rss',
  'heapUsed',
  'external',
  'arrayBuffers',
  'numTensors',
  'numBytes',
] as const;
type Quantity = (typeof QUANTITIES)[number];

function sample(step: number, wallMs: number): Sample {
  gc?.();
  const m = process.memoryUsage();
  const t = tf.memory();
  return {
    step,
    wallMs,
    rss: m.rss,
    heapUsed: m.heapUsed,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    numTensors: t.numTensors,
    numBytes: t.numBytes,
  };
}

/** Least-squares slope of y against x. */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  return sxx > 0 ? sxy / sxx : 0;
}

interface QuantityReport {
  start: number;
  end: number;
  max: number;
  /** Range over the second half (max − min). */
  secondHalfRange: number;
  /** Least-squares slope per 1,000 steps over the second half. */
  slopePer1000: number;
}

async function runOne(optimizer: string) {
  const run = await prepareRun({
    dataset,
    model,
    optimizer,
    batchSize,
    steps,
    epochs: Math.ceil(steps / Math.floor(dataset.train.n / batchSize)) + 1,
    partial: 'drop',
    backend: backendName as 'wasm',
    seed: 1,
  });
  const samples: Sample[] = [];
  const started = performance.now();
  let lastRow = -1;
  try {
    await lastValueFrom(
      run.rows.pipe(
        tap((row) => {
          lastRow = row.step;
          if (row.step % every === 0) samples.push(sample(row.step, performance.now() - started));
        }),
      ),
    );
  } finally {
    run.dispose();
  }
  const seconds = (performance.now() - started) / 1000;
  const half = samples.filter((s) => s.step >= steps / 2);
  const report = Object.fromEntries(
    QUANTITIES.map((q) => {
      const ys = samples.map((s) => s[q]);
      const hy = half.map((s) => s[q]);
      const r: QuantityReport = {
        start: ys[0]!,
        end: ys[ys.length - 1]!,
        max: Math.max(...ys),
        secondHalfRange: Math.max(...hy) - Math.min(...hy),
        slopePer1000:
          slope(
            half.map((s) => s.step),
            hy,
          ) * 1000,
      };
      return [q, r];
    }),
  ) as Record<Quantity, QuantityReport>;
  const rssSlopeMiB = report.rss.slopePer1000 / MIB;
  const heapSlopeMiB = report.heapUsed.slopePer1000 / MIB;
  const tensorsConstant =
    report.numTensors.secondHalfRange === 0 && report.numBytes.secondHalfRange === 0;
  // Growth is what matters: a falling RSS (the allocator handing pages back) is not a leak. RSS
  // and heap are judged only on runs long enough for their second half to be past warm-up.
  const memoryJudged = steps >= MIN_STEPS_FOR_RSS;
  const flat = tensorsConstant && (!memoryJudged || rssSlopeMiB <= RSS_LIMIT_MIB);
  // After dispose, everything the run made should be gone.
  const afterDispose = tf.memory();
  return {
    optimizer,
    steps: lastRow + 1,
    seconds,
    msPerStep: (seconds * 1000) / (lastRow + 1),
    samples,
    report,
    rssSlopeMiBPer1000: rssSlopeMiB,
    heapSlopeMiBPer1000: heapSlopeMiB,
    tensorsConstant,
    memoryJudged,
    heapFlat: Math.abs(heapSlopeMiB) <= HEAP_LIMIT_MIB,
    flat,
    tensorsAfterDispose: afterDispose.numTensors,
  };
}

/** The most tensor memory live at once over `peakSteps` steps at `peakBatch` (tf.profile). */
async function peakOf(
  optimizer: string,
): Promise<{ batchSize: number; steps: number; peakMiB: number }> {
  const run = await prepareRun({
    dataset,
    model,
    optimizer,
    batchSize: peakBatch,
    steps: peakSteps,
    partial: 'drop',
    backend: backendName as 'wasm',
    seed: 1,
  });
  try {
    const info = await tf.profile(async () => {
      await lastValueFrom(run.rows);
    });
    return { batchSize: peakBatch, steps: peakSteps, peakMiB: info.peakBytes / MIB };
  } finally {
    run.dispose();
  }
}

await initBackend(backendName);
const tensorsAtStart = tf.memory().numTensors;
const runs = [];
for (const optimizer of optimizers) {
  const r = {
    ...(await runOne(optimizer)),
    ...(peakSteps > 0 ? { peak: await peakOf(optimizer) } : {}),
  };
  runs.push(r);
  if (!json) {
    const mib = (v: number): string => (v / MIB).toFixed(1);
    console.log(
      `${optimizer}: ${r.steps} steps in ${r.seconds.toFixed(1)} s (${r.msPerStep.toFixed(2)} ms/step), ${dataset.name}, ${model}, batch ${batchSize}, sample every ${every} steps${gc ? ' after a forced GC' : ''}`,
    );
    console.log(
      `  ${'quantity'.padEnd(12)} ${'start'.padStart(10)} ${'end'.padStart(10)} ${'max'.padStart(10)} ${'slope/1000 steps (2nd half)'.padStart(28)} ${'2nd-half range'.padStart(15)}`,
    );
    for (const q of QUANTITIES) {
      const v = r.report[q];
      const bytes = q !== 'numTensors';
      const fmt = (x: number): string => (bytes ? `${mib(x)} MiB` : String(x));
      console.log(
        `  ${q.padEnd(12)} ${fmt(v.start).padStart(10)} ${fmt(v.end).padStart(10)} ${fmt(v.max).padStart(10)} ${(bytes ? `${(v.slopePer1000 / MIB).toFixed(3)} MiB` : v.slopePer1000.toFixed(3)).padStart(28)} ${fmt(v.secondHalfRange).padStart(15)}`,
      );
    }
    console.log(
      `${r.peak ? `  peak tensor memory over ${r.peak.steps} steps at batch ${r.peak.batchSize}: ${r.peak.peakMiB.toFixed(1)} MiB\n` : ''}  ${r.flat ? 'FLAT' : 'NOT FLAT'}: tensors ${r.tensorsConstant ? 'exactly constant' : 'changing'} over the second half, RSS slope ${r.rssSlopeMiBPer1000.toFixed(3)} MiB/1000 steps (limit +${RSS_LIMIT_MIB}${r.memoryJudged ? '' : `, not judged under ${MIN_STEPS_FOR_RSS} steps: still warming up`}); heap slope ${r.heapSlopeMiBPer1000.toFixed(3)} MiB/1000 steps (${!r.memoryJudged ? 'not judged' : r.heapFlat ? 'within' : 'OUTSIDE'} ±${HEAP_LIMIT_MIB}); tensors after dispose ${r.tensorsAfterDispose - tensorsAtStart >= 0 ? '+' : ''}${r.tensorsAfterDispose - tensorsAtStart}`,
    );
  }
}
const result = {
  backend: tf.getBackend(),
  dataset: dataset.description,
  model,
  batchSize,
  steps,
  every,
  forcedGc: gc !== undefined,
  thresholds: {
    rssMiBPer1000: RSS_LIMIT_MIB,
    heapMiBPer1000: HEAP_LIMIT_MIB,
    tensors: 'exactly constant over the second half',
    memoryJudgedFromSteps: MIN_STEPS_FOR_RSS,
  },
  runs: runs.map(({ samples, ...rest }) => ({
    ...rest,
    samples: samples.map((s) => [s.step, s.rss, s.heapUsed, s.external, s.numTensors, s.numBytes]),
  })),
  sampleColumns: ['step', 'rss', 'heapUsed', 'external', 'numTensors', 'numBytes'],
  flat: runs.every((r) => r.flat),
  tensorsLeftAfterDispose: tf.memory().numTensors - tensorsAtStart,
};
if (json) console.log(JSON.stringify(result));
