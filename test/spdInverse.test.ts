// The float64 Cholesky inverse of the native addon (nativeSpdInverse) and fisherScan's `inverse`
// option: against a float64 reference, its residual estimate against the exact residual, the
// fallbacks, and the choice it makes in a K-FAC pipeline.
import * as tf from '@tensorflow/tfjs';
import { firstValueFrom, from, lastValueFrom, map, toArray } from 'rxjs';
import { beforeAll, beforeEach, describe, expect, it, type TestContext } from 'vitest';
import { newtonSchulzInverse } from '../src/linalg/newtonSchulz.js';
import { isGrngError } from '../src/errors.js';
import {
  nativeBlasAvailable,
  nativeLapackAvailable,
  nativeSpdInverse,
} from '../src/runtime/nativeBlas.js';
import { mlp } from '../src/nn/sequential.js';
import { fisherScan } from '../src/operators/fisherScan.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import type { Step } from '../src/types.js';
import { expectNoTensorLeftPerTest, makeBatch, useTestBackend } from './helpers.js';
import { needsPackage } from './systemPackages.js';

beforeAll(async () => {
  await useTestBackend();
});

expectNoTensorLeftPerTest();

// Tests run on wasm, where initBackend enables the native matMul whenever it loads; GRNG_BLAS=0
// (npm run test:fallback) and other backends test the Newton–Schulz path instead.
const choleskyWanted =
  (process.env.GRNG_TEST_BACKEND ?? 'wasm') === 'wasm' && process.env.GRNG_BLAS !== '0';

/** Skips without OpenBLAS; with it, the addon must have loaded its LAPACK. */
function needsLapack(context: TestContext): void {
  needsPackage(context, 'libopenblas0-pthread');
  const blas = nativeBlasAvailable();
  expect(
    blas.enabled && nativeLapackAvailable(),
    `OpenBLAS is installed, so the native addon should load its LAPACK (${blas.reason ?? blas.library})`,
  ).toBe(true);
}

/** A seeded SPD matrix QΛQᵀ, eigenvalues log-spaced from 3 to 3/cond; float64 row-major. */
function randomSpd(d: number, cond: number, seed: number): Float64Array {
  let s = seed >>> 0;
  const uniform = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
  // Q from Gram–Schmidt (twice) of a random matrix.
  const q: Float64Array[] = [];
  for (let i = 0; i < d; i++) {
    const v = Float64Array.from({ length: d }, uniform);
    for (let pass = 0; pass < 2; pass++) {
      for (const u of q) {
        let dot = 0;
        for (let k = 0; k < d; k++) dot += u[k]! * v[k]!;
        for (let k = 0; k < d; k++) v[k]! -= dot * u[k]!;
      }
    }
    const norm = Math.hypot(...v);
    q.push(v.map((x) => x / norm));
  }
  const m = new Float64Array(d * d);
  for (let k = 0; k < d; k++) {
    const lambda = 3 * Math.pow(cond, -k / (d - 1));
    for (let i = 0; i < d; i++)
      for (let j = 0; j < d; j++) m[i * d + j]! += lambda * q[k]![i]! * q[k]![j]!;
  }
  return m;
}

/** Float64 Gauss–Jordan inverse with partial pivoting (independent of LAPACK). */
function inverse64(m: ArrayLike<number>, d: number): Float64Array {
  const a = Float64Array.from(m);
  const x = new Float64Array(d * d);
  for (let i = 0; i < d; i++) x[i * d + i] = 1;
  for (let c = 0; c < d; c++) {
    let p = c;
    for (let r = c + 1; r < d; r++) if (Math.abs(a[r * d + c]!) > Math.abs(a[p * d + c]!)) p = r;
    for (const t of [a, x])
      for (let k = 0; k < d; k++) [t[c * d + k], t[p * d + k]] = [t[p * d + k]!, t[c * d + k]!];
    const pivot = a[c * d + c]!;
    for (const t of [a, x]) for (let k = 0; k < d; k++) t[c * d + k]! /= pivot;
    for (let r = 0; r < d; r++) {
      if (r === c) continue;
      const f = a[r * d + c]!;
      if (f === 0) continue;
      for (const t of [a, x]) for (let k = 0; k < d; k++) t[r * d + k]! -= f * t[c * d + k]!;
    }
  }
  return x;
}

/** ‖I − M X‖_F/√d in float64. */
function residual64(m: ArrayLike<number>, x: ArrayLike<number>, d: number): number {
  let sum = 0;
  for (let i = 0; i < d; i++) {
    for (let j = 0; j < d; j++) {
      let v = i === j ? -1 : 0;
      for (let k = 0; k < d; k++) v += m[i * d + k]! * x[k * d + j]!;
      sum += v * v;
    }
  }
  return Math.sqrt(sum / d);
}

