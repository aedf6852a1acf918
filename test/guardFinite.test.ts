import * as tf from '@tensorflow/tfjs';
import { map, type OperatorFunction } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { syntheticDataset } from '../src/data/synthetic.js';
import { isGrngError } from '../src/errors.js';
import { mlp } from '../src/nn/sequential.js';
import { fisherScan } from '../src/operators/fisherScan.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { guardFinite, stepHealth } from '../src/operators/guardFinite.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { kfac } from '../src/optim/kfac.js';
import { sgd } from '../src/optim/sgd.js';
import type { GradientTransformation } from '../src/optim/transform.js';
import { batches } from '../src/streams/batches.js';
import type { Batch, MetricsRow, Params, Step } from '../src/types.js';
import { collectRows, useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

const data = syntheticDataset({ train: 256, test: 64, seed: 3 });

/** Replaces the batch's features by NaN at the given steps: a fault injected upstream of the loss. */
function poisonFeatures(steps: ReadonlySet<number>, value = NaN): OperatorFunction<Batch, Batch> {
  let made: tf.Tensor | undefined;
  return map((batch) => {
    made?.dispose();
    made = undefined;
    if (!steps.has(batch.step)) return batch;
    made = tf.fill(batch.x.shape, value);
    return { ...batch, x: made as tf.Tensor2D };
  });
}

/** An optimizer whose update of one parameter is NaN at the given steps (a fault inside the optimizer). */
function faultyAt(
  inner: GradientTransformation<unknown>,
  steps: ReadonlySet<number>,
  parameter: string,
): GradientTransformation<unknown> {
  return {
    init: (params) => inner.init(params),
    update(grads, state, params, context) {
      const result = inner.update(grads, state, params, context);
      if (!steps.has(context.step)) return result;
      const updates: Params = {
        ...result.updates,
        [parameter]: tf.mul(result.updates[parameter]!, NaN),
      };
      return { ...result, updates };
    },
  };
}

async function snapshot(params: Params): Promise<number[][]> {
  return Promise.all(Object.values(params).map(async (p) => Array.from(await p.data())));
}

describe('guardFinite', () => {
  // Two ways to guard: guardFinite before update (needed ahead of fisherScan), or update's guard
  // checking loss, gradients and update in one read-back (train() does that without fisherScan).
  const guards = {
    'guardFinite + update guard': (
      health: ReturnType<typeof stepHealth>,
    ): OperatorFunction<Step, Step> => guardFinite(health),
    'update guard with checkGradients': (): OperatorFunction<Step, Step> => map((s) => s),
  };
  for (const [mode, front] of Object.entries(guards)) {
    const checkGradients = mode !== 'guardFinite + update guard';
    it(`skips NaN losses before they touch the parameters, counts them, and training goes on (${mode})`, async () => {
      const model = mlp({
        inputs: 20,
        layers: [{ units: 16, activation: 'tanh' }, { units: 4 }],
        seed: 1,
      });
      const health = stepHealth({ maxBadSteps: 5 });
      const params: number[][][] = [];
      const before = tf.memory().numTensors;
      const { rows } = await collectRows(
        batches(data.train, { batchSize: 32, epochs: 10, steps: 20, seed: 1 }).pipe(
          poisonFeatures(new Set([4, 5, 6, 12])),
          forwardBackward(model),
          front(health),
          update(model, sgd({ learningRate: 0.1 }), { guard: health, checkGradients }),
          metrics({ health }),
          map(async (row: MetricsRow) => {
            params[row.step] = await snapshot(model.params);
            return row;
          }),
        ),
      );
      await Promise.all(rows);
      const resolved = await Promise.all(rows);
      expect(resolved.map((r) => r.diagnostics.skippedSteps)).toEqual([
        0, 0, 0, 0, 1, 2, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4,
      ]);
      expect(Number.isNaN(resolved[4]!.loss)).toBe(true);
      expect(Number.isNaN(resolved[4]!.updateNorm)).toBe(true); // no update made
      // Parameters did not move on a skipped step, and did on the others.
      expect(params[6]).toEqual(params[3]);
      expect(params[12]).toEqual(params[11]);
      expect(params[7]).not.toEqual(params[6]);
      for (const p of params.flat(2)) expect(Number.isFinite(p)).toBe(true);
      expect(resolved[19]!.loss).toBeLessThan(resolved[0]!.loss);
      expect(health.total).toBe(4);
      model.dispose();
      expect(tf.memory().numTensors).toBe(before - 4); // the model's four variables
    });

    it(`skips a non-finite update (parameters and optimizer state untouched) and names the first offending layer when it persists (${mode})`, async () => {
      const model = mlp({ inputs: 20, layers: [{ units: 16 }, { units: 4 }], seed: 1 });
      const health = stepHealth({ maxBadSteps: 3 });
      const rows: MetricsRow[] = [];
      const error = await new Promise<unknown>((resolve) =>
        batches(data.train, { batchSize: 32, epochs: 10, steps: 30, seed: 1 })
          .pipe(
            forwardBackward(model),
            front(health),
            update(
              model,
              faultyAt(
                sgd({ learningRate: 0.1, momentum: 0.9 }) as GradientTransformation<unknown>,
                new Set([2, 10, 11, 12, 13]),
                'dense1/kernel',
              ),
              { guard: health, checkGradients },
            ),
            metrics({ health }),
          )
          .subscribe({
            next: (r) => rows.push(r),
            error: resolve,
            complete: () => resolve(undefined),
          }),
      );
      expect(rows.map((r) => r.diagnostics.skippedSteps)).toEqual([
        0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 3,
      ]);
      expect(isGrngError(error)).toBe(true);
      expect((error as Error).message).toMatch(
        /step 12: 3 consecutive non-finite steps \(max-bad-steps 3\); the update of dense1\/kernel \(layer dense1\) is NaN or infinite/,
      );
      model.dispose();
    });
  }

  it('K-FAC: a skipped step is not folded into the factors and raises the damping ×10, which decays back', async () => {
    const model = mlp({
      inputs: 20,
      layers: [{ units: 16, activation: 'tanh' }, { units: 4 }],
      seed: 1,
    });
    const health = stepHealth();
    const opt = kfac(model, { learningRate: 0.05, damping: 1e-3 });
    const { rows } = await collectRows(
      batches(data.train, { batchSize: 32, epochs: 10, steps: 40, seed: 1 }).pipe(
        poisonFeatures(new Set([7])),
        forwardBackward(model, { signals: true }),
        guardFinite(health),
        fisherScan(model, { lambda: 1e-3, rho: 0, norm: 'mean' }, { inverseEvery: 10 }, { health }),
        update(model, opt, { guard: health }),
        metrics({ health }),
      ),
    );
    const damping = rows.map((r) => r.diagnostics.damping);
    expect(damping[6]).toBeCloseTo(1e-3, 9);
    expect(damping[8]).toBeCloseTo(1e-2, 9); // refreshed at once with the boost
    expect(damping[19]).toBeCloseTo(1e-2, 9);
    expect(damping[20]).toBeCloseTo(1e-3, 9); // the next clean scheduled refresh takes it back
    for (const r of rows.filter((r) => r.step !== 7))
      expect(Number.isFinite(r.loss) && Number.isFinite(r.updateNorm)).toBe(true);
    model.dispose();
  });
});
