import type { Sequential } from '../nn/sequential.js';
import { checkChoice, checkKeys, checkNumber } from '../validate.js';
import { curvatureOptionsOf, NATURAL_GRADIENT_KEYS, type CurvatureOptimizer, type KfacOptions } from './kfac.js';
import { naturalGradient, type NaturalGradientState } from './naturalGradient.js';

export interface RingOptions extends KfacOptions {
  /** Gradient-regularisation strength ρ; default 0.1 ([ours]: tune). */
  readonly rho?: number;
  /** ḡ² = mean ‖g‖² since the last refresh (`mean`, default) or this step's (`step`, refreshing every step). */
  readonly ringNorm?: 'mean' | 'step';
}

/**
 * RING — Regularized Implicit Natural Gradient [paper: GR implicit in the direction; form ours].
 * Gradient regularisation L + (ρ/2)‖∇L‖² enters the local quadratic model as extra isotropic
 * curvature ρ‖g‖², so the damping becomes γ = λ + ρ·ḡ² at every inverse refresh; otherwise K-FAC.
 * ρ = 0 is exactly K-FAC. A large gradient gives stronger damping: a shorter, more
 * gradient-like step (the bias toward flat minima).
 */
export function ring(model: Sequential, options: RingOptions = {}): CurvatureOptimizer<NaturalGradientState> {
  checkKeys('ring', options, [...NATURAL_GRADIENT_KEYS, 'rho', 'ringNorm']);
  const lambda = checkNumber('damping', options.damping ?? 1e-3, { min: 0, minExclusive: true });
  const rho = checkNumber('rho', options.rho ?? 0.1, { min: 0 });
  const norm = checkChoice('ringNorm', options.ringNorm ?? 'mean', ['mean', 'step'] as const);
  return {
    ...naturalGradient('ring', model, options, (grads) => ({ v: grads })),
    curvature: { damping: { lambda, rho, norm }, options: curvatureOptionsOf(options) },
  };
}
