import { DEFAULT_FACTOR_DECAY } from './movingAverage.js';
import { familyDefault, type ModelFamily } from '../nn/modelFamily.js';
import { checkKeys, checkOption } from '../validate.js';

/**
 * How the Kronecker-factored Fisher is estimated and inverted (docs/algorithms.md,
 * Kronecker-factored Fisher).
 */
export interface CurvatureOptions {
  /** `sampled` (true Fisher, labels drawn from the model, default) or `empirical` (true labels). */
  readonly fisher?: 'sampled' | 'empirical';
  /** Moving-average decay β of the factors; default 0.95. */
  readonly beta?: number;
  /** Compute factor statistics every k steps; default 1. */
  readonly statsEvery?: number;
  /** Refresh the damped inverses every k steps; default 10 (first refresh at step 0). */
  readonly inverseEvery?: number;
  /**
   * Extra refreshes before the first scheduled one [ours]: `doubling` (default) also refreshes at
   * steps 1, 2, 4, 8, … below `inverseEvery` and folds statistics at every step until then, so the
   * first inverses are not built from one batch (a 3137-wide dense factor from 128 examples has
   * rank ≤ 129); `off` refreshes at step 0 and then every `inverseEvery` steps.
   */
  readonly earlyRefresh?: 'doubling' | 'off';
  /** Newton–Schulz stopping tolerance on ‖I − MX‖_F/√d; default 1e-4. */
  readonly newtonTolerance?: number;
  /** Newton–Schulz iteration cap; default 30. */
  readonly newtonMaxIterations?: number;
  /**
   * Iterations a warm start may take to bring ‖I − MX‖_F below 1 before falling back to a cold
   * start; default 1 [ours]. The textbook rule (0) rejects the warm start of MNIST's 785×785 input
   * factor at every refresh (‖I − MX₀‖_F ≈ 1.9 after 10 steps) although it converges in 3
   * iterations against 10 cold: 1 makes those refreshes ~2–3× cheaper.
   */
  readonly newtonWarmTrials?: number;
  /**
   * How the damped factors are inverted at a refresh [ours]: `newton-schulz` (docs/algorithms.md:
   * matrix
   * products only, every backend), `cholesky` (float64 Cholesky through LAPACK, where the native
   * BLAS matMul is loaded on the wasm backend: ~d³ flops against ~4d³ per Newton–Schulz
   * iteration, and exact to float32 rounding), or `auto` (default): Cholesky where it is
   * available, else Newton–Schulz. A factor Cholesky finds not positive definite falls back to
   * Newton–Schulz.
   */
  readonly inverse?: InverseMethod;
  /**
   * How a conv layer's locations become factor statistics [prior: KFC]: `expand` (every example
   * and location a row, A = T·Ā, default) or `reduce` (one row per example: the mean patch and the
   * sum of δ over locations). Dense layers ignore it.
   */
  readonly convFactors?: 'expand' | 'reduce';
  /**
   * Most (example, location) rows a conv layer's `expand` statistics use per step, a seeded random
   * subset; 0 = all [ours].
   */
  readonly convPatchRows?: number;
  /**
   * Sequence-dense layers (attention projections, MLPs, a language model's head): `expand` (every
   * token a row) or `reduce` (per-sequence mean input and summed δ); docs/algorithms.md.
   */
  readonly sequenceFactors?: 'expand' | 'reduce';
  /** Seed of the label sampling; default 1. */
  readonly seed?: number;
}

export type InverseMethod = (typeof CURVATURE_OPTIONS.inverse.choices)[number];

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

/**
 * The curvature options as an option table (see src/optim/optionSpec.ts; written as plain data
 * because src/curvature sits below src/optim): K-FAC, RING and RENG take all of them, and the
 * registry, the CLI flags and `--help` are derived from it. `beta` is `--stats-decay` on the
 * command line; `seed` is the run's `--seed`, handed on.
 */
