import { Observable, type OperatorFunction } from 'rxjs';
import type { MetricsRow } from '../types.js';

/** The end-of-run figures that `grng train --json` prints and `compare` tabulates. */
export interface RunSummary {
  readonly optimizer: string;
  readonly backend: string;
  readonly dataset: string;
  /** Steps trained. */
  readonly steps: number;
  /** Epochs trained (fractional when `steps` stops mid-epoch). */
  readonly epochs: number;
  /** Mean training loss over the last epoch's steps (at most one epoch of the most recent). */
  readonly finalLoss: number;
  /** Test metrics at the last evaluation, null if there was none. */
  readonly testAccuracy: number | null;
  readonly testLoss: number | null;
  /** Mean training-step time, evaluation excluded, first (warm-up) step excluded. */
  readonly msPerStep: number;
  /** Training samples per second, evaluation excluded. */
  readonly samplesPerSecond: number;
  /** Mean ‖g‖ over all steps (the paper's Figure-1 quantity). */
  readonly meanGradNorm: number;
  /** Mean update/−gradient correlation over steps where it was computed. */
  readonly meanUpdateGradCorrelation: number;
  /**
   * Epochs (fractional) until the test accuracy first reached the target; null if never or no
   * target.
   */
  readonly epochsToTarget: number | null;
  /**
   * Training seconds (evaluation excluded, the first step included) until the test accuracy first
   * reached the target; null if never or no target.
   */
  readonly secondsToTarget: number | null;
}

export interface SummaryContext {
  readonly optimizer: string;
  readonly backend: string;
  readonly dataset: string;
  /** Batches per epoch, to turn steps into epochs and pick the last epoch's losses. */
  readonly batchesPerEpoch: number;
  /** Test accuracy for `epochsToTarget`. */
  readonly targetAccuracy?: number;
}

/**
 * Folds metric rows into a {@link RunSummary}, emitted once when the rows complete (also for
 * an empty run, with NaN figures).
 */
export function summarize(context: SummaryContext): OperatorFunction<MetricsRow, RunSummary> {
  return (source) =>
    new Observable<RunSummary>((subscriber) => {
      const recentLosses: number[] = [];
      let steps = 0;
      let lastEpoch = 0;
      let lastIndexInEpoch = 0;
      let timedSteps = 0;
      let timedMs = 0;
      let timedSamples = 0;
      let gradNormSum = 0;
      let correlationSum = 0;
      let correlationCount = 0;
      let testAccuracy: number | null = null;
      let testLoss: number | null = null;
      let epochsToTarget: number | null = null;
      let secondsToTarget: number | null = null;
      let trainingMs = 0;
      return source.subscribe({
        next(row) {
          steps += 1;
          recentLosses.push(row.loss);
          if (recentLosses.length > context.batchesPerEpoch) recentLosses.shift();
          if (steps > 1) {
            timedSteps += 1;
            timedMs += row.stepMs - row.evaluationMs;
            timedSamples += row.samples;
          }
          trainingMs += row.stepMs - row.evaluationMs;
          gradNormSum += row.gradNorm;
          if (Number.isFinite(row.updateGradCorrelation)) {
            correlationSum += row.updateGradCorrelation;
            correlationCount += 1;
          }
          if (row.testAccuracy !== null) {
            testAccuracy = row.testAccuracy;
            testLoss = row.testLoss;
            if (
              epochsToTarget === null &&
              context.targetAccuracy !== undefined &&
              row.testAccuracy >= context.targetAccuracy
            ) {
              epochsToTarget = round((row.step + 1) / context.batchesPerEpoch, 4);
              secondsToTarget = round(trainingMs / 1000, 3);
            }
          }
          lastEpoch = row.epoch;
          lastIndexInEpoch = row.step - row.epoch * context.batchesPerEpoch;
        },
        error: (error: unknown) => subscriber.error(error),
        complete() {
          const mean = (xs: number[]): number =>
            xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
          subscriber.next({
            optimizer: context.optimizer,
            backend: context.backend,
            dataset: context.dataset,
            steps,
            epochs:
              steps === 0
                ? 0
                : round(lastEpoch + (lastIndexInEpoch + 1) / context.batchesPerEpoch, 4),
            finalLoss: mean(recentLosses),
            testAccuracy,
            testLoss,
            msPerStep: timedSteps ? timedMs / timedSteps : NaN,
            samplesPerSecond: timedMs > 0 ? (timedSamples * 1000) / timedMs : NaN,
            meanGradNorm: steps ? gradNormSum / steps : NaN,
            meanUpdateGradCorrelation: correlationCount ? correlationSum / correlationCount : NaN,
            epochsToTarget,
            secondsToTarget,
          });
          subscriber.complete();
        },
      });
    });
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
