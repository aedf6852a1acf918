import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';

/** One batch's Kronecker factors of a dense layer's Fisher block. */
// A type alias, not an interface: it then fits tf.TensorContainer, so tf.tidy can return it.
export type BatchFactors = {
  /** Â = ĀᵀĀ/m, (in+1)×(in+1); the last row and column belong to the bias. */
  readonly a: tf.Tensor2D;
  /** Ĝ = ΔᵀΔ/m, out×out. */
  readonly g: tf.Tensor2D;
};

/**
 * The K-FAC statistics of one dense layer for one batch [prior] (spec §2): Â = ĀᵀĀ/m with the
 * homogeneous input Ā = [a, 1], and Ĝ = ΔᵀΔ/m. The ones column goes *last* because grng stores
 * a dense kernel as in×out with the bias separate: stacking the bias under the kernel gives the
 * (in+1)×out block whose Fisher is A ⊗ G, so the bias owns A's last row and column.
 * The caller owns both results; `a` and `delta` are not disposed.
 *
 * @param a layer input, m×in (no homogeneous column).
 * @param delta per-sample back-propagated signal δ_i = ∂l_i/∂s_i, m×out.
 * @example
 * const { a: A, g: G } = batchFactors(signals.a, signals.delta);
 */
export function batchFactors(a: tf.Tensor2D, delta: tf.Tensor2D): BatchFactors {
  if (a.rank !== 2 || delta.rank !== 2 || a.shape[0] !== delta.shape[0] || a.shape[0] === 0) {
    throw new GrngError('shape', `batchFactors needs a (m×in) and delta (m×out) with the same m > 0, got [${a.shape.join(', ')}] and [${delta.shape.join(', ')}]`, {
      a: a.shape,
      delta: delta.shape,
    });
  }
  const m = a.shape[0];
  return tf.tidy(() => {
    const homogeneous = tf.concat([a, tf.ones([m, 1])], 1) as tf.Tensor2D;
    // Explicit transposes: the wasm backend runs transposed matMul flags 13–70× slower.
    const aFactor = tf.div(tf.matMul(tf.transpose(homogeneous), homogeneous), m) as tf.Tensor2D;
    const gFactor = tf.div(tf.matMul(tf.transpose(delta), delta), m) as tf.Tensor2D;
    return { a: aFactor, g: gFactor };
  });
}
