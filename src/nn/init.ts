import * as tf from '@tensorflow/tfjs';
import type { Activation } from './activations.js';

export const INITIALIZERS = ['auto', 'he', 'glorot', 'torch'] as const;
/**
 * - `he`: N(0, 2/fanIn) weights (Kaiming, for relu/gelu);
 * - `glorot`: U(±√(6/(fanIn+fanOut))) weights (Xavier, for tanh and the output layer);
 * - `torch`: U(±1/√fanIn) weights and biases, PyTorch's nn.Linear default (to reproduce its runs);
 * - `auto`: `he` before relu/gelu, `glorot` otherwise.
 * Biases are zero except under `torch`. The default is `torch`, so that a run matches the
 * PyTorch reference runs it is compared with (see docs/benchmarks.md); `he` trains MNIST a
 * little faster.
 */
export type Initializer = (typeof INITIALIZERS)[number];

/** Seeded initial kernel (fanIn×fanOut) and bias (fanOut) for one dense layer. */
export function initDense(
  fanIn: number,
  fanOut: number,
  activation: Activation,
  init: Initializer,
  seed: number,
): { kernel: tf.Tensor2D; bias: tf.Tensor1D } {
  const kind =
    init === 'auto' ? (activation === 'relu' || activation === 'gelu' ? 'he' : 'glorot') : init;
  return tf.tidy(() => {
    switch (kind) {
      case 'he':
        return {
          kernel: tf.randomNormal([fanIn, fanOut], 0, Math.sqrt(2 / fanIn), 'float32', seed),
          bias: tf.zeros([fanOut]),
        };
      case 'glorot': {
        const limit = Math.sqrt(6 / (fanIn + fanOut));
        return {
          kernel: tf.randomUniform([fanIn, fanOut], -limit, limit, 'float32', seed),
          bias: tf.zeros([fanOut]),
        };
      }
      case 'torch': {
        const limit = 1 / Math.sqrt(fanIn);
        return {
          kernel: tf.randomUniform([fanIn, fanOut], -limit, limit, 'float32', seed),
          bias: tf.randomUniform([fanOut], -limit, limit, 'float32', seed + 0.5),
        };
      }
    }
  });
}
