import { SingleBar } from 'cli-progress';
import { Observable, type MonoTypeOperatorFunction } from 'rxjs';
import type { MetricsRow } from '../types.js';

export interface ProgressBarOptions {
  /** Total steps of the run (the bar's end). */
  readonly total: number;
  /** Name shown before the bar, e.g. the optimizer. */
  readonly label?: string;
  /** Where to draw; default process.stderr, so stdout stays clean for --json. */
  readonly stream?: NodeJS.WriteStream;
}

/**
 * A terminal progress bar that passes rows through: step, epoch, loss, batch accuracy, last test
 * accuracy and samples/s. Draws only on a TTY (cli-progress stays silent otherwise), and is
 * stopped on complete, error and unsubscribe.
 */
export function progressBar(options: ProgressBarOptions): MonoTypeOperatorFunction<MetricsRow> {
  return (source) =>
    new Observable<MetricsRow>((subscriber) => {
      const bar = new SingleBar({
        stream: options.stream ?? process.stderr,
        format: `${options.label ? `${options.label.padEnd(8)} ` : ''}{bar} {value}/{total} | epoch {epoch} | loss {loss} | acc {acc} | test {test} | {rate} samples/s`,
        barsize: 24,
        hideCursor: true,
        clearOnComplete: false,
        fps: 10,
      });
      bar.start(options.total, 0, { epoch: 1, loss: '-', acc: '-', test: '-', rate: '-' });
      let test = '-';
      let rate = 0;
      const subscription = source.subscribe({
        next(row) {
          if (row.testAccuracy !== null) test = row.testAccuracy.toFixed(4);
          const instant =
            row.stepMs > row.evaluationMs
              ? (row.samples * 1000) / (row.stepMs - row.evaluationMs)
              : rate;
          rate = rate === 0 ? instant : 0.9 * rate + 0.1 * instant;
          bar.update(row.step + 1, {
            epoch: row.epoch + 1,
            loss: row.loss.toFixed(4),
            acc: row.accuracy.toFixed(3),
            test,
            rate: Math.round(rate),
          });
          subscriber.next(row);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      });
      return () => {
        subscription.unsubscribe();
        bar.stop();
      };
    });
}
