import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isGrngError } from '../src/errors.js';
import { layerMatMul, matMulInput } from '../src/nn/ops.js';
import { softmaxCrossEntropy } from '../src/nn/losses.js';
import { mlp, parseModelSpec, type Sequential } from '../src/nn/sequential.js';
import type { DenseLayer } from '../src/nn/dense.js';
import { computeStep } from '../src/operators/forwardBackward.js';
import { makeBatch, useTestBackend } from './helpers.js';
import {
  crossEntropy,
  finiteDifferences,
  forward,
  maxRelativeError,
  type RefLayer,
} from './reference.js';

const X = [
  [0.5, -1.2, 0.3],
  [1.5, 0.2, -0.7],
  [-0.4, 0.9, 1.1],
  [0.1, -0.3, -1.6],
  [2.0, 1.0, 0.5],
];
const Y = [0, 2, 1, 2, 0];

beforeAll(async () => {
  await useTestBackend();
});

async function refLayers(model: Sequential<DenseLayer>): Promise<RefLayer[]> {
  return Promise.all(
    model.layers.map(async (l) => ({
      kernel: (await model.params[l.kernel]!.array()) as number[][],
      bias: (await model.params[l.bias]!.array()) as number[],
      activation: l.activation,
    })),
  );
}

describe('dense MLP gradients', () => {
  for (const activation of ['tanh', 'relu', 'gelu'] as const) {
    it(`match float64 finite differences (${activation})`, async () => {
      const model = mlp({
        inputs: 3,
        layers: [{ units: 4, activation }, { units: 4, activation }, { units: 3 }],
        seed: 3,
        init: 'glorot',
      });
      const batch = makeBatch(X, Y);
      const { value: step, owned } = computeStep(model, batch, false);
      const ref = await refLayers(model);
      const fd = finiteDifferences(ref, () => crossEntropy(forward(ref, X), Y));
      expect(
        Math.abs(((await step.loss.array()) as number) - crossEntropy(forward(ref, X), Y)),
      ).toBeLessThan(1e-5);
      for (const [i, layer] of model.layers.entries()) {
        const gk = ((await step.grads[layer.kernel]!.array()) as number[][]).flat();
        const gb = (await step.grads[layer.bias]!.array()) as number[];
        expect(maxRelativeError(gk, fd[i]!.kernel.flat())).toBeLessThan(2e-3);
        expect(maxRelativeError(gb, fd[i]!.bias)).toBeLessThan(2e-3);
      }
      tf.dispose(owned as tf.Tensor[]);
      batch.dispose();
      model.dispose();
    });
  }

  it('per-sample signals δ equal ∂l_i/∂s_i and gradients rebuild from them (∇W = aᵀδ/m)', async () => {
    const model = mlp({
      inputs: 3,
      layers: [{ units: 4, activation: 'tanh' }, { units: 3 }],
      seed: 5,
    });
    const batch = makeBatch(X, Y);
    const { value: step, owned } = computeStep(model, batch, true);
    expect(step.signals).toHaveLength(2);
    const m = X.length;
    for (const [i, layer] of model.layers.entries()) {
      const { a, delta } = step.signals![i]!;
      expect(a.shape).toEqual([m, layer.inputs]);
      expect(delta.shape).toEqual([m, layer.units]);
      const rebuilt = tf.tidy(() => tf.div(tf.matMul(tf.transpose(a), delta), m));
      const grad = step.grads[layer.kernel]!;
      expect(
        tf.tidy(() => tf.max(tf.abs(tf.sub(rebuilt, grad))).arraySync() as number),
      ).toBeLessThan(1e-5);
      const biasFromDelta = tf.tidy(() => tf.div(tf.sum(delta, 0), m));
      expect(
        tf.tidy(
          () =>
            tf.max(tf.abs(tf.sub(biasFromDelta, step.grads[layer.bias]!))).arraySync() as number,
        ),
      ).toBeLessThan(1e-5);
      rebuilt.dispose();
      biasFromDelta.dispose();
    }
    // Last layer: δ_i = softmax(z_i) − onehot(y_i), per sample (not divided by m).
    const logits = tf.tidy(() => model.apply(model.params, batch.x).logits);
    const expected = tf.tidy(() => tf.sub(tf.softmax(logits), tf.oneHot(batch.y, 3)));
    expect(
      tf.tidy(
        () => tf.max(tf.abs(tf.sub(expected, step.signals![1]!.delta))).arraySync() as number,
      ),
    ).toBeLessThan(1e-5);
    tf.dispose([logits, expected, ...(owned as tf.Tensor[])]);
    batch.dispose();
    model.dispose();
  });
});

