import { checkKeys } from '../validate.js';
import { addDecayedWeights } from './addDecayedWeights.js';
import { chain } from './chain.js';
import { scaleByLearningRate } from './scaleByLearningRate.js';
import { optionKeys, readOption, type OptionTable } from './optionSpec.js';
import type { Hyper } from './schedules.js';
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
 * SGD's options. By name (registry, CLI) it runs with η = 0.05 and momentum 0.9, the settings of
 * the reference runs; `sgd()` itself requires η and keeps PyTorch's momentum 0.
 */
export const SGD_OPTIONS = {
  learningRate: {
    kind: 'number',
    min: 0,
    schedule: true,
    named: 0.05,
    flag: '--lr',
    help: 'learning rate η',
  },
  momentum: {
    kind: 'number',
    min: 0,
    max: 1,
    maxExclusive: true,
    default: 0,
    named: 0.9,
    flag: '--momentum',
    help: 'momentum μ',
  },
  nesterov: { kind: 'boolean', default: false, flag: '--nesterov', help: 'Nesterov momentum' },
  weightDecay: {
    kind: 'number',
    min: 0,
    schedule: true,
    default: 0,
    flag: '--weight-decay',
    help: 'weight decay',
  },
} as const satisfies OptionTable;

/**
 * SGD [prior], PyTorch convention: g ← g + λθ; b ← μb + g; d = g + μb (Nesterov) or b;
 * θ ← θ − η d.
 *
 * @example
 * const opt = sgd({ learningRate: 0.05, momentum: 0.9 });
 */
export function sgd(options: SgdOptions): GradientTransformation<unknown[]> {
  checkKeys('sgd', options, optionKeys(SGD_OPTIONS));
  const lr = readOption(SGD_OPTIONS, options, 'learningRate');
  const momentum = readOption(SGD_OPTIONS, options, 'momentum');
  const nesterov = readOption(SGD_OPTIONS, options, 'nesterov');
  const wd = readOption(SGD_OPTIONS, options, 'weightDecay');
  const parts: GradientTransformation<any>[] = [];
  if (wd !== 0) parts.push(addDecayedWeights(wd));
  if (momentum > 0) parts.push(traceMomentum({ decay: momentum, nesterov }));
  parts.push(scaleByLearningRate(lr));
  return chain(...parts);
}
