import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import type { Layer } from './layer.js';
import { addBroadcast, mulBroadcast } from './ops.js';

/** PyTorch's nn.LayerNorm default, so runs compare with the PyTorch twin (bench/torch_models.py). */
export const LAYER_NORM_EPSILON = 1e-5;

/** Layer normalisation over the last axis with a learned scale and shift. */
export interface LayerNormLayer extends Layer {
  readonly kind: 'layerNorm';
  /** Key of the scale [width] (initially ones). */
  readonly scale: string;
  /** Key of the shift [width] (initially zeros). */
  readonly shift: string;
}

/**
 * Describes a layer norm over the last axis of `shape`: y = (x − μ)/√(σ² + ε)·scale + shift, with
 * μ and σ² (biased) over that axis of each position. Built from mean, square and rsqrt, whose
 * gradients are computed from their inputs, so it is differentiable to any order (RENG's Hg;
 * checked against finite differences in test/transformer.test.ts). No signal point: the scale
 * and shift go to the first-order group.
 *
 * @example
 * const ln = layerNormLayer('block0/ln1', [64, 128]);
 */
export function layerNormLayer(name: string, shape: readonly number[]): LayerNormLayer {
  const scale = `${name}/scale`;
  const shift = `${name}/shift`;
  return {
    kind: 'layerNorm',
    name,
    scale,
    shift,
    inputShape: [...shape],
    outputShape: [...shape],
    params: [scale, shift],
    apply(params: Params, x: tf.Tensor): tf.Tensor {
      const centered = tf.sub(x, tf.mean(x, -1, true));
      const variance = tf.mean(tf.square(centered), -1, true);
      const normalised = tf.mul(centered, tf.rsqrt(tf.add(variance, LAYER_NORM_EPSILON)));
      return addBroadcast(mulBroadcast(normalised, params[scale]!), params[shift]!);
    },
  };
}