describe('transpose-free products', () => {
  it('layerMatMul and matMulInput equal tf.matMul in value, gradient and second order', () => {
    const a = tf.randomNormal([5, 4], 0, 1, 'float32', 1) as tf.Tensor2D;
    const w = tf.randomNormal([4, 3], 0, 1, 'float32', 2) as tf.Tensor2D;
    const loss =
      (mm: (x: tf.Tensor2D, y: tf.Tensor2D) => tf.Tensor2D) => (x: tf.Tensor, y: tf.Tensor) =>
        tf.sum(tf.square(tf.tanh(mm(x as tf.Tensor2D, y as tf.Tensor2D))));
    const gradNormSq =
      (mm: (x: tf.Tensor2D, y: tf.Tensor2D) => tf.Tensor2D) => (x: tf.Tensor, y: tf.Tensor) => {
        const [ga, gw] = tf.grads(loss(mm))([x, y]);
        return tf.add(tf.sum(tf.square(ga!)), tf.sum(tf.square(gw!)));
      };
    const maxDiff = (p: tf.Tensor, q: tf.Tensor) =>
      tf.tidy(() => tf.max(tf.abs(tf.sub(p, q))).arraySync() as number);
    tf.tidy(() => {
      expect(maxDiff(layerMatMul(a, w), tf.matMul(a, w))).toBeLessThan(1e-5);
      const first = [tf.grads(loss(tf.matMul))([a, w]), tf.grads(loss(layerMatMul))([a, w])];
      expect(maxDiff(first[0]![0]!, first[1]![0]!)).toBeLessThan(1e-5);
      expect(maxDiff(first[0]![1]!, first[1]![1]!)).toBeLessThan(1e-5);
      const second = [
        tf.grads(gradNormSq(tf.matMul))([a, w]),
        tf.grads(gradNormSq(layerMatMul))([a, w]),
      ];
      expect(maxDiff(second[0]![0]!, second[1]![0]!)).toBeLessThan(1e-4);
      expect(maxDiff(second[0]![1]!, second[1]![1]!)).toBeLessThan(1e-4);
      // matMulInput: gradient for the weights only, same values.
      const gw = tf.grad((y: tf.Tensor) =>
        tf.sum(tf.square(tf.tanh(matMulInput(a, y as tf.Tensor2D)))),
      )(w);
      expect(maxDiff(gw, first[0]![1]!)).toBeLessThan(1e-5);
    });
    tf.dispose([a, w]);
  });
});

describe('softmax cross-entropy', () => {
  it('equals the float64 reference and is stable for large logits', () => {
    const logits = [
      [1, 2, 3],
      [1000, -1000, 0],
    ];
    const value = tf.tidy(
      () =>
        softmaxCrossEntropy(
          tf.tensor2d(logits),
          tf.oneHot(tf.tensor1d([2, 1], 'int32'), 3).toFloat() as tf.Tensor2D,
        ).arraySync() as number,
    );
    expect(value).toBeCloseTo(crossEntropy(logits, [2, 1]), 3);
    expect(Number.isFinite(value)).toBe(true);
  });

  it('is twice differentiable: tf.grad of tf.grad gives the softmax Hessian-vector product', () => {
    const z = tf.tensor1d([0.3, -1.2, 2.0]);
    const v = tf.tensor1d([1, 0.5, -2]);
    const target = tf.tensor2d([[0, 1, 0]]);
    // ∇_z (∇_z L · v) = H v with H = diag(p) − p pᵀ for the cross-entropy of one sample.
    const hv = tf.grad((zz: tf.Tensor) =>
      tf.sum(
        tf.mul(
          tf.grad((z2: tf.Tensor) =>
            softmaxCrossEntropy(tf.reshape(z2, [1, 3]) as tf.Tensor2D, target),
          )(zz),
          v,
        ),
      ),
    )(z);
    const p = tf.softmax(z).arraySync() as number[];
    const vs = [1, 0.5, -2];
    const pv = p.reduce((s, pi, i) => s + pi * vs[i]!, 0);
    const expected = p.map((pi, i) => pi * vs[i]! - pi * pv);
    const got = hv.arraySync() as number[];
    got.forEach((g, i) => expect(g).toBeCloseTo(expected[i]!, 5));
    expect(Math.max(...got.map(Math.abs))).toBeGreaterThan(1e-3);
    tf.dispose([z, v, target, hv]);
  });
});

