// Convolution and pooling (docs/algorithms.md, KFC): patches in HWIO order with tfjs's padding,
// the patch-based conv against tf.conv2d and a float64 loop, its gradients against float64
// formulas and finite differences, chunking, pooling against tf.maxPool/avgPool, and RENG's Hg
// (double backprop) through conv and pooling against finite differences.
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { convOutputSize, extractPatches, windowGeometry } from '../src/linalg/patches.js';
import { conv2dLayer, PATCH_CHUNK_ELEMENTS } from '../src/nn/conv2d.js';
import { initConv2d } from '../src/nn/init.js';
import { poolLayer } from '../src/nn/pool.js';
import { finiteDifferenceHg, hessianGradientProduct } from '../src/optim/reng.js';
import type { Params } from '../src/types.js';
import { axisRef, convRef, maxError, patchesRef, uniform, type Image } from './convReference.js';
import { smallCnn } from './cnnModels.js';
import { expectNoTensorLeftPerTest, useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});
expectNoTensorLeftPerTest();

type Case = readonly [
  h: number,
  w: number,
  c: number,
  kh: number,
  kw: number,
  s: number,
  'same' | 'valid',
];
// Stride 1 and 2 (and 3), valid and same, kh ≠ kw, odd and even sizes.
const CASES: readonly Case[] = [
  [7, 6, 2, 3, 2, 1, 'same'],
  [7, 6, 2, 3, 2, 2, 'same'],
  [8, 5, 3, 2, 3, 2, 'valid'],
  [5, 5, 1, 3, 3, 1, 'valid'],
  [6, 6, 2, 4, 4, 3, 'same'],
  [6, 7, 2, 1, 3, 2, 'valid'],
  [4, 4, 3, 2, 2, 1, 'same'],
];

const images = (n: number, h: number, w: number, c: number, seed: number): Image[] => {
  const next = uniform(seed);
  return Array.from({ length: n }, () =>
    Array.from({ length: h }, () =>
      Array.from({ length: w }, () => Array.from({ length: c }, () => Math.fround(next()))),
    ),
  );
};
const matrix = (rows: number, cols: number, seed: number): number[][] => {
  const next = uniform(seed);
  return Array.from({ length: rows }, () => Array.from({ length: cols }, next));
};
/** V = [kernel as (kh·kw·C)×F; bias] as the HWIO kernel and the bias tensors. */
const paramsOf = (v: number[][], kh: number, kw: number, c: number): Params => {
  const f = v[0]!.length;
  return {
    'c/kernel': tf.tensor4d(v.slice(0, -1).flat(), [kh, kw, c, f]),
    'c/bias': tf.tensor1d(v.at(-1)!),
  };
};

