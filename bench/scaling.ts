/**
 * Step time against batch size and hidden width, per optimizer, through the whole pipeline
 * (`prepareRun`: batches → forwardBackward → fisherScan → update → evaluate → metrics), on a
 * one-hidden-layer MLP `mlp:784-W-10` with MNIST batches, and whether it grows as the math says.
 *
 *   npx tsx bench/scaling.ts [--quick] [--json] [--svg docs/scaling.svg | --no-svg] [--backend wasm]
 *                            [--steps N] [--rounds 3] [--optimizers sgd,adamw,...] [--include-expensive]
 *                            [--no-components]
 *
 * Per point (optimizer, batch m, width W): runs of the full pipeline; the time of a step is the
 * row's `stepMs − evaluationMs` (the test split is cut to 256 rows so epoch-end evaluations stay
 * small, and their time is taken out anyway). Steps 0–2 are warm-up (kernel set-up, the cold
 * Newton–Schulz start at step 0). Every 10th step is a "periodic" step: the Kronecker methods
 * refresh their inverses by Newton–Schulz there, Sophia re-estimates its Hessian, and the
 * default metrics add the update/gradient correlation for every optimizer. In runs of 21 steps
 * or more, periodic steps count from step 20: the refresh at step 10 is the first warm start
 * from the one-batch factors of step 0, rejected for every factor, so it costs a cold start.
 * Reported: the median ordinary step, the median periodic step, and the amortized mean
 * (9·ordinary + periodic)/10.
 *
 * - kfac/ring/reng: one run per point of `--steps` steps (31: periodic steps 20 and 30; 21 at
 *   W = 1024, where one refresh takes ~5 s: step 20).
 * - The others: `--rounds` (3) passes over the whole sweep with runs of 15 steps (periodic step
 *   10), and the median of the rounds, so that a burst of load from another process hits
 *   different points in different rounds.
 *
 * The full run takes about 5 minutes; `--quick` (2 sizes per sweep; sgd, kfac and rkalman; 12
 * steps; one round) about 20 s.
 *
 * Expected growth: every optimizer gets a multiply–add count (`MACS` below) built from the
 * terms of the method — SGD ∝ m·in·out, K-FAC statistics ∝ m·(in² + out²), inverse refresh
 * ∝ in³ + out³ per refresh (the same Newton–Schulz iteration count for every factor, amortized
 * over 10 steps), preconditioning ∝ in²·out + in·out² — and its log–log slope over the same
 * points is the "expected" exponent, reported for all points and for the upper three (where
 * compute dominates). A measured slope above it by more than 0.2 is flagged as worse than the
 * math. Fixed per-step costs (dispatch, read-back, RxJS) make measured slopes *lower* than
 * expected at small sizes; that is not a flag.
 *
 * Components (isolated, same shapes, grng's own functions): K-FAC statistics (`batchFactors`),
 * preconditioning (`precondition`), one Newton–Schulz iteration, and tf.matMul GFLOP/s as the
 * backend reference — these also cover width 2048, where the full runs of kfac/ring/reng are
 * skipped where there is no native Cholesky (a Newton–Schulz refresh there takes tens of seconds
 * on 2 cores).
 */
import * as tf from '@tensorflow/tfjs';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { dirname } from 'node:path';
import { lastValueFrom, toArray } from 'rxjs';
import { initBackend } from '../src/runtime/backend.js';
import { batchFactors } from '../src/curvature/blocks/dense.js';
import { newtonSchulzInverse } from '../src/linalg/newtonSchulz.js';
import type { Dataset } from '../src/data/dataset.js';
import { loadMnist } from '../src/data/mnist.js';
import { nativeSpdInverseAvailable } from '../src/runtime/nativeBlas.js';
import { mlp } from '../src/nn/sequential.js';
import { precondition } from '../src/optim/naturalGradient.js';
import { prepareRun } from '../src/run/train.js';
import type { Curvature, MetricsRow, Params } from '../src/types.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] && !args[i + 1]!.startsWith('--') ? args[i + 1]! : fallback;
};
const quick = args.includes('--quick');
const json = args.includes('--json');
const backendName = flag('backend', 'wasm');
/** Where the plot goes: docs/scaling.svg by default; quick runs, --no-svg and --no-write write none unless --svg is given. */
const svgPath = args.includes('--svg')
  ? flag('svg', 'docs/scaling.svg')
  : quick || args.includes('--no-svg') || args.includes('--no-write')
    ? undefined
    : 'docs/scaling.svg';
/**
 * Steps per run of the Kronecker methods (one run per point: their refreshes are expensive);
 * 21 at W ≥ 1024, where each refresh takes ~5 s, unless --steps is given.
 */
const steps = Number(flag('steps', quick ? '12' : '31'));
const kroneckerSteps = (width: number): number =>
  args.includes('--steps') || width < 1024 ? steps : Math.min(steps, 21);
/** The other optimizers: shorter runs, repeated in `rounds` passes over the sweep (median of rounds). */
const cheapSteps = Number(flag('steps', quick ? '12' : '15'));
const rounds = Number(flag('rounds', quick ? '1' : '3'));
const optimizers = flag(
  'optimizers',
  quick ? 'sgd,kfac,rkalman' : 'sgd,adamw,sophia,kfac,ring,reng,rkalman',
).split(',');
const includeExpensive = args.includes('--include-expensive');
const withComponents = !args.includes('--no-components');

const BASE_WIDTH = 256;
const BASE_BATCH = 128;
const batchSizes = quick ? [32, 256] : [32, 64, 128, 256, 512, 1024];
const widths = quick ? [128, 512] : [128, 256, 512, 1024, 2048];
const PERIOD = 10;
const ORDINARY_FROM = 3;
const periodicFrom = (n: number): number => (n >= 21 ? 20 : 10);
const KRONECKER = new Set(['kfac', 'ring', 'reng']);
const log = (line: string): void => {
  if (json) process.stderr.write(`${line}\n`);
  else console.log(line);
};

