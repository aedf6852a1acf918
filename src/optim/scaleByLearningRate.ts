import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import { checkHyper, valueAt, type Hyper } from './schedules.js';
import { mapParams } from '../linalg/tree.js';
import type { GradientTransformation } from './transform.js';

export interface CountState {
  readonly count: number;
}

/**
 * u ← −η_t·u: turns a descent direction into an update, with η constant or scheduled by its
 * own step count. Reports `learningRate`.
 */
export function scaleByLearningRate(learningRate: Hyper): GradientTransformation<CountState> {
  const lr = checkHyper('learningRate', learningRate, { min: 0 });
  return {
    init: () => ({ count: 0 }),
    update(updates: Params, state: CountState) {
      const eta = valueAt(lr, state.count);
      const scale = tf.scalar(-eta);
      return {
        updates: mapParams(updates, (u) => tf.mul(u, scale)),
        state: { count: state.count + 1 },
        diagnostics: { learningRate: eta },
      };
    },
  };
}
