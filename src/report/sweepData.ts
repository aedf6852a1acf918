import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { GrngError } from '../errors.js';
import { recordBatchToRows, type RecordedRun } from '../metrics/schema.js';
import { readRecording } from '../streams/readRecording.js';
import type { FlagValue, SweepConfig } from '../sweep/config.js';
import { trialDir } from '../sweep/runTrial.js';
import { readSessions } from '../sweep/sessionClock.js';
import type { SweepRecord } from '../sweep/table.js';
import type { Trial } from '../sweep/types.js';
import type { MetricsRow } from '../types.js';
import { median } from './statistics.js';

/** What the report states of a trial's run (from its recording's metadata). */
export type RunFacts = Pick<
  RecordedRun,
  'model' | 'dataset' | 'backend' | 'batchSize' | 'batchesPerEpoch' | 'labelsPerExample'
>;

/** One evaluation: where it was and both test metrics (the sweep's view picks one). */
export interface EvalRow {
  readonly step: number;
  readonly epoch: number;
  /** Seconds of training before it (the run's clock less its evaluations). */
  readonly seconds: number;
  readonly testLoss: number | null;
  readonly testAccuracy: number | null;
}

/**
 * A trial's recording reduced to what the report reads: its evaluations, its cost and the
 * per-step means. Non-finite numbers are null, so that it survives JSON (the digest) unchanged.
 */
export interface TrialSummary {
  readonly evals: readonly EvalRow[];
  readonly steps: number;
  /** The run's clock at its last step, evaluations included (the report's cost table). */
  readonly wallSeconds: number;
  readonly trainingSeconds: number;
  /** Median training-step time. */
  readonly msPerStep: number | null;
  readonly meanGradNorm: number | null;
  readonly meanCorrelation: number | null;
  /** Mean damping the optimizer reported (RING's γ = λ + ρ·ḡ²; K-FAC's λ). */
  readonly meanDamping: number | null;
  /** Mean training loss over the first tenth of the sweep's full run. */
  readonly earlyLoss: number | null;
  /** Per-step rows (training loss, ‖g‖) in 40 bins over the run, for plots. */
  readonly binned: readonly { epoch: number; loss: number | null; gradNorm: number | null }[];
}

