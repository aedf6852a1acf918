// K-FAC statistics on their fast paths against the plain tfjs ones they replace: the native
// ssyrk fold of a batch into the factor averages (foldFactors) and the true-Fisher signals taken
// from the training step's own forward pass (sampledSignals).
import * as tf from '@tensorflow/tfjs';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { batchFactors, foldFactors } from '../src/curvature/blocks/dense.js';
import { startAverage, updateAverage } from '../src/curvature/movingAverage.js';
import { sampledLabelPass, sampledSignals } from '../src/nn/sampledLabels.js';
import { nativeMatMulActive } from '../src/runtime/matMulMode.js';
import {
  nativeBlasCounts,
  nativeBlasStatus,
  nativeDot,
  nativeFiniteFlags,
} from '../src/runtime/nativeBlas.js';
import { finiteFlags } from '../src/operators/guardFinite.js';
import { sumOfProducts, sumOfSquares } from '../src/linalg/reductions.js';
import { computeStep } from '../src/operators/forwardBackward.js';
import { mlp } from '../src/nn/sequential.js';
import type { Activation } from '../src/nn/activations.js';
import { expectNoTensorLeftPerTest, makeBatch, onFallback, useTestBackend } from './helpers.js';
import { needsPackage } from './systemPackages.js';

let backend = '';
beforeAll(async () => {
  backend = await useTestBackend();
});
expectNoTensorLeftPerTest();

/** max |a − b| / max |b|. */
function relativeGap(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.div(tf.max(tf.abs(tf.sub(a, b))), tf.max(tf.abs(b))).dataSync()[0]!);
}

describe('foldFactors', () => {
  it('equals batchFactors + startAverage/updateAverage over several batches, exactly symmetric', async () => {
    const beta = 0.9;
    let fast: ReturnType<typeof foldFactors> | undefined;
    let slow:
      { a: ReturnType<typeof startAverage>; g: ReturnType<typeof startAverage> } | undefined;
    for (let t = 0; t < 4; t++) {
      const a = tf.randomNormal([48, 37], 0, 1, 'float32', 10 + t) as tf.Tensor2D;
      const delta = tf.randomNormal([48, 21], 0, 1, 'float32', 20 + t) as tf.Tensor2D;
      const nextFast = foldFactors(fast, a, delta, beta);
      const fresh = batchFactors(a, delta);
      const nextSlow = slow
        ? { a: updateAverage(slow.a, fresh.a, beta), g: updateAverage(slow.g, fresh.g, beta) }
        : { a: startAverage(fresh.a, beta), g: startAverage(fresh.g, beta) };
      tf.dispose([
        a,
        delta,
        fresh.a,
        fresh.g,
        ...(fast ? [fast.a.sum, fast.g.sum] : []),
        ...(slow ? [slow.a.sum, slow.g.sum] : []),
      ]);
      fast = nextFast;
      slow = nextSlow;
      expect(fast.a.weight).toBeCloseTo(slow.a.weight, 12);
      expect(fast.g.weight).toBeCloseTo(slow.g.weight, 12);
      expect(relativeGap(fast.a.sum, slow.a.sum)).toBeLessThan(1e-6);
      expect(relativeGap(fast.g.sum, slow.g.sum)).toBeLessThan(1e-6);
    }
    const a = (await fast!.a.sum.array()) as number[][];
    expect(a.every((row, i) => row.every((v, j) => v === a[j]![i]))).toBe(true);
    expect(fast!.a.sum.shape).toEqual([38, 38]);
    tf.dispose([fast!.a.sum, fast!.g.sum, slow!.a.sum, slow!.g.sum]);
  });
});

