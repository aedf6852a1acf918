import * as tf from '@tensorflow/tfjs';
import { yieldToEventLoop } from '../runtime/eventLoop.js';
import { GrngError } from '../errors.js';
import { sumOfSquares } from './reductions.js';
import { checkInteger, checkKeys, checkNumber } from '../validate.js';

/**
 * Default stopping threshold on ‖I − M X‖_F/√d (docs/algorithms.md, Kronecker-factored Fisher;
 * option `newtonTolerance`).
 */
export const DEFAULT_NEWTON_TOLERANCE = 1e-4;
/** Default cap on iterations (option `newtonMaxIterations`). */
export const DEFAULT_NEWTON_MAX_ITERATIONS = 30;
/** Default spacing of residual read-backs, in iterations. */
export const DEFAULT_NEWTON_CHECK_EVERY = 2;
/** Default number of trial iterations a warm start gets: 0, the textbook rule (judge X₀ only). */
export const DEFAULT_NEWTON_WARM_TRIALS = 0;

/** Options of {@link newtonSchulzInverse}. */
export interface NewtonSchulzOptions {
  /** A previous inverse of a nearby matrix (same size) to start from; not disposed. */
  readonly warmStart?: tf.Tensor2D;
  /** Stop once ‖I − M X‖_F/√d falls below this (> 0). Default 1e-4. */
  readonly tolerance?: number;
  /** Cap on iterations from the start used (integer ≥ 1). Default 30. */
  readonly maxIterations?: number;
  /** Read the residual back every this many iterations (integer ≥ 1). Default 2. */
  readonly checkEvery?: number;
  /**
   * [ours] Iterations a warm start may take to bring ‖I − M X‖_F below 1 before it is given up
   * for the cold start (integer ≥ 0). Default 0: the textbook rule, X₀ itself must pass. On large
   * factors ‖·‖_F sums many small per-direction errors (785×785: 5% each gives ≈ 1.4), so a warm
   * start that converges fast is often rejected; one trial iteration squares the residual
   * (R ← R²) and lets it pass, with convergence still guaranteed from there.
   */
  readonly warmTrials?: number;
}

/** What {@link newtonSchulzInverse} returns. */
export interface NewtonSchulzResult {
  /** The symmetrised approximate inverse, owned by the caller. */
  readonly inverse: tf.Tensor2D;
  /** Iterations X ← X(2I − M X) performed, those of a rejected warm start included. */
  readonly iterations: number;
  /**
   * ‖I − M X‖_F/√d of the returned, symmetrised X. For ill-conditioned M this is well above the
   * residual the stopping test saw: symmetrising moves float32 rounding error into directions
   * M amplifies, although the error of X itself (‖X − M⁻¹‖/‖M⁻¹‖) gets slightly smaller.
   */
  readonly residual: number;
  /** True when the result comes from the cold start I/‖M‖_F (no warm start, or a rejected one). */
  readonly coldStart: boolean;
}

const KNOWN = ['warmStart', 'tolerance', 'maxIterations', 'checkEvery', 'warmTrials'];

