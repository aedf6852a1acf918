import { existsSync, lstatSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, sep } from 'node:path';
import type { RecordBatch, Schema } from 'apache-arrow';
import { isGrngError } from '../errors.js';
import type { RecordedRun } from '../metrics/schema.js';
import type { RunHub } from '../sinks/runHub.js';
import { RecordingFollower } from '../streams/followRecording.js';
import { FULL_RUN } from '../sweep/halving.js';
import { sweepSnapshot, type SweepSnapshotTrial } from '../sweep/snapshot.js';

export interface FollowFolderOptions {
  /** Stops following; `done` resolves soon after. */
  readonly signal: AbortSignal;
  /** A file skipped or a recording that turned out damaged: one line, no prefix, no newline. */
  readonly warn: (message: string) => void;
  /** What is being followed (a live recording, a new file): one line each; default silent. */
  readonly note?: (message: string) => void;
  /** How often the folder and the recordings are looked at; default 250 ms. */
  readonly pollMs?: number;
}

/** A folder being followed into a hub. */
export interface FolderFollowing {
  /** Resolves once the recordings already there are in the hub (finished ones as finished). */
  readonly ready: Promise<void>;
  /** Resolves when following has stopped (the signal aborted). */
  readonly done: Promise<void>;
}

/** Ticks between looks at a recording that has ended: it changes only if rewritten. */
const ENDED_EVERY = 8;
/** Ticks between sweep snapshots (to end trial runs that will not run again). */
const SNAPSHOT_EVERY = 4;

/**
 * Serves a folder of recordings into a hub, following it: every `*.arrows` file in DIR (name
 * order), and when DIR holds a sweep (sweep.json) every trial's `trials/<id>/run.arrows` too.
 * A finished recording joins the hub finished; one still being written joins live and its rows
 * follow as they are appended (`run`, batches, `end` for dashboard clients); files that appear
 * later are picked up on the next look, and a file rewritten with another run (`--overwrite`)
 * becomes that run. Only regular files whose real path lies inside DIR are served (a symbolic
 * link out of DIR, a FIFO, a folder named `*.arrows` are skipped with a warning), and a file
 * holding a run id already served is skipped (the first file in name order wins).
 *
 * A sweep trial's recording ends at each rung (the end-of-stream marker) and is reopened when the
 * trial is promoted, so its run stays live in the hub until the trial will not run again: its
 * whole run is done, its epochs ended before its budget, or the sweep is finished (results.json).
 * A plain recording's run ends at its marker; a later resume of it is not shown (the hub's run is
 * over), a new run in its place is.
 *
 * Everything happens in one timer, synchronously per look: files are polled in turn, and only
 * what was appended since the last look is read.
 *
 * @example
 * const stop = new AbortController();
 * const following = followFolder('runs/sweeps/mnist-lr', hub, { signal: stop.signal, warn: (m) => console.error(m) });
 * await following.ready;
 * // … later: stop.abort(); await following.done;
 */