describe('patches and the patch-based convolution', () => {
  for (const [h, w, c, kh, kw, s, padding] of CASES) {
    const label = `${h}×${w}×${c}, kernel ${kh}×${kw}, stride ${s}, ${padding}`;
    it(`${label}: T and padding follow tfjs; patches, conv and tf.conv2d agree with a float64 loop`, () => {
      const geometry = windowGeometry([h, w, c], [kh, kw], [s, s], padding);
      // T = Π ceil((in + pads − k + 1)/stride), and the pads are TensorFlow's.
      const t = [
        [h, kh, geometry.rows],
        [w, kw, geometry.cols],
      ].reduce((n, [size, k, axis]) => {
        const { size: out, padBefore, padAfter } = axis as ReturnType<typeof convOutputSize>;
        expect(out).toBe(
          Math.ceil(((size as number) + padBefore + padAfter - (k as number) + 1) / s),
        );
        expect(padBefore).toBe(axisRef(size as number, k as number, s, padding).before);
        return n * out;
      }, 1);
      expect(geometry.locations).toBe(t);

      const xs = images(3, h, w, c, 11);
      const v = matrix(kh * kw * c + 1, 4, 12);
      const conv = conv2dLayer({
        name: 'c',
        index: 0,
        inputShape: [h, w, c],
        filters: 4,
        kernelSize: [kh, kw],
        strides: [s, s],
        padding,
        activation: 'identity',
      });
      expect(conv.outputShape).toEqual([geometry.rows.size, geometry.cols.size, 4]);
      tf.tidy(() => {
        const x = tf.tensor4d(xs.flat(3), [3, h, w, c]);
        const params = paramsOf(v, kh, kw, c);
        const patchesExpected = xs.map((img) =>
          patchesRef(img, kh, kw, [s, s], padding).map((p) => p.slice(0, -1)),
        );
        const patches = extractPatches(x, { kernelSize: [kh, kw], strides: [s, s], padding });
        const patchCheck = maxError(
          (patches.arraySync() as number[][][][]).map((e) => e.flat(1)),
          patchesExpected,
        );
        expect(patchCheck.error).toBe(0);

        const expected = xs.map((img) => convRef(patchesRef(img, kh, kw, [s, s], padding), v));
        const ours = conv.apply(params, x);
        const viaTf = tf.add(
          tf.conv2d(x, params['c/kernel'] as tf.Tensor4D, [s, s], padding),
          params['c/bias']!,
        );
        expect(ours.shape).toEqual(viaTf.shape);
        const flat = (y: tf.Tensor) => (y.arraySync() as number[][][][]).map((e) => e.flat(1));
        const a = maxError(flat(ours), expected);
        expect(a.error / a.scale).toBeLessThan(1e-6);
        const b = maxError(flat(ours), flat(viaTf));
        expect(b.error / b.scale).toBeLessThan(1e-6);
      });
    });

    it(`${label}: kernel, bias and input gradients equal (1/N)Σ ā δᵀ and float64 finite differences`, () => {
      const n = 2;
      const filters = 3;
      const xs = images(n, h, w, c, 21);
      const v = matrix(kh * kw * c + 1, filters, 22);
      const geometry = windowGeometry([h, w, c], [kh, kw], [s, s], padding);
      const targets = matrix(n * geometry.locations, filters, 23);
      // Per example l_n = ½ Σ_t ‖s_{n,t} − y_{n,t}‖²; the loss is their mean.
      const lossRef = (imgs: Image[], vv: number[][]): number =>
        imgs.reduce((sum, img, e) => {
          const out = convRef(patchesRef(img, kh, kw, [s, s], padding), vv);
          return (
            sum +
            out.reduce(
              (acc, row, t) =>
                acc +
                row.reduce(
                  (q, z, o) => q + 0.5 * (z - targets[e * geometry.locations + t]![o]!) ** 2,
                  0,
                ),
              0,
            )
          );
        }, 0) / imgs.length;
      // (1/N) Σ_{n,t} ā δᵀ with δ = s − y, in float64.
      const vGrad = v.map((row) => row.map(() => 0));
      xs.forEach((img, e) => {
        const patches = patchesRef(img, kh, kw, [s, s], padding);
        const out = convRef(patches, v);
        patches.forEach((p, t) =>
          p.forEach((a, i) =>
            out[t]!.forEach((z, o) => {
              vGrad[i]![o]! += (a * (z - targets[e * geometry.locations + t]![o]!)) / n;
            }),
          ),
        );
      });
      // Finite differences for the input (the conv is linear in x: central differences are exact
      // up to rounding).
      const hStep = 1e-4;
      const xGrad = xs.map((img, e) =>
        img.map((row, r) =>
          row.map((pix, q) =>
            pix.map((_, ch) => {
              const at = (delta: number) =>
                lossRef(
                  xs.map((im, ee) =>
                    ee !== e
                      ? im
                      : im.map((rr, r2) =>
                          rr.map((pp, q2) =>
                            pp.map((val, c2) =>
                              r2 === r && q2 === q && c2 === ch ? val + delta : val,
                            ),
                          ),
                        ),
                  ),
                  v,
                );
              return (at(hStep) - at(-hStep)) / (2 * hStep);
            }),
          ),
        ),
      );
      // And for one kernel entry, as a check of the float64 formula itself.
      const vPlus = v.map((row) => [...row]);
      vPlus[0]![0]! += hStep;
      const vMinus = v.map((row) => [...row]);
      vMinus[0]![0]! -= hStep;
      expect(
        Math.abs((lossRef(xs, vPlus) - lossRef(xs, vMinus)) / (2 * hStep) - vGrad[0]![0]!),
      ).toBeLessThan(1e-6);

      const conv = conv2dLayer({
        name: 'c',
        index: 0,
        inputShape: [h, w, c],
        filters,
        kernelSize: [kh, kw],
        strides: [s, s],
        padding,
        activation: 'identity',
      });
      tf.tidy(() => {
        const x = tf.tensor4d(xs.flat(3), [n, h, w, c]);
        const y = tf.tensor4d(targets.flat(), [n, geometry.rows.size, geometry.cols.size, filters]);
        const params = paramsOf(v, kh, kw, c);
        const loss = (k: tf.Tensor, b: tf.Tensor, input: tf.Tensor): tf.Scalar =>
          tf.div(
            tf.mul(
              0.5,
              tf.sum(tf.square(tf.sub(conv.apply({ 'c/kernel': k, 'c/bias': b }, input), y))),
            ),
            n,
          ) as tf.Scalar;
        const [gk, gb, gx] = tf.grads(loss)([params['c/kernel']!, params['c/bias']!, x]);
        const kernelRows = (gk!.reshape([kh * kw * c, filters]).arraySync() as number[][]).concat([
          gb!.arraySync() as number[],
        ]);
        const k = maxError(kernelRows, vGrad);
        expect(k.error / k.scale).toBeLessThan(1e-5);
        const i = maxError(gx!.arraySync(), xGrad);
        expect(i.error / i.scale).toBeLessThan(1e-4);
        // The kernel-only form (the input layer's) gives the same kernel gradient.
        const [gkData] = tf.grads(
          (kk: tf.Tensor) =>
            tf.div(
              tf.mul(
                0.5,
                tf.sum(
                  tf.square(
                    tf.sub(
                      conv.apply({ 'c/kernel': kk, 'c/bias': params['c/bias']! }, x, {
                        inputIsData: true,
                      }),
                      y,
                    ),
                  ),
                ),
              ),
              n,
            ) as tf.Scalar,
        )([params['c/kernel']!]);
        expect(maxError(gkData!.arraySync(), gk!.arraySync()).error).toBeLessThan(1e-6);
      });
    });
  }

  it('a batch larger than one chunk of patches gives the same values and gradients as per-chunk passes', () => {
    // 9×9×4 with 3×3 kernels: 36 values a patch, 81 locations, 2,916 an example; a budget of
    // 10,000 values makes chunks of 3 examples, so a batch of 8 takes three (3 + 3 + 2).
    const [h, w, c] = [9, 9, 4];
    const conv = conv2dLayer({
      name: 'c',
      index: 0,
      inputShape: [h, w, c],
      filters: 2,
      kernelSize: [3, 3],
      strides: [1, 1],
      padding: 'same',
      activation: 'identity',
      patchChunkElements: 10_000,
    });
    expect(PATCH_CHUNK_ELEMENTS).toBe(2 ** 23);
    tf.tidy(() => {
      const x = tf.randomNormal([8, h, w, c], 0, 1, 'float32', 3);
      const { kernel, bias } = initConv2d(3, 3, c, 2, 'identity', 'torch', 4);
      // The same layer with the default budget runs the batch as one chunk.
      const whole = conv2dLayer({ ...conv, inputShape: [h, w, c], activation: 'identity' });
      const lossOf = (layer: typeof conv) => (k: tf.Tensor, xx: tf.Tensor) =>
        tf.sum(tf.square(layer.apply({ 'c/kernel': k, 'c/bias': bias }, xx))) as tf.Scalar;
      const [gk, gx] = tf.grads(lossOf(conv))([kernel, x]);
      const [gkWhole, gxWhole] = tf.grads(lossOf(whole))([kernel, x]);
      const k = maxError(gk!.arraySync(), gkWhole!.arraySync());
      expect(k.error / k.scale).toBeLessThan(1e-5);
      const i = maxError(gx!.arraySync(), gxWhole!.arraySync());
      expect(i.error / i.scale).toBeLessThan(1e-6);
      const value = conv.apply({ 'c/kernel': kernel, 'c/bias': bias }, x);
      const viaTf = tf.add(tf.conv2d(x as tf.Tensor4D, kernel, 1, 'same'), bias);
      const f = maxError(value.arraySync(), viaTf.arraySync());
      expect(f.error / f.scale).toBeLessThan(1e-5);
    });
  });

  it('initConv2d: HWIO shapes; torch is U(±1/√fanIn) for kernel and bias, he N(0, 2/fanIn)', () => {
    tf.tidy(() => {
      const torch = initConv2d(3, 3, 8, 16, 'relu', 'torch', 1);
      expect(torch.kernel.shape).toEqual([3, 3, 8, 16]);
      expect(torch.bias.shape).toEqual([16]);
      const bound = 1 / Math.sqrt(72);
      expect(tf.max(tf.abs(torch.kernel)).arraySync()).toBeLessThanOrEqual(bound);
      expect(tf.max(tf.abs(torch.kernel)).arraySync()).toBeGreaterThan(0.95 * bound);
      expect(tf.max(tf.abs(torch.bias)).arraySync()).toBeLessThanOrEqual(bound);
      expect(tf.max(tf.abs(torch.bias)).arraySync()).toBeGreaterThan(0);
      const he = initConv2d(3, 3, 8, 64, 'relu', 'auto', 2);
      const std = Math.sqrt(tf.moments(he.kernel).variance.arraySync() as number);
      expect(std).toBeGreaterThan(0.9 * Math.sqrt(2 / 72));
      expect(std).toBeLessThan(1.1 * Math.sqrt(2 / 72));
      expect(tf.max(tf.abs(he.bias)).arraySync()).toBe(0);
    });
  });
});

