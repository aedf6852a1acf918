import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import { activate, type Activation } from './activations.js';
import { affine } from './dense.js';
import type { LayerApplyOptions, SignalLayer } from './layer.js';

/**
 * A dense layer applied to every position of a sequence, [m, positions, in] → [m, positions,
 * out], s = a·W + b at each position (attention's Q, K, V and output projections, a transformer's
 * MLP and its language-model head). The same kernel and bias keys as dense (`{name}/kernel`,
 * `{name}/bias`); its signal point is s at every position, [positions, out] per example, so the
 * curvature block sees one δ per token (docs/algorithms.md, sequence-dense blocks).
 */
export interface SequenceDenseLayer extends SignalLayer {
  readonly kind: 'sequenceDense';
  readonly positions: number;
  readonly inputs: number;
  readonly units: number;
  readonly activation: Activation;
  readonly kernel: string;
  readonly bias: string;
}

/**
 * Describes a sequence-dense layer; the model creates its parameters.
 *
 * @example
 * const q = sequenceDenseLayer({ name: 'block0/q', positions: 64, inputs: 128, units: 128 });
 */
export function sequenceDenseLayer({
  name,
  positions,
  inputs,
  units,
  activation = 'identity',
}: {
  name: string;
  positions: number;
  inputs: number;
  units: number;
  activation?: Activation;
}): SequenceDenseLayer {
  const kernel = `${name}/kernel`;
  const bias = `${name}/bias`;
  return {
    kind: 'sequenceDense',
    name,
    positions,
    inputs,
    units,
    activation,
    kernel,
    bias,
    inputShape: [positions, inputs],
    outputShape: [positions, units],
    signalShape: [positions, units],
    params: [kernel, bias],
    apply(params: Params, a: tf.Tensor, options: LayerApplyOptions = {}): tf.Tensor {
      const m = a.shape[0]!;
      // Token rows are batch rows for the product: one GEMM of (m·positions)×in by in×out.
      const rows = tf.reshape(a, [m * positions, inputs]) as tf.Tensor2D;
      let s: tf.Tensor = tf.reshape(
        affine(rows, params[kernel] as tf.Tensor2D, params[bias]!, options),
        [m, positions, units],
      );
      if (options.signal) s = tf.add(s, options.signal);
      options.taps?.push({ a, s });
      return activate(activation, s);
    },
  };
}
