import type { RecordBatch, Schema } from 'apache-arrow';
import { Subject, type Observable } from 'rxjs';
import type { RecordedRun } from '../metrics/schema.js';

/** A run as the hub knows it: its description, schema, every batch so far, whether it ended. */
export interface HubRun {
  readonly run: RecordedRun;
  readonly schema: Schema;
  readonly batches: readonly RecordBatch[];
  readonly rows: number;
  readonly finished: boolean;
  /** The recording on disk, if any (served for download at full resolution). */
  readonly recordingPath?: string;
}

export type HubEvent =
  | { readonly type: 'run'; readonly run: HubRun }
  | { readonly type: 'batch'; readonly runId: string; readonly batch: RecordBatch }
  | { readonly type: 'end'; readonly runId: string };

/**
 * The in-process meeting point of training runs (producers) and the WebSocket server
 * (consumer): it keeps each run's history (metric rows are small: 100k steps ≈ 20 MB) so a
 * client that connects late gets everything, and announces new runs, batches and ends.
 */
export class RunHub {
  private readonly known = new Map<
    string,
    {
      run: RecordedRun;
      schema: Schema;
      batches: RecordBatch[];
      rows: number;
      finished: boolean;
      recordingPath?: string;
    }
  >();
  private readonly subject = new Subject<HubEvent>();

  /** Runs, batches and ends as they happen (history is in `runs()`). */
  get events(): Observable<HubEvent> {
    return this.subject.asObservable();
  }

  /** Every run so far, in the order they were added. */
  runs(): HubRun[] {
    return [...this.known.values()].map((r) => ({ ...r, batches: [...r.batches] }));
  }

  run(id: string): HubRun | undefined {
    const r = this.known.get(id);
    return r && { ...r, batches: [...r.batches] };
  }

  addRun(
    run: RecordedRun,
    schema: Schema,
    options: { recordingPath?: string; batches?: readonly RecordBatch[]; finished?: boolean } = {},
  ): void {
    if (this.known.has(run.id)) throw new Error(`run ${run.id} is already in the hub`);
    const batches = [...(options.batches ?? [])];
    const entry = {
      run,
      schema,
      batches,
      rows: batches.reduce((n, b) => n + b.numRows, 0),
      finished: options.finished ?? false,
      ...(options.recordingPath ? { recordingPath: options.recordingPath } : {}),
    };
    this.known.set(run.id, entry);
    this.subject.next({ type: 'run', run: { ...entry, batches: [...batches] } });
  }

  pushBatch(runId: string, batch: RecordBatch): void {
    const entry = this.known.get(runId);
    if (!entry || entry.finished) return;
    entry.batches.push(batch);
    entry.rows += batch.numRows;
    this.subject.next({ type: 'batch', runId, batch });
  }

  endRun(runId: string): void {
    const entry = this.known.get(runId);
    if (!entry || entry.finished) return;
    entry.finished = true;
    this.subject.next({ type: 'end', runId });
  }
}
