import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, toArray, type OperatorFunction } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { syntheticDataset } from '../src/data/synthetic.js';
import { isGrngError } from '../src/errors.js';
import { mlp, type Sequential } from '../src/nn/sequential.js';
import { evaluate } from '../src/operators/evaluate.js';
import { fisherScan } from '../src/operators/fisherScan.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { guardFinite, stepHealth } from '../src/operators/guardFinite.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { createOptimizer } from '../src/optim/registry.js';
import { ring } from '../src/optim/ring.js';
import { sgd } from '../src/optim/sgd.js';
import { trainingPipeline } from '../src/run/pipeline.js';
import { batches } from '../src/streams/batches.js';
import type { Batch, MetricsRow } from '../src/types.js';
import { useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

const data = syntheticDataset({ features: 8, classes: 3, train: 256, test: 64, seed: 2 });
const source = () => batches(data.train, { batchSize: 32, epochs: 2, seed: 3 });
const newModel = () => mlp({ inputs: 8, layers: [{ units: 16 }, { units: 3 }], seed: 1 });

/** The numbers of a row that depend on the computation (not on timing). */
const numbers = (rows: MetricsRow[]) =>
  rows.map((r) => [
    r.step,
    r.loss,
    r.accuracy,
    r.gradNorm,
    r.updateNorm,
    r.testLoss,
    r.testAccuracy,
    r.diagnostics.damping ?? null,
  ]);

async function rowsOf(
  build: (model: Sequential) => OperatorFunction<Batch, MetricsRow>,
): Promise<MetricsRow[]> {
  const model = newModel();
  try {
    return await lastValueFrom(source().pipe(build(model), toArray()));
  } finally {
    model.dispose();
  }
}

describe('trainingPipeline', () => {
  it('is forwardBackward → update (guarded) → evaluate → metrics for a first-order optimizer', async () => {
    const baseline = tf.memory().numTensors;
    const piped = await rowsOf((model) =>
      trainingPipeline(model, sgd({ learningRate: 0.1, momentum: 0.9 }), {
        test: data.test,
        evalEvery: 4,
      }),
    );
    const byHand = await rowsOf((model) => (steps) => {
      const health = stepHealth();
      return steps.pipe(
        forwardBackward(model),
        update(model, sgd({ learningRate: 0.1, momentum: 0.9 }), {
          guard: health,
          checkGradients: true,
        }),
        evaluate(model, data.test, { every: 4 }),
        metrics({ health }),
      );
    });
    expect(piped).toHaveLength(16);
    expect(numbers(piped)).toEqual(numbers(byHand));
    expect(piped.filter((r) => r.testAccuracy !== null).map((r) => r.step)).toEqual([3, 7, 11, 15]);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('adds per-layer signals, guardFinite and fisherScan for an optimizer with curvature', async () => {
    const piped = await rowsOf((model) =>
      trainingPipeline(model, ring(model, { rho: 0.1, inverseEvery: 4 }), { test: data.test }),
    );
    const byHand = await rowsOf((model) => (steps) => {
      const health = stepHealth();
      const opt = ring(model, { rho: 0.1, inverseEvery: 4 });
      return steps.pipe(
        forwardBackward(model, { signals: true }),
        guardFinite(health),
        fisherScan(model, opt.curvature.damping, opt.curvature.options, { health }),
        update(model, opt, { guard: health, checkGradients: false }),
        evaluate(model, data.test),
        metrics({ health }),
      );
    });
    expect(numbers(piped)).toEqual(numbers(byHand));
    expect(piped.every((r) => Number.isFinite(r.diagnostics.damping))).toBe(true);
  });

  it('takes a named optimizer (createOptimizer) and a shared health record; without a test split it does not evaluate', async () => {
    const health = stepHealth({ maxBadSteps: 3 });
    const piped = await rowsOf((model) =>
      trainingPipeline(model, createOptimizer('rkalman', model), { health }),
    );
    expect(piped).toHaveLength(16);
    expect(piped.every((r) => r.testAccuracy === null && r.diagnostics.skippedSteps === 0)).toBe(
      true,
    );
    expect(health).toMatchObject({ total: 0, maxBadSteps: 3 });
  });

  it('refuses evalEvery without a test split, and unknown options, naming the option', () => {
    const model = newModel();
    try {
      const refused = (build: () => unknown): string => {
        try {
          build();
        } catch (error) {
          expect(isGrngError(error)).toBe(true);
          return (error as Error).message;
        }
        return 'accepted';
      };
      expect(
        refused(() => trainingPipeline(model, sgd({ learningRate: 0.1 }), { evalEvery: 10 })),
      ).toMatch(/evalEvery.*test/);
      expect(
        refused(() =>
          trainingPipeline(model, sgd({ learningRate: 0.1 }), { evalEvry: 10 } as never),
        ),
      ).toMatch(/evalEvry/);
      expect(
        refused(() =>
          trainingPipeline(model, sgd({ learningRate: 0.1 }), { guard: 'yes' } as never),
        ),
      ).toMatch(/guard/);
    } finally {
      model.dispose();
    }
  });
});
