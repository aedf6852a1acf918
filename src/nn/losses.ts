import * as tf from '@tensorflow/tfjs';
import { exp, rowMaxNoGradient } from './ops.js';

/**
 * Per-sample softmax cross-entropy −log softmax(z)[y], written from primitive ops
 * (z − max − log Σ exp) because tfjs's softmaxCrossEntropy and logSoftmax have custom gradients
 * that cannot be differentiated again (RENG and Sophia need the Hessian–vector product).
 * The max is a constant shift for stability, so it carries no gradient.
 *
 * @param logits m×c
 * @param oneHot m×c float one-hot labels (or any distribution over classes)
 * @returns m per-sample losses
 */
export function softmaxCrossEntropyPerSample(
  logits: tf.Tensor2D,
  oneHot: tf.Tensor2D,
): tf.Tensor1D {
  const shifted = tf.sub(logits, rowMaxNoGradient(logits));
  const logSumExp = tf.log(tf.sum(exp(shifted), 1));
  return tf.sub(logSumExp, tf.sum(tf.mul(shifted, oneHot), 1));
}

/** Mean softmax cross-entropy over the batch; see {@link softmaxCrossEntropyPerSample}. */
export function softmaxCrossEntropy(logits: tf.Tensor2D, oneHot: tf.Tensor2D): tf.Scalar {
  return tf.mean(softmaxCrossEntropyPerSample(logits, oneHot));
}

/** Number of rows whose arg-max equals the label (float scalar, for packing with other metrics). */
export function correctCount(logits: tf.Tensor2D, labels: tf.Tensor1D): tf.Scalar {
  return tf.sum(tf.cast(tf.equal(tf.argMax(logits, 1), labels), 'float32'));
}
