import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { sampledLabelPass } from '../src/nn/sampledLabels.js';
import { syntheticDataset } from '../src/data/synthetic.js';
import { isGrngError } from '../src/errors.js';
import { mlp, type Sequential } from '../src/nn/sequential.js';
import { computeStep, forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { nativeBlasStatus, nativeSophiaUpdate } from '../src/runtime/nativeBlas.js';
import { update } from '../src/operators/update.js';
import {
  sophia,
  sophiaHessianSeed,
  type SophiaOptions,
  type SophiaState,
} from '../src/optim/sophia.js';
import type { TransformResult } from '../src/optim/transform.js';
import { disposeReplaced } from '../src/linalg/tree.js';
import { batches } from '../src/streams/batches.js';
import type { MetricsRow, Params } from '../src/types.js';
import { maxRelativeError } from './reference.js';
import { makeBatch, useTestBackend, collectRows } from './helpers.js';
import { needsPackage } from './systemPackages.js';

beforeAll(async () => {
  await useTestBackend();
});

const X = [
  [0.5, -1.2, 0.3],
  [1.1, 0.4, -0.7],
  [-0.3, 0.8, 1.5],
  [0.9, -0.6, -1.1],
  [-1.4, 0.2, 0.6],
  [0.2, 1.3, -0.4],
];
const Y = [0, 1, 2, 0, 1, 2];

const read = (tree: Params): Record<string, number[]> =>
  Object.fromEntries(Object.entries(tree).map(([k, t]) => [k, Array.from(t.dataSync())]));

describe('Sophia against hand-computed steps (plain JS)', () => {
  it('EMA of g every step, EMA of B·ĝ⊙ĝ every k steps, clip, decoupled decay, schedules, win rate', () => {
    const model = mlp({
      inputs: 3,
      layers: [{ units: 4, activation: 'tanh' }, { units: 3 }],
      seed: 2,
    });
    const before = tf.memory().numTensors;
    const lr = (t: number): number => 0.05 / (1 + t);
    const [b1, b2, gamma, wd, eps, every, seed] = [0.9, 0.8, 0.5, 0.2, 1e-12, 2, 5];
    const opt = sophia({
      model,
      learningRate: lr,
      b1,
      b2,
      gamma,
      weightDecay: wd,
      eps,
      hessianEvery: every,
      seed,
    });
    const params = model.params as Params;
    const keys = Object.keys(params);
    let state = tf.tidy(
      () => opt.init(params) as unknown as tf.TensorContainer,
    ) as unknown as SophiaState;
    const m: Record<string, number[]> = Object.fromEntries(
      keys.map((k) => [k, new Array<number>(params[k]!.size).fill(0)]),
    );
    const h: Record<string, number[]> = Object.fromEntries(
      keys.map((k) => [k, new Array<number>(params[k]!.size).fill(0)]),
    );
    const batch = makeBatch(X, Y);
    const winRates: number[] = [];
    const hatSeen: Record<string, number[]>[] = [];
    for (let step = 0; step < 5; step++) {
      const theta = read(params);
      const { value, owned } = computeStep(model, batch, false);
      const g = read(value.grads);
      // The Hessian sample the optimizer must use: same model, batch and documented seed.
      if (step % every === 0) {
        const pass = sampledLabelPass(model, batch.x, {
          grads: true,
          seed: sophiaHessianSeed(seed, step),
        });
        const hat = read(pass.grads!);
        tf.dispose(Object.values(pass.grads!));
        hatSeen.push(hat);
        for (const k of keys)
          h[k] = h[k]!.map((v, j) => b2 * v + (1 - b2) * X.length * hat[k]![j]! ** 2);
      }
      let unclipped = 0;
      let total = 0;
      const expected: Record<string, number[]> = {};
      for (const k of keys) {
        m[k] = m[k]!.map((v, j) => b1 * v + (1 - b1) * g[k]![j]!);
        expected[k] = m[k]!.map((mj, j) => {
          const ratio = mj / Math.max(gamma * h[k]![j]!, eps);
          if (Math.abs(ratio) < 1) unclipped += 1;
          total += 1;
          return -lr(step) * wd * theta[k]![j]! - lr(step) * Math.max(-1, Math.min(1, ratio));
        });
      }
      const result = tf.tidy(
        () =>
          opt.update(value.grads, state, params, {
            step,
            source: value,
          }) as unknown as tf.TensorContainer,
      ) as unknown as TransformResult<SophiaState>;
      const got = read(result.updates);
      for (const k of keys)
        expect(maxRelativeError(got[k]!, expected[k]!), `${k} at step ${step}`).toBeLessThan(1e-5);
      expect(result.diagnostics!.learningRate).toBeCloseTo(lr(step), 12);
      const winRate = (result.diagnostics!.winRate as tf.Scalar).dataSync()[0]!;
      expect(winRate).toBeCloseTo(unclipped / total, 6);
      winRates.push(winRate);
      tf.tidy(() => {
        for (const k of keys)
          (params[k] as tf.Variable).assign(tf.add(params[k]!, result.updates[k]!));
      });
      disposeReplaced(state, result.state);
      state = result.state;
      tf.dispose([
        ...Object.values(result.updates),
        result.diagnostics!.winRate as tf.Scalar,
        ...owned,
      ]);
    }
    // The case exercises both branches of the clip, and fresh labels at each refresh.
    expect(winRates.some((w) => w > 0 && w < 1)).toBe(true);
    expect(hatSeen[0]!['dense1/bias']).not.toEqual(hatSeen[1]!['dense1/bias']);
    disposeReplaced(state, undefined);
    batch.dispose();
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it('without the step in the context it says why it cannot estimate the Hessian', () => {
    const model = mlp({ inputs: 3, layers: [{ units: 2 }], seed: 1 });
    const opt = sophia({ model });
    const params = model.params as Params;
    const state = opt.init(params);
    let error: unknown;
    const before = tf.memory().numTensors;
    try {
      tf.tidy(() => {
        opt.update(params, state, params, { step: 0 });
      });
    } catch (e) {
      error = e;
    }
    expect(isGrngError(error)).toBe(true);
    expect((error as Error).message).toMatch(/sophia needs the training step \(context.source\)/);
    expect(tf.memory().numTensors).toBe(before);
    disposeReplaced(state, undefined);
    model.dispose();
  });

  it('seeds differ from step to step and from run seed to run seed', () => {
    const seeds = new Set<number>();
    for (const seed of [1, 2, 3])
      for (let step = 0; step < 1000; step += 10) seeds.add(sophiaHessianSeed(seed, step));
    expect(seeds.size).toBe(300);
  });
});

describe('Sophia in the pipeline', () => {
  it('lowers the training loss; tensor count flat over 200 steps and back to baseline', async () => {
    const data = syntheticDataset({ features: 8, classes: 3, train: 256, test: 64, seed: 2 });
    const model: Sequential = mlp({ inputs: 8, layers: [{ units: 16 }, { units: 3 }], seed: 1 });
    const baseline = tf.memory().numTensors;
    const run = batches(data.train, { batchSize: 32, epochs: 25, steps: 200, seed: 3 }).pipe(
      forwardBackward(model, { signals: true }),
      update(model, sophia({ model, learningRate: 1e-2 })),
      metrics(),
    );
    const { rows, counts } = await collectRows(run);
    expect(rows).toHaveLength(200);
    // Hessian steps (every 10) and the others must leave the same number of tensors.
    expect(Math.max(...counts.slice(5))).toBe(Math.min(...counts.slice(5)));
    expect(tf.memory().numTensors).toBe(baseline);
    const mean = (rs: MetricsRow[]): number => rs.reduce((s, r) => s + r.loss, 0) / rs.length;
    expect(mean(rows.slice(-20))).toBeLessThan(0.7 * mean(rows.slice(0, 20)));
    for (const row of rows) {
      expect(row.diagnostics.winRate).toBeGreaterThanOrEqual(0);
      expect(row.diagnostics.winRate).toBeLessThanOrEqual(1);
      expect(row.learningRate).toBe(1e-2);
    }
    model.dispose();
  });
});

describe('Sophia option validation', () => {
  const model = (): Sequential => mlp({ inputs: 2, layers: [{ units: 2 }], seed: 1 });
  const cases: Array<[string, (m: Sequential) => unknown, RegExp]> = [
    [
      'a missing model',
      () => sophia({} as SophiaOptions),
      /invalid model: undefined|invalid model: .*expected the Sequential model/,
    ],
    [
      'a model that is not a Sequential',
      () => sophia({ model: {} as Sequential }),
      /invalid model: \{\}/,
    ],
    [
      'negative learning rate',
      (m) => sophia({ model: m, learningRate: -1 }),
      /invalid learningRate: -1/,
    ],
    ['b1 of 1', (m) => sophia({ model: m, b1: 1 }), /invalid b1: 1/],
    ['b2 above 1', (m) => sophia({ model: m, b2: 1.5 }), /invalid b2: 1.5/],
    ['zero gamma', (m) => sophia({ model: m, gamma: 0 }), /invalid gamma: 0/],
    [
      'negative weight decay',
      (m) => sophia({ model: m, weightDecay: -0.1 }),
      /invalid weightDecay: -0.1/,
    ],
    ['zero eps', (m) => sophia({ model: m, eps: 0 }), /invalid eps: 0/],
    ['zero hessianEvery', (m) => sophia({ model: m, hessianEvery: 0 }), /invalid hessianEvery: 0/],
    [
      'fractional hessianEvery',
      (m) => sophia({ model: m, hessianEvery: 2.5 }),
      /invalid hessianEvery: 2.5/,
    ],
    ['negative seed', (m) => sophia({ model: m, seed: -1 }), /invalid seed: -1/],
    ['unknown option', (m) => sophia({ model: m, rho: 0.04 } as never), /sophia option "rho"/],
  ];
  for (const [name, make, message] of cases) {
    it(`rejects ${name} with a message naming it`, () => {
      const m = model();
      let error: unknown;
      try {
        make(m);
      } catch (e) {
        error = e;
      }
      m.dispose();
      expect(isGrngError(error)).toBe(true);
      expect((error as Error).message).toMatch(message);
    });
  }
});

/** GRNG_BLAS=0 (npm run test:fallback) and other backends test the tfjs ops instead. */
const nativeSophiaWanted =
  process.env.GRNG_BLAS !== '0' && (process.env.GRNG_TEST_BACKEND ?? 'wasm') === 'wasm';

describe('the fused native Sophia step (wasm with the native BLAS addon)', () => {
  it.runIf(nativeSophiaWanted)(
    'equals the tfjs ops it replaces, propagates NaN and leaks nothing',
    (context) => {
      needsPackage(context, 'libopenblas0-pthread');
      const shape = [37, 5];
      const g = tf.randomNormal(shape, 0, 1, 'float32', 1);
      const m = tf.randomNormal(shape, 0, 0.5, 'float32', 2);
      // Some coordinates with tiny curvature (clipped), some large (not), one NaN gradient.
      const h = tf.tidy(() =>
        tf.mul(
          tf.abs(tf.randomNormal(shape, 0, 1, 'float32', 3)),
          tf.randomUniform(shape, 0, 2, 'float32', 4),
        ),
      );
      const p = tf.randomNormal(shape, 0, 1, 'float32', 5);
      const gNaN = tf.tidy(() =>
        tf.where(tf.equal(tf.range(0, 185).reshape(shape), 7), tf.fill(shape, NaN), g),
      );
      const [b1, gamma, eps, eta, lambda] = [0.965, 1, 1e-12, 0.01, 0.1];
      expect(nativeBlasStatus()?.enabled, 'the native BLAS addon should be loaded on wasm').toBe(
        true,
      );
      const before = tf.memory().numTensors;
      const fused = nativeSophiaUpdate(gNaN, m, h, p, {
        b1,
        gamma,
        eps,
        minusEta: -eta,
        decay: -eta * lambda,
      })!;
      expect(tf.memory().numTensors).toBe(before + 2);
      const reference = tf.tidy(() => {
        const mNew = tf.add(tf.mul(m, b1), tf.mul(gNaN, 1 - b1));
        const ratio = tf.div(mNew, tf.maximum(tf.mul(h, gamma), eps));
        const unclipped = tf.sum(tf.cast(tf.less(tf.abs(ratio), 1), 'float32'));
        const u = tf.add(tf.mul(tf.clipByValue(ratio, -1, 1), -eta), tf.mul(p, -eta * lambda));
        return [mNew, u, unclipped];
      });
      const [mRef, uRef, unclippedRef] = reference.map((t) => Array.from(t.dataSync()));
      const [mGot, uGot] = [Array.from(fused.m.dataSync()), Array.from(fused.update.dataSync())];
      expect(Number.isNaN(mGot[7])).toBe(true);
      expect(Number.isNaN(uGot[7])).toBe(true);
      for (let i = 0; i < mRef.length; i++) {
        if (i === 7) continue;
        expect(mGot[i]).toBeCloseTo(mRef[i]!, 6);
        expect(uGot[i]).toBeCloseTo(uRef[i]!, 6);
      }
      expect(fused.unclipped).toBe(unclippedRef[0]);
      expect(fused.unclipped).toBeGreaterThan(20);
      expect(fused.unclipped).toBeLessThan(180);
      tf.dispose([g, m, h, p, gNaN, fused.m, fused.update, ...reference]);
    },
  );
});
