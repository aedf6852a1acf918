import { checkKeys } from '../validate.js';
import { addDecayedWeights } from './addDecayedWeights.js';
import { chain } from './chain.js';
import { scaleByAdam } from './scaleByAdam.js';
import { scaleByLearningRate } from './scaleByLearningRate.js';
import { checkHyper, type Hyper } from './schedules.js';
import type { GradientTransformation } from './transform.js';

export interface AdamwOptions {
  /** η, constant or scheduled; default 1e-3. */
  readonly learningRate?: Hyper;
  /** β₁, default 0.9. */
  readonly b1?: number;
  /** β₂, default 0.999. */
  readonly b2?: number;
  /** ε, default 1e-8. */
  readonly eps?: number;
  /** Decoupled weight decay λ, default 1e-2 (PyTorch's AdamW default). */
  readonly weightDecay?: Hyper;
}

/**
 * AdamW [prior] (Loshchilov & Hutter): θ ← θ − η(m̂/(√v̂+ε) + λθ), the decay decoupled from the
 * adaptive scaling. Same update as torch.optim.AdamW.
 *
 * @example
 * const opt = adamw({ learningRate: 1e-3, weightDecay: 1e-2 });
 */
export function adamw(options: AdamwOptions = {}): GradientTransformation<unknown[]> {
  checkKeys('adamw', options, ['learningRate', 'b1', 'b2', 'eps', 'weightDecay']);
  const lr = checkHyper('learningRate', options.learningRate ?? 1e-3, { min: 0 });
  const wd = checkHyper('weightDecay', options.weightDecay ?? 1e-2, { min: 0 });
  return chain(
    scaleByAdam({ b1: options.b1 ?? 0.9, b2: options.b2 ?? 0.999, eps: options.eps ?? 1e-8 }),
    addDecayedWeights(wd),
    scaleByLearningRate(lr),
  );
}
