import { checkBoolean, checkKeys, checkUnitInterval } from '../validate.js';
import { addDecayedWeights } from './addDecayedWeights.js';
import { chain } from './chain.js';
import { scaleByLearningRate } from './scaleByLearningRate.js';
import { checkHyper, type Hyper } from './schedules.js';
import { traceMomentum } from './traceMomentum.js';
import type { GradientTransformation } from './transform.js';

export interface SgdOptions {
  /** η, constant or scheduled. */
  readonly learningRate: Hyper;
  /** Heavy-ball momentum μ in [0, 1); default 0. */
  readonly momentum?: number;
  /** Nesterov momentum; default false. */
  readonly nesterov?: boolean;
  /** L2 weight decay λ added to the gradient (coupled, as PyTorch's SGD); default 0. */
  readonly weightDecay?: Hyper;
}

/**
 * SGD [prior], PyTorch convention: g ← g + λθ; b ← μb + g; d = g + μb (Nesterov) or b;
 * θ ← θ − η d.
 *
 * @example
 * const opt = sgd({ learningRate: 0.05, momentum: 0.9 });
 */
export function sgd(options: SgdOptions): GradientTransformation<unknown[]> {
  checkKeys('sgd', options, ['learningRate', 'momentum', 'nesterov', 'weightDecay']);
  const lr = checkHyper('learningRate', options.learningRate, { min: 0 });
  const momentum = checkUnitInterval('momentum', options.momentum ?? 0);
  const nesterov = checkBoolean('nesterov', options.nesterov ?? false);
  const wd = checkHyper('weightDecay', options.weightDecay ?? 0, { min: 0 });
  const parts: GradientTransformation<any>[] = [];
  if (wd !== 0) parts.push(addDecayedWeights(wd));
  if (momentum > 0) parts.push(traceMomentum({ decay: momentum, nesterov }));
  parts.push(scaleByLearningRate(lr));
  return chain(...parts);
}
