// The native sliding-window kernels (runtime/nativeWindowKernels.ts: im2col, col2im, max pooling
// and its routing) against the tfjs-op paths they replace, on wasm with the addon: the same
// values, the same gradients, the same second derivatives (RENG's Hg), NaN kept, no leaks.
// test/conv.test.ts checks both paths against float64 references (it runs again in
// npm run test:fallback, with GRNG_BLAS=0).
import * as tf from '@tensorflow/tfjs';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  extractPatches,
  foldFromOps,
  foldPatches,
  patchesFromOps,
  windowGeometry,
  type WindowGeometry,
} from '../src/linalg/patches.js';
import { poolLayer } from '../src/nn/pool.js';
import { nativeBlasStatus } from '../src/runtime/nativeBlas.js';
import {
  nativeHomogeneousPatches,
  nativeMaxPool,
  nativePatches,
} from '../src/runtime/nativeWindowKernels.js';
import { expectNoTensorLeftPerTest, onFallback, useTestBackend } from './helpers.js';
import { needsPackage } from './systemPackages.js';

beforeAll(async () => {
  await useTestBackend();
});
expectNoTensorLeftPerTest();

const close = (a: tf.Tensor, b: tf.Tensor, tolerance = 1e-5): void => {
  expect(a.shape).toEqual(b.shape);
  const [x, y] = [a.dataSync(), b.dataSync()];
  let worst = 0;
  for (let i = 0; i < x.length; i++)
    worst = Math.max(worst, Math.abs(x[i]! - y[i]!) / (1 + Math.abs(y[i]!)));
  expect(worst).toBeLessThanOrEqual(tolerance);
};

type Case = [h: number, w: number, c: number, kh: number, kw: number, s: number, 'same' | 'valid'];
const CASES: Case[] = [
  [7, 6, 2, 3, 2, 1, 'same'],
  [7, 6, 2, 3, 2, 2, 'same'],
  [8, 5, 3, 2, 3, 2, 'valid'],
  [6, 6, 2, 4, 4, 3, 'same'],
  [5, 5, 20, 3, 3, 1, 'same'], // ≥ 16 channels: the memcpy branch
  [28, 28, 1, 3, 3, 1, 'same'],
];

