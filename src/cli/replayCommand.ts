import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { from, lastValueFrom, Subject, type Subscription } from 'rxjs';
import { GrngError } from '../errors.js';
import { broadcast } from '../sinks/broadcast.js';
import { summarize, type RunSummary } from '../sinks/summarize.js';
import { toRecordBatches } from '../sinks/toRecordBatches.js';
import { metricsSchema, type RecordedRun } from '../metrics/schema.js';
import type { RunHub } from '../sinks/runHub.js';
import { formatSummaryTable } from '../sinks/summaryTable.js';
import { replayArrow } from '../streams/replayArrow.js';
import type { MetricsRow } from '../types.js';
import { followFolder, type FolderFollowing } from './followFolder.js';
import { withLive, type LiveOptions } from './live.js';
import type { CliIo } from './io.js';
import { sweepSnapshot } from '../sweep/snapshot.js';

export interface ReplayCommandOptions extends LiveOptions {
  readonly speed?: number;
  readonly summary?: boolean;
}

export type ServeCommandOptions = Omit<
  LiveOptions,
  'serve' | 'keepServing' | 'record' | 'overwrite'
>;

/**
 * `grng replay FILE...`: replays recordings through the same sinks as a live run — the dashboard
 * (`--serve`, at `--speed` × the recorded pace) and/or a per-run summary table.
 */
export async function runReplayCommand(
  files: string[],
  options: ReplayCommandOptions,
  io: CliIo,
): Promise<void> {
  const rowsByRun = new Map<string, { run: RecordedRun; rows: MetricsRow[] }>();
  // Printed when the replay is done, before any --keep-serving.
  const printSummary = async (): Promise<void> => {
    if (!options.summary && options.serve) return;
    const summaries: RunSummary[] = [];
    for (const { run, rows } of rowsByRun.values()) summaries.push(await summaryOf(run, rows));
    io.out(`${formatSummaryTable(summaries)}\n`);
  };
  await withLive(
    options,
    io,
    async (hub) => {
      const feeds = new Map<string, { rows: Subject<MetricsRow>; subscription: Subscription }>();
      try {
        await new Promise<void>((resolve, reject) => {
          replayArrow(files, {
            ...(options.speed !== undefined ? { speed: options.speed } : {}),
            onWarning: (message) => io.err(`grng: warning: ${message}\n`),
          }).subscribe({
            next: ({ run, row }) => {
              let entry = rowsByRun.get(run.id);
              if (!entry) rowsByRun.set(run.id, (entry = { run, rows: [] }));
              entry.rows.push(row);
              if (hub) feedOf(feeds, hub, run).next(row);
            },
            error: reject,
            complete: resolve,
          });
        });
      } finally {
        for (const feed of feeds.values()) {
          feed.rows.complete();
          feed.subscription.unsubscribe();
        }
      }
    },
    { done: printSummary, finished: 'replay done' },
  );
}

function feedOf(
  feeds: Map<string, { rows: Subject<MetricsRow>; subscription: Subscription }>,
  hub: RunHub,
  run: RecordedRun,
): Subject<MetricsRow> {
  let feed = feeds.get(run.id);
  if (!feed) {
    const schema = metricsSchema(run);
    const rows = new Subject<MetricsRow>();
    const subscription = rows
      .pipe(toRecordBatches(schema), broadcast(hub, run, schema))
      .subscribe();
    feeds.set(run.id, (feed = { rows, subscription }));
  }
  return feed.rows;
}

/** A run summary recomputed from its recorded rows. */
export function summaryOf(run: RecordedRun, rows: MetricsRow[]): Promise<RunSummary> {
  return lastValueFrom(
    from(rows).pipe(
      summarize({
        optimizer: run.label,
        backend: run.backend,
        dataset: run.dataset,
        batchesPerEpoch: run.batchesPerEpoch,
      }),
    ),
  );
}

/**
 * `grng serve DIR`: every recording in a folder on the dashboard, followed: finished recordings
 * are served whole, ones still being written are served live as their rows are appended, new
 * files are picked up as they appear, and a sweep folder's trial recordings are served too (see
 * {@link followFolder}). Unreadable files are reported and skipped. Only regular files whose real
 * path lies inside DIR are served: a symbolic link out of DIR would publish whatever it points
 * to, and a FIFO would block the reader forever. A second file with the id of a run already
 * served is skipped too, so one id always names one file.
 */
export async function runServeCommand(
  dir: string,
  options: ServeCommandOptions,
  io: CliIo,
): Promise<void> {
  try {
    if (!statSync(dir).isDirectory()) throw new Error('not a folder');
    readdirSync(dir);
  } catch (error) {
    throw new GrngError(
      'invalid-option',
      `cannot read folder ${dir}: ${(error as Error).message}`,
      { option: 'dir', value: dir },
    );
  }
  const stop = new AbortController();
  let following: FolderFollowing | undefined;
  try {
    await withLive(
      { ...options, serve: true },
      io,
      async (hub) => {
        following = followFolder(dir, hub!, {
          signal: stop.signal,
          warn: (message) => io.err(`grng: warning: ${message}\n`),
          note: (message) => io.err(`grng: ${message}\n`),
        });
        await following.ready;
        io.err(`grng: ${hub!.runs().length} recording(s) from ${dir}\n`);
      },
      {
        alwaysServe: true,
        finished: 'recordings loaded, following the folder for new rows and files',
        // A sweep folder also feeds the dashboard's sweep view, read afresh at each request.
        ...(existsSync(join(dir, 'sweep.json')) ? { sweep: () => sweepSnapshot(dir) } : {}),
      },
    );
  } finally {
    stop.abort();
    await following?.done;
  }
}
