/**
 * Composes a training run by hand: a paced batch source, an optimizer built from parts (SGD with
 * Nesterov momentum and a cosine learning-rate schedule), the training pipeline with test-set
 * evaluation every 20 steps, and sinks of its own (RxJS filter/tap) on the metric rows.
 * Run: npx tsx examples/custom-pipeline.ts
 */
import { filter, lastValueFrom, tap, toArray } from 'rxjs';
import { batches, cosineSchedule, initBackend, loadMnist, mlp, sgd, trainingPipeline } from 'grng';

const backend = await initBackend('auto');
const data = await loadMnist();
const model = mlp({ inputs: 784, layers: [{ units: 128 }, { units: 10 }], seed: 7 });
const epochs = 2;
const steps = epochs * Math.ceil(data.train.n / 128);
const optimizer = sgd({
  learningRate: cosineSchedule({ initial: 0.1, steps }),
  momentum: 0.9,
  nesterov: true,
});

const evaluations = await lastValueFrom(
  batches(data.train, { batchSize: 128, epochs, seed: 7 }).pipe(
    trainingPipeline(model, optimizer, { test: data.test, evalEvery: 20 }),
    filter((row) => row.testAccuracy !== null),
    tap((row) =>
      console.log(
        `step ${String(row.step + 1).padStart(3)}  lr ${row.learningRate.toFixed(4)}  loss ${row.loss.toFixed(4)}  ‖g‖ ${row.gradNorm.toFixed(3)}  test acc ${row.testAccuracy!.toFixed(4)}`,
      ),
    ),
    toArray(),
  ),
);
model.dispose();
console.log(
  `backend ${backend.name}: final test accuracy ${evaluations.at(-1)!.testAccuracy!.toFixed(4)} after ${steps} steps`,
);
