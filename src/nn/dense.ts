import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import { activate, type Activation } from './activations.js';
import type { LayerApplyOptions, SignalLayer } from './layer.js';
import { addBroadcast, layerMatMul, matMulConstantB, matMulInput } from './ops.js';

/**
 * A fully connected layer s = a·W + b followed by an activation, with W stored in×out (the
 * forward product needs no transpose) and its signal point at s. Parameter keys
 * `{name}/kernel`, `{name}/bias`.
 */
export interface DenseLayer extends SignalLayer {
  readonly kind: 'dense';
  /** Position among the model's dense layers (it seeds the initial weights). */
  readonly index: number;
  readonly inputs: number;
  readonly units: number;
  readonly activation: Activation;
  /** Key of the in×out kernel. */
  readonly kernel: string;
  /** Key of the bias [out]. */
  readonly bias: string;
}

/**
 * Describes a dense layer; the model creates its parameters.
 *
 * @example
 * const layer = denseLayer({ name: 'dense0', index: 0, inputs: 784, units: 256, activation: 'relu' });
 */
export function denseLayer({
  name,
  index,
  inputs,
  units,
  activation,
}: {
  name: string;
  index: number;
  inputs: number;
  units: number;
  activation: Activation;
}): DenseLayer {
  const kernel = `${name}/kernel`;
  const bias = `${name}/bias`;
  return {
    kind: 'dense',
    name,
    index,
    inputs,
    units,
    activation,
    kernel,
    bias,
    inputShape: [inputs],
    outputShape: [units],
    signalShape: [units],
    params: [kernel, bias],
    apply(params: Params, a: tf.Tensor, options: LayerApplyOptions = {}): tf.Tensor {
      const x = a as tf.Tensor2D;
      let s = affine(x, params[kernel] as tf.Tensor2D, params[bias]!, options);
      if (options.signal) s = tf.add(s, options.signal);
      options.taps?.push({ a: x, s });
      return activate(activation, s);
    },
  };
}

/**
 * x·W + b for m×in rows, in the cheapest differentiable form the pass allows: the input layer's
 * product needs no gradient with respect to the data, and with constant parameters none with
 * respect to the kernel (see ops.ts for why each form is cheaper).
 */
export function affine(
  x: tf.Tensor2D,
  w: tf.Tensor2D,
  b: tf.Tensor,
  options: LayerApplyOptions,
): tf.Tensor2D {
  const product = options.constantParams
    ? options.inputIsData
      ? tf.matMul(x, w)
      : matMulConstantB(x, w)
    : options.inputIsData
      ? matMulInput(x, w)
      : layerMatMul(x, w);
  return addBroadcast(product, b) as tf.Tensor2D;
}
