import * as tf from '@tensorflow/tfjs';
import { checkUnitInterval } from '../validate.js';

/**
 * Default decay β of the factor moving averages (docs/algorithms.md, Kronecker-factored Fisher).
 */
export const DEFAULT_FACTOR_DECAY = 0.95;

/**
 * An exponential moving average of a Kronecker factor, kept with its total weight so that the
 * bias-corrected value sum/weight is exact from the first update on (a zero-initialised
 * average would otherwise under-state the factor for the first ~1/(1−β) steps, and the damping
 * would dominate there).
 */
export interface FactorAverage {
  /** Σ_k β^(n−k) (1−β) S_k over the samples S_k seen so far. */
  readonly sum: tf.Tensor2D;
  /** Σ_k β^(n−k) (1−β) = 1 − βⁿ: the weight that bias-corrects `sum`. */
  readonly weight: number;
}

/**
 * The average after its first sample: the same as updating a zero average, so that its
 * value (sum/weight) is the sample itself. The caller owns `sum`; `sample` is not disposed.
 *
 * @example
 * let avg = startAverage(aHat); // averageValue(avg) equals aHat
 */
export function startAverage(
  sample: tf.Tensor2D,
  beta: number = DEFAULT_FACTOR_DECAY,
): FactorAverage {
  const b = checkUnitInterval('beta', beta);
  return { sum: tf.tidy(() => tf.mul(sample, 1 - b) as tf.Tensor2D), weight: 1 - b };
}

/**
 * sum ← β·sum + (1−β)·sample, weight ← β·weight + (1−β) [prior] (docs/algorithms.md,
 * Kronecker-factored Fisher). Pure: returns a new
 * average and disposes neither the old one nor the sample (the caller swaps and disposes, so a
 * failed step never leaves a half-updated state).
 *
 * @example
 * const next = updateAverage(avg, aHat); avg.sum.dispose(); avg = next;
 */
export function updateAverage(
  average: FactorAverage,
  sample: tf.Tensor2D,
  beta: number = DEFAULT_FACTOR_DECAY,
): FactorAverage {
  const b = checkUnitInterval('beta', beta);
  const sum = tf.tidy(() => tf.add(tf.mul(average.sum, b), tf.mul(sample, 1 - b)) as tf.Tensor2D);
  return { sum, weight: b * average.weight + (1 - b) };
}

/**
 * The bias-corrected factor sum/weight, a new tensor the caller owns.
 *
 * @example
 * const A = averageValue(avg);
 */
export function averageValue(average: FactorAverage): tf.Tensor2D {
  return tf.tidy(() => tf.div(average.sum, average.weight) as tf.Tensor2D);
}
