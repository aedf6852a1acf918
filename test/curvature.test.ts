import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { dampFactors } from '../src/curvature/damping.js';
import { batchFactors } from '../src/curvature/blocks/dense.js';
import {
  averageValue,
  DEFAULT_FACTOR_DECAY,
  startAverage,
  updateAverage,
} from '../src/curvature/movingAverage.js';
import {
  DEFAULT_NEWTON_CHECK_EVERY,
  DEFAULT_NEWTON_MAX_ITERATIONS,
  DEFAULT_NEWTON_TOLERANCE,
  DEFAULT_NEWTON_WARM_TRIALS,
  newtonSchulzInverse,
} from '../src/linalg/newtonSchulz.js';
import { isGrngError } from '../src/errors.js';
import { expectNoTensorLeftPerTest, useTestBackend } from './helpers.js';
import type { Matrix } from './reference.js';

beforeAll(async () => {
  await useTestBackend();
});

expectNoTensorLeftPerTest();

// ---------- float64 reference helpers (plain JS, independent of tfjs) ----------

/** mulberry32: a small seeded generator, so every matrix here is reproducible. */
function uniform(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function gaussianMatrix(rows: number, cols: number, seed: number): Matrix {
  const u = uniform(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
  return Array.from({ length: rows }, () => Array.from({ length: cols }, normal));
}

const transpose = (a: Matrix): Matrix => a[0]!.map((_, j) => a.map((row) => row[j]!));
const matMul = (a: Matrix, b: Matrix): Matrix =>
  a.map((row) => b[0]!.map((_, j) => row.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
const scale = (a: Matrix, c: number): Matrix => a.map((row) => row.map((v) => v * c));
const add = (a: Matrix, b: Matrix): Matrix => a.map((row, i) => row.map((v, j) => v + b[i]![j]!));
const identity = (d: number): Matrix =>
  Array.from({ length: d }, (_, i) => Array.from({ length: d }, (_, j) => (i === j ? 1 : 0)));
const frobenius = (a: Matrix): number => Math.sqrt(a.flat().reduce((s, v) => s + v * v, 0));
const trace = (a: Matrix): number => a.reduce((s, row, i) => s + row[i]!, 0);

/** Rows of a random orthogonal matrix: Gram–Schmidt (twice, for float64 orthogonality) of a seeded Gaussian matrix. */
function orthogonal(d: number, seed: number): Matrix {
  const q: Matrix = [];
  for (let v of gaussianMatrix(d, d, seed)) {
    for (let pass = 0; pass < 2; pass++) {
      for (const u of q) {
        const dot = u.reduce((s, x, k) => s + x * v[k]!, 0);
        v = v.map((x, k) => x - dot * u[k]!);
      }
    }
    const norm = Math.hypot(...v);
    q.push(v.map((x) => x / norm));
  }
  return q;
}

/** Q diag(f(λ)) Qᵀ with Q's rows as eigenvectors. */
function fromEigen(q: Matrix, lambda: number[], f: (l: number) => number = (l) => l): Matrix {
  const d = lambda.length;
  return Array.from({ length: d }, (_, i) =>
    Array.from({ length: d }, (_, j) => {
      let s = 0;
      for (let k = 0; k < d; k++) s += q[k]![i]! * f(lambda[k]!) * q[k]![j]!;
      return s;
    }),
  );
}

/** A random SPD matrix with eigenvalues log-spaced from 3 down to 3/cond, and its exact inverse. */
function randomSpd(
  d: number,
  cond: number,
  seed: number,
): { m: Matrix; inverse: Matrix; q: Matrix; lambda: number[] } {
  const q = orthogonal(d, seed);
  const lambda = Array.from({ length: d }, (_, i) => 3 * Math.pow(cond, -i / (d - 1)));
  return { m: fromEigen(q, lambda), inverse: fromEigen(q, lambda, (l) => 1 / l), q, lambda };
}

/** Float64 inverse of an SPD matrix by Cholesky; throws if it is not positive definite. */
function choleskyInverse(a: Matrix): Matrix {
  const d = a.length;
  const l: Matrix = Array.from({ length: d }, () => new Array<number>(d).fill(0));
  for (let i = 0; i < d; i++) {
    for (let j = 0; j <= i; j++) {
      let s = a[i]![j]!;
      for (let k = 0; k < j; k++) s -= l[i]![k]! * l[j]![k]!;
      if (i === j) {
        if (!(s > 0)) throw new Error('not positive definite');
        l[i]![i] = Math.sqrt(s);
      } else l[i]![j] = s / l[j]![j]!;
    }
  }
  // Solve L Lᵀ x = e_c for every column c.
  const columns = identity(d).map((e) => {
    const y = new Array<number>(d).fill(0);
    for (let i = 0; i < d; i++)
      y[i] = (e[i]! - l[i]!.slice(0, i).reduce((s, v, k) => s + v * y[k]!, 0)) / l[i]![i]!;
    const x = new Array<number>(d).fill(0);
    for (let i = d - 1; i >= 0; i--) {
      let s = y[i]!;
      for (let k = i + 1; k < d; k++) s -= l[k]![i]! * x[k]!;
      x[i] = s / l[i]![i]!;
    }
    return x;
  });
  return transpose(columns);
}

/** ‖X − ref‖_F/‖ref‖_F in float64, X read back from the device. */
async function relativeError(x: tf.Tensor2D, ref: Matrix): Promise<number> {
  return frobenius(add((await x.array()) as Matrix, scale(ref, -1))) / frobenius(ref);
}

/** max |got − want| / max |want|: float32-scale agreement of whole matrices. */
function maxError(got: Matrix, want: Matrix): number {
  const s = Math.max(...want.flat().map(Math.abs));
  return Math.max(...got.flat().map((v, i) => Math.abs(v - want.flat()[i]!))) / s;
}

/** Runs fn and checks that exactly the tensors it returns are new; disposing them restores the count. */
async function expectOnlyReturned<T>(
  fn: () => T | Promise<T>,
  returned: (value: T) => tf.Tensor[],
): Promise<T> {
  const before = tf.memory().numTensors;
  const value = await fn();
  const owned = returned(value);
  expect(tf.memory().numTensors).toBe(before + owned.length);
  return value;
}

function expectInvalidOption(fn: () => unknown, option: string): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(isGrngError(caught), `expected a GrngError for ${option}`).toBe(true);
  const error = caught as Error & { code: string; context: Record<string, unknown> };
  expect(error.code).toBe('invalid-option');
  expect(error.context.option).toBe(option);
  expect(error.message).toContain(option);
}

async function expectInvalidOptionAsync(fn: () => Promise<unknown>, option: string): Promise<void> {
  const before = tf.memory().numTensors;
  let caught: unknown;
  try {
    await fn();
  } catch (error) {
    caught = error;
  }
  expect(tf.memory().numTensors).toBe(before);
  expectInvalidOption(() => {
    throw caught;
  }, option);
}

// ---------- K-FAC statistics ----------

describe('batchFactors', () => {
  const m = 7;
  const a = gaussianMatrix(m, 5, 11);
  const delta = gaussianMatrix(m, 3, 12);

  it('equals ĀᵀĀ/m (ones column last, for the bias) and ΔᵀΔ/m in float64', async () => {
    const at = tf.tensor2d(a);
    const dt = tf.tensor2d(delta);
    const f = await expectOnlyReturned(
      () => batchFactors(at, dt),
      (v) => [v.a, v.g],
    );
    expect(f.a.shape).toEqual([6, 6]);
    expect(f.g.shape).toEqual([3, 3]);
    const homogeneous = a.map((row) => [...row, 1]);
    const wantA = scale(matMul(transpose(homogeneous), homogeneous), 1 / m);
    const wantG = scale(matMul(transpose(delta), delta), 1 / m);
    expect(maxError((await f.a.array()) as Matrix, wantA)).toBeLessThan(1e-6);
    expect(maxError((await f.g.array()) as Matrix, wantG)).toBeLessThan(1e-6);
    // The bias corner is mean(1·1) = 1 exactly; the last row holds the input means.
    const gotA = (await f.a.array()) as Matrix;
    expect(gotA[5]![5]).toBe(1);
    expect(gotA[5]![0]).toBeCloseTo(a.reduce((s, row) => s + row[0]!, 0) / m, 5);
    expect(at.isDisposed || dt.isDisposed).toBe(false);
    tf.dispose([f.a, f.g, at, dt]);
  });

  it('rejects inputs with different row counts', () => {
    const at = tf.zeros([4, 2]) as tf.Tensor2D;
    const dt = tf.zeros([3, 2]) as tf.Tensor2D;
    const before = tf.memory().numTensors;
    expect(() => batchFactors(at, dt)).toThrow(/same m/);
    try {
      batchFactors(at, dt);
    } catch (error) {
      expect(isGrngError(error) && error.code).toBe('shape');
    }
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([at, dt]);
  });
});

describe('factor moving average', () => {
  const samples = [1, 2, 3, 4].map((s) => gaussianMatrix(4, 4, 100 + s));

  it('bias-corrects exactly: after n updates it equals Σ βⁿ⁻ᵏ(1−β)S_k / (1 − βⁿ)', async () => {
    const beta = 0.8;
    const tensors = samples.map((s) => tf.tensor2d(s));
    let average = await expectOnlyReturned(
      () => startAverage(tensors[0]!, beta),
      (v) => [v.sum],
    );
    // The first value is the sample itself, not (1−β) of it.
    const first = averageValue(average);
    expect(maxError((await first.array()) as Matrix, samples[0]!)).toBeLessThan(1e-6);
    first.dispose();
    for (const sample of tensors.slice(1)) {
      const previous = average;
      average = await expectOnlyReturned(
        () => updateAverage(previous, sample, beta),
        (v) => [v.sum],
      );
      // Pure: the old average is left to the caller, intact.
      expect(previous.sum.isDisposed).toBe(false);
      previous.sum.dispose();
    }
    const n = samples.length;
    let wantSum = scale(samples[0]!, 0);
    samples.forEach(
      (s, k) => (wantSum = add(wantSum, scale(s, Math.pow(beta, n - 1 - k) * (1 - beta)))),
    );
    const wantWeight = 1 - Math.pow(beta, n);
    expect(average.weight).toBeCloseTo(wantWeight, 12);
    expect(maxError((await average.sum.array()) as Matrix, wantSum)).toBeLessThan(1e-6);
    const value = await expectOnlyReturned(
      () => averageValue(average),
      (v) => [v],
    );
    expect(maxError((await value.array()) as Matrix, scale(wantSum, 1 / wantWeight))).toBeLessThan(
      1e-6,
    );
    tf.dispose([value, average.sum, ...tensors]);
  });

  it('defaults to β = 0.95 and rejects a decay outside [0, 1)', () => {
    expect(DEFAULT_FACTOR_DECAY).toBe(0.95);
    const s = tf.ones([2, 2]) as tf.Tensor2D;
    const average = startAverage(s);
    expect(average.weight).toBeCloseTo(0.05, 12);
    const next = updateAverage(average, s);
    expect(next.weight).toBeCloseTo(0.95 * 0.05 + 0.05, 12);
    const before = tf.memory().numTensors;
    expectInvalidOption(() => startAverage(s, 1), 'beta');
    expectInvalidOption(() => updateAverage(average, s, -0.1), 'beta');
    expectInvalidOption(() => updateAverage(average, s, Number.NaN), 'beta');
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([s, average.sum, next.sum]);
  });
});

describe('dampFactors', () => {
  const homogeneous = gaussianMatrix(9, 4, 21).map((row) => [...row, 1]);
  const a = scale(matMul(transpose(homogeneous), homogeneous), 1 / 9);
  const signal = scale(gaussianMatrix(9, 3, 22), 0.05);
  const g = scale(matMul(transpose(signal), signal), 1 / 9);

  it('splits the damping with π = √((tr A/(in+1)) / (tr G/out)), as in float64', async () => {
    const gamma = 1e-3;
    const at = tf.tensor2d(a);
    const gt = tf.tensor2d(g);
    const damped = await expectOnlyReturned(
      () => dampFactors(at, gt, gamma),
      (v) => [v.a, v.g, v.pi],
    );
    const pi = Math.sqrt(trace(a) / 5 / (trace(g) / 3));
    expect(pi).toBeGreaterThan(5); // A is much larger than G here, so π matters
    expect(Math.abs(((await damped.pi.array()) as number) - pi) / pi).toBeLessThan(1e-5);
    expect(
      maxError(
        (await damped.a.array()) as Matrix,
        add(a, scale(identity(5), pi * Math.sqrt(gamma))),
      ),
    ).toBeLessThan(1e-6);
    expect(
      maxError(
        (await damped.g.array()) as Matrix,
        add(g, scale(identity(3), Math.sqrt(gamma) / pi)),
      ),
    ).toBeLessThan(1e-6);
    tf.dispose([damped.a, damped.g, damped.pi, at, gt]);
  });

  it('uses π = 1 where a trace is zero or π is not finite', async () => {
    const gamma = 0.04;
    const at = tf.tensor2d(a);
    const cases: Array<[tf.Tensor2D, tf.Tensor2D]> = [
      [at, tf.zeros([3, 3]) as tf.Tensor2D],
      [tf.zeros([5, 5]) as tf.Tensor2D, tf.tensor2d(g)],
      [tf.fill([5, 5], Infinity) as tf.Tensor2D, tf.tensor2d(g)],
    ];
    for (const [ta, tg] of cases) {
      const damped = dampFactors(ta, tg, gamma);
      expect(await damped.pi.array()).toBe(1);
      const gotG = (await damped.g.array()) as Matrix;
      const wantG = add((await tg.array()) as Matrix, scale(identity(3), 0.2));
      expect(maxError(gotG, wantG)).toBeLessThan(1e-6);
      tf.dispose([damped.a, damped.g, damped.pi, ta, tg]);
    }
  });

  it('rejects γ ≤ 0 or not finite, naming gamma', () => {
    const at = tf.eye(3) as tf.Tensor2D;
    const before = tf.memory().numTensors;
    for (const gamma of [0, -1e-3, Number.NaN, Infinity])
      expectInvalidOption(() => dampFactors(at, at, gamma), 'gamma');
    expect(tf.memory().numTensors).toBe(before);
    at.dispose();
  });
});

// ---------- Newton–Schulz ----------

describe('newtonSchulzInverse', () => {
  it('exports its defaults', () => {
    expect([
      DEFAULT_NEWTON_TOLERANCE,
      DEFAULT_NEWTON_MAX_ITERATIONS,
      DEFAULT_NEWTON_CHECK_EVERY,
      DEFAULT_NEWTON_WARM_TRIALS,
    ]).toEqual([1e-4, 30, 2, 0]);
  });

  // The stopping test bounds ‖I − M X‖_F/√d, and X − M⁻¹ = −M⁻¹R gives relative error ≤ ‖R‖_F,
  // so asking for relative error < 1e-4 means tolerance 1e-4/√d. Measured on wasm (float32, 8
  // seeds, d = 16, 64, 256): worst relative error 1.4e-6 at condition 1e2 in 11–14 iterations,
  // 7.1e-5 at 1e4 in 18–20, where the float32 floor (≈ cond·5e-9) stops it, not the tolerance.
  for (const d of [16, 64]) {
    for (const [cond, maxIters] of [
      [1e2, 14],
      [1e4, 22],
    ] as const) {
      it(`inverts a random SPD matrix (d = ${d}, condition ${cond}) to relative error < 1e-4 from a cold start`, async () => {
        const { m, inverse } = randomSpd(d, cond, d + cond);
        const mt = tf.tensor2d(m);
        for (const checkEvery of [1, 2]) {
          const result = await expectOnlyReturned(
            () => newtonSchulzInverse(mt, { tolerance: 1e-4 / Math.sqrt(d), checkEvery }),
            (v) => [v.inverse],
          );
          expect(result.coldStart).toBe(true);
          expect(await relativeError(result.inverse, inverse)).toBeLessThan(1e-4);
          expect(result.iterations).toBeLessThanOrEqual(maxIters);
          // Symmetrised exactly, so the preconditioner it builds stays symmetric.
          const x = (await result.inverse.array()) as Matrix;
          expect(x.every((row, i) => row.every((v, j) => v === x[j]![i]))).toBe(true);
          result.inverse.dispose();
        }
        expect(mt.isDisposed).toBe(false);
        mt.dispose();
      });
    }
  }

  it('meets relative error ≤ √d·tolerance with the default options', async () => {
    // Measured 3.3e-4 here (d = 64, condition 1e3): the default tolerance is about the residual.
    const { m, inverse } = randomSpd(64, 1e3, 3);
    const mt = tf.tensor2d(m);
    const result = await newtonSchulzInverse(mt);
    const error = await relativeError(result.inverse, inverse);
    expect(error).toBeLessThan(8 * DEFAULT_NEWTON_TOLERANCE);
    expect(result.iterations).toBeLessThanOrEqual(16);
    tf.dispose([result.inverse, mt]);
  });

  it('reports the residual ‖I − M X‖_F/√d of the returned (symmetrised) inverse', async () => {
    const { m } = randomSpd(16, 10, 5);
    const mt = tf.tensor2d(m);
    const result = await newtonSchulzInverse(mt);
    const x = (await result.inverse.array()) as Matrix;
    const want = frobenius(add(identity(16), scale(matMul(m, x), -1))) / 4;
    expect(result.residual).toBeLessThan(1e-4);
    expect(Math.abs(result.residual - want)).toBeLessThan(1e-6);
    tf.dispose([result.inverse, mt]);
  });

  it('stops at float32 precision when the tolerance is out of reach, before the cap', async () => {
    const { m, inverse } = randomSpd(64, 1e4, 7);
    const mt = tf.tensor2d(m);
    for (const checkEvery of [1, 2]) {
      const result = await newtonSchulzInverse(mt, { tolerance: 1e-12, checkEvery });
      expect(result.iterations).toBeLessThan(26);
      expect(await relativeError(result.inverse, inverse)).toBeLessThan(1e-4);
      result.inverse.dispose();
    }
    mt.dispose();
  });

  for (const [d, cond] of [
    [16, 10],
    [16, 1e2],
    [64, 10],
    [64, 1e2],
  ] as const) {
    it(`warm-starts after a 1% perturbation in ≤ 3 iterations (d = ${d}, condition ${cond})`, async () => {
      const { m, inverse } = randomSpd(d, cond, 31 + d);
      const e = gaussianMatrix(d, d, 32 + d);
      const symmetric = scale(add(e, transpose(e)), 0.5);
      const perturbed = add(m, scale(symmetric, (0.01 * frobenius(m)) / frobenius(symmetric)));
      const perturbedInverse = choleskyInverse(perturbed); // throws unless still SPD
      const previous = tf.tensor2d(inverse);
      const mt = tf.tensor2d(perturbed);
      const result = await expectOnlyReturned(
        () => newtonSchulzInverse(mt, { warmStart: previous, checkEvery: 1 }),
        (v) => [v.inverse],
      );
      expect(result.coldStart).toBe(false);
      expect(result.iterations).toBeGreaterThanOrEqual(1);
      expect(result.iterations).toBeLessThanOrEqual(3);
      expect(result.residual).toBeLessThan(1e-4);
      expect(await relativeError(result.inverse, perturbedInverse)).toBeLessThan(1e-4);
      expect(previous.isDisposed).toBe(false);
      tf.dispose([result.inverse, previous, mt]);
    });
  }

  it('needs no iteration when the warm start is already the inverse', async () => {
    const { m, inverse } = randomSpd(16, 10, 41);
    const [mt, warm] = [tf.tensor2d(m), tf.tensor2d(inverse)];
    const result = await newtonSchulzInverse(mt, { warmStart: warm });
    expect(result.iterations).toBe(0);
    expect(result.coldStart).toBe(false);
    tf.dispose([result.inverse, mt, warm]);
  });

  it('falls back to the cold start from a bad warm start and still converges', async () => {
    const d = 16;
    const { m, inverse } = randomSpd(d, 1e2, 51);
    const mt = tf.tensor2d(m);
    const warmStarts = tf.tidy(() => [
      tf.zeros([d, d]),
      tf.mul(tf.eye(d), 1e3),
      tf.neg(tf.tensor2d(inverse)),
      tf.fill([d, d], Number.NaN),
    ]) as tf.Tensor2D[];
    for (const warm of warmStarts) {
      const result = await expectOnlyReturned(
        () => newtonSchulzInverse(mt, { warmStart: warm, warmTrials: 2 }),
        (v) => [v.inverse],
      );
      expect(result.coldStart).toBe(true);
      expect(await relativeError(result.inverse, inverse)).toBeLessThan(1e-4);
      expect(warm.isDisposed).toBe(false);
      result.inverse.dispose();
    }
    tf.dispose([mt, ...warmStarts]);
  });

  it('with warmTrials, keeps a warm start whose residual passes below 1 after one iteration', async () => {
    // Each eigenvalue moved by up to ±30%: ‖I − M X₀‖_F ≈ 1.4 > 1 although its spectral radius is 0.3.
    const d = 64;
    const { inverse, q, lambda } = randomSpd(d, 1e2, 61);
    const u = uniform(62);
    const moved = lambda.map((l) => l * (1 + 0.6 * (u() - 0.5)));
    const target = fromEigen(q, moved);
    const targetInverse = fromEigen(q, moved, (l) => 1 / l);
    const [mt, warm] = [tf.tensor2d(target), tf.tensor2d(inverse)];
    const spec = await newtonSchulzInverse(mt, { warmStart: warm });
    expect(spec.coldStart).toBe(true);
    const trial = await expectOnlyReturned(
      () => newtonSchulzInverse(mt, { warmStart: warm, warmTrials: 1 }),
      (v) => [v.inverse],
    );
    expect(trial.coldStart).toBe(false);
    expect(trial.iterations).toBeLessThan(spec.iterations / 2);
    expect(await relativeError(trial.inverse, targetInverse)).toBeLessThan(1e-4);
    tf.dispose([spec.inverse, trial.inverse, mt, warm]);
  });

  it('reports, without throwing or leaking, a residual that shows failure when M is not SPD', async () => {
    const mt = tf.tidy(() => tf.neg(tf.eye(8))) as tf.Tensor2D;
    const result = await expectOnlyReturned(
      () => newtonSchulzInverse(mt),
      (v) => [v.inverse],
    );
    expect(result.residual > 1 || !Number.isFinite(result.residual)).toBe(true);
    tf.dispose([result.inverse, mt]);
  });

  it('rejects bad options, naming them, and mismatched shapes', async () => {
    const mt = tf.eye(4) as tf.Tensor2D;
    await expectInvalidOptionAsync(
      () => newtonSchulzInverse(mt, { tolerance: -1e-4 }),
      'tolerance',
    );
    await expectInvalidOptionAsync(() => newtonSchulzInverse(mt, { tolerance: 0 }), 'tolerance');
    await expectInvalidOptionAsync(
      () => newtonSchulzInverse(mt, { tolerance: Number.NaN }),
      'tolerance',
    );
    await expectInvalidOptionAsync(
      () => newtonSchulzInverse(mt, { maxIterations: 0 }),
      'maxIterations',
    );
    await expectInvalidOptionAsync(
      () => newtonSchulzInverse(mt, { maxIterations: 1.5 }),
      'maxIterations',
    );
    await expectInvalidOptionAsync(() => newtonSchulzInverse(mt, { checkEvery: 0 }), 'checkEvery');
    await expectInvalidOptionAsync(() => newtonSchulzInverse(mt, { warmTrials: -1 }), 'warmTrials');
    await expectInvalidOptionAsync(
      () => newtonSchulzInverse(mt, { tolerence: 1e-3 } as never),
      'newtonSchulzInverse option "tolerence"',
    );
    const wrong = tf.eye(3) as tf.Tensor2D;
    const rectangular = tf.zeros([4, 3]) as tf.Tensor2D;
    await expect(newtonSchulzInverse(mt, { warmStart: wrong })).rejects.toMatchObject({
      code: 'shape',
    });
    await expect(newtonSchulzInverse(rectangular)).rejects.toMatchObject({ code: 'shape' });
    tf.dispose([mt, wrong, rectangular]);
  });
});