describe('pooling', () => {
  for (const [h, w, c, kh, kw, s, padding] of CASES) {
    it(`${h}×${w}×${c}, window ${kh}×${kw}, stride ${s}, ${padding}: max and average pooling equal tfjs's, their gradients finite differences`, () => {
      tf.tidy(() => {
        const x = tf.randomNormal([2, h, w, c], 0, 1, 'float32', 5) as tf.Tensor4D;
        for (const kind of ['maxPool', 'avgPool'] as const) {
          const pool = poolLayer({
            name: 'p',
            kind,
            inputShape: [h, w, c],
            poolSize: [kh, kw],
            strides: [s, s],
            padding,
          });
          const reference = (input: tf.Tensor4D) =>
            kind === 'maxPool'
              ? tf.maxPool(input, [kh, kw], [s, s], padding)
              : tf.avgPool(input, [kh, kw], [s, s], padding);
          const ours = pool.apply({}, x);
          expect(ours.shape).toEqual([2, ...pool.outputShape]);
          const r = maxError(ours.arraySync(), reference(x).arraySync());
          expect(r.error, kind).toBeLessThan(1e-6);
          const weights = tf.randomNormal(ours.shape, 0, 1, 'float32', 6);
          const gOurs = tf.grad((input: tf.Tensor) =>
            tf.sum(tf.mul(pool.apply({}, input), weights)),
          )(x);
          // Both are piecewise linear in x: central differences are exact away from ties (tfjs's
          // own gradients are not a reference: on wasm MaxPoolGrad and on cpu AvgPoolGrad with
          // these windows disagree with finite differences).
          const values = Array.from(x.dataSync());
          const lossAt = (data: number[]): number =>
            tf
              .tidy(() => tf.sum(tf.mul(pool.apply({}, tf.tensor4d(data, x.shape)), weights)))
              .dataSync()[0]!;
          const step = 1e-3;
          const numeric = values.map((v, i) => {
            const up = [...values];
            up[i] = v + step;
            const down = [...values];
            down[i] = v - step;
            return (lossAt(up) - lossAt(down)) / (2 * step);
          });
          const g = maxError(Array.from(gOurs.dataSync()), numeric);
          expect(g.error / g.scale, kind).toBeLessThan(1e-2);
        }
      });
    });
  }
});

