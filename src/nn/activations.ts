import * as tf from '@tensorflow/tfjs';
import { erf, tanh } from './ops.js';

export const ACTIVATIONS = ['relu', 'tanh', 'gelu', 'identity'] as const;
export type Activation = (typeof ACTIVATIONS)[number];

const SQRT1_2 = Math.SQRT1_2;

/**
 * Applies an activation; every one is twice differentiable (relu almost everywhere; tanh through
 * ops.ts because tfjs's own is not; gelu through ops.ts's erf, built from its input).
 */
export function activate(kind: Activation, s: tf.Tensor): tf.Tensor {
  switch (kind) {
    case 'relu':
      return tf.relu(s);
    case 'tanh':
      return tanh(s);
    case 'gelu':
      // Exact GELU, x·Φ(x), as PyTorch's default.
      return tf.mul(tf.mul(s, 0.5), tf.add(1, erf(tf.mul(s, SQRT1_2))));
    case 'identity':
      return s;
  }
}
