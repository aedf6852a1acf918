import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { isGrngError } from '../src/errors.js';
import { nativeBlasStatus } from '../src/runtime/nativeBlas.js';
import { adamw } from '../src/optim/adamw.js';
import { scaleByAdam } from '../src/optim/scaleByAdam.js';
import { chain } from '../src/optim/chain.js';
import { resolveOptimizerOptions } from '../src/optim/registry.js';
import { scaleByLearningRate, type CountState } from '../src/optim/scaleByLearningRate.js';
import { addDecayedWeights } from '../src/optim/addDecayedWeights.js';
import { traceMomentum, type TraceState } from '../src/optim/traceMomentum.js';
import { cosineSchedule, stepSchedule, warmupSchedule } from '../src/optim/schedules.js';
import { sgd } from '../src/optim/sgd.js';
import type { GradientTransformation } from '../src/optim/transform.js';
import { disposeReplaced } from '../src/linalg/tree.js';
import type { Params } from '../src/types.js';
import { useTestBackend } from './helpers.js';
import { needsPackage } from './systemPackages.js';

beforeAll(async () => {
  await useTestBackend();
});

const THETA = [0.5, -1.0, 2.0];
const GRADS = [
  [0.1, -0.2, 0.3],
  [-0.4, 0.5, 0.05],
  [0.2, 0.2, -0.6],
];

/** Runs an optimizer for the given gradients on one parameter vector; returns θ after each step. */
function run(opt: GradientTransformation<any>): number[][] {
  let theta: Params = { w: tf.tensor1d(THETA) };
  let state = tf.tidy(() => opt.init(theta));
  const trajectory: number[][] = [];
  GRADS.forEach((g, step) => {
    const grads = { w: tf.tensor1d(g) };
    const result = tf.tidy(
      () => opt.update(grads, state, theta, { step }) as unknown as tf.TensorContainer,
    ) as unknown as ReturnType<typeof opt.update>;
    const next = { w: tf.tidy(() => tf.add(theta.w!, result.updates.w!)) };
    disposeReplaced(state, result.state);
    tf.dispose([theta.w!, grads.w, result.updates.w!]);
    for (const v of Object.values(result.diagnostics ?? {})) if (typeof v !== 'number') v.dispose();
    state = result.state;
    theta = next;
    trajectory.push(Array.from(theta.w!.dataSync()));
  });
  tf.dispose([theta.w!]);
  disposeReplaced(state, undefined);
  return trajectory;
}

function expectClose(actual: number[][], expected: number[][], digits = 6): void {
  actual.forEach((row, i) =>
    row.forEach((v, j) => expect(v).toBeCloseTo(expected[i]![j]!, digits)),
  );
}

describe('SGD against hand-computed steps (PyTorch convention)', () => {
  it('momentum, Nesterov and coupled weight decay', () => {
    for (const nesterov of [false, true]) {
      const lr = 0.1;
      const mu = 0.9;
      const wd = 0.01;
      const theta = [...THETA];
      const buf = [0, 0, 0];
      const expected: number[][] = [];
      for (const g of GRADS) {
        for (let j = 0; j < 3; j++) {
          const d = g[j]! + wd * theta[j]!;
          buf[j] = mu * buf[j]! + d;
          theta[j] = theta[j]! - lr * (nesterov ? d + mu * buf[j]! : buf[j]!);
        }
        expected.push([...theta]);
      }
      expectClose(
        run(sgd({ learningRate: lr, momentum: mu, nesterov, weightDecay: wd })),
        expected,
      );
    }
  });

  it('plain SGD with a step schedule', () => {
    const schedule = stepSchedule({ initial: 0.5, every: 2, factor: 0.1 });
    const theta = [...THETA];
    const expected = GRADS.map((g, step) => {
      g.forEach((gj, j) => (theta[j] = theta[j]! - schedule(step) * gj));
      return [...theta];
    });
    expectClose(run(sgd({ learningRate: schedule })), expected);
  });
});