describe('sampledSignals', () => {
  for (const activation of ['relu', 'tanh', 'identity'] as const) {
    it(`gives the sampled-label pass's signals from the step's forward pass (hidden ${activation})`, () => {
      const model = mlp({
        inputs: 9,
        layers: [{ units: 7, activation }, { units: 6, activation }, { units: 4 }],
        seed: 4,
      });
      const rows = Array.from({ length: 24 }, (_, i) =>
        Array.from({ length: 9 }, (_, j) => Math.cos(i * 0.7 + j * 1.3) * 2),
      );
      const batch = makeBatch(
        rows,
        rows.map((_, i) => i % 4),
      );
      const step = computeStep(model, batch, true);
      const calls = nativeBlasCounts().native;
      const byHand = sampledSignals(model, step.value.signals!, 77)!;
      const byGrad = sampledLabelPass(model, batch.x, { signals: true, seed: 77 }).deltas!;
      // Same labels drawn (the last layer's δ̃ holds −1 at the sampled class), same chain rule.
      for (let l = 0; l < 3; l++)
        expect(relativeGap(byHand[l]!, byGrad[l]!), `layer ${l}`).toBeLessThan(1e-5);
      // On wasm with the native BLAS the δ·Wᵀ products go to it.
      if (backend === 'wasm' && nativeMatMulActive())
        expect(nativeBlasCounts().native).toBeGreaterThan(calls);
      tf.dispose([...byHand, ...byGrad, ...step.owned]);
      model.dispose();
      batch.dispose();
    });
  }

  it('declines models whose derivative it cannot read off the activations (GELU, non-identity output)', () => {
    for (const layers of [
      [{ units: 5, activation: 'gelu' as Activation }, { units: 3 }],
      [{ units: 5 }, { units: 3, activation: 'tanh' as Activation }],
    ]) {
      const model = mlp({ inputs: 4, layers, seed: 1 });
      const a = tf.zeros([2, 4]) as tf.Tensor2D;
      const signals = model.layers.map((l) => ({
        layer: l.name,
        a,
        delta: tf.zeros([2, l.units]) as tf.Tensor2D,
      }));
      expect(sampledSignals(model, signals, 1)).toBeUndefined();
      tf.dispose([a, ...signals.map((s) => s.delta)]);
      model.dispose();
    }
  });
});

describe('sumOfProducts / sumOfSquares', () => {
  it('equal the tfjs reductions (one native pass with float64 accumulation on wasm) and propagate NaN', () => {
    const a = tf.randomNormal([300, 70], 0, 1, 'float32', 1);
    const b = tf.randomNormal([300, 70], 0, 1, 'float32', 2);
    const small = tf.randomNormal([5, 7], 0, 1, 'float32', 3);
    const withNaN = tf.tidy(() =>
      tf.where(tf.equal(tf.range(0, 21000).reshape([300, 70]), 123), tf.fill([300, 70], NaN), a),
    );
    const read = (f: () => tf.Scalar): number => tf.tidy(() => f().dataSync()[0]!);
    // Float64 references from the values themselves.
    const [av, bv, sv] = [a.dataSync(), b.dataSync(), small.dataSync()];
    let ab = 0;
    let aa = 0;
    let ss = 0;
    for (let i = 0; i < av.length; i++) {
      ab += av[i]! * bv[i]!;
      aa += av[i]! * av[i]!;
    }
    for (const v of sv) ss += v * v;
    expect(read(() => sumOfProducts(a, b))).toBeCloseTo(ab, 2);
    expect(read(() => sumOfSquares(a)) / aa).toBeCloseTo(1, 6);
    expect(read(() => sumOfSquares(small)) / ss).toBeCloseTo(1, 6);
    expect(read(() => sumOfSquares(withNaN))).toBeNaN();
    tf.dispose([a, b, small, withNaN]);
  });
});

describe('finiteFlags', () => {
  it('flags NaN, +Inf and -Inf anywhere in a tensor (native exponent scan on wasm, sums elsewhere), in key order', () => {
    const n = 70_001; // not a multiple of the native loop's 8 lanes
    const at = (i: number, v: number): tf.Tensor =>
      tf.tidy(() => tf.where(tf.equal(tf.range(0, n), i), tf.fill([n], v), tf.ones([n])));
    const tensors = {
      clean: tf.ones([n]),
      nanLast: at(n - 1, NaN),
      infFirst: at(0, Infinity),
      minusInf: at(12_345, -Infinity),
      tiny: tf.fill([3], 1e-45),
      scalar: tf.scalar(2),
    };
    const flags = finiteFlags(tensors);
    expect(Array.from(flags.dataSync())).toEqual([1, 0, 0, 0, 1, 1]);
    tf.dispose([flags, ...Object.values(tensors)]);
  });
});

