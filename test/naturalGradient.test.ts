import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, Observable, of, tap, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { syntheticDataset } from '../src/data/synthetic.js';
import { isGrngError } from '../src/errors.js';
import { mlp, type Sequential } from '../src/nn/sequential.js';
import { fisherScan } from '../src/operators/fisherScan.js';
import { computeStep, forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { kfac } from '../src/optim/kfac.js';
import { precondition } from '../src/optim/naturalGradient.js';
import { createOptimizer } from '../src/optim/registry.js';
import { finiteDifferenceHg, hessianGradientProduct } from '../src/optim/reng.js';
import { batches } from '../src/streams/batches.js';
import type { Step } from '../src/types.js';
import { makeBatch, useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

const data = syntheticDataset({ features: 6, classes: 3, train: 192, test: 64, seed: 9 });
const tinyModel = (seed = 1) =>
  mlp({ inputs: 6, layers: [{ units: 5, activation: 'tanh' }, { units: 3 }], seed });

/** Runs `steps` steps of a named natural-gradient optimizer; returns the final parameters. */
async function trainNamed(
  name: string,
  options: Record<string, unknown>,
  steps: number,
): Promise<{ params: number[][]; rows: number }> {
  const model = tinyModel();
  const optimizer = createOptimizer(name, model, { seed: 3, ...options });
  const rows = await lastValueFrom(
    batches(data.train, { batchSize: 32, epochs: 10, steps, seed: 2 }).pipe(
      forwardBackward(model, { signals: true }),
      fisherScan(model, optimizer.curvature!.damping, optimizer.curvature!.options),
      update(model, optimizer.transform),
      metrics(),
      toArray(),
    ),
  );
  const params = Object.values(model.params).map((p) => Array.from(p.dataSync()));
  model.dispose();
  return { params, rows: rows.length };
}

describe('ρ = 0 equivalences', () => {
  it('RING and RENG with ρ = 0 equal K-FAC at the same λ to float tolerance', async () => {
    // The same λ, given: RING's dense default (1e-3) is not K-FAC's and RENG's (0.1).
    const damping = 1e-3;
    const reference = await trainNamed('kfac', { damping }, 12);
    for (const name of ['ring', 'reng']) {
      const other = await trainNamed(name, { rho: 0, damping }, 12);
      other.params.forEach((p, i) =>
        p.forEach((v, j) => expect(v).toBeCloseTo(reference.params[i]![j]!, 5)),
      );
    }
    const moved = await trainNamed('ring', { rho: 1, damping }, 12);
    expect(
      moved.params.flat().some((v, j) => Math.abs(v - reference.params.flat()[j]!) > 1e-4),
    ).toBe(true);
  });
});

/** Float64 helpers for the dense reference. */
const transposeOf = (m: number[][]) => m[0]!.map((_, j) => m.map((row) => row[j]!));
const matmul = (a: number[][], b: number[][]) =>
  a.map((row) => b[0]!.map((_, j) => row.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
function solve(matrix: number[][], rhs: number[]): number[] {
  const n = rhs.length;
  const a = matrix.map((row, i) => [...row, rhs[i]!]);
  for (let c = 0; c < n; c++) {
    let pivot = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[pivot]![c]!)) pivot = r;
    [a[c], a[pivot]] = [a[pivot]!, a[c]!];
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r]![c]! / a[c]![c]!;
      for (let k = c; k <= n; k++) a[r]![k]! -= f * a[c]![k]!;
    }
  }
  return a.map((row, i) => row[n]! / row[i]!);
}

