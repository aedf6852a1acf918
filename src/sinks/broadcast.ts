import type { RecordBatch, Schema } from 'apache-arrow';
import { Observable, type MonoTypeOperatorFunction } from 'rxjs';
import type { RecordedRun } from '../metrics/schema.js';
import type { RunHub } from './runHub.js';

/**
 * Announces a run to a hub when subscribed, passes every record batch to it (and on), and ends
 * the run on completion, error or unsubscribe: the bridge from a pipeline to the WebSocket
 * server. The hub never blocks: slow clients are the server's business.
 *
 * @example
 * rows$.pipe(toRecordBatches(schema), broadcast(hub, run, schema)).subscribe();
 */
export function broadcast(
  hub: RunHub,
  run: RecordedRun,
  schema: Schema,
  options: { recordingPath?: string; history?: readonly RecordBatch[] } = {},
): MonoTypeOperatorFunction<RecordBatch> {
  return (source) =>
    new Observable<RecordBatch>((subscriber) => {
      hub.addRun(run, schema, {
        ...(options.recordingPath ? { recordingPath: options.recordingPath } : {}),
        ...(options.history ? { batches: options.history } : {}),
      });
      const subscription = source.subscribe({
        next(batch) {
          hub.pushBatch(run.id, batch);
          subscriber.next(batch);
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      });
      return () => {
        subscription.unsubscribe();
        hub.endRun(run.id);
      };
    });
}