export const CURVATURE_OPTIONS = {
  fisher: {
    kind: 'choice',
    choices: ['sampled', 'empirical'],
    default: 'sampled',
    flag: '--fisher',
    help: 'Fisher estimate: sampled (labels drawn from the model) or empirical (true labels)',
  },
  beta: {
    kind: 'number',
    min: 0,
    max: 1,
    maxExclusive: true,
    default: DEFAULT_FACTOR_DECAY,
    flag: '--stats-decay',
    help: 'moving-average decay β of the Kronecker factors',
  },
  statsEvery: {
    kind: 'integer',
    min: 1,
    default: 1,
    // Conv nets and transformers (docs/algorithms.md, "Defaults for conv nets", "… for
    // transformers"): statistics cost a sampled-label pass, amortised over 10 steps.
    conv: 10,
    transformer: 10,
    flag: '--stats-every',
    help: 'factor statistics every N steps',
  },
  inverseEvery: {
    kind: 'integer',
    min: 1,
    default: 10,
    conv: 20,
    transformer: 20,
    flag: '--inverse-every',
    help: 'refresh the inverses every N steps',
  },
  earlyRefresh: {
    kind: 'choice',
    choices: ['doubling', 'off'],
    default: 'doubling',
    // Not filled in by name, so recordings made before it existed list the same options.
    listed: false,
    flag: '--early-refresh',
    help: 'extra inverse refreshes at steps 1, 2, 4, 8, … before the first scheduled one (doubling) or none (off)',
  },
  newtonTolerance: {
    kind: 'number',
    min: 0,
    minExclusive: true,
    default: 1e-4,
    listed: false,
    flag: '--newton-tol',
    help: 'Newton–Schulz tolerance on ‖I − MX‖_F/√d',
  },
  newtonMaxIterations: {
    kind: 'integer',
    min: 1,
    default: 30,
    listed: false,
    flag: '--newton-max-iters',
    help: 'Newton–Schulz iteration cap',
  },
  newtonWarmTrials: {
    kind: 'integer',
    min: 0,
    default: 1,
    listed: false,
    flag: '--newton-warm-trials',
    help: 'iterations a warm Newton–Schulz start gets before a cold restart',
  },
  inverse: {
    kind: 'choice',
    choices: ['auto', 'newton-schulz', 'cholesky'],
    default: 'auto',
    listed: false,
    flag: '--inverse',
    placeholder: 'method',
    help: 'how factors are inverted: auto = float64 Cholesky where the native BLAS has LAPACK, else Newton–Schulz',
  },
  convFactors: {
    kind: 'choice',
    choices: ['expand', 'reduce'],
    default: 'expand',
    // Not filled in by name until its default is chosen by measurement (docs/algorithms.md), so
    // MLP recordings keep the options they always listed; a value given is recorded.
    listed: false,
    flag: '--conv-factors',
    help: "conv layers' factors: expand (every location a row, A = T·Ā) or reduce (per-example mean patch, summed δ)",
  },
  sequenceFactors: {
    kind: 'choice',
    choices: ['expand', 'reduce'],
    default: 'expand',
    listed: false,
    flag: '--sequence-factors',
    help: "sequence-dense layers' factors: expand (every token a row; exact for a per-token loss) or reduce (per-sequence mean input, summed δ)",
  },
  convPatchRows: {
    kind: 'integer',
    min: 0,
    default: 0,
    listed: false,
    flag: '--conv-patch-rows',
    help: 'most patch rows per conv layer and step for expand (a seeded random subset), 0 = all',
  },
  seed: {
    kind: 'integer',
    min: 0,
    default: 1,
    listed: false,
    runFlag: true,
    flag: '--seed',
    help: 'seed of the label sampling',
  },
} as const;

export const INVERSE_METHODS: readonly InverseMethod[] = CURVATURE_OPTIONS.inverse.choices;
export const CURVATURE_KEYS = Object.keys(CURVATURE_OPTIONS) as (keyof typeof CURVATURE_OPTIONS)[];

/**
 * Validates curvature options (each error names the option) and fills in the defaults, the conv
 * family's where it has its own.
 */
export function resolveCurvatureOptions(
  options: CurvatureOptions = {},
  family: ModelFamily = 'dense',
): ResolvedCurvatureOptions {
  checkKeys('curvature', options, CURVATURE_KEYS);
  const resolved = Object.entries(CURVATURE_OPTIONS).map(([key, rule]) => [
    key,
    checkOption(
      key,
      rule,
      options[key as keyof CurvatureOptions] ??
        familyDefault<unknown>(
          rule as { readonly conv?: unknown; readonly transformer?: unknown },
          family,
        ) ??
        rule.default,
    ),
  ]);
  return Object.fromEntries(resolved) as ResolvedCurvatureOptions;
}
