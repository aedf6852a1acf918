import * as tf from '@tensorflow/tfjs';
import { Observable, type OperatorFunction } from 'rxjs';
import { asGrngError } from '../errors.js';
import { sumAll, sumOfProducts, sumOfSquares } from '../linalg/reductions.js';
import type { MetricsRow, Params, Step, StepHealth } from '../types.js';
import { checkBoolean, checkInteger, checkKeys, checkNumber } from '../validate.js';

export interface MetricsOptions {
  /** Compute ‖g‖ and ‖update‖ (two reductions over every parameter); default true. */
  readonly norms?: boolean;
  /**
   * Compute the update/−gradient Pearson correlation every N steps (three more reductions over
   * every parameter, about 7% of an SGD step on wasm); 0 = never; default 10. Rows without it
   * report NaN.
   */
  readonly correlationEvery?: number;
  /** Reports `health.total` as the `skippedSteps` diagnostic of every row. */
  readonly health?: StepHealth;
  /** Added to `wallMs`: a resumed run continues its clock where the checkpoint left it. */
  readonly wallOffsetMs?: number;
}

/**
 * Reads each step's scalars back from the device asynchronously and emits a plain
 * {@link MetricsRow}. Everything needed is packed synchronously into one small tensor (loss,
 * correct count, gradient and update statistics, tensor diagnostics, evaluation), so there is a
 * single transfer per step, and the batch is held until it lands: the source makes the next
 * batch only after this step's metrics are known. Rows leave in step order; completion and
 * errors wait for reads in flight.
 *
 * @example
 * steps$.pipe(update(model, opt), metrics()).subscribe((row) => console.log(row.loss));
 */
export function metrics(options: MetricsOptions = {}): OperatorFunction<Step, MetricsRow> {
  checkKeys('metrics', options, ['norms', 'correlationEvery', 'health', 'wallOffsetMs']);
  const wallOffsetMs = checkNumber('wallOffsetMs', options.wallOffsetMs ?? 0, { min: 0 });
  const health = options.health;
  const withNorms = checkBoolean('norms', options.norms ?? true);
  const correlationEvery = checkInteger('correlationEvery', options.correlationEvery ?? 10, 0);
  return (source) =>
    new Observable<MetricsRow>((subscriber) => {
      const started = performance.now();
      let previous = started;
      let queue: Promise<void> = Promise.resolve();
      const subscription = source.subscribe({
        next(step) {
          let packed: tf.Tensor1D;
          let layout: Layout;
          try {
            ({ packed, layout } = pack(
              step,
              withNorms,
              withNorms && correlationEvery > 0 && step.batch.step % correlationEvery === 0,
            ));
            if (health)
              layout = {
                ...layout,
                hostDiagnostics: { ...layout.hostDiagnostics, skippedSteps: health.total },
              };
          } catch (error) {
            // Rows already being read still come out first.
            const wrapped = asGrngError(error, { operator: 'metrics', step: step.batch.step });
            queue = queue.then(() => subscriber.error(wrapped));
            return;
          }
          const release = step.batch.hold();
          const summary = {
            step: step.batch.step,
            epoch: step.batch.epoch,
            samples: step.batch.size,
            // Accuracy is per label: a language model's batch has one per token.
            labels: step.batch.y.size,
            evaluationMs: step.evaluationMs ?? 0,
            learningRate: step.update?.learningRate ?? NaN,
          };
          queue = queue.then(async () => {
            try {
              const values = await packed.data();
              if (subscriber.closed) return;
              const now = performance.now();
              const row = unpack(
                values,
                layout,
                summary,
                wallOffsetMs + now - started,
                now - previous,
              );
              previous = now;
              subscriber.next(row);
            } catch (error) {
              subscriber.error(asGrngError(error, { operator: 'metrics', step: summary.step }));
            } finally {
              packed.dispose();
              release();
            }
          });
        },
        error: (error: unknown) => {
          queue = queue.then(() => subscriber.error(error));
        },
        complete: () => {
          queue = queue.then(() => subscriber.complete());
        },
      });
      return () => subscription.unsubscribe();
    });
}

interface Layout {
  readonly norms: boolean;
  readonly hasUpdate: boolean;
  readonly correlation: boolean;
  readonly tensorDiagnostics: readonly string[];
  readonly hostDiagnostics: Readonly<Record<string, number>>;
  readonly hasEvaluation: boolean;
  /** Number of parameter coordinates, for the correlation's means. */
  readonly coordinates: number;
}