/** Full runs not made, and why (the component benchmarks still cover their shapes). */
function skipReason(optimizer: string, width: number): string | undefined {
  if (includeExpensive) return undefined;
  // With the native Cholesky a 2049×2049 inverse takes ~0.3 s; Newton–Schulz takes 10–15 s.
  if (KRONECKER.has(optimizer) && width >= 2048 && !nativeSpdInverseAvailable()) {
    return 'one Newton–Schulz refresh of the 2049×2049 and 2048×2048 factors takes ~40–60 s on 2 cores (≈ 4 refreshes per run; no native Cholesky here); covered by the component benchmark';
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Expected cost: multiply–adds per step (amortized) of each method, for mlp:784-W-10 at batch m.
// ---------------------------------------------------------------------------------------------
const IN = 784;
const OUT = 10;
/**
 * Newton–Schulz iterations per factor and refresh assumed by the model: the same for every
 * factor, so a refresh costs ∝ Σ d³ — the warm-started refresh the curvature options describe
 * (~3 iterations, against ~10 cold). The pipeline reports only the sum over the four factors
 * (`newtonIterations`, printed per point); where the W-sized factors restart cold while the fixed
 * 785×785 one warm-starts, the refresh grows faster with W than this model: that is flagged.
 */
const NS_ITERATIONS = 3;
const kernelMacs = (w: number): number => IN * w + w * OUT;
const forwardBackward = (m: number, w: number): number => 3 * m * kernelMacs(w);
/** K-FAC statistics: m·(in² + out²) per layer, homogeneous input included. */
const statistics = (m: number, w: number): number =>
  m * ((IN + 1) ** 2 + w ** 2 + (w + 1) ** 2 + OUT ** 2);
/** U = A⁻¹ V̄ G⁻¹ per layer: in²·out + in·out². */
const preconditioning = (w: number): number =>
  (IN + 1) ** 2 * w + (IN + 1) * w ** 2 + (w + 1) ** 2 * OUT + (w + 1) * OUT ** 2;
/** One refresh: NS_ITERATIONS iterations of two d×d products per factor: in³ + out³ per layer. */
const refresh = (w: number): number =>
  2 * NS_ITERATIONS * ((IN + 1) ** 3 + w ** 3 + (w + 1) ** 3 + OUT ** 3);
/** The sampled-label pass of the true Fisher: forward plus the signal backward. */
const sampledPass = (m: number, w: number): number => m * kernelMacs(w) + m * w * OUT;
const rkalmanMacs = (m: number, w: number): number => {
  const k = Math.min(m, 32);
  const p = (k * (k + 1)) / 2;
  // Row-pair selection products, H P⁻ Hᵀ over pairs, the posterior's pair reduction, the gain.
  return (
    forwardBackward(m, w) +
    2 * p * k * (IN + 2 * w + OUT) +
    2 * p * kernelMacs(w) +
    k * kernelMacs(w) +
    2 * 30 * k ** 3
  );
};
const MACS: Record<
  string,
  {
    ordinary: (m: number, w: number) => number;
    periodic: (m: number, w: number) => number;
    terms: string;
  }
> = {
  sgd: { ordinary: forwardBackward, periodic: () => 0, terms: 'm·in·out (forward/backward)' },
  adamw: { ordinary: forwardBackward, periodic: () => 0, terms: 'm·in·out' },
  sophia: {
    ordinary: forwardBackward,
    periodic: (m, w) => forwardBackward(m, w),
    terms: 'm·in·out (+ a sampled backward every 10)',
  },
  kfac: {
    ordinary: (m, w) =>
      forwardBackward(m, w) + sampledPass(m, w) + statistics(m, w) + preconditioning(w),
    periodic: (_, w) => refresh(w),
    terms: 'm·in·out + m·(in²+out²) + (in²·out+in·out²) + (in³+out³)/10',
  },
  ring: {
    ordinary: (m, w) =>
      forwardBackward(m, w) + sampledPass(m, w) + statistics(m, w) + preconditioning(w),
    periodic: (_, w) => refresh(w),
    terms: 'as kfac',
  },
  reng: {
    ordinary: (m, w) =>
      4 * forwardBackward(m, w) + sampledPass(m, w) + statistics(m, w) + preconditioning(w),
    periodic: (_, w) => refresh(w),
    terms: 'as kfac + Hg by double backprop (≈ 3 gradient passes, measured 2.5–3.5×)',
  },
  rkalman: {
    ordinary: rkalmanMacs,
    periodic: () => 0,
    terms: 'm·in·out + k²·(in·out) with k = min(m, 32) rows',
  },
};
const amortizedMacs = (optimizer: string, m: number, w: number): number => {
  const model = MACS[optimizer]!;
  return model.ordinary(m, w) + model.periodic(m, w) / PERIOD;
};

// ---------------------------------------------------------------------------------------------
// Measurement
// ---------------------------------------------------------------------------------------------
interface Point {
  optimizer: string;
  batch: number;
  width: number;
  /** Median ms of ordinary steps (steps ≥ 3, not a multiple of 10). */
  ordinaryMs: number;
  /** Median ms of periodic steps (10, 20, ...): inverse refreshes for kfac/ring/reng. */
  periodicMs: number;
  /** (9·ordinary + periodic)/10. */
  amortizedMs: number;
  /** periodic − ordinary: the refresh (or Hessian estimate, or correlation) alone. */
  periodicExtraMs: number;
  /** Newton–Schulz iterations per refresh (summed over the 4 factors), median; null if none. */
  newtonIterations: number | null;
  samples: { ordinary: number; periodic: number };
  /** Steps per run, runs (rounds) combined, and each round's amortized ms. */
  steps: number;
  rounds: number;
  roundsAmortizedMs: number[];
  runSeconds: number;
}

const median = (xs: number[]): number => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
};

const backend = await initBackend(backendName);
const mnist = await loadMnist();
const TEST_ROWS = 256;
const data: Dataset = {
  ...mnist,
  test: {
    x: mnist.test.x.slice(0, TEST_ROWS * mnist.features),
    y: mnist.test.y.slice(0, TEST_ROWS),
    n: TEST_ROWS,
  },
  description: `${mnist.description}; test split cut to its first ${TEST_ROWS} rows (evaluation is excluded from step times)`,
};

async function measure(
  optimizer: string,
  batch: number,
  width: number,
  steps: number,
): Promise<Point> {
  const started = performance.now();
  const run = await prepareRun({
    dataset: data,
    model: `mlp:784-${width}-10`,
    optimizer,
    batchSize: batch,
    steps,
    epochs: 10_000,
    partial: 'drop',
    backend: backendName as 'wasm',
  });
  let rows: MetricsRow[];
  try {
    rows = await lastValueFrom(run.rows.pipe(toArray()));
  } finally {
    run.dispose();
  }
  const ms = (r: MetricsRow): number => r.stepMs - r.evaluationMs;
  const ordinary = rows.filter((r) => r.step >= ORDINARY_FROM && r.step % PERIOD !== 0).map(ms);
  const periodicRows = rows.filter((r) => r.step >= periodicFrom(steps) && r.step % PERIOD === 0);
  const periodic = periodicRows.map(ms);
  const iterations = periodicRows
    .map((r) => r.diagnostics.newtonIterations)
    .filter((v): v is number => typeof v === 'number');
  const o = median(ordinary);
  const p = median(periodic);
  return {
    optimizer,
    batch,
    width,
    ordinaryMs: o,
    periodicMs: p,
    amortizedMs: ((PERIOD - 1) * o + p) / PERIOD,
    periodicExtraMs: p - o,
    newtonIterations: iterations.length ? median(iterations) : null,
    samples: { ordinary: ordinary.length, periodic: periodic.length },
    steps,
    rounds: 1,
    roundsAmortizedMs: [((PERIOD - 1) * o + p) / PERIOD],
    runSeconds: (performance.now() - started) / 1000,
  };
}

/** Several rounds of one point: the median of the rounds' figures (samples and time summed). */
function combine(runs: Point[]): Point {
  const first = runs[0]!;
  if (runs.length === 1) return first;
  const med = (f: (p: Point) => number): number => median(runs.map(f));
  const o = med((p) => p.ordinaryMs);
  const p = med((q) => q.periodicMs);
  const its = runs.map((q) => q.newtonIterations).filter((v): v is number => v !== null);
  return {
    ...first,
    ordinaryMs: o,
    periodicMs: p,
    amortizedMs: ((PERIOD - 1) * o + p) / PERIOD,
    periodicExtraMs: p - o,
    newtonIterations: its.length ? median(its) : null,
    samples: {
      ordinary: runs.reduce((n, q) => n + q.samples.ordinary, 0),
      periodic: runs.reduce((n, q) => n + q.samples.periodic, 0),
    },
    rounds: runs.length,
    roundsAmortizedMs: runs.map((q) => q.amortizedMs),
    runSeconds: runs.reduce((n, q) => n + q.runSeconds, 0),
  };
}

const benchStarted = performance.now();
const loadBefore = loadavg()[0]!;
const tensorsBefore = tf.memory().numTensors;
// Distinct points of the two sweeps (they share m = 128, W = 256).
const pointKeys = new Map<string, { batch: number; width: number }>();
for (const b of batchSizes) pointKeys.set(`${b}x${BASE_WIDTH}`, { batch: b, width: BASE_WIDTH });
for (const w of widths) pointKeys.set(`${BASE_BATCH}x${w}`, { batch: BASE_BATCH, width: w });
const skipped: Array<{ optimizer: string; batch: number; width: number; reason: string }> = [];
const runsOf = new Map<string, Point[]>();
// Warm-up run: loads kernels and the backend's first allocations outside any measured point.
await measure('sgd', 32, 128, 12);
// Round 0 runs every optimizer; later rounds only the cheap ones, so that a burst of load from
// another process hits different points in different rounds.
for (let round = 0; round < rounds; round++) {
  for (const { batch, width } of pointKeys.values()) {
    for (const optimizer of optimizers) {
      const kronecker = KRONECKER.has(optimizer);
      if (round > 0 && kronecker) continue;
      const reason = skipReason(optimizer, width);
      if (reason) {
        if (round === 0) {
          skipped.push({ optimizer, batch, width, reason });
          log(`  skip ${optimizer} m=${batch} W=${width}: ${reason}`);
        }
        continue;
      }
      const point = await measure(
        optimizer,
        batch,
        width,
        kronecker ? kroneckerSteps(width) : cheapSteps,
      );
      const key = `${optimizer}/${batch}/${width}`;
      runsOf.set(key, [...(runsOf.get(key) ?? []), point]);
      log(
        `  ${rounds > 1 ? `r${round} ` : ''}${optimizer.padEnd(8)} m=${String(batch).padStart(4)} W=${String(width).padStart(4)}  ordinary ${point.ordinaryMs.toFixed(1).padStart(7)} ms  every-10th ${point.periodicMs.toFixed(1).padStart(7)} ms` +
          `  amortized ${point.amortizedMs.toFixed(1).padStart(7)} ms${point.newtonIterations !== null ? `  NS it ${point.newtonIterations}` : ''}  (${point.runSeconds.toFixed(1)} s)`,
      );
    }
  }
}
const points: Point[] = [...runsOf.values()].map(combine);
const sweepSeconds = (performance.now() - benchStarted) / 1000;
/** Tensors left by the full runs (every run disposes its model; the pipeline its own tensors). */
const pipelineTensorLeak = tf.memory().numTensors - tensorsBefore;

// ---------------------------------------------------------------------------------------------
// Slopes
// ---------------------------------------------------------------------------------------------
/** Least-squares slope of log y against log x. */
function logSlope(xs: number[], ys: number[]): number {
  const lx = xs.map(Math.log);
  const ly = ys.map(Math.log);
  const mx = lx.reduce((a, b) => a + b, 0) / lx.length;
  const my = ly.reduce((a, b) => a + b, 0) / ly.length;
  let sxy = 0;
  let sxx = 0;
  lx.forEach((x, i) => {
    sxy += (x - mx) * (ly[i]! - my);
    sxx += (x - mx) ** 2;
  });
  return sxx > 0 ? sxy / sxx : NaN;
}

interface SlopeReport {
  /** Sizes fitted. */
  sizes: number[];
  /** Slope of amortized ms/step over all sizes, and over the upper three (compute-bound end). */
  measured: number;
  measuredUpper: number;
  /** Same fits of the multiply–add model. */
  expected: number;
  expectedUpper: number;
  /** Slopes of ordinary steps alone, measured and expected. */
  ordinary: number;
  ordinaryExpected: number;
  worseThanMath: boolean;
}
const TOLERANCE = 0.2;
const slopeOf = (optimizer: string, axis: 'batch' | 'width'): SlopeReport | undefined => {
  const sweep = points
    .filter(
      (p) =>
        p.optimizer === optimizer &&
        (axis === 'batch'
          ? p.width === BASE_WIDTH && batchSizes.includes(p.batch)
          : p.batch === BASE_BATCH && widths.includes(p.width)),
    )
    .sort((a, b) => (axis === 'batch' ? a.batch - b.batch : a.width - b.width));
  if (sweep.length < 2) return undefined;
  const xs = sweep.map((p) => (axis === 'batch' ? p.batch : p.width));
  const upper = sweep.slice(-3);
  const ux = upper.map((p) => (axis === 'batch' ? p.batch : p.width));
  const model = (p: Point): number => amortizedMacs(optimizer, p.batch, p.width);
  const modelOrdinary = (p: Point): number => MACS[optimizer]!.ordinary(p.batch, p.width);
  const measured = logSlope(
    xs,
    sweep.map((p) => p.amortizedMs),
  );
  const measuredUpper = logSlope(
    ux,
    upper.map((p) => p.amortizedMs),
  );
  const expected = logSlope(xs, sweep.map(model));
  const expectedUpper = logSlope(ux, upper.map(model));
  const ordinary = logSlope(
    xs,
    sweep.map((p) => p.ordinaryMs),
  );
  const ordinaryExpected = logSlope(xs, sweep.map(modelOrdinary));
  return {
    sizes: xs,
    measured,
    measuredUpper,
    expected,
    expectedUpper,
    ordinary,
    ordinaryExpected,
    worseThanMath:
      measured > expected + TOLERANCE ||
      measuredUpper > expectedUpper + TOLERANCE ||
      ordinary > ordinaryExpected + TOLERANCE,
  };
};
const slopes: Record<string, { batch?: SlopeReport; width?: SlopeReport; terms: string }> = {};
for (const optimizer of optimizers) {
  const batch = slopeOf(optimizer, 'batch');
  const width = slopeOf(optimizer, 'width');
  slopes[optimizer] = {
    ...(batch ? { batch } : {}),
    ...(width ? { width } : {}),
    terms: MACS[optimizer]?.terms ?? '?',
  };
}

/**
 * The K-FAC parts from the full runs: the refresh alone (periodic − ordinary step of
 * kfac/ring/reng: expected ∝ in³ + out³, independent of m) and the per-step curvature work
 * (kfac ordinary − sgd ordinary: sampled pass + statistics + preconditioning).
 */
const refreshFromRuns: Record<
  string,
  { batch?: { measured: number; expected: number }; width?: { measured: number; expected: number } }
> = {};
for (const optimizer of optimizers.filter((o) => KRONECKER.has(o))) {
  const entry: (typeof refreshFromRuns)[string] = {};
  const b = points
    .filter((p) => p.optimizer === optimizer && p.width === BASE_WIDTH)
    .sort((x, y) => x.batch - y.batch);
  const w = points
    .filter((p) => p.optimizer === optimizer && p.batch === BASE_BATCH)
    .sort((x, y) => x.width - y.width);
  if (b.length >= 2)
    entry.batch = {
      measured: logSlope(
        b.map((p) => p.batch),
        b.map((p) => Math.max(p.periodicExtraMs, 1e-3)),
      ),
      expected: 0,
    };
  if (w.length >= 2)
    entry.width = {
      measured: logSlope(
        w.map((p) => p.width),
        w.map((p) => Math.max(p.periodicExtraMs, 1e-3)),
      ),
      expected: logSlope(
        w.map((p) => p.width),
        w.map((p) => refresh(p.width)),
      ),
    };
  refreshFromRuns[optimizer] = entry;
}
let curvatureStepFromRuns:
  | {
      batch?: { measured: number; expected: number };
      width?: { measured: number; expected: number };
    }
  | undefined;
if (optimizers.includes('kfac') && optimizers.includes('sgd')) {
  const extra = (m: number, w: number): number | undefined => {
    const k = points.find((p) => p.optimizer === 'kfac' && p.batch === m && p.width === w);
    const s = points.find((p) => p.optimizer === 'sgd' && p.batch === m && p.width === w);
    return k && s ? Math.max(k.ordinaryMs - s.ordinaryMs, 1e-3) : undefined;
  };
  const model = (m: number, w: number): number =>
    sampledPass(m, w) + statistics(m, w) + preconditioning(w);
  const fit = (pairs: Array<[number, number]>, x: (mw: [number, number]) => number) => {
    const have = pairs.filter(([m, w]) => extra(m, w) !== undefined);
    return have.length >= 2
      ? {
          measured: logSlope(
            have.map(x),
            have.map(([m, w]) => extra(m, w)!),
          ),
          expected: logSlope(
            have.map(x),
            have.map(([m, w]) => model(m, w)),
          ),
        }
      : undefined;
  };
  const batch = fit(
    batchSizes.map((m) => [m, BASE_WIDTH]),
    ([m]) => m,
  );
  const width = fit(
    widths.map((w) => [BASE_BATCH, w]),
    ([, w]) => w,
  );
  curvatureStepFromRuns = { ...(batch ? { batch } : {}), ...(width ? { width } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Components in isolation
// ---------------------------------------------------------------------------------------------
interface ComponentRow {
  width: number;
  batch: number;
  statisticsMs: number;
  preconditionMs: number;
  /** One Newton–Schulz iteration over the four factors (785, W, W+1 and 10: W+1 timed, used for W too). */
  newtonIterationMs: number;
}
async function timeIt(
  fn: () => tf.Tensor | tf.Tensor[] | Promise<unknown>,
  reps: number,
  warmUp = true,
): Promise<number> {
  const once = async (): Promise<void> => {
    const out = await fn();
    const tensors = (Array.isArray(out) ? out : [out]).filter(
      (t): t is tf.Tensor => t instanceof tf.Tensor,
    );
    for (const t of tensors) await t.data();
    tf.dispose(tensors);
  };
  if (warmUp) await once(); // shapes, kernels
  const times: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t = performance.now();
    await once();
    times.push(performance.now() - t);
  }
  return median(times);
}
/** ms of one Newton–Schulz iteration (two d×d products) via grng's newtonSchulzInverse, cold, 2 iterations. */
const nsCache = new Map<number, number>();
async function newtonIteration(d: number): Promise<number> {
  const cached = nsCache.get(d);
  if (cached !== undefined) return cached;
  const m = tf.tidy(() => {
    const r = tf.randomNormal([d, 2 * d], 0, 1, 'float32', 7) as tf.Tensor2D;
    return tf.add(
      tf.div(tf.matMul(r, tf.transpose(r)), 2 * d),
      tf.mul(tf.eye(d), 0.1),
    ) as tf.Tensor2D;
  });
  // maxIterations 2, cold: 2 iterations + the symmetrised residual = 4 d×d products ≈ 2 iterations.
  // d > 1100: one timed call, no warm-up (the kernels are warm from the smaller sizes; each call takes seconds).
  const large = d > 1100;
  const ms = await timeIt(
    async () =>
      (await newtonSchulzInverse(m, { maxIterations: 2, tolerance: 1e-30, checkEvery: 100 }))
        .inverse,
    large ? 1 : 3,
    !large,
  );
  m.dispose();
  nsCache.set(d, ms / 2);
  return ms / 2;
}
async function component(batch: number, width: number): Promise<ComponentRow> {
  const reps = width >= 1024 ? 2 : 5;
  const a1 = tf.randomUniform([batch, IN]) as tf.Tensor2D;
  const d1 = tf.randomNormal([batch, width]) as tf.Tensor2D;
  const a2 = tf.tidy(() => tf.relu(tf.randomNormal([batch, width]))) as tf.Tensor2D;
  const d2 = tf.randomNormal([batch, OUT]) as tf.Tensor2D;
  const statisticsMs = await timeIt(
    () => [batchFactors(a1, d1), batchFactors(a2, d2)].flatMap((f) => [f.a, f.g]),
    reps,
  );
  tf.dispose([a1, d1, a2, d2]);
  const model = mlp({ inputs: IN, layers: [{ units: width }, { units: OUT }], seed: 1 });
  const spd = (d: number): tf.Tensor2D => tf.randomNormal([d, d]) as tf.Tensor2D; // values do not change the time
  const curvature: Curvature = {
    layers: [
      { aInverse: spd(IN + 1), gInverse: spd(width) },
      { aInverse: spd(width + 1), gInverse: spd(OUT) },
    ],
    damping: 1e-3,
    newtonIterations: 0,
    newtonResidual: 0,
    refreshed: false,
  };
  const v = model.params as Params;
  const preconditionMs = await timeIt(
    () =>
      tf.tidy(() =>
        Object.values(precondition(model, curvature, v)).filter(
          (t) => !Object.values(v).includes(t),
        ),
      ),
    reps,
  );
  tf.dispose(curvature.layers.flatMap((l) => [l.aInverse, l.gInverse]));
  model.dispose();
  const newtonIterationMs =
    (await newtonIteration(IN + 1)) +
    2 * (await newtonIteration(width + 1)) +
    (await newtonIteration(OUT));
  return { width, batch, statisticsMs, preconditionMs, newtonIterationMs };
}
let components:
  | {
      rows: ComponentRow[];
      matMulGflops: Record<string, number>;
      slopes: Record<
        string,
        {
          axis: 'batch' | 'width';
          measured: number;
          expected: number;
          measuredUpper: number;
          expectedUpper: number;
          worseThanMath: boolean;
        }
      >;
      seconds: number;
    }
  | undefined;
if (withComponents) {
  const started = performance.now();
  const rows: ComponentRow[] = [];
  for (const w of widths) rows.push(await component(BASE_BATCH, w));
  for (const b of batchSizes) if (b !== BASE_BATCH) rows.push(await component(b, BASE_WIDTH));
  const matMulGflops: Record<string, number> = {};
  for (const d of quick ? [256, 512] : [256, 512, 1024, 2048]) {
    const x = tf.randomNormal([d, d]) as tf.Tensor2D;
    const ms = await timeIt(() => tf.matMul(x, x), d >= 2048 ? 1 : 3, d < 2048);
    x.dispose();
    matMulGflops[d] = (2 * d ** 3) / ms / 1e6;
  }
  const wRows = rows.filter((r) => r.batch === BASE_BATCH).sort((a, b) => a.width - b.width);
  const bRows = rows.filter((r) => r.width === BASE_WIDTH).sort((a, b) => a.batch - b.batch);
  const fit = (
    sel: ComponentRow[],
    axis: 'batch' | 'width',
    y: (r: ComponentRow) => number,
    model: (r: ComponentRow) => number,
  ) => {
    const x = sel.map((r) => (axis === 'batch' ? r.batch : r.width));
    const up = sel.slice(-3);
    const ux = up.map((r) => (axis === 'batch' ? r.batch : r.width));
    const measured = logSlope(x, sel.map(y));
    const expected = logSlope(x, sel.map(model));
    const measuredUpper = logSlope(ux, up.map(y));
    const expectedUpper = logSlope(ux, up.map(model));
    return {
      axis,
      measured,
      expected,
      measuredUpper,
      expectedUpper,
      worseThanMath: measured > expected + TOLERANCE || measuredUpper > expectedUpper + TOLERANCE,
    };
  };
  const slopesOfComponents: NonNullable<typeof components>['slopes'] = {
    statisticsVsWidth: fit(
      wRows,
      'width',
      (r) => r.statisticsMs,
      (r) => statistics(r.batch, r.width),
    ),
    statisticsVsBatch: fit(
      bRows,
      'batch',
      (r) => r.statisticsMs,
      (r) => statistics(r.batch, r.width),
    ),
    preconditionVsWidth: fit(
      wRows,
      'width',
      (r) => r.preconditionMs,
      (r) => preconditioning(r.width),
    ),
    newtonIterationVsWidth: fit(
      wRows,
      'width',
      (r) => r.newtonIterationMs,
      (r) => refresh(r.width),
    ),
  };
  components = {
    rows,
    matMulGflops,
    slopes: slopesOfComponents,
    seconds: (performance.now() - started) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// Flags, plot, report
// ---------------------------------------------------------------------------------------------
const flags: string[] = [];
for (const [optimizer, s] of Object.entries(slopes)) {
  for (const axis of ['batch', 'width'] as const) {
    const r = s[axis];
    if (r?.worseThanMath) {
      flags.push(
        `${optimizer} vs ${axis}: measured slope ${r.measured.toFixed(2)} (upper ${r.measuredUpper.toFixed(2)}, ordinary ${r.ordinary.toFixed(2)}) against expected ${r.expected.toFixed(2)} (upper ${r.expectedUpper.toFixed(2)}, ordinary ${r.ordinaryExpected.toFixed(2)})`,
      );
    }
  }
}
for (const [name, r] of Object.entries(components?.slopes ?? {})) {
  if (r.worseThanMath)
    flags.push(
      `component ${name}: measured slope ${r.measured.toFixed(2)} (upper ${r.measuredUpper.toFixed(2)}) against expected ${r.expected.toFixed(2)} (upper ${r.expectedUpper.toFixed(2)})`,
    );
}

const COLORS: Record<string, string> = {
  sgd: '#1f77b4',
  adamw: '#ff7f0e',
  sophia: '#2ca02c',
  kfac: '#d62728',
  ring: '#9467bd',
  reng: '#8c564b',
  rkalman: '#e377c2',
};
const MARKERS: Record<string, string> = {
  sgd: 'circle',
  adamw: 'square',
  sophia: 'diamond',
  kfac: 'triangle',
  ring: 'triangle-down',
  reng: 'cross',
  rkalman: 'ring',
};

/** Log–log step time against batch and width, two panels, one line per optimizer; plain SVG. */
function scalingSvg(): string {
  const W = 900;
  const H = 450;
  const top = 48;
  const bottom = 92;
  const left = 62;
  const gap = 70;
  const right = 120; // legend
  const panelW = (W - left - gap - right) / 2;
  const panelH = H - top - bottom;
  const all = points.map((p) => p.amortizedMs).filter((v) => v > 0);
  const yMin = Math.min(...all);
  const yMax = Math.max(...all);
  const lo = Math.log10(yMin) - 0.08;
  const hi = Math.log10(yMax) + 0.08;
  const yTicks: number[] = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++)
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (Math.log10(v) >= lo && Math.log10(v) <= hi) yTicks.push(v);
    }
  const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const fmt = (v: number): string =>
    v >= 1000 ? `${v / 1000}k` : v >= 1 ? String(v) : v.toPrecision(1);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`,
  );
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${esc(`grng step time, mlp:784-W-10 on MNIST, ${backend.name}${backend.detail.includes('SIMD') ? ' SIMD' : ''} (amortized ms/step, log–log)`)}</text>`,
  );
  const panels = [
    {
      title: `vs batch size m (W = ${BASE_WIDTH})`,
      axis: 'batch' as const,
      xs: batchSizes,
      label: 'batch size m',
    },
    {
      title: `vs hidden width W (m = ${BASE_BATCH})`,
      axis: 'width' as const,
      xs: widths,
      label: 'hidden width W',
    },
  ];
  panels.forEach((panel, pi) => {
    const x0 = left + pi * (panelW + gap);
    const xlo = Math.log2(panel.xs[0]!) - 0.25;
    const xhi = Math.log2(panel.xs[panel.xs.length - 1]!) + 0.25;
    const px = (v: number): number => x0 + ((Math.log2(v) - xlo) / (xhi - xlo)) * panelW;
    const py = (v: number): number => top + panelH - ((Math.log10(v) - lo) / (hi - lo)) * panelH;
    out.push(
      `<text x="${x0 + panelW / 2}" y="${top - 10}" text-anchor="middle" font-size="13">${esc(panel.title)}</text>`,
    );
    out.push(
      `<rect x="${x0}" y="${top}" width="${panelW}" height="${panelH}" fill="none" stroke="#444"/>`,
    );
    for (const v of yTicks) {
      const y = py(v).toFixed(1);
      const major = Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9;
      out.push(
        `<line x1="${x0}" x2="${x0 + panelW}" y1="${y}" y2="${y}" stroke="${major ? '#ccc' : '#eee'}"/>`,
      );
      out.push(
        `<text x="${x0 - 6}" y="${y}" text-anchor="end" dominant-baseline="middle" fill="#333">${fmt(v)}</text>`,
      );
    }
    for (const v of panel.xs) {
      const x = px(v).toFixed(1);
      out.push(`<line x1="${x}" x2="${x}" y1="${top}" y2="${top + panelH}" stroke="#eee"/>`);
      out.push(
        `<text x="${x}" y="${top + panelH + 16}" text-anchor="middle" fill="#333">${v}</text>`,
      );
    }
    out.push(
      `<text x="${x0 + panelW / 2}" y="${top + panelH + 36}" text-anchor="middle">${esc(panel.label)} (log scale)</text>`,
    );
    if (pi === 0)
      out.push(
        `<text transform="translate(16 ${top + panelH / 2}) rotate(-90)" text-anchor="middle">ms per step (log scale)</text>`,
      );
    // Reference slopes from the lower-left corner: ∝ m (batch); ∝ W and ∝ W² (width).
    const refX = panel.xs[0]!;
    const refY = 10 ** (lo + 0.04 * (hi - lo));
    const powers =
      panel.axis === 'batch'
        ? ([[1, '6 4']] as const)
        : ([
            [1, '6 4'],
            [2, '2 4'],
          ] as const);
    for (const [k, dash] of powers) {
      const x1 = panel.xs[panel.xs.length - 1]!;
      const y1 = refY * (x1 / refX) ** k;
      const clipped =
        Math.log10(y1) > hi
          ? { x: refX * (10 ** hi / refY) ** (1 / k), y: 10 ** hi }
          : { x: x1, y: y1 };
      out.push(
        `<line x1="${px(refX).toFixed(1)}" y1="${py(refY).toFixed(1)}" x2="${px(clipped.x).toFixed(1)}" y2="${py(clipped.y).toFixed(1)}" stroke="#aaa" stroke-dasharray="${dash}"/>`,
      );
    }
    for (const optimizer of optimizers) {
      const series = points
        .filter(
          (p) =>
            p.optimizer === optimizer &&
            (panel.axis === 'batch'
              ? p.width === BASE_WIDTH && batchSizes.includes(p.batch)
              : p.batch === BASE_BATCH && widths.includes(p.width)),
        )
        .sort((a, b) => (panel.axis === 'batch' ? a.batch - b.batch : a.width - b.width));
      if (series.length === 0) continue;
      const color = COLORS[optimizer] ?? '#000';
      const coords = series.map(
        (p) => [px(panel.axis === 'batch' ? p.batch : p.width), py(p.amortizedMs)] as const,
      );
      out.push(
        `<polyline fill="none" stroke="${color}" stroke-width="2" points="${coords.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`,
      );
      for (const [x, y] of coords) out.push(marker(MARKERS[optimizer] ?? 'circle', x, y, color));
    }
  });
  // Legend.
  const lx = W - right + 14;
  out.push(`<text x="${lx}" y="${top + 4}" font-weight="bold">optimizer</text>`);
  optimizers.forEach((optimizer, oi) => {
    const y = top + 24 + oi * 22;
    const color = COLORS[optimizer] ?? '#000';
    out.push(
      `<line x1="${lx}" x2="${lx + 26}" y1="${y}" y2="${y}" stroke="${color}" stroke-width="2"/>`,
    );
    out.push(marker(MARKERS[optimizer] ?? 'circle', lx + 13, y, color));
    out.push(`<text x="${lx + 32}" y="${y}" dominant-baseline="middle">${esc(optimizer)}</text>`);
  });
  // The reference lines drawn from each panel's lower-left corner.
  const gy = top + 24 + optimizers.length * 22 + 14;
  out.push(`<text x="${lx}" y="${gy}" font-weight="bold">reference</text>`);
  for (const [i, dash, label] of [
    [0, '6 4', '∝ m, ∝ W'],
    [1, '2 4', '∝ W²'],
  ] as const) {
    const y = gy + 20 + i * 20;
    out.push(
      `<line x1="${lx}" x2="${lx + 26}" y1="${y}" y2="${y}" stroke="#aaa" stroke-dasharray="${dash}"/>`,
    );
    out.push(
      `<text x="${lx + 32}" y="${y}" dominant-baseline="middle" font-size="11">${label}</text>`,
    );
  }
  const notes = [
    'amortized = (9·ordinary + every-10th step)/10; the every-10th step holds the inverse refresh (kfac, ring, reng) or the Hessian estimate (sophia).',
    `kfac/ring/reng: one run per point, medians of steps 3–${steps - 1}${widths.some((w) => kroneckerSteps(w) !== steps) ? ` (W ≥ 1024: 3–${Math.min(steps, 21) - 1})` : ''}, every-10th from step ${periodicFrom(steps)}; the others: median of ${rounds} runs of ${cheapSteps} steps. Evaluation excluded.`,
  ];
  if (skipped.length)
    notes.push(
      `Not run: ${[...new Set(skipped.map((s) => s.optimizer))].join(', ')} at W = ${[...new Set(skipped.map((s) => s.width))].join(', ')} (one Newton–Schulz refresh there ≈ 40–60 s, and no native Cholesky here); their components at W = 2048 are in the JSON.`,
    );
  notes.forEach((n, i) =>
    out.push(
      `<text x="${left}" y="${H - 36 + i * 14}" fill="#555" font-size="11">${esc(n)}</text>`,
    ),
  );
  out.push('</svg>');
  return out.join('\n');
}
function marker(kind: string, x: number, y: number, color: string): string {
  const r = 4.2;
  const [X, Y] = [x.toFixed(1), y.toFixed(1)];
  switch (kind) {
    case 'square':
      return `<rect x="${(x - r).toFixed(1)}" y="${(y - r).toFixed(1)}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
    case 'diamond':
      return `<polygon points="${X},${(y - r - 1).toFixed(1)} ${(x + r + 1).toFixed(1)},${Y} ${X},${(y + r + 1).toFixed(1)} ${(x - r - 1).toFixed(1)},${Y}" fill="${color}"/>`;
    case 'triangle-down':
      return `<polygon points="${X},${(y + r + 1).toFixed(1)} ${(x + r + 1).toFixed(1)},${(y - r).toFixed(1)} ${(x - r - 1).toFixed(1)},${(y - r).toFixed(1)}" fill="${color}"/>`;
    case 'cross':
      return `<path d="M${(x - r).toFixed(1)},${(y - r).toFixed(1)}L${(x + r).toFixed(1)},${(y + r).toFixed(1)}M${(x - r).toFixed(1)},${(y + r).toFixed(1)}L${(x + r).toFixed(1)},${(y - r).toFixed(1)}" stroke="${color}" stroke-width="2.6"/>`;
    case 'ring':
      return `<circle cx="${X}" cy="${Y}" r="${r}" fill="white" stroke="${color}" stroke-width="2.2"/>`;
    case 'triangle':
      return `<polygon points="${X},${(y - r - 1).toFixed(1)} ${(x + r + 1).toFixed(1)},${(y + r).toFixed(1)} ${(x - r - 1).toFixed(1)},${(y + r).toFixed(1)}" fill="${color}"/>`;
    default:
      return `<circle cx="${X}" cy="${Y}" r="${r}" fill="${color}" stroke="white" stroke-width="0.8"/>`;
  }
}

if (svgPath) {
  mkdirSync(dirname(svgPath), { recursive: true });
  writeFileSync(svgPath, scalingSvg());
}

const result = {
  backend: backend.name,
  backendDetail: backend.detail,
  model: 'mlp:784-W-10',
  dataset: 'mnist',
  quick,
  steps,
  cheapSteps,
  rounds,
  kroneckerStepsAtWidth: Object.fromEntries(widths.map((w) => [w, kroneckerSteps(w)])),
  warmup: {
    ordinaryFromStep: ORDINARY_FROM,
    periodicFromStep: { kronecker: periodicFrom(steps), others: periodicFrom(cheapSteps) },
    period: PERIOD,
  },
  batchSweep: { width: BASE_WIDTH, sizes: batchSizes },
  widthSweep: { batch: BASE_BATCH, sizes: widths },
  optimizers,
  points,
  skipped,
  slopes,
  refreshFromRuns,
  curvatureStepFromRuns,
  components,
  tolerance: TOLERANCE,
  flags,
  svg: svgPath ?? null,
  loadAverage: { before: loadBefore, after: loadavg()[0]! },
  pipelineTensorLeak,
  tensorLeak: tf.memory().numTensors - tensorsBefore,
  sweepSeconds,
  totalSeconds: (performance.now() - benchStarted) / 1000,
};

if (json) console.log(JSON.stringify(result));
else {
  const f = (v: number | undefined, d = 2): string =>
    v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d);
  console.log(
    `\n${backend.name} (${backend.detail}), mlp:784-W-10, MNIST; kfac/ring/reng one run of ${steps} steps per point, the others median of ${rounds} rounds of ${cheapSteps} steps; amortized ms/step (ordinary / every-10th)`,
  );
  for (const [axis, sizes] of [
    ['batch', batchSizes],
    ['width', widths],
  ] as const) {
    console.log(`\n  vs ${axis} (${axis === 'batch' ? `W = ${BASE_WIDTH}` : `m = ${BASE_BATCH}`})`);
    console.log(`  ${'optimizer'.padEnd(9)}${sizes.map((s) => String(s).padStart(22)).join('')}`);
    for (const optimizer of optimizers) {
      const cells = sizes.map((s) => {
        const p = points.find(
          (q) =>
            q.optimizer === optimizer &&
            (axis === 'batch'
              ? q.batch === s && q.width === BASE_WIDTH
              : q.width === s && q.batch === BASE_BATCH),
        );
        return (
          p ? `${f(p.amortizedMs, 1)} (${f(p.ordinaryMs, 0)}/${f(p.periodicMs, 0)})` : 'skipped'
        ).padStart(22);
      });
      console.log(`  ${optimizer.padEnd(9)}${cells.join('')}`);
    }
  }
  console.log(
    `\n  log–log slopes of amortized ms/step: measured (upper 3 sizes) vs expected from the multiply–add model`,
  );
  for (const [optimizer, s] of Object.entries(slopes)) {
    const cell = (r?: SlopeReport): string =>
      r
        ? `${f(r.measured)} (${f(r.measuredUpper)}) vs ${f(r.expected)} (${f(r.expectedUpper)})${r.worseThanMath ? ' WORSE' : ''}`
        : '–';
    console.log(
      `  ${optimizer.padEnd(9)} batch ${cell(s.batch).padEnd(34)} width ${cell(s.width)}`,
    );
  }
  for (const [optimizer, r] of Object.entries(refreshFromRuns)) {
    console.log(
      `  ${optimizer.padEnd(9)} refresh alone (every-10th − ordinary): slope vs batch ${f(r.batch?.measured)} (expected 0), vs width ${f(r.width?.measured)} (expected ${f(r.width?.expected)})`,
    );
  }
  if (curvatureStepFromRuns) {
    console.log(
      `  kfac − sgd ordinary step (statistics + preconditioning + sampled pass): vs batch ${f(curvatureStepFromRuns.batch?.measured)} (expected ${f(curvatureStepFromRuns.batch?.expected)}), vs width ${f(curvatureStepFromRuns.width?.measured)} (expected ${f(curvatureStepFromRuns.width?.expected)})`,
    );
  }
  if (components) {
    console.log(
      `\n  components in isolation (ms): width/batch, statistics, preconditioning, one Newton–Schulz iteration (all factors)`,
    );
    for (const r of components.rows)
      console.log(
        `    W=${String(r.width).padStart(4)} m=${String(r.batch).padStart(4)}  ${f(r.statisticsMs).padStart(8)} ${f(r.preconditionMs).padStart(9)} ${f(r.newtonIterationMs).padStart(9)}`,
      );
    for (const [name, r] of Object.entries(components.slopes))
      console.log(
        `    ${name.padEnd(24)} slope ${f(r.measured)} (upper ${f(r.measuredUpper)}) vs expected ${f(r.expected)} (upper ${f(r.expectedUpper)})${r.worseThanMath ? ' WORSE' : ''}`,
      );
    console.log(
      `    tf.matMul d×d GFLOP/s: ${Object.entries(components.matMulGflops)
        .map(([d, g]) => `${d}: ${g.toFixed(1)}`)
        .join(', ')}`,
    );
  }
  for (const s of skipped)
    console.log(`  skipped ${s.optimizer} m=${s.batch} W=${s.width}: ${s.reason}`);
  console.log(
    flags.length
      ? `\n  scaling worse than the math:\n${flags.map((x) => `    - ${x}`).join('\n')}`
      : '\n  no scaling worse than the math (tolerance +0.2 on the slope)',
  );
  console.log(
    `  plot: ${svgPath ?? 'not written'}; tensors leaked: ${result.tensorLeak}; load average ${f(result.loadAverage.before)} → ${f(result.loadAverage.after)}; ${result.totalSeconds.toFixed(0)} s`,
  );
}
