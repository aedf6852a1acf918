import { closeSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GrngError } from '../errors.js';
import { parseRecording } from '../streams/readRecording.js';
import { trialDir } from './runTrial.js';
import { STALE_LOCK_MS } from './trialLock.js';
import type { TrialResult } from './types.js';
import type { SweepSnapshot, SweepSnapshotTrial } from '../metrics/sweepSnapshot.js';

export type { SweepSnapshot, SweepSnapshotTrial };

/** What the snapshot needs of sweep.json (written by `grng sweep`). */
interface SweepFile {
  readonly config: {
    readonly name: string;
    readonly metric: { readonly name: string; readonly higherIsBetter: boolean };
  };
  readonly trials: ReadonlyArray<{
    readonly id: string;
    readonly settings: Readonly<Record<string, string | number | boolean>>;
  }>;
}

/**
 * The state of a sweep folder, read fresh on each call (the runners write it from other
 * processes, possibly other machines): sweep.json for the trials, each trial's newest result
 * file and its lock, and of its recording only the schema message (for the run id). Undefined
 * when the folder holds no sweep.json.
 *
 * A trial's status, first rule that applies:
 * - `running`: it has a lock file touched within STALE_LOCK_MS (a runner holds it now);
 * - the sweep is finished (results.json written): the status results.json gives it (`done`,
 *   `failed`, or `stopped` for "stopped at N", not promoted past rung N);
 * - `failed`: its newest result failed;
 * - `done`: its newest result is done. While the sweep runs this is "done at `rung`": a trial
 *   done at a rung below the whole run may still be promoted to the next one, and becomes
 *   `stopped` only when results.json says so (promotions are decided per rung, by the sweep);
 * - `pending`: no result yet (a stale lock, left by a runner that died, counts as none).
 * The numbers are those of its newest result (null without one); a running trial shows those of
 * its previous rung, and its recording (by `runId`) the rows as they come.
 *
 * @example
 * const snapshot = sweepSnapshot('runs/sweeps/mnist-lr');
 * for (const t of snapshot?.trials ?? []) console.log(t.trial, t.status, t.metric);
 */
export function sweepSnapshot(dir: string): SweepSnapshot | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, 'sweep.json'), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new GrngError(
      'invalid-data',
      `cannot read ${join(dir, 'sweep.json')}: ${(error as Error).message}`,
      { path: join(dir, 'sweep.json') },
      { cause: error },
    );
  }
  const sweep = parseSweepFile(text, join(dir, 'sweep.json'));
  const finalStatus = readFinalStatuses(dir);
  const settings = [...new Set(sweep.trials.flatMap((t) => Object.keys(t.settings)))];
  // The seed last, as the sweep table has it: configuration, then repetition.
  settings.sort((a, b) => Number(a === 'seed') - Number(b === 'seed'));
  const trials = sweep.trials.map((trial): SweepSnapshotTrial => {
    const folder = trialDir(dir, trial.id);
    const newest = newestResult(folder);
    const result = newest?.result;
    let status: SweepSnapshotTrial['status'];
    if (lockIsFresh(join(folder, 'lock'))) status = 'running';
    else if (finalStatus?.has(trial.id)) status = finalStatus.get(trial.id)!;
    else if (result) status = result.status === 'failed' ? 'failed' : 'done';
    else status = 'pending';
    return {
      trial: trial.id,
      runId: runIdOf(join(folder, 'run.arrows')),
      status,
      rung: newest?.budget ?? null,
      settings: trial.settings,
      steps: result?.steps ?? null,
      metric: result?.metric ?? null,
      best: result?.best ?? null,
      seconds: result?.seconds ?? null,
      stepsPerSecond: result?.stepsPerSecond ?? null,
      ...(result?.error !== undefined ? { error: result.error } : {}),
    };
  });
  return {
    name: sweep.config.name,
    metric: sweep.config.metric.name,
    higherIsBetter: sweep.config.metric.higherIsBetter,
    settings,
    trials,
  };
}

function parseSweepFile(text: string, path: string): SweepFile {
  const fail = (what: string): never => {
    throw new GrngError('invalid-data', `${path}: ${what}`, { path });
  };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    return fail(`not JSON (${(error as Error).message})`);
  }
  const file = value as Partial<SweepFile> | null;
  if (
    typeof file !== 'object' ||
    file === null ||
    typeof file.config?.name !== 'string' ||
    typeof file.config.metric?.name !== 'string' ||
    !Array.isArray(file.trials) ||
    !file.trials.every(
      (t) => typeof t?.id === 'string' && typeof t.settings === 'object' && t.settings !== null,
    )
  )
    return fail('not a sweep file ({ config: { name, metric }, trials: [{ id, settings }] })');
  return file as SweepFile;
}

/** The statuses results.json gives (the sweep is finished), or undefined while it runs. */
function readFinalStatuses(dir: string): Map<string, 'done' | 'stopped' | 'failed'> | undefined {
  let records: unknown;
  try {
    records = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
  } catch {
    return undefined; // not written yet (it is written atomically, so never half)
  }
  if (!Array.isArray(records)) return undefined;
  const statuses = new Map<string, 'done' | 'stopped' | 'failed'>();
  for (const record of records as Array<Record<string, unknown>>) {
    const { trial, status } = record ?? {};
    if (typeof trial !== 'string' || typeof status !== 'string') continue;
    statuses.set(
      trial,
      status.startsWith('stopped') ? 'stopped' : status === 'failed' ? 'failed' : 'done',
    );
  }
  return statuses;
}

/** The result file of the largest budget in a trial's folder (the file names say the budget). */
function newestResult(folder: string): { budget: number; result: TrialResult } | undefined {
  let names: string[];
  try {
    names = readdirSync(folder);
  } catch {
    return undefined;
  }
  const budgets = names
    .map((name) => /^result-(\d+)\.json$/.exec(name)?.[1])
    .filter((b): b is string => b !== undefined)
    .map(Number)
    .sort((a, b) => b - a);
  for (const budget of budgets) {
    try {
      const result = JSON.parse(
        readFileSync(join(folder, `result-${budget}.json`), 'utf8'),
      ) as TrialResult;
      return { budget, result };
    } catch {
      // Unreadable (removed by hand): the next budget down speaks for the trial.
    }
  }
  return undefined;
}

function lockIsFresh(path: string): boolean {
  try {
    return Date.now() - statSync(path).mtimeMs < STALE_LOCK_MS;
  } catch {
    return false;
  }
}

/** The run id in a recording's schema message, reading that message only; null if none yet. */
function runIdOf(path: string): string | null {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch {
    return null;
  }
  try {
    const prefix = new Uint8Array(8);
    if (readSync(fd, prefix, 0, 8, 0) < 8) return null;
    const length = new DataView(prefix.buffer).getInt32(4, true);
    if (length <= 0 || length > 16 << 20) return null;
    const message = new Uint8Array(8 + length);
    if (readSync(fd, message, 0, message.length, 0) < message.length) return null;
    return parseRecording(message, path).run.id;
  } catch {
    return null; // being written, or damaged: the run id shows up on a later call
  } finally {
    closeSync(fd);
  }
}
