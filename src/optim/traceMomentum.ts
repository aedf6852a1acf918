import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import { checkBoolean, checkKeys, checkUnitInterval } from '../validate.js';
import { mapParams } from '../linalg/tree.js';
import type { GradientTransformation } from './transform.js';

export interface TraceState {
  readonly trace: Params;
}

/**
 * Heavy-ball momentum, PyTorch/optax convention: t ← u + μ·t; output t, or u + μ·t with Nesterov.
 */
export function traceMomentum({
  decay,
  nesterov = false,
}: {
  decay: number;
  nesterov?: boolean;
}): GradientTransformation<TraceState> {
  checkKeys('momentum', { decay, nesterov }, ['decay', 'nesterov']);
  const mu = checkUnitInterval('momentum', decay);
  checkBoolean('nesterov', nesterov);
  return {
    init: (params: Params) => ({ trace: mapParams(params, (p) => tf.zerosLike(p)) }),
    update(updates: Params, state: TraceState) {
      const m = tf.scalar(mu);
      const trace = mapParams(updates, (u, key) => tf.add(u, tf.mul(state.trace[key]!, m)));
      const out = nesterov
        ? mapParams(updates, (u, key) => tf.add(u, tf.mul(trace[key]!, m)))
        : trace;
      return { updates: out, state: { trace } };
    },
  };
}