/**
 * Inverse of a symmetric positive definite matrix by the Newton–Schulz iteration
 * X ← X(2I − M X) [prior] (docs/algorithms.md, Kronecker-factored Fisher): tfjs has no inverse,
 * solve or Cholesky, and this needs
 * only matrix products, so it runs on every backend in float32. The residual R = I − M X
 * squares every iteration (R ← R²), so convergence is quadratic once ‖R‖ < 1.
 *
 * - Cold start X₀ = I/‖M‖_F: for SPD M every eigenvalue of M X₀ lies in (0, 1], which
 *   guarantees convergence.
 * - Warm start from `warmStart` (the previous inverse of the same, slowly moving factor) unless
 *   ‖I − M X₀‖_F ≥ 1 (or is not finite), where convergence is no longer guaranteed; then cold.
 *   `warmTrials` relaxes this (see there).
 * - Stops when ‖I − M X‖_F/√d < `tolerance`, at `maxIterations`, or [ours] when float32
 *   rounding has been reached: the residual no longer halves although its Frobenius norm was
 *   already below 1/2, where exact arithmetic would at least halve it (‖R²‖ ≤ ‖R‖²). In float32
 *   the residual cannot get below ≈ cond(M)·1e-8, so for cond(M) ≳ 1e4 the default tolerance is
 *   out of reach and this saves running to the cap.
 * - Accuracy: X − M⁻¹ = −M⁻¹R, so the relative error ‖X − M⁻¹‖_F/‖M⁻¹‖_F is at most
 *   ‖R‖_F = √d × the residual tested; ask for tolerance ε/√d to get relative error ε (down to
 *   the float32 floor, ≈ cond(M)·7e-9: measured 7e-5 at condition 1e4).
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
export async function newtonSchulzInverse(
  m: tf.Tensor2D,
  options: NewtonSchulzOptions = {},
): Promise<NewtonSchulzResult> {
  checkKeys('newtonSchulzInverse', options, KNOWN);
  const tolerance = checkNumber('tolerance', options.tolerance ?? DEFAULT_NEWTON_TOLERANCE, {
    min: 0,
    minExclusive: true,
  });
  const maxIterations = checkInteger(
    'maxIterations',
    options.maxIterations ?? DEFAULT_NEWTON_MAX_ITERATIONS,
    1,
  );
  const checkEvery = checkInteger(
    'checkEvery',
    options.checkEvery ?? DEFAULT_NEWTON_CHECK_EVERY,
    1,
  );
  const warmTrials = checkInteger(
    'warmTrials',
    options.warmTrials ?? DEFAULT_NEWTON_WARM_TRIALS,
    0,
  );
  if (m.rank !== 2 || m.shape[0] !== m.shape[1] || m.shape[0] === 0) {
    throw new GrngError(
      'shape',
      `newtonSchulzInverse needs a non-empty square matrix, got [${m.shape.join(', ')}]`,
      { m: m.shape },
    );
  }
  const d = m.shape[0];
  const warm = options.warmStart;
  if (warm !== undefined && (warm.rank !== 2 || warm.shape[0] !== d || warm.shape[1] !== d)) {
    throw new GrngError(
      'shape',
      `newtonSchulzInverse warmStart must be ${d}×${d} like the matrix, got [${warm.shape.join(', ')}]`,
      { m: m.shape, warmStart: warm.shape },
    );
  }
  const sqrtD = Math.sqrt(d);

  const eye = tf.eye(d) as tf.Tensor2D;
  // Live iterate X and its residual R = I − M X; whatever is left of them is disposed in
  // `finally`, so an error on the way leaks nothing. Only the returned inverse survives.
  let x: tf.Tensor2D | undefined;
  let r: tf.Tensor2D | undefined;
  // Normalised residual ‖R‖_F/√d, so one tolerance fits every factor size.
  const readResidual = async (): Promise<number> => {
    const s = tf.tidy(() => tf.sqrt(tf.div(sumOfSquares(r!), d)) as tf.Scalar);
    try {
      const value = (await s.data())[0]!;
      // A refresh of a large factor takes seconds of microtask-chained reads: let signals,
      // sockets and timers in between iterations.
      await yieldToEventLoop();
      return value;
    } finally {
      s.dispose();
    }
  };
  const setIterate = (next: tf.Tensor2D, withResidual = true): void => {
    tf.dispose([...(x ? [x] : []), ...(r ? [r] : [])]);
    x = next;
    r = withResidual ? tf.tidy(() => tf.sub(eye, tf.matMul(m, next)) as tf.Tensor2D) : undefined;
  };
  const coldStartMatrix = (): tf.Tensor2D =>
    tf.tidy(() => tf.div(eye, tf.sqrt(sumOfSquares(m))) as tf.Tensor2D);
  // X(2I − M X) = X + X R, with R already at hand; adding a small correction to X also loses
  // less in float32 than forming 2X − X M X.
  const iterate = (withResidual: boolean): void =>
    setIterate(
      tf.tidy(() => tf.add(x!, tf.matMul(x!, r!))),
      withResidual,
    );

  try {
    let iterations = 0;
    let coldStart = true;
    // The last residual read back; undefined until the first read of the start in use.
    let last: number | undefined;
    if (warm !== undefined) {
      setIterate(tf.clone(warm));
      for (let trial = 0; ; trial++) {
        const previous = last;
        last = await readResidual();
        // ‖R‖_F = √d·last; below 1 convergence is guaranteed.
        if (Number.isFinite(last) && last * sqrtD < 1) {
          coldStart = false;
          break;
        }
        // Out of trials, diverging, or already growing: the warm start is no good.
        if (
          trial === warmTrials ||
          !Number.isFinite(last) ||
          (previous !== undefined && last >= previous)
        )
          break;
        iterate(true);
        iterations += 1;
      }
    }
    if (coldStart) {
      setIterate(coldStartMatrix());
      last = undefined;
    }

    // Converged, or diverged (NaN, ∞: M not SPD or not finite), so going on is pointless.
    const finished = (v: number | undefined): boolean =>
      v !== undefined && !(Number.isFinite(v) && v >= tolerance);
    for (let k = 1; k <= maxIterations && !finished(last); k++) {
      // At the cap the residual of X is not needed: the symmetrised one is computed below.
      iterate(k < maxIterations);
      iterations += 1;
      if (k < maxIterations && k % checkEvery === 0) {
        const previous = last;
        last = await readResidual();
        if (previous !== undefined && previous * sqrtD < 0.5 && last > 0.5 * previous) break;
      }
    }

    setIterate(tf.tidy(() => tf.div(tf.add(x!, tf.transpose(x!)), 2) as tf.Tensor2D));
    const residual = await readResidual();
    const inverse = x!;
    x = undefined;
    return { inverse, iterations, residual, coldStart };
  } finally {
    tf.dispose([eye, ...(x ? [x] : []), ...(r ? [r] : [])]);
  }
}
