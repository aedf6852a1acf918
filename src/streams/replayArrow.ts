import { Observable } from 'rxjs';
import { recordBatchToRows, type RecordedRun } from '../metrics/schema.js';
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
 * byte offset) before any row. A row whose wall time is not a finite, non-negative number (only
 * damage makes one) is replayed right after the row before it in its recording.
 *
 * @example
 * replayArrow(['runs/ring.arrows', 'runs/adamw.arrows']).subscribe(({ run, row }) => console.log(run.label, row.loss));
 */
export function replayArrow(
  paths: string | readonly string[],
  options: ReplayOptions = {},
): Observable<ReplayedRow> {
  checkKeys('replay', options, ['speed', 'onWarning']);
  const speed =
    options.speed === undefined || options.speed === Infinity
      ? Infinity
      : checkNumber('speed', options.speed, { min: 0, minExclusive: true });
  const files = typeof paths === 'string' ? [paths] : [...paths];
  return new Observable<ReplayedRow>((subscriber) => {
    let timer: NodeJS.Timeout | undefined;
    let items: Scheduled[];
    try {
      const recordings = files.map((path) => readRecording(path));
      for (const rec of recordings) {
        if (rec.truncated)
          options.onWarning?.(
            `${rec.path}: truncated at byte ${rec.truncated.offset} (${rec.truncated.reason}); read ${rec.rows} rows up to the last complete batch`,
            rec,
          );
      }
      items = recordings.flatMap((rec) => schedule(rec));
      // A stable sort keeps each run's own order for equal times.
      items.sort((a, b) => a.dueMs - b.dueMs);
    } catch (error) {
      subscriber.error(error);
      return;
    }
    if (speed === Infinity) {
      for (const { item } of items) {
        if (subscriber.closed) return;
        subscriber.next(item);
      }
      subscriber.complete();
      return;
    }
    const origin = items[0]?.dueMs ?? 0;
    const started = performance.now();
    let index = 0;
    const pump = (): void => {
      const now = (performance.now() - started) * speed + origin;
      while (index < items.length && items[index]!.dueMs <= now) {
        subscriber.next(items[index]!.item);
        index += 1;
        if (subscriber.closed) return;
      }
      if (index >= items.length) {
        subscriber.complete();
        return;
      }
      // Longer delays would make Node fire after 1 ms, again and again, with a warning each time.
      timer = setTimeout(
        pump,
        Math.min(MAX_TIMER_MS, Math.max(0, (items[index]!.dueMs - now) / speed)),
      );
    };
    pump();
    return () => {
      if (timer) clearTimeout(timer);
    };
  });
}

/** Node's longest timer (ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

interface Scheduled {
  readonly item: ReplayedRow;
  /** When the row is due, in recorded milliseconds. */
  readonly dueMs: number;
}

/**
 * The rows of a recording with the recorded time each is due. A wall time that is not a finite,
 * non-negative number (only a damaged file holds one: the writer records none) cannot be placed
 * in time, so its row is due with the row before it; paced replay would otherwise wait for it
 * forever, or measure every other row from a start at −1e300.
 */
function schedule(rec: Recording): Scheduled[] {
  let previousMs = 0;
  return rec.batches.flatMap((batch) =>
    recordBatchToRows(batch).map((row) => {
      if (Number.isFinite(row.wallMs) && row.wallMs >= 0) previousMs = row.wallMs;
      return { item: { run: rec.run, row }, dueMs: previousMs };
    }),
  );
}