describe('AdamW against hand-computed steps', () => {
  it('bias-corrected moments and decoupled decay, as torch.optim.AdamW', () => {
    const [lr, b1, b2, eps, wd] = [0.01, 0.9, 0.999, 1e-8, 0.1];
    const theta = [...THETA];
    const m = [0, 0, 0];
    const v = [0, 0, 0];
    const expected = GRADS.map((g, step) => {
      const t = step + 1;
      for (let j = 0; j < 3; j++) {
        m[j] = b1 * m[j]! + (1 - b1) * g[j]!;
        v[j] = b2 * v[j]! + (1 - b2) * g[j]! ** 2;
        const mHat = m[j]! / (1 - b1 ** t);
        const vHat = v[j]! / (1 - b2 ** t);
        theta[j] = theta[j]! - lr * wd * theta[j]! - (lr * mHat) / (Math.sqrt(vHat) + eps);
      }
      return [...theta];
    });
    expectClose(run(adamw({ learningRate: lr, b1, b2, eps, weightDecay: wd })), expected, 5);
  });
});

describe('composition and schedules', () => {
  it('a chain of three gives, step by step, the updates, states and diagnostics of its transforms applied one after another', () => {
    const [mu, lambda] = [0.9, 0.1];
    const schedule = stepSchedule({ initial: 0.5, every: 2, factor: 0.1 });
    const transforms = (): [
      GradientTransformation<TraceState>,
      GradientTransformation<CountState>,
      GradientTransformation<CountState>,
    ] => [traceMomentum({ decay: mu }), addDecayedWeights(lambda), scaleByLearningRate(schedule)];
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const params: Params = { w: tf.tensor1d(THETA) };
      const chained = chain(...transforms());
      const [momentum, decay, learningRate] = transforms();
      let chainState = chained.init(params);
      let [momentumState, decayState, rateState] = [
        momentum.init(params),
        decay.init(params),
        learningRate.init(params),
      ];
      const trace = [0, 0, 0];
      GRADS.forEach((g, step) => {
        const grads = { w: tf.tensor1d(g) };
        const result = chained.update(grads, chainState, params, { step });
        // By hand: each transform's updates feed the next, each keeps its own state.
        const m = momentum.update(grads, momentumState, params, { step });
        const d = decay.update(m.updates, decayState, params, { step });
        const l = learningRate.update(d.updates, rateState, params, { step });
        expect(Array.from(result.updates.w!.dataSync())).toEqual(
          Array.from(l.updates.w!.dataSync()),
        );
        const [chainedMomentum, chainedDecay, chainedRate] = result.state as [
          TraceState,
          CountState,
          CountState,
        ];
        expect(Array.from(chainedMomentum.trace.w!.dataSync())).toEqual(
          Array.from(m.state.trace.w!.dataSync()),
        );
        expect([chainedDecay.count, chainedRate.count]).toEqual([d.state.count, l.state.count]);
        expect(result.diagnostics).toEqual({
          ...m.diagnostics,
          ...d.diagnostics,
          ...l.diagnostics,
        });
        // And in numbers: u = −η_t·(t + λθ), t ← g + μ·t.
        expect(result.diagnostics?.learningRate).toBe(schedule(step));
        const expected = g.map((gj, j) => {
          trace[j] = gj + mu * trace[j]!;
          return -schedule(step) * (trace[j]! + lambda * THETA[j]!);
        });
        expectClose([Array.from(result.updates.w!.dataSync())], [expected]);
        chainState = result.state;
        [momentumState, decayState, rateState] = [m.state, d.state, l.state];
      });
      expect((chainState[2] as CountState).count).toBe(GRADS.length);
    });
    expect(tf.memory().numTensors).toBe(before);
  });

  it('schedules give the documented values', () => {
    const cos = cosineSchedule({ initial: 1, steps: 10, final: 0.1 });
    expect(cos(0)).toBeCloseTo(1);
    expect(cos(5)).toBeCloseTo(0.55);
    expect(cos(10)).toBeCloseTo(0.1);
    expect(cos(50)).toBeCloseTo(0.1);
    const warm = warmupSchedule({ steps: 4, then: 0.8 });
    [0.2, 0.4, 0.6, 0.8, 0.8, 0.8].forEach((v, i) =>
      expect(warm([0, 1, 2, 3, 4, 100][i]!)).toBeCloseTo(v, 12),
    );
  });
});