export function followFolder(
  dir: string,
  hub: RunHub,
  { signal, warn, note = () => undefined, pollMs = 250 }: FollowFolderOptions,
): FolderFollowing {
  let realDir: string | undefined;
  try {
    realDir = realpathSync(dir);
  } catch (error) {
    warn(`cannot follow ${dir}: ${(error as Error).message}`);
  }
  const seen = new Set<string>();
  const sources: Source[] = [];
  let tick = 0;
  let loaded = false;

  const admit = (path: string, trial: string | undefined): void => {
    seen.add(path);
    const refusal = unservable(path, realDir!);
    if (refusal) warn(`skipping ${path}: ${refusal}`);
    else sources.push(newSource(path, trial));
  };

  /** One look at one recording: its new events into the hub. */
  const poll = (source: Source): void => {
    let events;
    try {
      events = source.follower.poll();
    } catch (error) {
      const message = isGrngError(error) ? error.message : (error as Error).message;
      warn(
        source.runId === undefined
          ? `skipping ${message}`
          : `stopped following ${source.path}: ${message}`,
      );
      source.follower.close();
      if (source.runId !== undefined) hub.endRun(source.runId);
      return;
    }
    let joining: { run: RecordedRun; schema: Schema; batches: RecordBatch[] } | undefined;
    for (const event of events) {
      if (event.type === 'run') {
        const earlier = hub.run(event.run.id);
        if (earlier) {
          warn(
            `skipping ${source.path}: run id ${JSON.stringify(event.run.id)} is already served from ${earlier.recordingPath ?? 'another file'}`,
          );
          source.follower.close();
          return;
        }
        joining = { run: event.run, schema: event.schema, batches: [] };
      } else if (event.type === 'batch') {
        source.ended = false;
        if (joining) joining.batches.push(event.batch);
        else if (source.runId !== undefined) hub.pushBatch(source.runId, event.batch);
      } else if (event.type === 'end') {
        source.ended = true;
      } else {
        // Another run in the same file: the old one is over, the new one starts from its schema.
        if (source.runId !== undefined) hub.endRun(source.runId);
        note(`${source.path} now holds run ${event.run.id}`);
        const index = sources.indexOf(source);
        sources[index] = newSource(source.path, source.trial);
        return poll(sources[index]!);
      }
    }
    if (joining) {
      const finished = source.ended && source.trial === undefined;
      hub.addRun(joining.run, joining.schema, {
        batches: joining.batches,
        finished,
        recordingPath: source.path,
      });
      source.runId = joining.run.id;
      if (loaded) note(`serving ${source.path} (run ${joining.run.id})`);
      else if (!source.ended)
        note(
          `following ${source.path} live (${source.follower.rows} rows so far; no end-of-stream marker yet)`,
        );
    } else if (source.ended && source.trial === undefined && source.runId !== undefined) {
      hub.endRun(source.runId);
    }
  };

  /** Ends the runs of sweep trials that will not run again. */
  const endTrials = (sweepFinished: boolean): void => {
    const open = sources.filter(
      (s) => s.trial !== undefined && s.runId !== undefined && hub.run(s.runId)?.finished === false,
    );
    if (open.length === 0) return;
    if (sweepFinished) {
      // results.json is written after every trial's last run: nothing will be appended.
      for (const source of open) hub.endRun(source.runId!);
      return;
    }
    const waiting = open.filter((s) => s.ended);
    if (waiting.length === 0 || tick % SNAPSHOT_EVERY !== 0) return;
    let trials: Map<string, SweepSnapshotTrial>;
    try {
      trials = new Map((sweepSnapshot(dir)?.trials ?? []).map((t) => [t.trial, t]));
    } catch {
      return; // sweep.json being replaced: the next look decides
    }
    for (const source of waiting) {
      const trial = trials.get(source.trial!);
      if (trial && trialIsOver(trial)) hub.endRun(source.runId!);
    }
  };

  const look = (): void => {
    if (realDir === undefined) return;
    tick += 1;
    const sweep = existsSync(join(dir, 'sweep.json'));
    // Before the recordings are read: every byte of a finished sweep is written by then.
    const sweepFinished = sweep && existsSync(join(dir, 'results.json'));
    for (const [path, trial] of candidates(dir, sweep)) if (!seen.has(path)) admit(path, trial);
    for (const source of [...sources]) {
      if (source.follower.done) continue;
      if (source.ended && tick % ENDED_EVERY !== 0 && !sweepFinished) continue;
      const before = source.runId;
      poll(source);
      if (!loaded && before === undefined && source.runId === undefined && !source.follower.done)
        note(`${source.path} has no complete schema yet; it is served once it has one`);
    }
    if (sweep) endTrials(sweepFinished);
  };

  const safeLook = (): void => {
    try {
      look();
    } catch (error) {
      // A bug here must not take the dashboard down: say it and keep looking.
      warn(`following ${dir}: ${(error as Error).message}`);
    }
  };
  safeLook();
  loaded = true;
  const done = new Promise<void>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    const stop = (): void => {
      clearTimeout(timer);
      resolve();
    };
    if (signal.aborted) return stop();
    signal.addEventListener('abort', stop, { once: true });
    const next = (): void => {
      timer = setTimeout(() => {
        if (signal.aborted) return;
        safeLook();
        next();
      }, pollMs);
      // The caller's server (or sweep) keeps the process alive, not this timer.
      timer.unref();
    };
    next();
  });
  return { ready: Promise.resolve(), done };
}

/** One followed recording. */
interface Source {
  readonly path: string;
  /** The sweep trial it belongs to (trials/<id>/run.arrows), if any. */
  readonly trial: string | undefined;
  readonly follower: RecordingFollower;
  /** The hub run it feeds, once its schema has been read (and its id was not taken). */
  runId?: string;
  /** Its end-of-stream marker was read and no row came after it. */
  ended: boolean;
}

function newSource(path: string, trial: string | undefined): Source {
  // Past the marker too: a resumed run reopens the file, another run may replace it.
  return {
    path,
    trial,
    follower: new RecordingFollower(path, { followResumes: true }),
    ended: false,
  };
}

/** Whether a sweep trial will not run again (its run in the hub can end). */
function trialIsOver(trial: SweepSnapshotTrial): boolean {
  if (trial.status === 'stopped') return true;
  if (trial.rung === FULL_RUN) return trial.status === 'done' || trial.status === 'failed';
  // Its epochs ended before the budget: the sweep does not run it further (runHalving).
  return (
    trial.status === 'done' &&
    trial.steps !== null &&
    trial.rung !== null &&
    trial.steps < trial.rung
  );
}

/** The recordings of DIR now, in the order they are served: DIR's own, then a sweep's trials. */
function candidates(dir: string, sweep: boolean): Array<[string, string | undefined]> {
  const list = (folder: string): string[] => {
    try {
      return readdirSync(folder).sort();
    } catch {
      return [];
    }
  };
  const found: Array<[string, string | undefined]> = list(dir)
    .filter((name) => name.endsWith('.arrows'))
    .map((name) => [join(dir, name), undefined]);
  if (sweep)
    for (const id of list(join(dir, 'trials'))) {
      const path = join(dir, 'trials', id, 'run.arrows');
      if (exists(path)) found.push([path, id]);
    }
  return found;
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Why `path` (inside the folder whose real path is `realDir`) must not be served, if it must not:
 * a symbolic link (or a folder on the way) leading out of it would publish whatever it points
 * to, and a FIFO would block the reader forever.
 */
export function unservable(path: string, realDir: string): string | undefined {
  try {
    const link = lstatSync(path).isSymbolicLink();
    const target = realpathSync(path);
    const inside = relative(realDir, target);
    if (inside === '' || inside === '..' || inside.startsWith(`..${sep}`) || isAbsolute(inside))
      return link
        ? `a symbolic link to ${target}, outside the folder`
        : `its real path ${target} is outside the folder`;
    if (!statSync(path).isFile()) return 'not a regular file';
  } catch (error) {
    return (error as Error).message;
  }
  return undefined;
}
