import * as tf from '@tensorflow/tfjs';
import { lastValueFrom } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { syntheticDataset } from '../src/data/synthetic.js';
import { isGrngError } from '../src/errors.js';
import { mlp, type Sequential } from '../src/nn/sequential.js';
import type { DenseLayer } from '../src/nn/dense.js';
import { computeStep, forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { inverseSpd } from '../src/linalg/inverseSpd.js';
import { rkalman, type RkalmanOptions, type RkalmanState } from '../src/optim/rkalman.js';
import type { TransformResult } from '../src/optim/transform.js';
import { disposeReplaced } from '../src/linalg/tree.js';
import { batches } from '../src/streams/batches.js';
import type { MetricsRow, Params } from '../src/types.js';
import {
  act,
  crossEntropy,
  finiteDifferences,
  forward,
  maxRelativeError,
  type Matrix,
  type RefLayer,
} from './reference.js';
import { makeBatch, useTestBackend, collectRows } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

/** The model's current parameters as float64 reference layers. */
function refLayers(model: Sequential<DenseLayer>): RefLayer[] {
  return model.layers.map((l) => ({
    kernel: model.params[l.kernel]!.arraySync() as Matrix,
    bias: model.params[l.bias]!.arraySync() as number[],
    activation: l.activation as RefLayer['activation'],
  }));
}

/**
 * Per-sample gradients ∇l_i by analytic back-propagation in float64, flattened in the order
 * dense0/kernel (row-major in×out), dense0/bias, dense1/kernel, … ; also the per-sample losses.
 */
function perSampleGradients(
  layers: RefLayer[],
  x: Matrix,
  y: number[],
): { grads: number[][]; losses: number[] } {
  const grads: number[][] = [];
  const losses: number[] = [];
  x.forEach((row, i) => {
    const inputs: number[][] = [];
    const pre: number[][] = [];
    let a = row;
    for (const layer of layers) {
      inputs.push(a);
      const s = layer.bias.map(
        (b, o) => b + a.reduce((sum, v, c) => sum + v * layer.kernel[c]![o]!, 0),
      );
      pre.push(s);
      a = s.map((v) => act(layer.activation, v));
    }
    const max = Math.max(...a);
    const z = a.map((v) => Math.exp(v - max));
    const total = z.reduce((p, q) => p + q, 0);
    losses.push(Math.log(total) + max - a[y[i]!]!);
    let delta = z.map((v, o) => v / total - (o === y[i] ? 1 : 0));
    const perLayer: number[][] = [];
    for (let l = layers.length - 1; l >= 0; l--) {
      const layer = layers[l]!;
      const deriv = pre[l]!.map((s) =>
        layer.activation === 'tanh'
          ? 1 - Math.tanh(s) ** 2
          : layer.activation === 'relu'
            ? s > 0
              ? 1
              : 0
            : 1,
      );
      const d = delta.map((v, o) => v * deriv[o]!);
      perLayer[l] = [...inputs[l]!.flatMap((ac) => d.map((dv) => ac * dv)), ...d];
      delta = inputs[l]!.map((_, c) =>
        d.reduce((sum, dv, o) => sum + dv * layer.kernel[c]![o]!, 0),
      );
    }
    grads.push(perLayer.flat());
  });
  return { grads, losses };
}

/** Inverse of a small SPD matrix by Gauss–Jordan elimination in float64. */
function invert(s: Matrix): Matrix {
  const k = s.length;
  const m = s.map((row, i) => [...row, ...row.map((_, j) => (i === j ? 1 : 0))]);
  for (let c = 0; c < k; c++) {
    const pivot = m[c]![c]!;
    for (let j = 0; j < 2 * k; j++) m[c]![j]! /= pivot;
    for (let r = 0; r < k; r++) {
      if (r === c) continue;
      const f = m[r]![c]!;
      for (let j = 0; j < 2 * k; j++) m[r]![j]! -= f * m[c]![j]!;
    }
  }
  return m.map((row) => row.slice(k));
}

interface RefOptions {
  eta: number;
  rows: number;
  fading: number;
  q: number;
  rho: number;
  betaR: number;
  rMin: number;
  pMin: number;
}

/** One R-Kalman step with H materialised (k×n), the explicit Kalman formulas, float64. */
function referenceStep(
  opt: RefOptions,
  P: number[],
  r: number,
  grads: number[][],
  losses: number[],
): { delta: number[]; P: number[]; r: number } {
  const n = P.length;
  const m = grads.length;
  const g = Array.from({ length: n }, (_, j) => grads.reduce((s, gi) => s + gi[j]!, 0) / m);
  const g2 = g.reduce((s, v) => s + v * v, 0);
  const prior = P.map((p) => p / opt.fading + opt.q).map((p) => p / (1 + opt.rho * g2 * p));
  const k = Math.min(m, opt.rows);
  const H = grads.slice(0, k).map((gi) => gi.map((v) => -v));
  const e = losses.slice(0, k);
  const HPHt = H.map((hi) => H.map((hj) => hi.reduce((s, v, c) => s + v * prior[c]! * hj[c]!, 0)));
  const S = HPHt.map((row, i) => row.map((v, j) => v + (i === j ? r : 0)));
  const Sinv = invert(S);
  // Kalman gain K = P⁻ Hᵀ S⁻¹ (n×k); mean update θ + η K e (target 0, innovation e = 0 − h(θ) = l).
  const K = prior.map((p, c) =>
    Array.from({ length: k }, (_, j) => H.reduce((s, hi, i) => s + p * hi[c]! * Sinv[i]![j]!, 0)),
  );
  const delta = K.map((row) => opt.eta * row.reduce((s, v, j) => s + v * e[j]!, 0));
  // P ← diag(P⁻ − K H P⁻), floored.
  const newP = prior.map((p, c) =>
    Math.max(p - K[c]!.reduce((s, v, j) => s + v * H[j]![c]! * p, 0), opt.pMin),
  );
  const meanE2 = e.reduce((s, v) => s + v * v, 0) / k;
  const meanDiag = HPHt.reduce((s, row, i) => s + row[i]!, 0) / k;
  const newR = opt.betaR * r + (1 - opt.betaR) * Math.max(meanE2 - meanDiag, opt.rMin);
  return { delta, P: newP, r: newR };
}

const flatten = (model: Sequential<DenseLayer>, tree: Params): number[] =>
  model.layers.flatMap((l) => [...tree[l.kernel]!.dataSync(), ...tree[l.bias]!.dataSync()]);

const X = [
  [0.5, -1.2, 0.3],
  [1.1, 0.4, -0.7],
  [-0.3, 0.8, 1.5],
  [0.9, -0.6, -1.1],
  [-1.4, 0.2, 0.6],
];
const Y = [0, 1, 1, 0, 1];

describe('R-Kalman against the explicit Kalman formulas (H materialised, float64)', () => {
  it('the float64 per-sample gradients are right (finite differences of the mean loss)', () => {
    const model = mlp({
      inputs: 3,
      layers: [{ units: 4, activation: 'tanh' }, { units: 2 }],
      seed: 3,
    });
    const layers = refLayers(model);
    const { grads, losses } = perSampleGradients(layers, X, Y);
    const fd = finiteDifferences(layers, () => crossEntropy(forward(layers, X), Y)).flatMap((l) => [
      ...l.kernel.flat(),
      ...l.bias,
    ]);
    const mean = fd.map((_, j) => grads.reduce((s, g) => s + g[j]!, 0) / grads.length);
    expect(maxRelativeError(mean, fd)).toBeLessThan(1e-7);
    expect(losses.reduce((a, b) => a + b, 0) / losses.length).toBeCloseTo(
      crossEntropy(forward(layers, X), Y),
      12,
    );
    model.dispose();
  });

  for (const [name, options] of [
    ['defaults, rows = 3', { rows: 3 }],
    [
      'every option away from its default',
      {
        rows: 3,
        learningRate: 0.7,
        p0: 0.3,
        r0: 0.5,
        fading: 0.95,
        processNoise: 0.01,
        rho: 2,
        betaR: 0.8,
        rMin: 0.05,
        pMin: 1e-3,
      },
    ],
    ['rows above the batch size (k = m)', { rows: 8, rho: 0.5 }],
    ['a variance floor that binds for part of the coordinates', { rows: 3, rho: 0, pMin: 0.097 }],
  ] as Array<[string, RkalmanOptions]>) {
    it(`three steps: updates, P and r (${name})`, () => {
      const model = mlp({
        inputs: 3,
        layers: [{ units: 4, activation: 'tanh' }, { units: 2 }],
        seed: 3,
      });
      const before = tf.memory().numTensors;
      const opt = rkalman(model, options);
      const ref: RefOptions = {
        eta: (options.learningRate as number | undefined) ?? 1,
        rows: options.rows ?? 32,
        fading: options.fading ?? 0.999,
        q: options.processNoise ?? 0,
        rho: options.rho ?? 0.1,
        betaR: options.betaR ?? 0.99,
        rMin: options.rMin ?? 1e-2,
        pMin: options.pMin ?? 1e-6,
      };
      const params = model.params as Params;
      let state = tf.tidy(
        () => opt.init(params) as unknown as tf.TensorContainer,
      ) as unknown as RkalmanState;
      let P = Array.from({ length: model.size }, () => options.p0 ?? 0.1);
      let r = options.r0 ?? 1;
      const batch = makeBatch(X, Y);
      for (let step = 0; step < 3; step++) {
        const { grads, losses } = perSampleGradients(refLayers(model), X, Y);
        const expected = referenceStep(ref, P, r, grads, losses);
        const { value, owned } = computeStep(model, batch, true);
        const result = tf.tidy(
          () =>
            opt.update(value.grads, state, params, {
              step,
              source: value,
            }) as unknown as tf.TensorContainer,
        ) as unknown as TransformResult<RkalmanState>;
        const delta = flatten(model, result.updates);
        const newP = flatten(model, result.state.p);
        expect(maxRelativeError(delta, expected.delta)).toBeLessThan(2e-4);
        expect(maxRelativeError(newP, expected.P)).toBeLessThan(2e-5);
        expect(result.state.r.dataSync()[0]).toBeCloseTo(expected.r, 5);
        const d = result.diagnostics!;
        expect(d.learningRate).toBe(ref.eta);
        expect((d.kalmanNoise as tf.Scalar).dataSync()[0]).toBeCloseTo(expected.r, 5);
        expect((d.kalmanTraceP as tf.Scalar).dataSync()[0]).toBeCloseTo(
          expected.P.reduce((a, b) => a + b, 0) / model.size,
          6,
        );
        const k = Math.min(ref.rows, X.length);
        expect((d.kalmanInnovationNorm as tf.Scalar).dataSync()[0]).toBeCloseTo(
          Math.hypot(...losses.slice(0, k)),
          5,
        );
        // The trajectories stay on the optimizer's own values, so errors do not compound.
        P = Array.from(newP);
        r = result.state.r.dataSync()[0]!;
        tf.tidy(() => {
          for (const key of Object.keys(params))
            (params[key] as tf.Variable).assign(tf.add(params[key]!, result.updates[key]!));
        });
        disposeReplaced(state, result.state);
        state = result.state;
        tf.dispose([
          ...Object.values(result.updates),
          ...Object.values(d).filter((v): v is tf.Scalar => typeof v !== 'number'),
          ...owned,
        ]);
      }
      disposeReplaced(state, undefined);
      batch.dispose();
      expect(tf.memory().numTensors).toBe(before);
      model.dispose();
    });
  }

  it('the step lowers the loss of the observed rows (sign of the correction)', () => {
    const model = mlp({
      inputs: 3,
      layers: [{ units: 4, activation: 'tanh' }, { units: 2 }],
      seed: 3,
    });
    const batch = makeBatch(X, Y);
    const observed = (): number => {
      const { losses } = perSampleGradients(refLayers(model), X, Y);
      return losses.slice(0, 3).reduce((a, b) => a + b, 0);
    };
    const opt = rkalman(model, { rows: 3, learningRate: 0.1 });
    const params = model.params as Params;
    const state = tf.tidy(
      () => opt.init(params) as unknown as tf.TensorContainer,
    ) as unknown as RkalmanState;
    const lossBefore = observed();
    const { value, owned } = computeStep(model, batch, true);
    const result = tf.tidy(
      () =>
        opt.update(value.grads, state, params, {
          step: 0,
          source: value,
        }) as unknown as tf.TensorContainer,
    ) as unknown as TransformResult<RkalmanState>;
    tf.tidy(() => {
      for (const key of Object.keys(params))
        (params[key] as tf.Variable).assign(tf.add(params[key]!, result.updates[key]!));
    });
    expect(observed()).toBeLessThan(lossBefore);
    tf.dispose([
      ...owned,
      ...Object.values(result.updates),
      ...Object.values(result.diagnostics!).filter((v): v is tf.Scalar => typeof v !== 'number'),
    ]);
    disposeReplaced(state, undefined);
    disposeReplaced(result.state, undefined);
    batch.dispose();
    model.dispose();
  });
});

describe('the k×k solve', () => {
  /** S = Q diag(λ) Qᵀ in float64, λ log-spaced from `scale` down to scale/κ, Q orthonormalised from a seeded matrix; rounded to float32. */
  function spd(k: number, kappa: number, scale: number, seed: number): Matrix {
    let state = seed;
    const random = (): number => ((state = (state * 48271) % 2147483647) / 2147483647) * 2 - 1;
    const q: number[][] = [];
    while (q.length < k) {
      const v = Array.from({ length: k }, random);
      for (const u of q) {
        const dot = u.reduce((s, x, i) => s + x * v[i]!, 0);
        u.forEach((x, i) => (v[i]! -= dot * x));
      }
      const norm = Math.hypot(...v);
      q.push(v.map((x) => x / norm));
    }
    const lambda = Array.from({ length: k }, (_, i) => scale * kappa ** (-i / (k - 1)));
    return q.map((_, i) =>
      q.map((__, j) => Math.fround(lambda.reduce((s, l, c) => s + q[c]![i]! * l * q[c]![j]!, 0))),
    );
  }

  for (const [k, kappa, tolerance] of [
    [3, 10, 1e-6],
    [32, 10, 1e-6],
    [32, 1e3, 5e-5],
    [64, 1e4, 5e-4],
  ] as const) {
    it(`Newton–Schulz inverts a ${k}×${k} SPD S of condition ${kappa} to float32 precision`, () => {
      // Scale 50: ‖S‖ far from 1, so the starting scaling is exercised.
      const s = spd(k, kappa, 50, 11 + k);
      const exact = invert(s).flat();
      const x = tf.tidy(() => inverseSpd(tf.tensor2d(s)).dataSync());
      const error = Math.hypot(...Array.from(x, (v, i) => v - exact[i]!)) / Math.hypot(...exact);
      // Measured: 6e-8, 2e-7, 5e-6 and 4e-5; float32's κ·2⁻²⁴ bound is 6e-7 at κ = 10 and 6e-4 at κ = 1e4.
      expect(error).toBeLessThan(tolerance);
      const symmetric = Array.from(x).every(
        (v, idx) => v === x[(idx % k) * k + Math.floor(idx / k)],
      );
      expect(symmetric).toBe(true);
    });
  }
});

describe('R-Kalman in the pipeline', () => {
  it('lowers the training loss, tensor count flat over 200 steps and back to baseline', async () => {
    const data = syntheticDataset({ features: 8, classes: 3, train: 256, test: 64, seed: 2 });
    const model = mlp({ inputs: 8, layers: [{ units: 16 }, { units: 3 }], seed: 1 });
    const baseline = tf.memory().numTensors;
    const run = batches(data.train, { batchSize: 32, epochs: 25, steps: 200, seed: 3 }).pipe(
      forwardBackward(model, { signals: true }),
      update(model, rkalman(model, { rows: 16 })),
      metrics(),
    );
    const { rows, counts } = await collectRows(run);
    expect(rows).toHaveLength(200);
    expect(Math.max(...counts.slice(5))).toBe(Math.min(...counts.slice(5)));
    expect(tf.memory().numTensors).toBe(baseline);
    const mean = (rs: MetricsRow[]): number => rs.reduce((s, r) => s + r.loss, 0) / rs.length;
    expect(mean(rows.slice(-20))).toBeLessThan(0.6 * mean(rows.slice(0, 20)));
    for (const row of rows) {
      expect(Number.isFinite(row.diagnostics.kalmanTraceP)).toBe(true);
      expect(row.diagnostics.kalmanNoise).toBeGreaterThan(0);
    }
    expect(rows.at(-1)!.diagnostics.kalmanTraceP).toBeLessThan(0.1);
    model.dispose();
  });

  it('a step without signals is a clear error that says how to get them', async () => {
    const data = syntheticDataset({ features: 8, classes: 3, train: 64, test: 16, seed: 2 });
    const model = mlp({ inputs: 8, layers: [{ units: 3 }], seed: 1 });
    const baseline = tf.memory().numTensors;
    const error = await lastValueFrom(
      batches(data.train, { batchSize: 32, steps: 2 }).pipe(
        forwardBackward(model),
        update(model, rkalman(model)),
      ),
    )
      .then(() => undefined)
      .catch((e: unknown) => e);
    expect(isGrngError(error)).toBe(true);
    expect((error as Error).message).toMatch(
      /rkalman needs per-sample signals and losses: run forwardBackward\(model, \{ signals: true \}\)/,
    );
    expect(tf.memory().numTensors).toBe(baseline);
    model.dispose();
  });
});

describe('R-Kalman option validation', () => {
  // Options are checked before the model is looked at: a model without layers will do.
  const noLayers = { signalLayers: [] };
  const cases: Array<[string, () => unknown, RegExp]> = [
    [
      'zero observation rows',
      () => rkalman(noLayers, { rows: 0 }),
      /invalid rows: 0 \(expected an integer ≥ 1\)/,
    ],
    ['fractional rows', () => rkalman(noLayers, { rows: 2.5 }), /invalid rows: 2.5/],
    ['negative rho', () => rkalman(noLayers, { rho: -0.1 }), /invalid rho: -0.1/],
    [
      'negative learning rate',
      () => rkalman(noLayers, { learningRate: -1 }),
      /invalid learningRate: -1/,
    ],
    ['zero p0', () => rkalman(noLayers, { p0: 0 }), /invalid p0: 0/],
    ['zero r0', () => rkalman(noLayers, { r0: 0 }), /invalid r0: 0/],
    ['fading above 1', () => rkalman(noLayers, { fading: 1.5 }), /invalid fading: 1.5/],
    [
      'negative process noise',
      () => rkalman(noLayers, { processNoise: -1 }),
      /invalid processNoise: -1/,
    ],
    ['betaR of 1', () => rkalman(noLayers, { betaR: 1 }), /invalid betaR: 1/],
    ['zero rMin (S would not stay SPD)', () => rkalman(noLayers, { rMin: 0 }), /invalid rMin: 0/],
    ['negative pMin', () => rkalman(noLayers, { pMin: -1 }), /invalid pMin: -1/],
    [
      'zero solve iterations',
      () => rkalman(noLayers, { solveIterations: 0 }),
      /invalid solveIterations: 0/,
    ],
    ['unknown option', () => rkalman(noLayers, { row: 4 } as never), /rkalman option "row"/],
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
