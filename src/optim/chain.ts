import type * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import type { GradientTransformation, TransformResult, UpdateContext } from './transform.js';

/**
 * Composes transformations left to right: each one's updates feed the next; the state is the
 * tuple of their states; diagnostics are merged (later ones win on a name clash).
 *
 * @example
 * const sgdNesterov = chain(traceMomentum({ decay: 0.9, nesterov: true }), scaleByLearningRate(0.05));
 */
export function chain(
  ...transforms: GradientTransformation<any>[]
): GradientTransformation<unknown[]> {
  return {
    init: (params: Params) => transforms.map((t) => t.init(params)),
    update(
      grads: Params,
      state: unknown[],
      params: Params,
      context: UpdateContext,
    ): TransformResult<unknown[]> {
      let updates = grads;
      const states: unknown[] = [];
      const diagnostics: Record<string, tf.Scalar | number> = {};
      transforms.forEach((t, i) => {
        const result = t.update(updates, state[i], params, context);
        updates = result.updates;
        states.push(result.state);
        Object.assign(diagnostics, result.diagnostics);
      });
      return { updates, state: states, diagnostics };
    },
  };
}
