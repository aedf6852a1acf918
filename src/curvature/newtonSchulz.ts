import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import { sumAll } from '../optim/tree.js';
import { checkInteger, checkKeys, checkNumber } from '../validate.js';

/** Default stopping threshold on ‖I − M X‖_F/√d (spec §3, `newtonTol`). */
export const DEFAULT_NEWTON_TOLERANCE = 1e-4;
/** Default cap on iterations (spec §3, `newtonMaxIters`). */
export const DEFAULT_NEWTON_MAX_ITERATIONS = 30;
/** Default spacing of residual read-backs, in iterations. */
export const DEFAULT_NEWTON_CHECK_EVERY = 2;

/** Options of {@link newtonSchulzInverse}. */
export interface NewtonSchulzOptions {
  /** A previous inverse of a nearby matrix (same size) to start from; not disposed. */
  readonly warmStart?: tf.Tensor2D;
  /** Stop once ‖I − M X‖_F/√d falls below this (> 0). Default 1e-4. */
  readonly tolerance?: number;
  /** Cap on iterations (integer ≥ 1). Default 30. */
  readonly maxIterations?: number;
  /** Read the residual back every this many iterations (integer ≥ 1). Default 2. */
  readonly checkEvery?: number;
}

/** What {@link newtonSchulzInverse} returns. */
export interface NewtonSchulzResult {
  /** The symmetrised approximate inverse, owned by the caller. */
  readonly inverse: tf.Tensor2D;
  /** Iterations X ← X(2I − M X) performed. */
  readonly iterations: number;
  /** ‖I − M X‖_F/√d of the returned (symmetrised) inverse. */
  readonly residual: number;
  /** True when the iteration started from I/‖M‖_F (no warm start, or a rejected one). */
  readonly coldStart: boolean;
}

const KNOWN = ['warmStart', 'tolerance', 'maxIterations', 'checkEvery'];

/**
 * Inverse of a symmetric positive definite matrix by the Newton–Schulz iteration
 * X ← X(2I − M X) [prior] (spec §3): tfjs has no inverse, solve or Cholesky, and this needs
 * only matrix products, so it runs on every backend in float32.
 *
 * - Cold start X₀ = I/‖M‖_F: for SPD M every eigenvalue of M X₀ lies in (0, 1], which
 *   guarantees convergence.
 * - Warm start from `warmStart` (the previous inverse of the same, slowly moving factor) unless
 *   ‖I − M X₀‖_F ≥ 1 (or is not finite), where convergence is no longer guaranteed; then cold.
 * - Stops when ‖I − M X‖_F/√d < `tolerance`, at `maxIterations`, or [ours] when the residual
 *   stops shrinking although it is already below 1/2 in Frobenius norm: there exact
 *   arithmetic at least halves it every iteration (R ← R²), so a residual that does not means
 *   float32 rounding has been reached and further iterations would only burn time.
 * - Returns (X + Xᵀ)/2 and its residual, recomputed after symmetrising.
 *
 * Each iteration costs two d×d products; the residual I − M X is the first of them, so a check
 * costs only a reduction and one scalar read-back (`checkEvery` spaces those out, since a read
 * stalls an asynchronous backend's queue). `m` and `warmStart` are not disposed.
 *
 * @example
 * const first = await newtonSchulzInverse(aDamped);
 * const next = await newtonSchulzInverse(aDampedLater, { warmStart: first.inverse });
 * first.inverse.dispose();
 */
