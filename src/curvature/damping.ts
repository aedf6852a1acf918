import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import { checkNumber } from '../validate.js';

/** A dense layer's damped Kronecker factors and the π that split the damping between them. */
// A type alias, not an interface: it then fits tf.TensorContainer, so tf.tidy can return it.
export type DampedFactors = {
  /** A + π√γ I, (in+1)×(in+1). */
  readonly a: tf.Tensor2D;
  /** G + (√γ/π) I, out×out. */
  readonly g: tf.Tensor2D;
  /** π = √((tr A/(in+1)) / (tr G/out)), or 1 where that is undefined; a device scalar. */
  readonly pi: tf.Scalar;
};

/**
 * Factored Tikhonov damping with the π correction of K-FAC [prior] (docs/algorithms.md,
 * Kronecker-factored Fisher): total damping γ
 * is split as A + π√γ I and G + (√γ/π) I, with π the ratio of the factors' mean eigenvalues, so
 * each factor is damped in proportion to its own scale (the product's damping stays ≈ γ while
 * neither factor's damping is swamped or negligible). Everything stays on the device: π is
 * computed and used there, no read-back. Where a trace is zero (a dead layer, an all-zero
 * signal) or π is not finite, π = 1, the uncorrected split.
 * The caller owns the results; `a` and `g` are not disposed.
 *
 * @param gamma total damping γ > 0.
 * @example
 * const { a: aDamped, g: gDamped, pi } = dampFactors(A, G, 1e-3);
 */
export function dampFactors(a: tf.Tensor2D, g: tf.Tensor2D, gamma: number): DampedFactors {
  const gam = checkNumber('gamma', gamma, { min: 0, minExclusive: true });
  for (const [name, t] of [
    ['a', a],
    ['g', g],
  ] as const) {
    if (t.rank !== 2 || t.shape[0] !== t.shape[1]) {
      throw new GrngError(
        'shape',
        `dampFactors needs square factors, got ${name} [${t.shape.join(', ')}]`,
        { [name]: t.shape },
      );
    }
  }
  const root = Math.sqrt(gam);
  return tf.tidy(() => {
    const dA = a.shape[0];
    const dG = g.shape[0];
    const meanA = tf.div(trace(a), dA);
    const meanG = tf.div(trace(g), dG);
    const ratio = tf.sqrt(tf.div(meanA, meanG));
    const defined = tf.logicalAnd(
      tf.logicalAnd(tf.greater(meanA, 0), tf.greater(meanG, 0)),
      tf.isFinite(ratio),
    );
    const pi = tf.where(defined, ratio, tf.onesLike(ratio)) as tf.Scalar;
    return {
      a: tf.add(a, tf.mul(tf.eye(dA), tf.mul(pi, root))) as tf.Tensor2D,
      g: tf.add(g, tf.mul(tf.eye(dG), tf.div(root, pi))) as tf.Tensor2D,
      pi,
    };
  });
}

/** tr M as a device scalar: the diagonal is every (d+1)-th entry of the flattened matrix. */
function trace(m: tf.Tensor2D): tf.Scalar {
  const d = m.shape[0];
  return tf.sum(tf.stridedSlice(tf.reshape(m, [d * d]), [0], [d * d], [d + 1]));
}
