/**
 * A CNN written with plain TensorFlow.js (`tf.sequential()`), trained by grng with RING, saved as
 * a LayersModel and served again with plain tfjs: `tf.loadLayersModel` reads the files (through
 * grng's file handler here; `'file://runs/ring-cnn/model.json'` with tfjs-node) and its
 * `predict` gives the class probabilities grng's model gives.
 * Run: npx tsx examples/layers-model-roundtrip.ts
 */
import * as tf from '@tensorflow/tfjs';
import { lastValueFrom } from 'rxjs';
import {
  batches,
  createOptimizer,
  fromLayersModel,
  initBackend,
  layersModelFiles,
  loadMnist,
  saveLayersModel,
  trainingPipeline,
  withExampleShape,
} from 'grng';

const backend = await initBackend('auto');
const data = withExampleShape(await loadMnist(), [28, 28, 1]);

// 1. A model as any TensorFlow.js user writes it (the softmax is left to grng's loss in training).
const written = tf.sequential({
  layers: [
    tf.layers.conv2d({ inputShape: [28, 28, 1], filters: 8, kernelSize: 3, activation: 'relu' }),
    tf.layers.maxPooling2d({ poolSize: 2 }),
    tf.layers.flatten(),
    tf.layers.dense({ units: 64, activation: 'relu' }),
    tf.layers.dense({ units: 10, activation: 'softmax' }),
  ],
});
const model = fromLayersModel(written, { description: 'tf.sequential CNN' });
written.dispose();

// 2. One epoch of RING: K-FAC curvature on the conv and dense layers, gradient-regularized damping.
const optimizer = createOptimizer('ring', model, {});
const rows = await lastValueFrom(
  batches(data.train, { batchSize: 128, epochs: 1, seed: 1 }).pipe(
    trainingPipeline(model, optimizer, { test: data.test }),
  ),
);
console.log(`backend ${backend.name}: RING test accuracy ${rows.testAccuracy!.toFixed(4)}`);

// 3. Save as model.json + weights.bin; load with plain tfjs; predict.
await saveLayersModel(model, 'runs/ring-cnn');
const served = await tf.loadLayersModel(layersModelFiles('runs/ring-cnn'));
const images = tf.tensor(data.test.x, [data.test.n, 28, 28, 1]);
const probabilities = served.predict(images) as tf.Tensor2D;
const predicted = (await probabilities.argMax(1).data()) as Int32Array;
const correct = predicted.filter((p, i) => p === data.test.y[i]).length;
const grngProbabilities = tf.softmax(model.apply(model.params, images).logits);
const difference = (await tf.max(tf.abs(tf.sub(probabilities, grngProbabilities))).data())[0]!;
console.log(
  `plain tfjs on the saved model: test accuracy ${(correct / data.test.n).toFixed(4)}, largest probability difference from grng ${difference.toExponential(1)}`,
);
tf.dispose([images, probabilities, grngProbabilities]);
served.dispose();
model.dispose();