export async function newtonSchulzInverse(m: tf.Tensor2D, options: NewtonSchulzOptions = {}): Promise<NewtonSchulzResult> {
  checkKeys('newtonSchulzInverse', options, KNOWN);
  const tolerance = checkNumber('tolerance', options.tolerance ?? DEFAULT_NEWTON_TOLERANCE, { min: 0, minExclusive: true });
  const maxIterations = checkInteger('maxIterations', options.maxIterations ?? DEFAULT_NEWTON_MAX_ITERATIONS, 1);
  const checkEvery = checkInteger('checkEvery', options.checkEvery ?? DEFAULT_NEWTON_CHECK_EVERY, 1);
  if (m.rank !== 2 || m.shape[0] !== m.shape[1] || m.shape[0] === 0) {
    throw new GrngError('shape', `newtonSchulzInverse needs a non-empty square matrix, got [${m.shape.join(', ')}]`, { m: m.shape });
  }
  const d = m.shape[0];
  const warm = options.warmStart;
  if (warm !== undefined && (warm.rank !== 2 || warm.shape[0] !== d || warm.shape[1] !== d)) {
    throw new GrngError('shape', `newtonSchulzInverse warmStart must be ${d}×${d} like the matrix, got [${warm.shape.join(', ')}]`, { m: m.shape, warmStart: warm.shape });
  }

  const eye = tf.eye(d) as tf.Tensor2D;
  // Normalised residual ‖R‖_F/√d, so one tolerance fits every factor size.
  const readResidual = async (r: tf.Tensor2D): Promise<number> => {
    const s = tf.tidy(() => tf.sqrt(tf.div(sumAll(tf.square(r)), d)) as tf.Scalar);
    try {
      return (await s.data())[0]!;
    } finally {
      s.dispose();
    }
  };
  const residualMatrix = (x: tf.Tensor2D): tf.Tensor2D => tf.tidy(() => tf.sub(eye, tf.matMul(m, x)));
  const coldStartMatrix = (): tf.Tensor2D => tf.tidy(() => tf.div(eye, tf.sqrt(sumAll(tf.square(m)))) as tf.Tensor2D);

  // Live iterates, disposed in `finally` whatever happens; only the returned inverse survives.
  let x: tf.Tensor2D | undefined;
  let r: tf.Tensor2D | undefined;
  try {
    let coldStart = warm === undefined;
    x = warm !== undefined ? tf.clone(warm) : coldStartMatrix();
    r = residualMatrix(x);
    // The last residual read back, for the stopping and stagnation tests.
    let last: number | undefined;
    // Converged, or diverged (NaN, ∞: not SPD or not finite), so iterating on is pointless.
    const finished = (v: number | undefined): boolean => v !== undefined && !(Number.isFinite(v) && v >= tolerance);
    if (!coldStart) {
      last = await readResidual(r);
      // ‖R‖_F = √d·last; below 1 convergence is guaranteed, at or above it is not.
      if (!(Number.isFinite(last) && last * Math.sqrt(d) < 1)) {
        tf.dispose([x, r]);
        x = coldStartMatrix();
        r = residualMatrix(x);
        coldStart = true;
        last = undefined;
      }
    }

    let iterations = 0;
    while (iterations < maxIterations && !finished(last)) {
      // X(2I − M X) = X + X R with R = I − M X, already computed for the check: adding a small
      // correction to X also loses less in float32 than forming 2X − X M X.
      const next: tf.Tensor2D = tf.tidy(() => tf.add(x!, tf.matMul(x!, r!)));
      tf.dispose([x, r]);
      x = next;
      r = undefined;
      iterations += 1;
      // At the cap the residual of X is not needed: the symmetrised one is computed below.
      if (iterations === maxIterations) break;
      r = residualMatrix(x);
      if (iterations % checkEvery === 0) {
        const previous = last;
        last = await readResidual(r);
        // Exact arithmetic at least halves a residual whose Frobenius norm is below 1/2
        // (R ← R², ‖R²‖ ≤ ‖R‖²); when it does not, float32 rounding is all that is left.
        if (previous !== undefined && previous * Math.sqrt(d) < 0.5 && last > 0.5 * previous) break;
      }
    }

    const inverse: tf.Tensor2D = tf.tidy(() => tf.div(tf.add(x!, tf.transpose(x!)), 2) as tf.Tensor2D);
    tf.dispose([x, ...(r ? [r] : [])]);
    x = inverse;
    r = residualMatrix(inverse);
    const residual = await readResidual(r);
    x = undefined;
    return { inverse, iterations, residual, coldStart };
  } finally {
    tf.dispose([eye, ...(x ? [x] : []), ...(r ? [r] : [])]);
  }
}