describe.runIf(choleskyWanted)('nativeSpdInverse (float64 Cholesky through LAPACK)', () => {
  beforeEach(needsLapack);

  for (const [d, cond] of [
    [16, 1e2],
    [64, 1e4],
    [200, 1e5],
  ] as const) {
    it(`inverts a random SPD matrix (d = ${d}, condition ${cond}) to float32 rounding, exactly symmetric, with an honest residual`, async () => {
      const m64 = randomSpd(d, cond, d);
      const mt = tf.tensor2d(Float32Array.from(m64), [d, d]);
      // The reference inverts the float32 values the kernel was given.
      const m32 = await mt.data();
      const want = inverse64(m32, d);
      const result = nativeSpdInverse(mt)!;
      expect(result).toBeDefined();
      const x = await result.inverse.data();
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < d * d; i++) {
        diff += (x[i]! - want[i]!) ** 2;
        norm += want[i]! ** 2;
      }
      // Only the rounding of X to float32 is left (Newton–Schulz in float32 stops near cond·5e-9).
      expect(Math.sqrt(diff / norm)).toBeLessThan(1e-6);
      for (let i = 0; i < d; i++)
        for (let j = 0; j < i; j++) expect(x[i * d + j]).toBe(x[j * d + i]);
      // The 4-probe estimate of ‖I − M X‖_F/√d is within a factor 2 of the exact value.
      const exact = residual64(m32, x, d);
      expect(result.residual).toBeGreaterThan(exact / 2);
      expect(result.residual).toBeLessThan(exact * 2);
      tf.dispose([mt, result.inverse]);
    });
  }

  it('agrees with Newton–Schulz, in far fewer flops (which the scaling benchmark times)', async () => {
    const d = 64;
    const mt = tf.tensor2d(Float32Array.from(randomSpd(d, 1e3, 7)), [d, d]);
    const chol = nativeSpdInverse(mt)!;
    const ns = await newtonSchulzInverse(mt, { tolerance: 1e-5 });
    const gap = tf.tidy(
      () => tf.div(tf.norm(tf.sub(chol.inverse, ns.inverse)), tf.norm(chol.inverse)).dataSync()[0]!,
    );
    expect(gap).toBeLessThan(1e-4);
    expect(chol.residual).toBeLessThan(ns.residual);
    tf.dispose([mt, chol.inverse, ns.inverse]);
  });

  it('returns undefined, leaking nothing, for a matrix that is not positive definite or not square', () => {
    const indefinite = tf.tensor2d([
      [1, 2],
      [2, 1],
    ]);
    const rect = tf.zeros([2, 3]) as tf.Tensor2D;
    const ints = tf.eye(3, 3, undefined, 'int32') as tf.Tensor2D;
    const before = tf.memory().numTensors;
    expect(nativeSpdInverse(indefinite)).toBeUndefined();
    expect(nativeSpdInverse(rect)).toBeUndefined();
    expect(nativeSpdInverse(ints)).toBeUndefined();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([indefinite, rect, ints]);
  });
});

/** Three K-FAC steps of a tiny MLP through forwardBackward → fisherScan with `inverse`. */
async function scan(
  inverse: 'auto' | 'newton-schulz' | 'cholesky',
): Promise<{ iterations: number[]; residuals: number[]; aInverse: Float32Array }> {
  const model = mlp({
    inputs: 6,
    layers: [{ units: 5, activation: 'tanh' }, { units: 3 }],
    seed: 3,
  });
  const rows = Array.from({ length: 16 }, (_, i) =>
    Array.from({ length: 6 }, (_, j) => Math.sin(i * 1.7 + j * 0.9)),
  );
  const batches = [0, 1, 2].map((step) =>
    makeBatch(
      rows,
      rows.map((_, i) => (i + step) % 3),
      step,
    ),
  );
  try {
    // Read inside the stream: the scan disposes its inverses when the source completes.
    const seen = await lastValueFrom(
      from(batches).pipe(
        forwardBackward(model, { signals: true }),
        fisherScan(model, { lambda: 1e-3, rho: 0, norm: 'mean' }, { inverseEvery: 1, inverse }),
        map((s: Step) => {
          const result = {
            iterations: s.curvature!.newtonIterations,
            residual: s.curvature!.newtonResidual,
            aInverse: s.curvature!.layers[0]!.aInverse.dataSync() as Float32Array,
          };
          return result;
        }),
        toArray(),
      ),
    );
    return {
      iterations: seen.map((s) => s.iterations),
      residuals: seen.map((s) => s.residual),
      aInverse: seen[seen.length - 1]!.aInverse,
    };
  } finally {
    model.dispose();
    for (const b of batches) b.dispose();
  }
}

describe('fisherScan inverse option', () => {
  it.runIf(choleskyWanted)(
    'auto uses Cholesky where the native LAPACK is loaded (0 Newton iterations) and matches Newton–Schulz',
    async (context) => {
      needsLapack(context);
      const auto = await scan('auto');
      const ns = await scan('newton-schulz');
      expect(auto.iterations).toEqual([0, 0, 0]);
      expect(ns.iterations[0]).toBeGreaterThan(0);
      for (const r of auto.residuals) expect(r).toBeLessThan(1e-5);
      let diff = 0;
      let norm = 0;
      for (let i = 0; i < auto.aInverse.length; i++) {
        diff += (auto.aInverse[i]! - ns.aInverse[i]!) ** 2;
        norm += auto.aInverse[i]! ** 2;
      }
      expect(Math.sqrt(diff / norm)).toBeLessThan(1e-3);
    },
  );

  it('cholesky where it cannot run is an invalid-option error naming inverse, before any step', async () => {
    const backend = tf.getBackend();
    await tf.setBackend('cpu');
    try {
      const model = mlp({ inputs: 6, layers: [{ units: 3 }], seed: 3 });
      const batch = makeBatch([[1, 2, 3, 4, 5, 6]], [1]);
      let caught: unknown;
      try {
        await firstValueFrom(
          from([batch]).pipe(
            forwardBackward(model, { signals: true }),
            fisherScan(model, { lambda: 1e-3, rho: 0, norm: 'mean' }, { inverse: 'cholesky' }),
          ),
        );
      } catch (error) {
        caught = error;
      }
      model.dispose();
      batch.dispose();
      expect(isGrngError(caught)).toBe(true);
      expect((caught as { code: string }).code).toBe('invalid-option');
      expect((caught as Error).message).toMatch(
        /^invalid inverse: "cholesky" needs the native BLAS/,
      );
      const auto = await scan('auto');
      expect(auto.iterations[0]).toBeGreaterThan(0);
    } finally {
      await tf.setBackend(backend);
    }
  });
});