describe.runIf(
  process.env.GRNG_BLAS !== '0' && (process.env.GRNG_TEST_BACKEND ?? 'wasm') === 'wasm',
)('native window kernels against the tfjs ops (wasm with OpenBLAS)', () => {
  beforeEach((context) => {
    needsPackage(context, 'libopenblas0-pthread');
    expect(nativeBlasStatus()?.enabled, 'the native addon should be loaded on wasm').toBe(true);
  });

  for (const [h, w, c, kh, kw, s, padding] of CASES) {
    const label = `${h}×${w}×${c}, ${kh}×${kw} stride ${s} ${padding}`;
    const geometry: WindowGeometry = windowGeometry([h, w, c], [kh, kw], [s, s], padding);

    it(`${label}: patches and fold equal the ops, with gradients of both orders`, () => {
      tf.tidy(() => {
        const x = tf.randomNormal([3, h, w, c], 0, 1, 'float32', 1);
        const native = nativePatches(x, geometry);
        expect(native, 'the native kernel runs here').toBeDefined();
        close(native!, patchesFromOps(x, geometry));
        close(nativePatches(x, geometry, -7)!, patchesFromOps(x, geometry, -7));
        // KFC's rows √T·[ā; 1], and their gradient (the constant column drops out).
        const homogeneous = (v: tf.Tensor) =>
          tf.mul(
            tf.concat([patchesFromOps(v, geometry), tf.ones([...native!.shape.slice(0, 3), 1])], 3),
            3,
          );
        close(nativeHomogeneousPatches(x, geometry, 3)!, homogeneous(x));
        const r = tf.randomNormal(
          [3, ...native!.shape.slice(1, 3), native!.shape[3]! + 1],
          0,
          1,
          'float32',
          9,
        );
        close(
          tf.grad((v: tf.Tensor) => tf.sum(tf.mul(nativeHomogeneousPatches(v, geometry, 3)!, r)))(
            x,
          ),
          tf.grad((v: tf.Tensor) => tf.sum(tf.mul(homogeneous(v), r)))(x),
        );
        const p = tf.randomNormal(native!.shape, 0, 1, 'float32', 2);
        close(foldPatches(p, geometry), foldFromOps(p, geometry));
        // A nonlinear scalar through both, so the second derivative is not trivially zero:
        // f(x) = Σ fold(patches(x)²·q); its gradient and the gradient of ‖∇f‖² through each path.
        const q = tf.randomNormal(native!.shape, 0, 1, 'float32', 3);
        const f = (path: 'native' | 'ops') => (v: tf.Tensor) => {
          const patches =
            path === 'native' ? extractPatches(v, geometry) : patchesFromOps(v, geometry);
          const fold = (t: tf.Tensor) =>
            path === 'native' ? foldPatches(t, geometry) : foldFromOps(t, geometry);
          return tf.sum(tf.square(fold(tf.mul(tf.square(patches), q))));
        };
        const second = (path: 'native' | 'ops') =>
          tf.grad((v: tf.Tensor) => tf.sum(tf.square(tf.grad(f(path))(v))))(x);
        close(tf.grad(f('native'))(x), tf.grad(f('ops'))(x), 1e-4);
        close(second('native'), second('ops'), 1e-4);
      });
    });

    it(`${label}: max pooling equals the ops path, its gradient and its second derivative`, () => {
      const pool = poolLayer({
        name: 'p',
        kind: 'maxPool',
        inputShape: [h, w, c],
        poolSize: [kh, kw],
        strides: [s, s],
        padding,
      });
      tf.tidy(() => {
        // Ties on purpose (rounded values): both paths route to the first maximum.
        const x = tf.round(tf.mul(tf.randomNormal([3, h, w, c], 0, 1, 'float32', 4), 2));
        const weights = tf.randomNormal([3, ...pool.outputShape], 0, 1, 'float32', 5);
        const loss = (v: tf.Tensor) => tf.sum(tf.mul(tf.square(pool.apply({}, v)), weights));
        const hg = (v: tf.Tensor) =>
          tf.grad((u: tf.Tensor) => tf.sum(tf.square(tf.grad(loss)(u))))(v);
        expect(nativeMaxPool(x, geometry), 'the native kernel runs here').toBeDefined();
        const native = [pool.apply({}, x), tf.grad(loss)(x), hg(x)];
        const ops = onFallback(() =>
          tf.tidy(() => {
            expect(nativeMaxPool(x, geometry)).toBeUndefined();
            return [pool.apply({}, x), tf.grad(loss)(x), hg(x)];
          }),
        );
        native.forEach((t, i) => close(t, ops[i]!));
      });
    });
  }

  it('max pooling keeps a NaN in its window, and the kernels leak nothing over many calls', () => {
    const geometry = windowGeometry([4, 4, 2], [2, 2], [2, 2], 'valid');
    tf.tidy(() => {
      const values = new Float32Array(32).fill(1);
      values[5] = NaN;
      const pooled = nativeMaxPool(tf.tensor4d(values, [1, 4, 4, 2]), geometry)!.dataSync();
      expect(Number.isNaN(pooled[3])).toBe(true); // output (0, 1), channel 1: rows 0–1, columns 2–3
      expect(Array.from(pooled).filter(Number.isNaN)).toHaveLength(1);
    });
    const x = tf.randomNormal([2, 4, 4, 2]);
    const before = tf.memory().numTensors;
    for (let i = 0; i < 50; i++)
      tf.tidy(() => {
        tf.grad((v: tf.Tensor) => tf.sum(nativeMaxPool(v, geometry)!))(x);
        tf.grad((v: tf.Tensor) =>
          tf.sum(tf.square(foldPatches(extractPatches(v, geometry), geometry))),
        )(x);
      });
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
  });
});