describe("RENG's Hg through conv and pooling", () => {
  it('double backprop equals finite differences of the gradient', () => {
    const model = smallCnn(3);
    tf.tidy(() => {
      const x = tf.randomNormal([4, 6, 6, 2], 0, 1, 'float32', 8);
      const y = tf.tensor1d([0, 2, 1, 2], 'int32');
      const params = model.params as Params;
      const keys = Object.keys(params);
      const oneHot = tf.oneHot(y, 3);
      const grads = tf.grads(
        (...ps: tf.Tensor[]) =>
          tf.losses.softmaxCrossEntropy(
            oneHot,
            model.apply(Object.fromEntries(keys.map((k, i) => [k, ps[i]!])), x).logits,
          ) as tf.Scalar,
      )(keys.map((k) => params[k]!));
      const exact = hessianGradientProduct(model, params, x, y);
      const approx = finiteDifferenceHg(
        model,
        params,
        Object.fromEntries(keys.map((k, i) => [k, grads[i]!])),
        x,
        y,
        1e-2,
      );
      const flat = (p: Params) => keys.flatMap((k) => Array.from(p[k]!.dataSync()));
      const [e, a] = [flat(exact), flat(approx)];
      const scale = Math.max(...e.map(Math.abs));
      expect(scale).toBeGreaterThan(1e-4);
      e.forEach((v, i) => expect(Math.abs(a[i]! - v) / scale).toBeLessThan(3e-2));
      expect(
        keys.every((k) => Math.max(...Array.from(exact[k]!.dataSync()).map(Math.abs)) > 0),
      ).toBe(true);
    });
    model.dispose();
  });

  // tfjs's own maxPool gradient is the MaxPoolGrad kernel, which has no gradient: differentiating
  // it again throws (measured; the aborted tape also leaks its saved tensors, so it is not run
  // here). pool.ts's is linear in dy with a constant mask.
  it('max pooling differentiates twice: the gradient of ‖∇‖² is 8·x at each maximum', () => {
    tf.tidy(() => {
      const x = tf.randomNormal([1, 4, 4, 1], 0, 1, 'float32', 9) as tf.Tensor4D;
      const pool = poolLayer({
        name: 'p',
        kind: 'maxPool',
        inputShape: [4, 4, 1],
        poolSize: [2, 2],
        strides: [2, 2],
        padding: 'valid',
      });
      const ours = (input: tf.Tensor) =>
        tf.sum(tf.square(tf.grad((z: tf.Tensor) => tf.sum(tf.square(pool.apply({}, z))))(input)));
      // ‖∇‖² = Σ 4·max², so its gradient is 8·x at each window's maximum, 0 elsewhere.
      const g = tf.grad(ours)(x);
      const mask = tf.grad((z: tf.Tensor) => tf.sum(pool.apply({}, z)))(x);
      expect(maxError(g.arraySync(), tf.mul(tf.mul(x, mask), 8).arraySync()).error).toBeLessThan(
        1e-5,
      );
    });
  });
});
