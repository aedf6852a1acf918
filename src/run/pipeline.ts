import { defer, identity, type OperatorFunction } from 'rxjs';
import type { CurvatureOptions, DampingRule } from '../curvature/options.js';
import type { Split } from '../data/dataset.js';
import { invalidOption } from '../errors.js';
import type { Sequential } from '../nn/sequential.js';
import { evaluate } from '../operators/evaluate.js';
import { fisherScan, type ScanState } from '../operators/fisherScan.js';
import { forwardBackward } from '../operators/forwardBackward.js';
import { guardFinite, stepHealth } from '../operators/guardFinite.js';
import { metrics, type MetricsOptions } from '../operators/metrics.js';
import type { StateSlot } from '../operators/stateSlot.js';
import { update } from '../operators/update.js';
import type { NamedOptimizer } from '../optim/registry.js';
import type { GradientTransformation } from '../optim/transform.js';
import type { Batch, MetricsRow, StepHealth } from '../types.js';
import { checkBoolean, checkKeys } from '../validate.js';

/**
 * What {@link trainingPipeline} trains with: an optimizer transform (`adamw(...)`, `sgd(...)`, or
 * a Kronecker-factored one such as `ring(model, ...)`, whose `curvature` adds fisherScan), or a
 * named optimizer from `createOptimizer`, which also says whether it needs per-layer signals.
 */
export type PipelineOptimizer =
  | (GradientTransformation<unknown> & {
      readonly curvature?: { readonly damping: DampingRule; readonly options: CurvatureOptions };
    })
  | Pick<NamedOptimizer, 'transform' | 'needsSignals' | 'curvature'>;

export interface TrainingPipelineOptions {
  /** Test split to evaluate on (every `evalEvery` steps and at epoch ends); none: no evaluation. */
  readonly test?: Split;
  /** Evaluate every N steps; default 0 = at epoch ends only. */
  readonly evalEvery?: number;
  /**
   * Skip steps whose loss, gradients or update are NaN/Inf before they touch the parameters
   * (guardFinite ahead of fisherScan, else update's own check); default true.
   */
  readonly guard?: boolean;
  /**
   * The run's record of skipped steps, shared by the guard, fisherScan (damping boost) and
   * metrics (`skippedSteps`); pass one to read or checkpoint it, or to set `maxBadSteps`
   * (`stepHealth({ maxBadSteps: 5 })`). Default: a fresh `stepHealth()` per subscription.
   */
  readonly health?: StepHealth;
  /** Where checkpoints read the optimizer and curvature state, and a resumed run puts it back. */
  readonly state?: {
    readonly optimizer?: StateSlot<unknown>;
    readonly curvature?: StateSlot<ScanState>;
  };
  /**
   * forwardBackward emits per-layer signals and per-sample losses (K-FAC statistics, R-Kalman);
   * default: a named optimizer's `needsSignals`, else whether the optimizer has `curvature`.
   */
  readonly signals?: boolean;
  /** Options of the metrics operator (its `health` is this pipeline's). */
  readonly metrics?: Omit<MetricsOptions, 'health'>;
}

const PIPELINE_KEYS = ['test', 'evalEvery', 'guard', 'health', 'state', 'signals', 'metrics'];

/**
 * The whole training step as one operator: batches in, metric rows out —
 * forwardBackward → (guardFinite) → (fisherScan) → update → evaluate → metrics. Bring your own
 * source (`batches(...)`, with its pacing and checkpoint hooks) and your own sinks (progress bar,
 * `arrowSink`, `toArray`); `prepareRun` and `train` compose through it too. Optimizer state lives
 * per subscription, as in each operator.
 *
 * @example
 * const rows = await lastValueFrom(
 *   batches(data.train, { batchSize: 128, epochs: 2 }).pipe(
 *     trainingPipeline(model, ring(model, { rho: 0.1 }), { test: data.test, evalEvery: 50 }),
 *     toArray(),
 *   ),
 * );
 */
export function trainingPipeline(
  model: Sequential,
  optimizer: PipelineOptimizer,
  options: TrainingPipelineOptions = {},
): OperatorFunction<Batch, MetricsRow> {
  checkKeys('trainingPipeline', options, PIPELINE_KEYS);
  const guard = checkBoolean('guard', options.guard ?? true);
  const named = 'transform' in optimizer;
  const transform = named ? optimizer.transform : optimizer;
  const curvature = optimizer.curvature;
  const signals = checkBoolean(
    'signals',
    options.signals ?? (named ? optimizer.needsSignals : curvature !== undefined),
  );
  if (!options.test && options.evalEvery !== undefined)
    invalidOption('evalEvery', options.evalEvery, 'a test split to go with it: option test');
  const evaluation = options.test
    ? evaluate(model, options.test, { every: options.evalEvery ?? 0 })
    : identity;
  return (batches) =>
    defer(() => {
      const health = options.health ?? stepHealth();
      return batches.pipe(
        forwardBackward(model, { signals }),
        // fisherScan folds the gradients' signals into its factors, so a bad step must be caught
        // before it (guardFinite, a read-back of its own); without it update's guard checks loss,
        // gradients and update in one read-back.
        guard && curvature ? guardFinite(health) : identity,
        curvature
          ? fisherScan(model, curvature.damping, curvature.options, {
              health,
              ...(options.state?.curvature ? { state: options.state.curvature } : {}),
            })
          : identity,
        update(model, transform, {
          ...(guard ? { guard: health, checkGradients: !curvature } : {}),
          ...(options.state?.optimizer ? { state: options.state.optimizer } : {}),
        }),
        evaluation,
        metrics({ ...options.metrics, health }),
      );
    });
}
