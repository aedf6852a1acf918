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

/**
 * Seeded initial HWIO kernel [kh, kw, cin, cout] and bias [cout] for one conv layer, with
 * fanIn = kh·kw·cin: `torch` is PyTorch's nn.Conv2d default (kaiming_uniform with a = √5, which is
 * U(±1/√fanIn), and the same bound for the bias), `he` N(0, 2/fanIn), `glorot`
 * U(±√(6/(fanIn + fanOut))) with fanOut = kh·kw·cout (Keras's convention), `auto` as for dense.
 *
 * @example
 * const { kernel, bias } = initConv2d(3, 3, 1, 32, 'relu', 'torch', 7);
 */
export function initConv2d(
  kh: number,
  kw: number,
  cin: number,
  cout: number,
  activation: Activation,
  init: Initializer,
  seed: number,
): { kernel: tf.Tensor4D; bias: tf.Tensor1D } {
  const kind =
    init === 'auto' ? (activation === 'relu' || activation === 'gelu' ? 'he' : 'glorot') : init;
  const shape: [number, number, number, number] = [kh, kw, cin, cout];
  const fanIn = kh * kw * cin;
  return tf.tidy(() => {
    switch (kind) {
      case 'he':
        return {
          kernel: tf.randomNormal(shape, 0, Math.sqrt(2 / fanIn), 'float32', seed),
          bias: tf.zeros([cout]),
        };
      case 'glorot': {
        const limit = Math.sqrt(6 / (fanIn + kh * kw * cout));
        return {
          kernel: tf.randomUniform(shape, -limit, limit, 'float32', seed),
          bias: tf.zeros([cout]),
        };
      }
      case 'torch': {
        const limit = 1 / Math.sqrt(fanIn);
        return {
          kernel: tf.randomUniform(shape, -limit, limit, 'float32', seed),
          bias: tf.randomUniform([cout], -limit, limit, 'float32', seed + 0.5),
        };
      }
    }
  });
}
