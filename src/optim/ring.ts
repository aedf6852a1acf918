import { modelFamily } from '../nn/modelFamily.js';
import type { Sequential } from '../nn/sequential.js';
import { checkKeys } from '../validate.js';
import {
  curvatureOptionsOf,
  kfacFamilyOptions,
  type CurvatureOptimizer,
  type KfacOptions,
} from './kfac.js';
import { naturalGradient, type NaturalGradientState } from './naturalGradient.js';
import { GRADIENT_REGULARIZATION_OPTION, optionKeys, readOption } from './optionSpec.js';

export interface RingOptions extends KfacOptions {
  /** Gradient-regularisation strength ρ; default 0.1 ([ours]: tune). */
  readonly rho?: number;
  /**
   * ḡ² = mean ‖g‖² since the last refresh (`mean`, default) or this step's (`step`, refreshing
   * every step).
   */
  readonly ringNorm?: 'mean' | 'step';
}

export const RING_OPTIONS = kfacFamilyOptions({
  // Conv nets: ρ = 0.1 over-damps the benchmark CNN (docs/algorithms.md, "Defaults for conv nets").
  rho: { ...GRADIENT_REGULARIZATION_OPTION, conv: 0.01 },
  ringNorm: {
    kind: 'choice',
    choices: ['mean', 'step'],
    default: 'mean',
    flag: '--ring-norm',
    help: "ḡ² in the damping: mean ‖g‖² since the last refresh, or this step's (refreshing every step)",
  },
});

/**
 * RING — Regularized Implicit Natural Gradient [paper: GR implicit in the direction; form ours].
 * Gradient regularisation L + (ρ/2)‖∇L‖² enters the local quadratic model as extra isotropic
 * curvature ρ‖g‖², so the damping becomes γ = λ + ρ·ḡ² at every inverse refresh; otherwise K-FAC.
 * ρ = 0 is exactly K-FAC. A large gradient gives stronger damping: a shorter, more
 * gradient-like step (the bias toward flat minima).
 */
export function ring(
  model: Sequential,
  options: RingOptions = {},
): CurvatureOptimizer<NaturalGradientState> {
  checkKeys('ring', options, optionKeys(RING_OPTIONS));
  const family = modelFamily(model);
  const lambda = readOption(RING_OPTIONS, options, 'damping', family);
  const rho = readOption(RING_OPTIONS, options, 'rho', family);
  const norm = readOption(RING_OPTIONS, options, 'ringNorm');
  return {
    ...naturalGradient('ring', model, options, (grads) => ({ v: grads })),
    curvature: { damping: { lambda, rho, norm }, options: curvatureOptionsOf(options) },
  };
}
