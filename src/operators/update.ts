import * as tf from '@tensorflow/tfjs';
import type { OperatorFunction } from 'rxjs';
import { GrngError } from '../errors.js';
import type { Sequential } from '../nn/sequential.js';
import type { GradientTransformation } from '../optim/transform.js';
import { disposeReplaced, tensorsIn } from '../optim/tree.js';
import type { Params, Step } from '../types.js';
import { ownedMap } from './ownedMap.js';

/**
 * Applies an optimizer to each step: runs its pure `update` inside tf.tidy, adds the updates to
 * the model's variables, and emits the step with what the optimizer did. The optimizer state is
 * created on the first step of each subscription and disposed on complete, error and
 * unsubscribe; replaced state tensors are disposed every step.
 *
 * @example
 * steps$.pipe(update(model, adamw({ learningRate: 1e-3 })));
 */
export function update<S>(model: Pick<Sequential, 'params'>, optimizer: GradientTransformation<S>): OperatorFunction<Step, Step> {
  const params = model.params as Params;
  return ownedMap<Step, Step, { state: S | undefined }>(
    'update',
    () => ({ state: undefined }),
    (step, holder) => {
      if (holder.state === undefined) holder.state = tf.tidy(() => optimizer.init(params) as tf.TensorContainer) as S;
      const result = tf.tidy(() => {
        const r = optimizer.update(step.grads, holder.state as S, params, { step: step.batch.step, source: step });
        // Checked inside the tidy so that a failing step leaks nothing it made.
        for (const key of Object.keys(params)) {
          const u = r.updates[key];
          if (!u) throw new GrngError('internal', `optimizer produced no update for parameter ${key}`, { key });
          if (u.shape.join() !== params[key]!.shape.join()) {
            throw new GrngError('shape', `optimizer update for ${key} has shape [${u.shape.join(', ')}], the parameter [${params[key]!.shape.join(', ')}]`, { key });
          }
        }
        return { updates: r.updates, state: r.state as tf.TensorContainer, diagnostics: (r.diagnostics ?? {}) as tf.TensorContainer };
      }) as { updates: Params; state: S; diagnostics: Record<string, tf.Scalar | number> };
      tf.tidy(() => {
        for (const key of Object.keys(params)) (params[key] as tf.Variable).assign(tf.add(params[key]!, result.updates[key]!));
      });
      disposeReplaced(holder.state, result.state);
      holder.state = result.state;
      const learningRate = typeof result.diagnostics.learningRate === 'number' ? result.diagnostics.learningRate : NaN;
      // Updates that are also gradients (owned upstream) or state (owned here) are not per-step.
      const kept = new Set([...Object.values(step.grads), ...tensorsIn(result.state)]);
      const owned = [...Object.values(result.updates).filter((u) => !kept.has(u)), ...tensorsIn(result.diagnostics)];
      return { value: { ...step, update: { updates: result.updates, learningRate, diagnostics: result.diagnostics } }, owned };
    },
    (holder) => {
      tf.dispose(tensorsIn(holder.state));
      holder.state = undefined;
    },
  );
}
