import * as tf from '@tensorflow/tfjs';
import { concatMap, defer, finalize, Observable, of, type OperatorFunction } from 'rxjs';
import { asGrngError, GrngError } from '../errors.js';
import type { Sequential } from '../nn/sequential.js';
import type { GradientTransformation, TransformResult } from '../optim/transform.js';
import { disposeReplaced, tensorsIn } from '../linalg/tree.js';
import type { Params, SkippedStep, Step, StepHealth } from '../types.js';
import {
  afterFiniteCheck,
  finiteFlags,
  recordFiniteStep,
  recordSkippedStep,
} from './guardFinite.js';
import { retainStep } from './retainStep.js';
import type { StateSlot } from './stateSlot.js';

export interface UpdateOptions<S> {
  /**
   * Check the update before it touches the parameters (one small async read-back per step): a
   * NaN/Inf update skips the step — parameters and optimizer state stay as they were — and is
   * counted in `health` like guardFinite's skips. Steps guardFinite already skipped pass
   * through untouched either way.
   */
  readonly guard?: StepHealth;
  /**
   * With `guard`: also check the step's loss and gradients, in the same read-back as the update
   * (a bad one skips the step as guardFinite would: `what` 'loss' or 'gradient'). Use it instead
   * of guardFinite where nothing between forwardBackward and update reads the gradients
   * (no fisherScan): one read-back a step instead of two. Default false.
   */
  readonly checkGradients?: boolean;
  /** Where a checkpoint reads the optimizer state from and a resumed run restores it. */
  readonly state?: StateSlot<S>;
}

type Computed<S> = { updates: Params; state: S; diagnostics: Record<string, tf.Scalar | number> };

/**
 * Applies an optimizer to each step: runs its pure `update` inside tf.tidy, adds the updates to
 * the model's variables, and emits the step with what the optimizer did. The optimizer state is
 * created on the first step of each subscription (or restored from `state`) and disposed on
 * complete, error and unsubscribe; replaced state tensors are disposed every step.
 *
 * @example
 * steps$.pipe(update(model, adamw({ learningRate: 1e-3 })));
 */
export function update<S>(
  model: Pick<Sequential, 'params'>,
  optimizer: GradientTransformation<S>,
  options: UpdateOptions<S> = {},
): OperatorFunction<Step, Step> {
  const params = model.params as Params;
  return (source) =>
    defer(() => {
      const holder: { state: S | undefined } = { state: undefined };
      options.state?.attach({
        get: () => holder.state,
        set: (state) => {
          if (holder.state !== undefined) tf.dispose(tensorsIn(holder.state));
          holder.state = state;
        },
      });

      const compute = (step: Step): Computed<S> => {
        if (holder.state === undefined)
          holder.state = tf.tidy(() => optimizer.init(params) as tf.TensorContainer) as S;
        return tf.tidy(() => {
          const r: TransformResult<S> = optimizer.update(step.grads, holder.state as S, params, {
            step: step.batch.step,
            source: step,
          });
          // Checked inside the tidy so that a failing step leaks nothing it made.
          for (const key of Object.keys(params)) {
            const u = r.updates[key];
            if (!u)
              throw new GrngError('internal', `optimizer produced no update for parameter ${key}`, {
                key,
              });
            if (u.shape.join() !== params[key]!.shape.join()) {
              throw new GrngError(
                'shape',
                `optimizer update for ${key} has shape [${u.shape.join(', ')}], the parameter [${params[key]!.shape.join(', ')}]`,
                { key },
              );
            }
          }
          return {
            updates: r.updates,
            state: r.state as tf.TensorContainer,
            diagnostics: (r.diagnostics ?? {}) as tf.TensorContainer,
          };
        }) as Computed<S>;
      };

      /** Assigns, swaps the state, and emits; the per-step tensors die when `next` returns. */
      const apply = (step: Step, result: Computed<S>, emit: (s: Step) => void): void => {
        tf.tidy(() => {
          for (const key of Object.keys(params))
            (params[key] as tf.Variable).assign(tf.add(params[key]!, result.updates[key]!));
        });
        disposeReplaced(holder.state, result.state);
        holder.state = result.state;
        const learningRate =
          typeof result.diagnostics.learningRate === 'number'
            ? result.diagnostics.learningRate
            : NaN;
        // Updates that are also gradients (owned upstream) or state (owned here) are not per-step.
        const kept = new Set([...Object.values(step.grads), ...tensorsIn(result.state)]);
        const owned = [
          ...Object.values(result.updates).filter((u) => !kept.has(u)),
          ...tensorsIn(result.diagnostics),
        ];
        try {
          emit({
            ...step,
            update: { updates: result.updates, learningRate, diagnostics: result.diagnostics },
          });
        } finally {
          tf.dispose(owned);
        }
      };

      /** Throws away a computed step whose update was not finite: nothing of it survives. */
      const discard = (step: Step, result: Computed<S>): void => {
        const keep = new Set([...tensorsIn(holder.state), ...Object.values(step.grads)]);
        tf.dispose(
          [
            ...Object.values(result.updates),
            ...tensorsIn(result.state),
            ...tensorsIn(result.diagnostics),
          ].filter((t) => !keep.has(t)),
        );
      };

      return source.pipe(
        concatMap((step) => {
          if (step.skipped) return of(step);
          const health = options.guard;
          // A guarded step finishes after an async read: work on a copy whose tensors outlive
          // upstream's disposal (an update that passes a gradient through is then that copy).
          const { step: kept, retained } = health ? retainStep(step) : { step, retained: [] };
          let result: Computed<S>;
          try {
            result = compute(kept);
          } catch (error) {
            tf.dispose(retained);
            throw asGrngError(error, { operator: 'update', step: step.batch.step });
          }
          if (!health) {
            return new Observable<Step>((subscriber) => {
              try {
                apply(step, result, (s) => subscriber.next(s));
              } catch (error) {
                subscriber.error(asGrngError(error, { operator: 'update', step: step.batch.step }));
                return;
              }
              subscriber.complete();
            });
          }
          // Loss and gradients first (when asked), so a NaN gradient is reported as such and
          // not as the NaN update it makes. Flags are keyed by position in this list.
          const checks: Array<{ tensor: tf.Tensor; skipped: SkippedStep }> = [
            ...(options.checkGradients
              ? [
                  { tensor: kept.loss, skipped: { what: 'loss', where: 'loss' } as const },
                  ...Object.entries(kept.grads).map(([where, tensor]) => ({
                    tensor,
                    skipped: { what: 'gradient', where } as const,
                  })),
                ]
              : []),
            ...Object.entries(result.updates).map(([where, tensor]) => ({
              tensor,
              skipped: { what: 'update', where } as const,
            })),
          ];
          const positions = checks.map((_, i) => String(i));
          const flags = finiteFlags(
            Object.fromEntries(checks.map((c, i) => [positions[i]!, c.tensor])),
          );
          return afterFiniteCheck(
            'update',
            step,
            flags,
            positions,
            retained,
            (bad, emit) => {
              if (bad === undefined) {
                recordFiniteStep(health);
                apply(kept, result, emit);
              } else {
                discard(kept, result);
                const skipped = checks[Number(bad)]!.skipped;
                recordSkippedStep(health, step.batch.step, skipped);
                emit({ ...kept, skipped });
              }
            },
            () => discard(kept, result),
          );
        }),
        finalize(() => {
          options.state?.detach();
          tf.dispose(tensorsIn(holder.state));
          holder.state = undefined;
        }),
      );
    });
}