describe('K-FAC against a float64 dense reference', () => {
  it('factors, damping and the preconditioned direction equal an explicit (A_γ ⊗ G_γ) solve', async () => {
    const model = tinyModel(4);
    const x = Array.from({ length: 8 }, (_, i) =>
      Array.from({ length: 6 }, (_, j) => Math.sin(1.3 * i + 0.7 * j)),
    );
    const y = [0, 1, 2, 0, 1, 2, 0, 1];
    const batch = makeBatch(x, y, 0);
    const gamma = 0.05;
    let seen: Step | undefined;
    let direction: number[][] = [];
    await lastValueFrom(
      of(batch).pipe(
        forwardBackward(model, { signals: true }),
        fisherScan(model, { lambda: gamma, rho: 0, norm: 'mean' }, { fisher: 'empirical' }),
        // Capture what fisherScan emits and precondition the gradient with it, synchronously.
        (source) =>
          new Observable<number>((sub) =>
            source.subscribe({
              next(step) {
                seen = step;
                const u = tf.tidy(() => precondition(model, step.curvature!, step.grads));
                direction = model.layers.flatMap((l) => [
                  Array.from(u[l.kernel]!.dataSync()),
                  Array.from(u[l.bias]!.dataSync()),
                ]);
                tf.dispose(Object.values(u));
                sub.next(1);
              },
              error: (e) => sub.error(e),
              complete: () => sub.complete(),
            }),
          ),
        toArray(),
      ),
    );
    expect(seen?.curvature?.refreshed).toBe(true);
    expect(seen?.curvature?.damping).toBe(gamma);
    // The reference, in float64 from the layer inputs and signals of the same pass.
    const forward = tf.tidy(() => {
      const { value, owned } = computeStep(model, batch, true);
      const out = value.signals!.map((s) => ({
        a: s.a.arraySync() as number[][],
        delta: s.delta.arraySync() as number[][],
      }));
      const grads = model.layers.map((l) => ({
        kernel: value.grads[l.kernel]!.arraySync() as number[][],
        bias: value.grads[l.bias]!.arraySync() as number[],
      }));
      tf.dispose(owned as tf.Tensor[]);
      return { signals: out, grads } as unknown as tf.TensorContainer;
    }) as unknown as {
      signals: Array<{ a: number[][]; delta: number[][] }>;
      grads: Array<{ kernel: number[][]; bias: number[] }>;
    };
    const m = x.length;
    model.layers.forEach((layer, l) => {
      const aBar = forward.signals[l]!.a.map((row) => [...row, 1]);
      const A = matmul(transposeOf(aBar), aBar).map((row) => row.map((v) => v / m));
      const G = matmul(transposeOf(forward.signals[l]!.delta), forward.signals[l]!.delta).map(
        (row) => row.map((v) => v / m),
      );
      const trA = A.reduce((s, row, i) => s + row[i]!, 0) / A.length;
      const trG = G.reduce((s, row, i) => s + row[i]!, 0) / G.length;
      const pi = Math.sqrt(trA / trG);
      const Ag = A.map((row, i) => row.map((v, j) => v + (i === j ? pi * Math.sqrt(gamma) : 0)));
      const Gg = G.map((row, i) => row.map((v, j) => v + (i === j ? Math.sqrt(gamma) / pi : 0)));
      // V̄ = [∇kernel; ∇biasᵀ] ((in+1)×out); (A_γ ⊗ G_γ) vec(U) = vec(V̄) in row-major order.
      const vBar = [...forward.grads[l]!.kernel, forward.grads[l]!.bias];
      const rows = vBar.length;
      const cols = layer.units;
      const F = Array.from({ length: rows * cols }, (_, r) =>
        Array.from(
          { length: rows * cols },
          (_, c) => Ag[Math.floor(r / cols)]![Math.floor(c / cols)]! * Gg[c % cols]![r % cols]!,
        ),
      );
      const u = solve(F, vBar.flat());
      const got = [...direction[2 * l]!, ...direction[2 * l + 1]!];
      const scale = Math.max(...u.map(Math.abs));
      u.forEach((v, i) => expect(Math.abs(got[i]! - v) / scale).toBeLessThan(2e-3));
    });
    batch.dispose();
    model.dispose();
  });
});

describe('RENG Hg', () => {
  it('finite-difference Hg agrees with double backprop', () => {
    const model = tinyModel(6);
    const batch = makeBatch(
      [
        [0.1, 0.2, -0.3, 0.5, 1, -1],
        [1, -0.5, 0.2, 0.3, -0.2, 0.4],
        [-1, 0.7, 0.1, -0.8, 0.3, 0.9],
      ],
      [0, 2, 1],
    );
    tf.tidy(() => {
      const params = model.params as Record<string, tf.Tensor>;
      const { value, owned } = computeStep(model, batch, false);
      const exact = hessianGradientProduct(model, params, batch.x, batch.y);
      const approx = finiteDifferenceHg(model, params, value.grads, batch.x, batch.y, 1e-2);
      const flat = (p: Record<string, tf.Tensor>) =>
        Object.keys(params).flatMap((k) => Array.from(p[k]!.dataSync()));
      const [e, a] = [flat(exact), flat(approx)];
      const scale = Math.max(...e.map(Math.abs));
      expect(scale).toBeGreaterThan(1e-4);
      e.forEach((v, i) => expect(Math.abs(a[i]! - v) / scale).toBeLessThan(5e-2));
      tf.dispose(owned as tf.Tensor[]);
    });
    batch.dispose();
    model.dispose();
  });
});

