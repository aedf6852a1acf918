import { Observable } from 'rxjs';
import { recordBatchToRows, type RecordedRun } from '../sinks/metricsSchema.js';
import type { MetricsRow } from '../types.js';
import { checkKeys, checkNumber } from '../validate.js';
import { readRecording, type Recording } from './readRecording.js';

/** One replayed row and the run it belongs to. */
export interface ReplayedRow {
  readonly run: RecordedRun;
  readonly row: MetricsRow;
}

export interface ReplayOptions {
  /** Pace: Infinity (default) as fast as possible; 1 the recorded pace; 10 ten times faster. */
  readonly speed?: number;
  /** Called once per recording that was truncated (read up to its last complete batch). */
  readonly onWarning?: (message: string, recording: Recording) => void;
}

/**
 * Replays one or more recordings as metric rows, merged in recorded wall-time order, either as
 * fast as possible or at the recorded pace × `speed`. Files are read and checked when
 * subscribed: a truncated tail is read up to the last complete batch with a warning
 * (`onWarning`); a corrupt or non-Arrow file is an error notification (GrngError with file and
 * byte offset) before any row.
 *
 * @example
 * replayArrow(['runs/ring.arrows', 'runs/adamw.arrows']).subscribe(({ run, row }) => console.log(run.label, row.loss));
 */
export function replayArrow(paths: string | readonly string[], options: ReplayOptions = {}): Observable<ReplayedRow> {
  checkKeys('replay', options, ['speed', 'onWarning']);
  const speed = options.speed === undefined || options.speed === Infinity ? Infinity : checkNumber('speed', options.speed, { min: 0, minExclusive: true });
  const files = typeof paths === 'string' ? [paths] : [...paths];
  return new Observable<ReplayedRow>((subscriber) => {
    let timer: NodeJS.Timeout | undefined;
    let items: ReplayedRow[];
    try {
      const recordings = files.map((path) => readRecording(path));
      for (const rec of recordings) {
        if (rec.truncated) options.onWarning?.(`${rec.path}: truncated at byte ${rec.truncated.offset} (${rec.truncated.reason}); read ${rec.rows} rows up to the last complete batch`, rec);
      }
      items = recordings.flatMap((rec) => rec.batches.flatMap((b) => recordBatchToRows(b)).map((row) => ({ run: rec.run, row })));
      // A stable sort keeps each run's own order for equal times.
      items.sort((a, b) => a.row.wallMs - b.row.wallMs);
    } catch (error) {
      subscriber.error(error);
      return;
    }
    if (speed === Infinity) {
      for (const item of items) {
        if (subscriber.closed) return;
        subscriber.next(item);
      }
      subscriber.complete();
      return;
    }
    const origin = items[0]?.row.wallMs ?? 0;
    const started = performance.now();
    let index = 0;
    const pump = (): void => {
      const now = (performance.now() - started) * speed + origin;
      while (index < items.length && items[index]!.row.wallMs <= now) {
        subscriber.next(items[index]!);
        index += 1;
        if (subscriber.closed) return;
      }
      if (index >= items.length) {
        subscriber.complete();
        return;
      }
      timer = setTimeout(pump, Math.max(0, (items[index]!.row.wallMs - now) / speed));
    };
    pump();
    return () => {
      if (timer) clearTimeout(timer);
    };
  });
}
