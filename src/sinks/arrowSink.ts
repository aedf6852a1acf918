import type { RecordBatch } from 'apache-arrow';
import { Observable, Subject, type MonoTypeOperatorFunction } from 'rxjs';
import { toRecordBatches, type RecordBatchOptions } from './toRecordBatches.js';
import { broadcast } from './broadcast.js';
import type { MetricsRow } from '../types.js';
import { metricsSchema, type RecordedRun } from '../metrics/schema.js';
import { recordArrow } from './recordArrow.js';
import type { RunHub } from './runHub.js';

export interface ArrowSinkOptions {
  /** Record to this Arrow IPC stream file. */
  readonly record?: string;
  /** Replace an existing recording; default false. */
  readonly overwrite?: boolean;
  /** Publish to this hub (and so to WebSocket clients). */
  readonly hub?: RunHub;
  /** Batching of rows into record batches. */
  readonly batching?: RecordBatchOptions;
  /** Append to a recording reopened for a resumed run (see reopenRecording). */
  readonly append?: boolean;
  /** Batches the run already has (a resumed run's recording), shown to dashboard clients first. */
  readonly history?: readonly RecordBatch[];
}

/**
 * Sends metric rows, as Arrow record batches, to a recording and/or a hub, and passes the rows
 * on unchanged, so it sits in a pipeline next to other sinks (progress bar, summary). On
 * completion — and on error, before the error goes on — the rows still waiting are written and
 * the recording is closed: nothing already computed is lost.
 *
 * @example
 * run.rows.pipe(arrowSink(recordedRun, { record: 'runs/a.arrows', hub }), progressBar({ total }));
 */
export function arrowSink(
  run: RecordedRun,
  options: ArrowSinkOptions,
): MonoTypeOperatorFunction<MetricsRow> {
  const schema = metricsSchema(run);
  return (source) =>
    new Observable<MetricsRow>((subscriber) => {
      const rows = new Subject<MetricsRow>();
      let batches = rows.pipe(toRecordBatches(schema, options.batching));
      if (options.record)
        batches = batches.pipe(
          recordArrow(
            options.record,
            options.append ? { append: true } : { overwrite: options.overwrite ?? false },
          ),
        );
      if (options.hub)
        batches = batches.pipe(
          broadcast(options.hub, run, schema, {
            ...(options.record ? { recordingPath: options.record } : {}),
            ...(options.history ? { history: options.history } : {}),
          }),
        );
      let sinkError: unknown;
      const sink = batches.subscribe({ error: (error: unknown) => (sinkError = error) });
      if (sinkError !== undefined) {
        subscriber.error(sinkError);
        return;
      }
      const subscription = source.subscribe({
        next(row) {
          rows.next(row);
          if (sinkError !== undefined) subscriber.error(sinkError);
          else subscriber.next(row);
        },
        error(error: unknown) {
          rows.complete();
          subscriber.error(error);
        },
        complete() {
          rows.complete();
          if (sinkError !== undefined) subscriber.error(sinkError);
          else subscriber.complete();
        },
      });
      return () => {
        subscription.unsubscribe();
        // Unsubscribing (Ctrl-C, take) still flushes and closes the recording.
        rows.complete();
        sink.unsubscribe();
      };
    });
}
