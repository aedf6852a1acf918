import type { RecordBatch, Schema } from 'apache-arrow';
import { Observable, type OperatorFunction } from 'rxjs';
import { rowsToRecordBatch } from '../metrics/schema.js';
import type { MetricsRow } from '../types.js';
import { checkInteger, checkKeys } from '../validate.js';

export interface RecordBatchOptions {
  /** Emit a batch once this many rows are waiting; default 64. */
  readonly maxRows?: number;
  /** ... or once the oldest waiting row is this old (ms); default 250. */
  readonly maxMs?: number;
  /** Emit the waiting rows whenever this emits (a checkpoint wants the recording up to date). */
  readonly flushOn?: Observable<unknown>;
}

/**
 * Groups metric rows into Arrow record batches of the metrics schema, by count and by time
 * (64 rows or 250 ms by default), so recordings and dashboards get few, timely batches. The rest
 * is flushed on completion; on error the rows already waiting are emitted before the error, so
 * nothing already computed is lost.
 *
 * @example
 * rows$.pipe(toRecordBatches(metricsSchema(run)), recordArrow('runs/a.arrows'));
 */
export function toRecordBatches(
  schema: Schema,
  options: RecordBatchOptions = {},
): OperatorFunction<MetricsRow, RecordBatch> {
  checkKeys('record batch', options, ['maxRows', 'maxMs', 'flushOn']);
  const maxRows = checkInteger('maxRows', options.maxRows ?? 64, 1);
  const maxMs = checkInteger('maxMs', options.maxMs ?? 250, 0);
  return (source) =>
    new Observable<RecordBatch>((subscriber) => {
      let pending: MetricsRow[] = [];
      let timer: NodeJS.Timeout | undefined;
      const flush = (): void => {
        if (timer) clearTimeout(timer);
        timer = undefined;
        if (pending.length === 0) return;
        const rows = pending;
        pending = [];
        subscriber.next(rowsToRecordBatch(schema, rows));
      };
      const flushes = options.flushOn?.subscribe(() => flush());
      const subscription = source.subscribe({
        next(row) {
          pending.push(row);
          if (pending.length >= maxRows) flush();
          else if (!timer) {
            timer = setTimeout(flush, maxMs);
            // A pending flush must not keep a finished process alive.
            timer.unref?.();
          }
        },
        error(error: unknown) {
          flush();
          subscriber.error(error);
        },
        complete() {
          flush();
          subscriber.complete();
        },
      });
      return () => {
        if (timer) clearTimeout(timer);
        flushes?.unsubscribe();
        subscription.unsubscribe();
      };
    });
}