describe('model construction', () => {
  it('is deterministic for a seed and differs across seeds', async () => {
    const a = mlp({ ...parseModelSpec('mlp:6-5-3'), seed: 7 });
    const b = mlp({ ...parseModelSpec('mlp:6-5-3'), seed: 7 });
    const c = mlp({ ...parseModelSpec('mlp:6-5-3'), seed: 8 });
    const k = (m: Sequential) => m.params['dense0/kernel']!.arraySync();
    expect(k(a)).toEqual(k(b));
    expect(k(a)).not.toEqual(k(c));
    expect(a.size).toBe(6 * 5 + 5 + 5 * 3 + 3);
    [a, b, c].forEach((m) => m.dispose());
  });

  it('parses model specs and rejects bad ones with the spec in the message', () => {
    expect(parseModelSpec('mlp:784-256-10')).toMatchObject({
      inputs: 784,
      layers: [
        { units: 256, activation: 'relu' },
        { units: 10, activation: 'identity' },
      ],
    });
    expect(parseModelSpec('mlp:4-8-8-2:tanh').layers.map((l) => l.activation)).toEqual([
      'tanh',
      'tanh',
      'identity',
    ]);
    for (const bad of ['mlp:784', 'cnn:1-2', 'mlp:784-0-10', 'mlp:784-256-10:swish']) {
      let error: unknown;
      try {
        parseModelSpec(bad);
      } catch (e) {
        error = e;
      }
      expect(isGrngError(error)).toBe(true);
      expect((error as Error).message).toMatch(bad.includes('swish') ? /activation/ : /model spec/);
    }
  });

  it('rejects input of the wrong width with the expected and actual shapes', () => {
    const model = mlp({ ...parseModelSpec('mlp:3-2'), seed: 1 });
    const x = tf.zeros([2, 4]) as tf.Tensor2D;
    expect(() => model.apply(model.params, x)).toThrow(/\[batch, 3\], got \[2, 4\]/);
    x.dispose();
    model.dispose();
  });
});

describe('double backpropagation through the whole model', () => {
  for (const activation of ['tanh', 'gelu', 'relu'] as const) {
    it(`gives Hg matching finite differences of the gradient (${activation})`, () => {
      const model = mlp({
        inputs: 3,
        layers: [{ units: 5, activation }, { units: 3 }],
        seed: 11,
        init: 'glorot',
      });
      const x = tf.tensor2d(X);
      const oneHot = tf.oneHot(tf.tensor1d(Y, 'int32'), 3).toFloat() as tf.Tensor2D;
      const keys = Object.keys(model.params);
      const lossOf = (...ps: tf.Tensor[]) =>
        softmaxCrossEntropy(
          model.apply(Object.fromEntries(keys.map((k, i) => [k, ps[i]!])), x).logits,
          oneHot,
        );
      const params = keys.map((k) => model.params[k]! as tf.Tensor);
      const gradOf = (ps: tf.Tensor[]) => tf.grads(lossOf)(ps);
      // Hg = ∇(½‖∇L‖²), the quantity RENG needs, by double backprop ...
      const hg = tf.grads((...ps: tf.Tensor[]) =>
        tf.mul(
          0.5,
          tf.addN(
            tf
              .grads(lossOf)(ps)
              .map((g) => tf.sum(tf.square(g))),
          ),
        ),
      )(params);
      // ... and by central differences of the gradient along g.
      const g = gradOf(params);
      const eps = 1e-2;
      const plus = gradOf(params.map((p, i) => tf.add(p, tf.mul(g[i]!, eps))));
      const minus = gradOf(params.map((p, i) => tf.sub(p, tf.mul(g[i]!, eps))));
      const fd = plus.map((p, i) => tf.div(tf.sub(p, minus[i]!), 2 * eps));
      const flat = (ts: tf.Tensor[]) => ts.flatMap((t) => Array.from(t.dataSync()));
      const [a, b] = [flat(hg), flat(fd)];
      expect(maxRelativeError(a, b)).toBeLessThan(activation === 'relu' ? 2e-2 : 1e-2);
      expect(Math.max(...a.map(Math.abs))).toBeGreaterThan(1e-4);
      tf.dispose([x, oneHot, ...hg, ...g, ...plus, ...minus, ...fd]);
      model.dispose();
    });
  }
});
