import * as tf from '@tensorflow/tfjs';
import type { Layer } from './layer.js';

/**
 * Flattens each example [m, ...shape] to [m, Π shape] (row-major, as tf.reshape): what lets an
 * MLP take image-shaped batches. No parameters, no signal point; δ flows through the reshape.
 *
 * @example
 * const layer = flattenLayer('flatten', [28, 28, 1]); // outputShape [784]
 */
export function flattenLayer(name: string, inputShape: readonly number[]): Layer {
  const size = inputShape.reduce((n, d) => n * d, 1);
  return {
    kind: 'flatten',
    name,
    inputShape: [...inputShape],
    outputShape: [size],
    params: [],
    apply: (_params, x) => tf.reshape(x, [x.shape[0]!, size]),
  };
}
