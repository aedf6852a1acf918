import { type CurvatureOptions, type DampingRule, CURVATURE_KEYS, resolveCurvatureOptions } from '../curvature/options.js';
import type { Sequential } from '../nn/sequential.js';
import { checkKeys, checkNumber } from '../validate.js';
import { naturalGradient, type NaturalGradientOptions, type NaturalGradientState } from './naturalGradient.js';
import type { GradientTransformation } from './transform.js';

export interface KfacOptions extends NaturalGradientOptions, CurvatureOptions {
  /** Damping λ; default 1e-3. */
  readonly damping?: number;
}

/** An optimizer that needs fisherScan upstream, and says how (damping rule, statistics). */
export interface CurvatureOptimizer<S = unknown> extends GradientTransformation<S> {
  readonly curvature: { readonly damping: DampingRule; readonly options: CurvatureOptions };
}

export const NATURAL_GRADIENT_KEYS = ['learningRate', 'momentum', 'klClip', 'weightDecay', 'damping', ...CURVATURE_KEYS] as const;

/**
 * K-FAC [prior] (Martens & Grosse 2015), the natural-gradient baseline: V = g, constant damping
 * γ = λ, d = −η·U with KL clipping and momentum (see naturalGradient). Defaults η = 0.05,
 * λ = 1e-3, κ = 1e-3, momentum 0.9, true Fisher, β = 0.95, inverses every 10 steps.
 *
 * @example
 * const opt = kfac(model, { learningRate: 0.05 });
 * steps$.pipe(fisherScan(model, opt.curvature.damping, opt.curvature.options), update(model, opt));
 */
export function kfac(model: Sequential, options: KfacOptions = {}): CurvatureOptimizer<NaturalGradientState> {
  checkKeys('kfac', options, NATURAL_GRADIENT_KEYS);
  const lambda = checkNumber('damping', options.damping ?? 1e-3, { min: 0, minExclusive: true });
  return {
    ...naturalGradient('kfac', model, options, (grads) => ({ v: grads })),
    curvature: { damping: { lambda, rho: 0, norm: 'mean' }, options: curvatureOptionsOf(options) },
  };
}

/** The curvature part of an optimizer's options, validated. */
export function curvatureOptionsOf(options: CurvatureOptions): CurvatureOptions {
  const picked = Object.fromEntries(CURVATURE_KEYS.filter((k) => options[k] !== undefined).map((k) => [k, options[k]]));
  resolveCurvatureOptions(picked);
  return picked;
}
