import * as tf from '@tensorflow/tfjs';
import { concatMap, Observable, type OperatorFunction } from 'rxjs';
import { asGrngError, GrngError } from '../errors.js';
import { nativeFiniteFlags } from '../runtime/nativeBlas.js';
import { sumAll } from '../linalg/reductions.js';
import type { Params, SkippedStep, Step, StepHealth } from '../types.js';
import { checkInteger } from '../validate.js';
import { retainStep } from './retainStep.js';

/** Default of `maxBadSteps`: consecutive non-finite steps before the run stops. */
export const DEFAULT_MAX_BAD_STEPS = 10;
/** The damping boost stops growing here: 10⁶ × γ already makes the update a tiny gradient step. */
const MAX_DAMPING_BOOST = 1e6;

/**
 * The health record of one run, shared by the operators that skip non-finite steps.
 *
 * @example
 * const health = stepHealth({ maxBadSteps: 5 });
 */
export function stepHealth({
  maxBadSteps = DEFAULT_MAX_BAD_STEPS,
}: { maxBadSteps?: number } = {}): StepHealth {
  return {
    consecutive: 0,
    total: 0,
    dampingBoost: 1,
    lastBadStep: -1,
    refreshDue: false,
    maxBadSteps: checkInteger('maxBadSteps', maxBadSteps, 1),
  };
}

/**
 * Skips steps whose loss or gradient is NaN or ±Inf before anything uses them: each step's
 * loss and per-parameter gradient sums are read back (one small async read; the batch is held,
 * so pacing holds), and a step with a non-finite value leaves marked `skipped` — fisherScan does
 * not fold it into the factors, update does not touch the parameters or the optimizer state,
 * metrics counts it. A skipped step raises the K-FAC family's damping (×10, see fisherScan).
 * After `health.maxBadSteps` consecutive skips the stream errors naming the step and the first
 * offending parameter.
 *
 * Each tensor is checked in one pass: natively (every element's exponent bits) where the BLAS
 * addon is loaded, else by its sum, which is non-finite when any element is — there a finite
 * gradient whose sum overflows float32 (|Σg| > 3.4e38) counts as non-finite too, which is what a
 * user wants skipped anyway.
 *
 * @example
 * const health = stepHealth();
 * batches$.pipe(forwardBackward(model), guardFinite(health), update(model, sgd(), { guard: health }));
 */
export function guardFinite(health: StepHealth): OperatorFunction<Step, Step> {
  return (source) =>
    source.pipe(
      concatMap((step) => {
        let flags: tf.Tensor1D;
        try {
          flags = finiteFlags({ loss: step.loss, ...step.grads });
        } catch (error) {
          throw asGrngError(error, { operator: 'guardFinite', step: step.batch.step });
        }
        const { step: kept, retained } = retainStep(step);
        return afterFiniteCheck(
          'guardFinite',
          step,
          flags,
          ['loss', ...Object.keys(step.grads)],
          retained,
          (bad, emit) => {
            if (bad === undefined) {
              // A later check (update's) may still skip this step, so only a clean previous
              // step ends a run of skips here; update's guard ends it once the step is applied.
              if (health.lastBadStep < step.batch.step - 1) recordFiniteStep(health);
              emit(kept);
            } else {
              const skipped: SkippedStep =
                bad === 'loss' ? { what: 'loss', where: 'loss' } : { what: 'gradient', where: bad };
              recordSkippedStep(health, step.batch.step, skipped);
              emit({ ...kept, skipped });
            }
          },
        );
      }),
    );
}

/**
 * The asynchronous half of a finiteness check, shared by guardFinite and update's guard: holds
 * the step's batch (so the source waits), reads the flags, hands `decide` the first non-finite
 * key (or undefined) and an emitter, then completes; read errors become the operator's typed
 * error. The flags and `retained` are disposed and the batch released whatever happens;
 * `cancelled` runs instead of `decide` when the subscriber left before the read landed.
 */
export function afterFiniteCheck(
  operator: string,
  step: Step,
  flags: tf.Tensor1D,
  keys: readonly string[],
  retained: readonly tf.Tensor[],
  decide: (bad: string | undefined, emit: (step: Step) => void) => void,
  cancelled: () => void = () => {},
): Observable<Step> {
  const release = step.batch.hold();
  return new Observable<Step>((subscriber) => {
    let left = false;
    flags
      .data()
      .then((values) => {
        if (left) return cancelled();
        decide(firstNonFinite(values, keys), (s) => subscriber.next(s));
        subscriber.complete();
      })
      .catch((error: unknown) =>
        subscriber.error(asGrngError(error, { operator, step: step.batch.step })),
      )
      .finally(() => {
        flags.dispose();
        tf.dispose(retained as tf.Tensor[]);
        release();
      });
    return () => {
      left = true;
    };
  });
}

/**
 * 1 for each finite tensor, 0 otherwise, in key order: one tensor to read back. Natively (an
 * exponent-bit scan per tensor) where the addon is loaded, else by each tensor's sum.
 */
export function finiteFlags(tensors: Params): tf.Tensor1D {
  return (
    nativeFiniteFlags(Object.values(tensors)) ??
    tf.tidy(
      () =>
        tf.stack(
          Object.values(tensors).map((t) => tf.cast(tf.isFinite(sumAll(t)), 'float32')),
        ) as tf.Tensor1D,
    )
  );
}

/** The key of the first 0 flag, or undefined when all are finite. */
export function firstNonFinite(
  flags: ArrayLike<number>,
  keys: readonly string[],
): string | undefined {
  for (let i = 0; i < keys.length; i++) if (flags[i] !== 1) return keys[i];
  return undefined;
}

/** A step that went through ends a run of skipped ones. */
export function recordFiniteStep(health: StepHealth): void {
  health.consecutive = 0;
}

/**
 * Counts a skipped step, raises the damping boost, and throws when it is one too many: the
 * error names the step, what was not finite and the first offending parameter.
 */
export function recordSkippedStep(health: StepHealth, step: number, skipped: SkippedStep): void {
  health.consecutive += 1;
  health.total += 1;
  health.dampingBoost = Math.min(MAX_DAMPING_BOOST, health.dampingBoost * 10);
  health.refreshDue = true;
  health.lastBadStep = step;
  if (health.consecutive >= health.maxBadSteps) {
    const where =
      skipped.what === 'loss'
        ? 'the loss'
        : `the ${skipped.what} of ${skipped.where} (layer ${layerOf(skipped.where)})`;
    throw new GrngError(
      'step',
      `step ${step}: ${health.consecutive} consecutive non-finite steps (max-bad-steps ${health.maxBadSteps}); ${where} is NaN or infinite`,
      { step, ...skipped, layer: layerOf(skipped.where) },
    );
  }
}

function layerOf(parameter: string): string {
  return parameter.split('/')[0] ?? parameter;
}
