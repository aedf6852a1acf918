/**
 * Composes a training pipeline by hand from grng's operators: a paced batch source, the
 * forward/backward pass, an optimizer built from parts (SGD with Nesterov momentum and a cosine
 * learning-rate schedule), test-set evaluation every 20 steps, and metric rows read back from
 * the device. Run: npx tsx examples/custom-pipeline.ts
 */
import { filter, lastValueFrom, tap, toArray } from 'rxjs';
import { batches, cosineSchedule, evaluate, forwardBackward, initBackend, loadMnist, metrics, mlp, sgd, update } from 'grng';

const backend = await initBackend('auto');
const data = await loadMnist();
const model = mlp({ inputs: 784, layers: [{ units: 128 }, { units: 10 }], seed: 7 });
const epochs = 2;
const steps = epochs * Math.ceil(data.train.n / 128);
const optimizer = sgd({ learningRate: cosineSchedule({ initial: 0.1, steps }), momentum: 0.9, nesterov: true });

const evaluations = await lastValueFrom(
  batches(data.train, { batchSize: 128, epochs, seed: 7 }).pipe(
    forwardBackward(model),
    update(model, optimizer),
    evaluate(model, data.test, { every: 20 }),
    metrics(),
    filter((row) => row.testAccuracy !== null),
    tap((row) => console.log(`step ${String(row.step + 1).padStart(3)}  lr ${row.learningRate.toFixed(4)}  loss ${row.loss.toFixed(4)}  ‖g‖ ${row.gradNorm.toFixed(3)}  test acc ${row.testAccuracy!.toFixed(4)}`)),
    toArray(),
  ),
);
model.dispose();
console.log(`backend ${backend.name}: final test accuracy ${evaluations.at(-1)!.testAccuracy!.toFixed(4)} after ${steps} steps`);