// GRNG_BLAS=0 (npm run test:fallback) and other backends have no native kernels to compare.
describe.runIf(
  process.env.GRNG_BLAS !== '0' && (process.env.GRNG_TEST_BACKEND ?? 'wasm') === 'wasm',
)('the native kernels against the tfjs fallback (wasm with OpenBLAS)', () => {
  beforeEach((context) => {
    needsPackage(context, 'libopenblas0-pthread');
    const status = nativeBlasStatus();
    expect(
      status?.enabled,
      `OpenBLAS is installed, so the native addon should be loaded on wasm (${status?.reason})`,
    ).toBe(true);
  });

  it('nativeDot: the dot of the values, as the fallback gives it, and NaN propagated', async () => {
    const a = tf.randomNormal([300, 70], 0, 1, 'float32', 1);
    const b = tf.randomNormal([300, 70], 0, 1, 'float32', 2);
    const withNaN = tf.tidy(() =>
      tf.where(tf.equal(tf.range(0, 21000).reshape([300, 70]), 123), tf.fill([300, 70], NaN), a),
    );
    const [av, bv] = [await a.data(), await b.data()];
    let exact = 0;
    let magnitude = 0;
    for (let i = 0; i < av.length; i++) {
      exact += av[i]! * bv[i]!;
      magnitude += Math.abs(av[i]! * bv[i]!);
    }
    const native = nativeDot(a, b);
    const nativeNaN = nativeDot(withNaN, b);
    const fallback = onFallback(() => sumOfProducts(a, b));
    const read = async (t: tf.Tensor | undefined): Promise<number> =>
      t ? (await t.data())[0]! : Number.NaN;
    const [got, gotNaN, want] = [await read(native), await read(nativeNaN), await read(fallback)];
    tf.dispose([
      a,
      b,
      withNaN,
      fallback,
      ...(native ? [native] : []),
      ...(nativeNaN ? [nativeNaN] : []),
    ]);
    expect(native, 'nativeDot should run on wasm with the addon').toBeDefined();
    // Within one float32 rounding per term of the float64 dot (OpenBLAS 0.3.21's dsdot lands at
    // ~3% of that bound here, the fallback's float32 sum at ~30%), and close to the fallback.
    expect(Math.abs(got - exact)).toBeLessThanOrEqual(magnitude * 2 ** -24);
    expect(Math.abs(got - want)).toBeLessThanOrEqual(magnitude * 1e-6);
    expect(gotNaN).toBeNaN();
  });

  it('nativeFiniteFlags: the flags of the fallback (NaN, +Inf, -Inf anywhere, denormals finite), in key order', async () => {
    const n = 70_001; // not a multiple of the native loop's 8 lanes
    const at = (i: number, v: number): tf.Tensor =>
      tf.tidy(() => tf.where(tf.equal(tf.range(0, n), i), tf.fill([n], v), tf.ones([n])));
    const tensors = {
      clean: tf.ones([n]),
      nanLast: at(n - 1, NaN),
      infFirst: at(0, Infinity),
      minusInf: at(12_345, -Infinity),
      tiny: tf.fill([3], 1e-45),
      scalar: tf.scalar(2),
    };
    const native = nativeFiniteFlags(Object.values(tensors));
    const fallback = onFallback(() => finiteFlags(tensors));
    const [got, want] = [
      native ? Array.from(await native.data()) : undefined,
      Array.from(await fallback.data()),
    ];
    tf.dispose([fallback, ...(native ? [native] : []), ...Object.values(tensors)]);
    expect(got).toEqual(want);
    expect(got).toEqual([1, 0, 0, 0, 1, 1]);
  });
});
