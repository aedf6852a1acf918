import {
  type CurvatureOptions,
  type DampingRule,
  CURVATURE_KEYS,
  CURVATURE_OPTIONS,
  resolveCurvatureOptions,
} from '../curvature/options.js';
import { modelFamily } from '../nn/modelFamily.js';
import type { Sequential } from '../nn/sequential.js';
import { checkKeys } from '../validate.js';
import {
  NATURAL_GRADIENT_OPTIONS,
  naturalGradient,
  type NaturalGradientOptions,
  type NaturalGradientState,
} from './naturalGradient.js';
import { optionKeys, readOption, type NumberOptionSpec, type OptionTable } from './optionSpec.js';
import type { GradientTransformation } from './transform.js';

export interface KfacOptions extends NaturalGradientOptions, CurvatureOptions {
  /** Damping λ; default 0.1 (transformers 1e-2). */
  readonly damping?: number;
}

/** An optimizer that needs fisherScan upstream, and says how (damping rule, statistics). */
export interface CurvatureOptimizer<S = unknown> extends GradientTransformation<S> {
  readonly curvature: { readonly damping: DampingRule; readonly options: CurvatureOptions };
}

const { learningRate, ...afterLearningRate } = NATURAL_GRADIENT_OPTIONS;

/**
 * The damping λ as RING has it: 1e-3 on dense nets, where its own ρ·ḡ² term sets the damping
 * level (RING's test accuracy ties at λ 1e-3 and 1e-2, and λ 0.1 over-damps it; docs/results.md,
 * "MLP on MNIST"). K-FAC and RENG, whose damping is λ alone, take {@link FIXED_DAMPING_OPTION}.
 */
const DAMPING_OPTION = {
  kind: 'number',
  min: 0,
  minExclusive: true,
  default: 1e-3,
  // Conv nets: chosen on the benchmark CNN (docs/algorithms.md, "Defaults for conv nets").
  conv: 0.1,
  // Transformers: chosen on gpt:L2-d128-h4-ctx64 / fortunes (docs/algorithms.md, "Defaults for
  // transformers").
  transformer: 1e-2,
  flag: '--damping',
  help: 'damping λ',
} as const;

/**
 * The option table of a K-FAC-family optimizer: η, the damping λ, the optimizer's own options,
 * the rest of the natural-gradient options and the curvature options, in the order the registry
 * has always listed them (and recordings hold them).
 */
export function kfacFamilyOptions<const Own extends OptionTable>(
  own: Own,
  damping: NumberOptionSpec = DAMPING_OPTION,
) {
  return {
    learningRate,
    damping,
    ...own,
    ...afterLearningRate,
    ...CURVATURE_OPTIONS,
  } as const satisfies OptionTable;
}

/**
 * The damping of K-FAC and RENG, for which λ is the whole damping: 0.1 on dense nets too. The
 * MLP comparison (mlp:784-256-10, MNIST 60k, 3 seeds) tuned λ to 0.1 for both at every learning
 * rate of its grid, and K-FAC at 1e-3 is 2 points of test accuracy behind K-FAC at 0.035
 * (docs/results.md, "K-FAC at RING's typical damping"): under-damped, its KL clip cuts every step.
 */
export const FIXED_DAMPING_OPTION = { ...DAMPING_OPTION, default: 0.1 } as const;

export const KFAC_OPTIONS = kfacFamilyOptions({}, FIXED_DAMPING_OPTION);
export const NATURAL_GRADIENT_KEYS = optionKeys(KFAC_OPTIONS);

/**
 * K-FAC [prior] (Martens & Grosse 2015), the natural-gradient baseline: V = g, constant damping
 * γ = λ, d = −η·U with KL clipping and momentum (see naturalGradient). Defaults η = 0.05,
 * λ = 0.1 (transformers 1e-2), κ = 1e-3, momentum 0.9, true Fisher, β = 0.95, inverses every 10 steps.
 *
 * @example
 * const opt = kfac(model, { learningRate: 0.05 });
 * steps$.pipe(fisherScan(model, opt.curvature.damping, opt.curvature.options), update(model, opt));
 */
export function kfac(
  model: Sequential,
  options: KfacOptions = {},
): CurvatureOptimizer<NaturalGradientState> {
  checkKeys('kfac', options, NATURAL_GRADIENT_KEYS);
  const lambda = readOption(KFAC_OPTIONS, options, 'damping', modelFamily(model));
  return {
    ...naturalGradient('kfac', model, options, (grads) => ({ v: grads })),
    curvature: { damping: { lambda, rho: 0, norm: 'mean' }, options: curvatureOptionsOf(options) },
  };
}

/** The curvature part of an optimizer's options, validated. */
export function curvatureOptionsOf(options: CurvatureOptions): CurvatureOptions {
  const picked = Object.fromEntries(
    CURVATURE_KEYS.filter((k) => options[k] !== undefined).map((k) => [k, options[k]]),
  );
  resolveCurvatureOptions(picked);
  return picked;
}