describe('each natural-gradient optimizer trains and leaks nothing', () => {
  for (const name of ['kfac', 'ring', 'reng'] as const) {
    it(`${name}: loss decreases, numTensors flat over 200 steps`, async () => {
      const model: Sequential = tinyModel(2);
      const optimizer = createOptimizer(name, model, { seed: 5, inverseEvery: 5 });
      const baseline = tf.memory().numTensors;
      // Every 10th step as its row leaves, and once after the run.
      const during: number[] = [];
      const rows = await lastValueFrom(
        batches(data.train, { batchSize: 32, epochs: 40, steps: 200, seed: 1 }).pipe(
          forwardBackward(model, { signals: true }),
          fisherScan(model, optimizer.curvature!.damping, optimizer.curvature!.options),
          update(model, optimizer.transform),
          metrics(),
          tap((row) => {
            if (row.step % 10 === 0) during.push(tf.memory().numTensors);
          }),
          toArray(),
        ),
      );
      const after = tf.memory().numTensors;
      expect(rows).toHaveLength(200);
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      expect(mean(rows.slice(-20).map((r) => r.loss))).toBeLessThan(
        0.7 * mean(rows.slice(0, 20).map((r) => r.loss)),
      );
      // Flat over the run once the state exists (moving averages and first inverses: step 20 on),
      // not only back at the start when it ends.
      expect(during).toHaveLength(20);
      expect(
        new Set(during.slice(2)).size,
        `numTensors at steps 20, 30, …, 190: ${during.slice(2).join(', ')}`,
      ).toBe(1);
      expect(after).toBe(baseline);
      expect(
        rows.every(
          (r) =>
            Number.isFinite(r.diagnostics.damping!) &&
            r.diagnostics.klClip! > 0 &&
            r.diagnostics.klClip! <= 1,
        ),
      ).toBe(true);
      model.dispose();
    });
  }

  it('numTensors stays flat step by step (kfac) and returns to baseline after unsubscribe mid-refresh', async () => {
    const model = tinyModel(3);
    // Newton–Schulz: its refreshes are asynchronous (Cholesky's are not), so one can be mid-way.
    const optimizer = kfac(model, { inverseEvery: 3, inverse: 'newton-schulz' });
    const baseline = tf.memory().numTensors;
    const counts: number[] = [];
    await new Promise<void>((resolve, reject) =>
      batches(data.train, { batchSize: 32, epochs: 40, steps: 60, seed: 1 })
        .pipe(
          forwardBackward(model, { signals: true }),
          fisherScan(model, optimizer.curvature.damping, optimizer.curvature.options),
          update(model, optimizer),
          metrics(),
        )
        .subscribe({
          next: () => counts.push(tf.memory().numTensors),
          error: reject,
          complete: resolve,
        }),
    );
    expect(Math.max(...counts.slice(5))).toBe(Math.min(...counts.slice(5)));
    const subscription = batches(data.train, { batchSize: 32, epochs: 40, seed: 1 })
      .pipe(
        forwardBackward(model, { signals: true }),
        fisherScan(model, optimizer.curvature.damping, optimizer.curvature.options),
        update(model, optimizer),
        metrics(),
      )
      .subscribe();
    await new Promise((r) => setTimeout(r, 30));
    subscription.unsubscribe();
    await new Promise((r) => setTimeout(r, 100));
    expect(tf.memory().numTensors).toBe(baseline);
    model.dispose();
  });

  it('returns to baseline when unsubscribed at any moment of a long refresh (Newton–Schulz yields to the event loop)', async () => {
    // A 400-wide hidden layer: each refresh is many event-loop turns long, so these delays land
    // before, inside and after refreshes.
    const model = mlp({
      inputs: 6,
      layers: [{ units: 400, activation: 'tanh' }, { units: 3 }],
      seed: 2,
    });
    const optimizer = kfac(model, { inverseEvery: 2, inverse: 'newton-schulz' });
    const baseline = tf.memory().numTensors;
    for (let delay = 0; delay <= 600; delay += 13) {
      const subscription = batches(data.train, { batchSize: 32, epochs: 40, seed: 1 })
        .pipe(
          forwardBackward(model, { signals: true }),
          fisherScan(model, optimizer.curvature.damping, optimizer.curvature.options),
          update(model, optimizer),
          metrics(),
        )
        .subscribe();
      await new Promise((r) => setTimeout(r, delay));
      subscription.unsubscribe();
      // An in-flight refresh finishes, then everything is disposed; a leak never gets back.
      for (let waited = 0; waited < 5000 && tf.memory().numTensors !== baseline; waited += 20)
        await new Promise((r) => setTimeout(r, 20));
      expect(tf.memory().numTensors, `unsubscribed after ${delay} ms`).toBe(baseline);
    }
    model.dispose();
  }, 60_000);

  it('rejects a pipeline without signals and bad options with clear errors', async () => {
    const model = tinyModel();
    const optimizer = kfac(model);
    let error: unknown;
    await lastValueFrom(
      batches(data.train, { batchSize: 32, steps: 1 }).pipe(
        forwardBackward(model),
        fisherScan(model, optimizer.curvature.damping),
        toArray(),
      ),
    ).catch((e) => (error = e));
    expect(
      isGrngError(error) &&
        /forwardBackward\(model, \{ signals: true \}\)/.test((error as Error).message),
    ).toBe(true);
    const bad: Array<[() => unknown, RegExp]> = [
      [() => createOptimizer('ring', model, { rho: -1 }), /rho: -1/],
      [() => createOptimizer('kfac', model, { damping: -0.1 }), /damping: -0.1/],
      [() => createOptimizer('kfac', model, { inverseEvery: 2.5 }), /inverseEvery: 2.5/],
      [() => createOptimizer('reng', model, { statsEvery: 0 }), /statsEvery: 0/],
      [() => createOptimizer('kfac', model, { rho: 0.1 }), /option rho for optimizer kfac/],
    ];
    for (const [make, message] of bad) expect(make).toThrow(message);
    model.dispose();
  });
});
