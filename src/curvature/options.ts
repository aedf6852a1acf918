import { DEFAULT_FACTOR_DECAY } from './movingAverage.js';
import { checkChoice, checkInteger, checkKeys, checkNumber, checkUnitInterval } from '../validate.js';

/** How the Kronecker-factored Fisher is estimated and inverted (spec §2–3). */
export interface CurvatureOptions {
  /** `sampled` (true Fisher, labels drawn from the model, default) or `empirical` (true labels). */
  readonly fisher?: 'sampled' | 'empirical';
  /** Moving-average decay β of the factors; default 0.95. */
  readonly beta?: number;
  /** Compute factor statistics every k steps; default 1. */
  readonly statsEvery?: number;
  /** Refresh the damped inverses every k steps; default 10 (first refresh at step 0). */
  readonly inverseEvery?: number;
  /** Newton–Schulz stopping tolerance on ‖I − MX‖_F/√d; default 1e-4. */
  readonly newtonTolerance?: number;
  /** Newton–Schulz iteration cap; default 30. */
  readonly newtonMaxIterations?: number;
  /**
   * Iterations a warm start may take to bring ‖I − MX‖_F below 1 before falling back to a cold
   * start; default 1 [ours]. The spec's rule (0) rejects the warm start of MNIST's 785×785 input
   * factor at every refresh (‖I − MX₀‖_F ≈ 1.9 after 10 steps) although it converges in 3
   * iterations against 10 cold: 1 makes those refreshes ~2–3× cheaper.
   */
  readonly newtonWarmTrials?: number;
  /**
   * How the damped factors are inverted at a refresh [ours]: `newton-schulz` (spec §3: matrix
   * products only, every backend), `cholesky` (float64 Cholesky through LAPACK, where the native
   * BLAS matMul is loaded on the wasm backend: ~d³ flops against ~4d³ per Newton–Schulz
   * iteration, and exact to float32 rounding), or `auto` (default): Cholesky where it is
   * available, else Newton–Schulz. A factor Cholesky finds not positive definite falls back to
   * Newton–Schulz.
   */
  readonly inverse?: InverseMethod;
  /** Seed of the label sampling; default 1. */
  readonly seed?: number;
}

export type InverseMethod = 'auto' | 'newton-schulz' | 'cholesky';
export const INVERSE_METHODS: readonly InverseMethod[] = ['auto', 'newton-schulz', 'cholesky'];

/**
 * The damping in force at an inverse refresh: γ = λ + ρ·ḡ², with ḡ² the mean ‖g‖² over the steps
 * since the previous refresh (`norm: 'mean'`) or the current step's (`norm: 'step'`, refreshing
 * every step). ρ = 0 is K-FAC's constant damping; ρ > 0 is RING's gradient regularisation.
 */
export interface DampingRule {
  readonly lambda: number;
  readonly rho: number;
  readonly norm: 'mean' | 'step';
}

export type ResolvedCurvatureOptions = Required<CurvatureOptions>;

export const CURVATURE_KEYS = ['fisher', 'beta', 'statsEvery', 'inverseEvery', 'newtonTolerance', 'newtonMaxIterations', 'newtonWarmTrials', 'inverse', 'seed'] as const;

/** Validates curvature options (each error names the option) and fills in the defaults. */
export function resolveCurvatureOptions(options: CurvatureOptions = {}): ResolvedCurvatureOptions {
  checkKeys('curvature', options, CURVATURE_KEYS);
  return {
    fisher: checkChoice('fisher', options.fisher ?? 'sampled', ['sampled', 'empirical'] as const),
    beta: checkUnitInterval('beta', options.beta ?? DEFAULT_FACTOR_DECAY),
    statsEvery: checkInteger('statsEvery', options.statsEvery ?? 1, 1),
    inverseEvery: checkInteger('inverseEvery', options.inverseEvery ?? 10, 1),
    newtonTolerance: checkNumber('newtonTolerance', options.newtonTolerance ?? 1e-4, { min: 0, minExclusive: true }),
    newtonMaxIterations: checkInteger('newtonMaxIterations', options.newtonMaxIterations ?? 30, 1),
    newtonWarmTrials: checkInteger('newtonWarmTrials', options.newtonWarmTrials ?? 1, 0),
    inverse: checkChoice('inverse', options.inverse ?? 'auto', INVERSE_METHODS),
    seed: checkInteger('seed', options.seed ?? 1, 0),
  };
}
