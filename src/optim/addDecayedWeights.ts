import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import type { CountState } from './scaleByLearningRate.js';
import { checkHyper, valueAt, type Hyper } from './schedules.js';
import { mapParams } from '../linalg/tree.js';
import type { GradientTransformation } from './transform.js';

/**
 * u ← u + λ_t·θ. Placed before an adaptive scaling it is L2 regularisation (SGD's coupled weight
 * decay); placed after it and before the learning rate it is decoupled decay (AdamW).
 * `mask` picks the parameters to decay (default all, as PyTorch).
 */
export function addDecayedWeights(
  weightDecay: Hyper,
  mask?: (key: string) => boolean,
): GradientTransformation<CountState> {
  const wd = checkHyper('weightDecay', weightDecay, { min: 0 });
  return {
    init: () => ({ count: 0 }),
    update(updates: Params, state: CountState, params: Params) {
      const lambda = valueAt(wd, state.count);
      const next = { count: state.count + 1 };
      if (lambda === 0) return { updates, state: next };
      const scale = tf.scalar(lambda);
      return {
        updates: mapParams(updates, (u, key) =>
          mask && !mask(key) ? u : tf.add(u, tf.mul(params[key]!, scale)),
        ),
        state: next,
      };
    },
  };
}
