import { checkKeys } from '../validate.js';
import { addDecayedWeights } from './addDecayedWeights.js';
import { chain } from './chain.js';
import { scaleByAdam } from './scaleByAdam.js';
import { scaleByLearningRate } from './scaleByLearningRate.js';
import { optionKeys, readOption, type OptionTable } from './optionSpec.js';
import type { Hyper } from './schedules.js';
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

export const ADAMW_OPTIONS = {
  learningRate: {
    kind: 'number',
    min: 0,
    schedule: true,
    default: 1e-3,
    flag: '--lr',
    help: 'learning rate η',
  },
  weightDecay: {
    kind: 'number',
    min: 0,
    schedule: true,
    default: 1e-2,
    flag: '--weight-decay',
    help: 'weight decay',
  },
  b1: {
    kind: 'number',
    min: 0,
    max: 1,
    maxExclusive: true,
    default: 0.9,
    flag: '--b1',
    help: 'β₁, decay of the gradient average',
  },
  b2: {
    kind: 'number',
    min: 0,
    max: 1,
    maxExclusive: true,
    default: 0.999,
    flag: '--b2',
    help: 'β₂, decay of the squared-gradient average',
  },
  eps: { kind: 'number', min: 0, default: 1e-8, flag: '--eps', help: 'ε, added to √v̂' },
} as const satisfies OptionTable;

/**
 * AdamW [prior] (Loshchilov & Hutter): θ ← θ − η(m̂/(√v̂+ε) + λθ), the decay decoupled from the
 * adaptive scaling. Same update as torch.optim.AdamW.
 *
 * @example
 * const opt = adamw({ learningRate: 1e-3, weightDecay: 1e-2 });
 */
export function adamw(options: AdamwOptions = {}): GradientTransformation<unknown[]> {
  checkKeys('adamw', options, optionKeys(ADAMW_OPTIONS));
  const lr = readOption(ADAMW_OPTIONS, options, 'learningRate');
  const wd = readOption(ADAMW_OPTIONS, options, 'weightDecay');
  return chain(
    scaleByAdam({
      b1: readOption(ADAMW_OPTIONS, options, 'b1'),
      b2: readOption(ADAMW_OPTIONS, options, 'b2'),
      eps: readOption(ADAMW_OPTIONS, options, 'eps'),
    }),
    addDecayedWeights(wd),
    scaleByLearningRate(lr),
  );
}
