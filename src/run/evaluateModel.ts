import * as tf from '@tensorflow/tfjs';
import { exampleShape, labelsPerExample, type Split } from '../data/dataset.js';
import { GrngError } from '../errors.js';
import { softmaxCrossEntropyPerSample } from '../nn/losses.js';
import { softmaxLastAxis } from '../nn/ops.js';
import type { Sequential } from '../nn/sequential.js';
import type { Params } from '../types.js';
import { checkInteger } from '../validate.js';

/** What {@link evaluateModel} measures on a split. */
export interface ModelEvaluation {
  /** Examples evaluated. */
  readonly examples: number;
  /** Labels evaluated: examples × labels per example (tokens, for a language model). */
  readonly labels: number;
  readonly classes: number;
  /** Mean softmax cross-entropy per label, in nats (train's `testLoss`). */
  readonly loss: number;
  /** Share of labels whose most likely class is right (train's `testAccuracy`). */
  readonly accuracy: number;
  /**
   * classes×classes counts, row = true class, column = predicted class (row-major); absent for
   * a language model, whose 256×256 matrix nobody reads.
   */
  readonly confusion?: Int32Array;
}

/**
 * Loss, accuracy and confusion matrix of a model on a split, in chunks of about 8,192 logits rows
 * (as the training-time evaluation, whose numbers it reproduces). A label outside the model's
 * classes is an error naming the example.
 *
 * @example
 * const { accuracy, confusion } = await evaluateModel(model, data.test);
 */
export async function evaluateModel(
  model: Sequential,
  split: Split,
  { batchSize }: { batchSize?: number } = {},
): Promise<ModelEvaluation> {
  const perExample = labelsPerExample(split);
  if (perExample !== model.labelsPerExample)
    throw new GrngError(
      'shape',
      `model ${model.description} predicts ${model.labelsPerExample} label(s) per example, the data has ${perExample}`,
      { option: 'model' },
    );
  const shape = exampleShape(split);
  if (shape.join() !== model.inputShape.join())
    throw new GrngError(
      'shape',
      `model ${model.description} takes examples of shape [${model.inputShape.join(', ')}], the data has [${shape.join(', ')}]`,
      { option: 'model' },
    );
  const classes = model.outputs;
  const outside = split.y.findIndex((label) => label < 0 || label >= classes);
  if (outside >= 0)
    throw new GrngError(
      'invalid-data',
      `example ${Math.floor(outside / perExample)} has label ${split.y[outside]}, but model ${model.description} has ${classes} classes`,
      { option: 'dataset', row: Math.floor(outside / perExample) },
    );
  const chunk = checkInteger(
    'batchSize',
    batchSize ?? Math.max(1, Math.min(1024, Math.floor(8192 / perExample))),
    1,
  );
  const features = split.x.length / split.n;
  const confusion = perExample === 1 ? new Int32Array(classes * classes) : undefined;
  let lossSum = 0;
  let correct = 0;
  for (let start = 0; start < split.n; start += chunk) {
    const end = Math.min(split.n, start + chunk);
    const labels = split.y.subarray(start * perExample, end * perExample);
    const [losses, predicted] = tf.tidy(() => {
      const x = tf.tensor(split.x.subarray(start * features, end * features), [
        end - start,
        ...shape,
      ]);
      const logits = model.apply(model.params as Params, x).logits;
      const oneHot = tf.cast(
        tf.oneHot(tf.tensor1d(labels, 'int32'), classes),
        'float32',
      ) as tf.Tensor2D;
      return [softmaxCrossEntropyPerSample(logits, oneHot), tf.argMax(logits, 1)];
    });
    try {
      const [lossValues, predictions] = await Promise.all([losses.data(), predicted.data()]);
      for (let i = 0; i < labels.length; i++) {
        lossSum += lossValues[i]!;
        if (predictions[i] === labels[i]) correct += 1;
        if (confusion) confusion[labels[i]! * classes + predictions[i]!]! += 1;
      }
    } finally {
      tf.dispose([losses, predicted]);
    }
  }
  const total = split.n * perExample;
  return {
    examples: split.n,
    labels: total,
    classes,
    loss: lossSum / total,
    accuracy: correct / total,
    ...(confusion ? { confusion } : {}),
  };
}

/**
 * Class probabilities (softmax of the logits) and the most likely class of each example of a
 * classifier, in chunks; `x` holds n examples of the model's input shape, row-major.
 *
 * @example
 * const { probabilities, predicted } = await predictClasses(model, rows.x, rows.n);
 */
export async function predictClasses(
  model: Sequential,
  x: Float32Array,
  n: number,
  { batchSize = 1024 }: { batchSize?: number } = {},
): Promise<{ probabilities: Float32Array; predicted: Int32Array }> {
  if (model.labelsPerExample !== 1)
    throw new GrngError(
      'invalid-model',
      `model ${model.description} predicts ${model.labelsPerExample} tokens per example, not one class: sample text from it with grng generate`,
      { option: 'model' },
    );
  const classes = model.outputs;
  const features = model.inputs;
  if (x.length !== n * features)
    throw new GrngError(
      'shape',
      `${n} examples of ${features} values need ${n * features} values, got ${x.length}`,
      { option: 'input' },
    );
  const probabilities = new Float32Array(n * classes);
  const predicted = new Int32Array(n);
  for (let start = 0; start < n; start += batchSize) {
    const end = Math.min(n, start + batchSize);
    const [p, best] = tf.tidy(() => {
      const input = tf.tensor(x.subarray(start * features, end * features), [
        end - start,
        ...model.inputShape,
      ]);
      const logits = model.apply(model.params as Params, input).logits;
      return [softmaxLastAxis(logits), tf.argMax(logits, 1)];
    });
    try {
      const [values, indices] = await Promise.all([p.data(), best.data()]);
      probabilities.set(values as Float32Array, start * classes);
      predicted.set(indices as Int32Array, start);
    } finally {
      tf.dispose([p, best]);
    }
  }
  return { probabilities, predicted };
}
