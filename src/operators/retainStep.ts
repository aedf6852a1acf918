import * as tf from '@tensorflow/tfjs';
import type { Step } from '../types.js';

/**
 * A copy of a step whose tensors survive upstream disposal: for operators that emit a step
 * later than they received it (asynchronous work, buffering). tf.clone shares the data, so this
 * costs no copy; dispose the returned tensors after emitting.
 */
export function retainStep(step: Step): { step: Step; retained: tf.Tensor[] } {
  const retained: tf.Tensor[] = [];
  const keep = <T extends tf.Tensor>(t: T): T => {
    const c = tf.clone(t);
    retained.push(c);
    return c;
  };
  const copy: Step = {
    ...step,
    loss: keep(step.loss),
    correct: keep(step.correct),
    grads: Object.fromEntries(Object.entries(step.grads).map(([k, g]) => [k, keep(g)])),
    ...(step.signals
      ? {
          signals: step.signals.map((s) => ({
            layer: s.layer,
            a: s.a === step.batch.x ? s.a : keep(s.a),
            delta: keep(s.delta),
          })),
        }
      : {}),
    ...(step.losses ? { losses: keep(step.losses) } : {}),
    ...(step.evaluation ? { evaluation: keep(step.evaluation) } : {}),
  };
  return { step: copy, retained };
}