/** One trial of a finished sweep, with its recording reduced to a summary. */
export interface TrialData {
  readonly id: string;
  readonly optimizer: string;
  readonly seed: number;
  /** The varied settings without optimizer and seed: what a configuration is. */
  readonly setting: Readonly<Record<string, FlagValue>>;
  /** `done` (its whole run), `stopped at N` (not promoted past rung N) or `failed`. */
  readonly status: string;
  /** Absent for a trial with no recording. */
  readonly run?: RunFacts;
  readonly summary: TrialSummary;
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
  /** The machines of its sessions: `host (N cores)`, with the processor where recorded. */
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
  const recorded = trials.map((trial) => {
    const recording = join(trialDir(dir, trial.id), 'run.arrows');
    if (!existsSync(recording)) return { trial, run: undefined, rows: [] as MetricsRow[] };
    const read = readRecording(recording);
    return { trial, run: read.run, rows: read.batches.flatMap((b) => recordBatchToRows(b)) };
  });
  // The whole run's length, for each trial's "early" tenth: the longest finished trial.
  const fullSteps = Math.max(
    0,
    ...recorded
      .filter(({ trial }) => statusOf.get(trial.id) === 'done')
      .map(({ rows }) => (rows.at(-1)?.step ?? -1) + 1),
  );
  const data = recorded.map(({ trial, run, rows }): TrialData => {
    const { optimizer, seed, ...setting } = trial.settings;
    return {
      id: trial.id,
      optimizer: String(optimizer),
      seed: Number(seed),
      setting,
      status: statusOf.get(trial.id) ?? 'missing',
      ...(run && { run: runFacts(run) }),
      summary: summarize(rows, run?.batchesPerEpoch ?? 1, fullSteps),
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
    machines: [
      ...new Set(sessions.map((s) => `${s.host} (${s.cpus} cores${s.cpu ? `, ${s.cpu}` : ''})`)),
    ],
  };
}

function runFacts(run: RecordedRun): RunFacts {
  const { model, dataset, backend, batchSize, batchesPerEpoch, labelsPerExample } = run;
  return {
    model,
    dataset,
    backend,
    batchSize,
    batchesPerEpoch,
    ...(labelsPerExample !== undefined && { labelsPerExample }),
  };
}

/** Reduces a trial's per-step rows to its summary (see TrialSummary). */
export function summarize(
  rows: readonly MetricsRow[],
  perEpoch: number,
  fullSteps: number,
): TrialSummary {
  const finiteOrNull = (value: number | null): number | null =>
    value !== null && Number.isFinite(value) ? value : null;
  const finite = (values: (number | null)[]): number[] =>
    values.filter((v): v is number => v !== null && Number.isFinite(v));
  const mean = (values: number[]): number | null =>
    values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
  const evals: EvalRow[] = [];
  let evaluationMs = 0;
  for (const row of rows) {
    evaluationMs += row.evaluationMs;
    const testLoss = finiteOrNull(row.testLoss);
    const testAccuracy = finiteOrNull(row.testAccuracy);
    if (testLoss !== null || testAccuracy !== null)
      evals.push({
        step: row.step,
        epoch: (row.step + 1) / perEpoch,
        seconds: Math.max(0, row.wallMs - evaluationMs) / 1000,
        testLoss,
        testAccuracy,
      });
  }
  const early = rows.filter((r) => r.step < Math.max(1, Math.round(fullSteps / 10)));
  const bins = 40;
  // Six significant digits: a plot needs no more, and the digest is half the size.
  const plotted = (value: number | null): number | null =>
    value === null ? null : Number(value.toPrecision(6));
  const binned: { epoch: number; loss: number | null; gradNorm: number | null }[] = [];
  const width = Math.max(1, Math.ceil(rows.length / bins));
  for (let i = 0; i < rows.length; i += width) {
    const slice = rows.slice(i, i + width);
    binned.push({
      epoch: (slice.at(-1)!.step + 1) / perEpoch,
      loss: plotted(mean(finite(slice.map((r) => r.loss)))),
      gradNorm: plotted(mean(finite(slice.map((r) => r.gradNorm)))),
    });
  }
  const last = rows.at(-1);
  return {
    evals,
    steps: last ? last.step + 1 : 0,
    wallSeconds: last ? Math.max(0, last.wallMs / 1000) : 0,
    trainingSeconds: last ? Math.max(0, last.wallMs - evaluationMs) / 1000 : 0,
    msPerStep: finiteOrNull(median(rows.map((r) => r.stepMs))),
    meanGradNorm: mean(finite(rows.map((r) => r.gradNorm))),
    meanCorrelation: mean(finite(rows.map((r) => r.updateGradCorrelation))),
    meanDamping: mean(finite(rows.map((r) => r.diagnostics.damping ?? null))),
    earlyLoss: mean(finite(early.map((r) => r.loss))),
    binned,
  };
}

const DIGEST_FORMAT = 'grng-sweep-digest';
const DIGEST_VERSION = 1;

/**
 * Where a sweep's digest lives: `digests/NAME.json` beside its config, committed with it.
 *
 * @example
 * digestPath('sweeps/report/mlp-mnist.json', 'report-mlp-mnist'); // sweeps/report/digests/report-mlp-mnist.json
 */
export function digestPath(configPath: string, name: string): string {
  return join(dirname(configPath), 'digests', `${name}.json`);
}

/**
 * A sweep's digest: everything the report reads of it (config, trials' summaries, sessions), as
 * JSON with one trial per line. Why: a sweep's folder (recordings and checkpoints: 17 MB for the
 * MLP comparison) is not committed and did not outlive the machine that ran it, while the report
 * must regenerate byte for byte from what is committed; JSON numbers round-trip exactly.
 */
export function sweepDigest(sweep: SweepData): string {
  const { trials, configPath: _, ...rest } = sweep;
  const head = JSON.stringify({ format: DIGEST_FORMAT, version: DIGEST_VERSION, ...rest });
  const lines = trials.map((trial) => JSON.stringify(trial));
  return `${head.slice(0, -1)},"trials":[\n${lines.join(',\n')}\n]}\n`;
}

/**
 * Reads a digest made by sweepDigest for `config` (at `configPath`): a file that is not one, or
 * made from another config, is one line naming it and what to do.
 */
export function loadDigest(path: string, configPath: string, config: SweepConfig): SweepData {
  const fail = (problem: string): never => {
    throw new GrngError('invalid-option', `report: ${path}: ${problem}`, {
      option: 'config',
      path,
    });
  };
  let digest: Partial<SweepData> & { format?: unknown; version?: unknown };
  try {
    digest = JSON.parse(readFileSync(path, 'utf8')) as typeof digest;
  } catch (error) {
    return fail(`not a sweep digest (${(error as Error).message})`);
  }
  if (digest.format !== DIGEST_FORMAT || digest.version !== DIGEST_VERSION)
    fail(`not a version-${DIGEST_VERSION} ${DIGEST_FORMAT} file`);
  if (JSON.stringify(digest.config) !== JSON.stringify(config))
    fail(
      `it was made from another version of ${configPath}: run grng sweep ${configPath}, then grng report, which rewrites it`,
    );
  const { format: _f, version: _v, ...sweep } = digest;
  return { ...(sweep as Omit<SweepData, 'configPath'>), configPath };
}