/** Pearson correlation of two vectors of n coordinates from their sums, sums of squares and Σxy. */
export function pearsonFromSums(
  n: number,
  sx: number,
  sy: number,
  sxx: number,
  syy: number,
  sxy: number,
): number {
  const mx = sx / n;
  const my = sy / n;
  const cov = sxy / n - mx * my;
  const vx = sxx / n - mx * mx;
  const vy = syy / n - my * my;
  return vx > 0 && vy > 0 ? cov / Math.sqrt(vx * vy) : NaN;
}

/** Sums over all coordinates: [Σg², Σu², Σu, Σg, Σug]; only the squares without correlation. */
function gradientStatistics(
  grads: Params,
  updates: Params | undefined,
  correlation: boolean,
): tf.Tensor[] {
  const keys = Object.keys(grads);
  const sumOf = (f: (k: string) => tf.Tensor): tf.Tensor => tf.addN(keys.map((k) => sumAll(f(k))));
  const stats: tf.Tensor[] = [tf.addN(keys.map((k) => sumOfSquares(grads[k]!)))];
  if (!updates) return stats;
  stats.push(tf.addN(keys.map((k) => sumOfSquares(updates[k]!))));
  if (correlation)
    stats.push(
      sumOf((k) => updates[k]!),
      sumOf((k) => grads[k]!),
      tf.addN(keys.map((k) => sumOfProducts(updates[k]!, grads[k]!))),
    );
  return stats;
}

function pack(
  step: Step,
  norms: boolean,
  correlation: boolean,
): { packed: tf.Tensor1D; layout: Layout } {
  const diagnostics = step.update?.diagnostics ?? {};
  const tensorDiagnostics = Object.keys(diagnostics).filter(
    (k) => typeof diagnostics[k] !== 'number',
  );
  const hostDiagnostics: Record<string, number> = {};
  for (const [k, v] of Object.entries(diagnostics))
    if (typeof v === 'number' && k !== 'learningRate') hostDiagnostics[k] = v;
  const layout: Layout = {
    norms,
    hasUpdate: step.update !== undefined,
    correlation: correlation && step.update !== undefined,
    tensorDiagnostics,
    hostDiagnostics,
    hasEvaluation: step.evaluation !== undefined,
    coordinates: Object.values(step.grads).reduce((n, g) => n + g.size, 0),
  };
  const packed = tf.tidy(() => {
    const parts: tf.Tensor[] = [
      step.loss,
      step.correct,
      ...(norms ? gradientStatistics(step.grads, step.update?.updates, layout.correlation) : []),
    ];
    for (const k of tensorDiagnostics) parts.push(tf.cast(diagnostics[k] as tf.Scalar, 'float32'));
    const flat = parts.map((p) => tf.reshape(p, [1]));
    if (step.evaluation) flat.push(step.evaluation);
    return tf.concat(flat) as tf.Tensor1D;
  });
  return { packed, layout };
}

function unpack(
  values: ArrayLike<number>,
  layout: Layout,
  summary: {
    step: number;
    epoch: number;
    samples: number;
    labels: number;
    evaluationMs: number;
    learningRate: number;
  },
  wallMs: number,
  stepMs: number,
): MetricsRow {
  let i = 0;
  const next = (): number => values[i++]!;
  const loss = next();
  const correct = next();
  const g2 = layout.norms ? next() : NaN;
  const u2 = layout.norms && layout.hasUpdate ? next() : NaN;
  let correlation = NaN;
  if (layout.correlation) {
    const [su, sg, sug] = [next(), next(), next()];
    correlation = -pearsonFromSums(layout.coordinates, su, sg, u2, g2, sug);
  }
  const diagnostics: Record<string, number> = { ...layout.hostDiagnostics };
  for (const k of layout.tensorDiagnostics) diagnostics[k] = next();
  const testLoss = layout.hasEvaluation ? next() : null;
  const testAccuracy = layout.hasEvaluation ? next() : null;
  return {
    step: summary.step,
    epoch: summary.epoch,
    wallMs,
    stepMs,
    evaluationMs: summary.evaluationMs,
    samples: summary.samples,
    loss,
    accuracy: correct / summary.labels,
    learningRate: summary.learningRate,
    gradNorm: Math.sqrt(g2),
    updateNorm: Math.sqrt(u2),
    updateGradCorrelation: correlation,
    testLoss,
    testAccuracy,
    diagnostics,
  };
}
