import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GrngError } from '../errors.js';
import { recordBatchToRows, type RecordedRun } from '../metrics/schema.js';
import { readRecording } from '../streams/readRecording.js';
import type { FlagValue, SweepConfig } from '../sweep/config.js';
import { trialDir } from '../sweep/runTrial.js';
import { readSessions } from '../sweep/sessionClock.js';
import type { SweepRecord } from '../sweep/table.js';
import type { Trial } from '../sweep/types.js';
import type { MetricsRow } from '../types.js';

/** One trial of a finished sweep, with its whole recording. */
export interface TrialData {
  readonly id: string;
  readonly optimizer: string;
  readonly seed: number;
  /** The varied settings without optimizer and seed: what a configuration is. */
  readonly setting: Readonly<Record<string, FlagValue>>;
  /** `done` (its whole run), `stopped at N` (not promoted past rung N) or `failed`. */
  readonly status: string;
  readonly run: RecordedRun | undefined;
  readonly rows: readonly MetricsRow[];
}

/** A sweep as the report reads it: its config, trials with recordings, and how long it took. */
export interface SweepData {
  readonly dir: string;
  /** The committed config the sweep ran (its trials checked against the folder's). */
  readonly configPath: string;
  readonly config: SweepConfig;
  readonly trials: readonly TrialData[];
  /**
   * Wall-clock seconds of every `grng sweep` session that ran it (sweep-time.json); for a sweep
   * run before that file was written, the span from sweep.json to the last result file.
   */
  readonly wallSeconds: number;
  readonly wallFrom: 'sessions' | 'sessions, some from file times' | 'file times';
  /** Local workers of each session (0: through a queue). */
  readonly workers: readonly number[];
  /** The machines of its sessions: `host (N cores)`. */
  readonly machines: readonly string[];
}

/**
 * Reads a finished sweep's folder: sweep.json (config and trials), results.json (each trial's
 * status in the table) and every trial's recording. A folder that is not a finished sweep is one
 * line naming it and what to do.
 *
 * @example
 * const sweep = loadSweep('runs/sweeps/report-mlp-mnist', 'sweeps/report/mlp-mnist.json', expandTrials(config));
 */
export function loadSweep(dir: string, configPath: string, expected: readonly Trial[]): SweepData {
  const fail = (problem: string): never => {
    throw new GrngError('invalid-option', `report: ${dir}: ${problem}`, {
      option: 'sweeps',
      path: dir,
    });
  };
  const read = <T>(name: string, missing: string): T => {
    const path = join(dir, name);
    if (!existsSync(path)) fail(missing);
    try {
      return JSON.parse(readFileSync(path, 'utf8')) as T;
    } catch (error) {
      return fail(`${name} is not JSON (${(error as Error).message})`);
    }
  };
  const { config, trials } = read<{ config: SweepConfig; trials: Trial[] }>(
    'sweep.json',
    'not a sweep folder (no sweep.json)',
  );
  const ids = (list: readonly Trial[]): string => list.map((t) => t.id).join(',');
  if (ids(trials) !== ids(expected))
    fail(
      `its trials are not the ones ${configPath} makes now (the config changed since it ran): run the sweep again into a new folder`,
    );
  const records = read<SweepRecord[]>(
    'results.json',
    `the sweep has not finished (no results.json): run grng sweep on its config with --out ${dir} --resume`,
  );
  const statusOf = new Map(records.map((r) => [r.trial, String(r.status)]));
  const data = trials.map((trial): TrialData => {
    const { optimizer, seed, ...setting } = trial.settings;
    const recording = join(trialDir(dir, trial.id), 'run.arrows');
    let run: RecordedRun | undefined;
    let rows: MetricsRow[] = [];
    if (existsSync(recording)) {
      const read = readRecording(recording);
      run = read.run;
      rows = read.batches.flatMap((batch) => recordBatchToRows(batch));
    }
    return {
      id: trial.id,
      optimizer: String(optimizer),
      seed: Number(seed),
      setting,
      status: statusOf.get(trial.id) ?? 'missing',
      run,
      rows,
    };
  });
  const sessions = readSessions(dir);
  const lastResult = Math.max(
    ...trials.flatMap((trial) =>
      readdirSync(trialDir(dir, trial.id))
        .filter((name) => /^result-\d+\.json$/.test(name))
        .map((name) => statSync(join(trialDir(dir, trial.id), name)).mtimeMs),
    ),
  );
  return {
    dir,
    configPath,
    config,
    trials: data,
    wallSeconds: sessions.length
      ? sessions.reduce((sum, s) => sum + s.seconds, 0)
      : (lastResult - statSync(join(dir, 'sweep.json')).mtimeMs) / 1000,
    wallFrom: !sessions.length
      ? 'file times'
      : sessions.some((session) => session.measured)
        ? 'sessions, some from file times'
        : 'sessions',
    workers: [...new Set(sessions.map((s) => (s.workers === 'queue' ? 0 : s.workers)))],
    machines: [...new Set(sessions.map((s) => `${s.host} (${s.cpus} cores)`))],
  };
}
