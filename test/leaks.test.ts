import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, take, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { syntheticDataset } from '../src/data/synthetic.js';
import { mlp } from '../src/nn/sequential.js';
import { evaluate } from '../src/operators/evaluate.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { adamw } from '../src/optim/adamw.js';
import { sgd } from '../src/optim/sgd.js';
import { batches } from '../src/streams/batches.js';
import { useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

const data = syntheticDataset({ features: 8, classes: 3, train: 256, test: 64, seed: 2 });

describe('tensor ownership', () => {
  for (const [name, makeOpt] of [
    ['sgd+momentum', () => sgd({ learningRate: 0.05, momentum: 0.9, weightDecay: 1e-4 })],
    ['adamw', () => adamw({ learningRate: 1e-2 })],
  ] as const) {
    it(`numTensors is flat over 500 steps and back to baseline after the run (${name}, signals on)`, async () => {
      const model = mlp({
        inputs: 8,
        layers: [{ units: 16 }, { units: 16, activation: 'tanh' }, { units: 3 }],
        seed: 1,
      });
      const baseline = tf.memory().numTensors;
      const counts: number[] = [];
      const rows = await lastValueFrom(
        batches(data.train, { batchSize: 32, epochs: 63, steps: 500, seed: 3 }).pipe(
          forwardBackward(model, { signals: true }),
          update(model, makeOpt()),
          evaluate(model, data.test, { every: 50 }),
          metrics({ correlationEvery: 1 }),
          toArray(),
        ),
      );
      expect(rows).toHaveLength(500);
      expect(tf.memory().numTensors).toBe(baseline);
      // Flatness during the run: sample numTensors at every row.
      const during = batches(data.train, { batchSize: 32, epochs: 63, steps: 500, seed: 3 }).pipe(
        forwardBackward(model, { signals: true }),
        update(model, makeOpt()),
        metrics(),
      );
      await new Promise<void>((resolve, reject) =>
        during.subscribe({
          next: () => counts.push(tf.memory().numTensors),
          error: reject,
          complete: resolve,
        }),
      );
      expect(counts).toHaveLength(500);
      expect(Math.max(...counts.slice(10))).toBe(Math.min(...counts.slice(10)));
      expect(counts[499]).toBe(counts[10]);
      expect(tf.memory().numTensors).toBe(baseline);
      expect(rows.at(-1)!.loss).toBeLessThan(rows[0]!.loss);
      model.dispose();
    });
  }

  it('returns to baseline after an early unsubscribe and after take(n)', async () => {
    const model = mlp({ inputs: 8, layers: [{ units: 16 }, { units: 3 }], seed: 1 });
    const baseline = tf.memory().numTensors;
    const pipeline = batches(data.train, { batchSize: 32, epochs: 10, seed: 3 }).pipe(
      forwardBackward(model, { signals: true }),
      update(model, adamw()),
      evaluate(model, data.test),
      metrics(),
    );
    let seen = 0;
    const subscription = pipeline.subscribe({ next: () => (seen += 1) });
    while (seen < 7) await new Promise((r) => setTimeout(r, 1));
    subscription.unsubscribe();
    await new Promise((r) => setTimeout(r, 20));
    expect(tf.memory().numTensors).toBe(baseline);
    const firstThree = await lastValueFrom(pipeline.pipe(take(3), toArray()));
    expect(firstThree.map((r) => r.step)).toEqual([0, 1, 2]);
    await new Promise((r) => setTimeout(r, 20));
    expect(tf.memory().numTensors).toBe(baseline);
    model.dispose();
  });
});