describe('option validation', () => {
  const cases: Array<[string, () => unknown, RegExp]> = [
    ['negative learning rate', () => sgd({ learningRate: -1 }), /learningRate: -1/],
    ['momentum 1', () => sgd({ learningRate: 0.1, momentum: 1 }), /momentum: 1/],
    ['NaN weight decay', () => adamw({ weightDecay: NaN }), /weightDecay: null|weightDecay: NaN/],
    ['b2 above 1', () => adamw({ b2: 1.5 }), /b2: 1.5/],
    ['unknown option', () => adamw({ lr: 1 } as never), /adamw option "lr"/],
    [
      'schedule that starts negative',
      () => sgd({ learningRate: () => -0.1 }),
      /learningRate \(schedule value at step 0\)/,
    ],
    ['unknown optimizer', () => resolveOptimizerOptions('rmsprop'), /optimizer: "rmsprop"/],
    [
      'option of another optimizer',
      () => resolveOptimizerOptions('sgd', { b1: 0.9 }),
      /option b1 for optimizer sgd/,
    ],
  ];
  for (const [name, make, message] of cases) {
    it(`rejects ${name} with a message naming it`, () => {
      let error: unknown;
      try {
        make();
      } catch (e) {
        error = e;
      }
      expect(isGrngError(error)).toBe(true);
      expect((error as Error).message).toMatch(message);
    });
  }
});

describe('scaleByAdam on its fused native pass (wasm with the BLAS addon)', () => {
  // GRNG_BLAS=0 (npm run test:fallback) and other backends test the tfjs formulas instead.
  it.runIf(process.env.GRNG_BLAS !== '0' && (process.env.GRNG_TEST_BACKEND ?? 'wasm') === 'wasm')(
    'gives the moments and direction of the tfjs formulas over several steps, leaking nothing',
    (context) => {
      needsPackage(context, 'libopenblas0-pthread');
      expect(nativeBlasStatus()?.enabled, 'the native BLAS addon should be loaded on wasm').toBe(
        true,
      );
      const [b1, b2, eps] = [0.9, 0.999, 1e-8];
      const adam = scaleByAdam({ b1, b2, eps });
      const start = tf.memory().numTensors;
      const params: Params = { w: tf.randomNormal([61, 17], 0, 1, 'float32', 1) };
      let state = adam.init(params);
      // The tfjs formulas, written out.
      let mu = tf.zeros([61, 17]);
      let nu = tf.zeros([61, 17]);
      for (let t = 1; t <= 4; t++) {
        const g = tf.randomNormal([61, 17], 0, 1, 'float32', 10 + t);
        const result = adam.update({ w: g }, state, params, { step: t - 1 });
        const [m2, v2] = tf.tidy(() => [
          tf.add(tf.mul(mu, b1), tf.mul(g, 1 - b1)),
          tf.add(tf.mul(nu, b2), tf.mul(tf.square(g), 1 - b2)),
        ]);
        const want = tf.tidy(() =>
          tf.div(tf.div(m2!, 1 - b1 ** t), tf.add(tf.sqrt(tf.div(v2!, 1 - b2 ** t)), eps)),
        );
        const gap = tf.tidy(() => tf.max(tf.abs(tf.sub(result.updates.w!, want))).dataSync()[0]!);
        expect(gap).toBeLessThan(1e-5);
        expect(
          tf.tidy(() => tf.max(tf.abs(tf.sub(result.state.nu.w!, v2))).dataSync()[0]!),
        ).toBeLessThan(1e-7);
        tf.dispose([
          g,
          mu,
          nu,
          want,
          ...Object.values(state.mu),
          ...Object.values(state.nu),
          ...Object.values(result.updates),
        ]);
        [mu, nu, state] = [m2!, v2!, result.state];
      }
      tf.dispose([
        mu,
        nu,
        ...Object.values(state.mu),
        ...Object.values(state.nu),
        ...Object.values(params),
      ]);
      expect(tf.memory().numTensors).toBe(start);
    },
  );
});
