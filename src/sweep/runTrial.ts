import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { recordBatchToRows } from '../metrics/schema.js';
import { hasCheckpoint } from '../sinks/checkpointFile.js';
import { writeTextAtomically } from '../sinks/writeFileAtomically.js';
import { readRecording } from '../streams/readRecording.js';
import type { SweepMetricName } from './config.js';
import { trialArgv } from './config.js';
import { holdLock } from './trialLock.js';
import type { TrialRequest, TrialResult } from './types.js';

/** The CLI a trial runs: this package's own bin (from src/ under tsx, or dist/). */
const GRNG_BIN = fileURLToPath(new URL('../../bin/grng.js', import.meta.url));

/** Where a trial keeps its files. */
export function trialDir(sweepDir: string, id: string): string {
  return join(sweepDir, 'trials', id);
}

/** The result file of a trial at a step budget: its presence means "done, do not run again". */
export function resultPath(sweepDir: string, id: string, budget: number): string {
  return join(trialDir(sweepDir, id), `result-${budget}.json`);
}

/** The result of a trial at a budget, if a runner has finished it. */
export function readResult(sweepDir: string, id: string, budget: number): TrialResult | undefined {
  const path = resultPath(sweepDir, id, budget);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as TrialResult) : undefined;
}

export interface RunTrialOptions {
  /** The sweep's metric (what `best` is the best of). */
  readonly metric: SweepMetricName;
  readonly higherIsBetter: boolean;
  /** Steps between the trial's checkpoints. */
  readonly checkpointEvery: number;
  /** Environment of the trial's process (BLAS and wasm threads). */
  readonly env?: NodeJS.ProcessEnv;
  /** Extra `grng train` flags (e.g. a backend) that are not part of the trial's identity. */
  readonly extraArgs?: readonly string[];
  /** Told the trial's child process, so a worker can kill it on shutdown. */
  readonly onChild?: (pid: number) => void;
  /** Told when that process has exited and its output is read (before the trial's lock is released). */
  readonly onChildExit?: (pid: number) => void;
}

/**
 * Runs a trial to its step budget in a child `grng train` process, once: a result file already
 * there is returned as it is (a trial delivered twice never runs twice); a trial another live
 * runner holds is waited for; a trial whose runner died (its lock stale) is taken over and resumed
 * from its last checkpoint, as is a trial promoted to a larger budget. The recording is appended
 * to across budgets and resumes, so the trial's curve is whole.
 *
 * @example
 * const result = await runTrial({ sweepDir, trial, steps: 300 }, { metric: 'testAccuracy', higherIsBetter: true, checkpointEvery: 50 });
 */
export async function runTrial(
  request: TrialRequest,
  options: RunTrialOptions,
): Promise<TrialResult> {
  const { sweepDir, trial, steps } = request;
  const dir = trialDir(sweepDir, trial.id);
  mkdirSync(dir, { recursive: true });
  for (;;) {
    const done = readResult(sweepDir, trial.id, steps);
    if (done) return done;
    const release = holdLock(join(dir, 'lock'));
    if (release) {
      try {
        // A runner that finished while this one waited for the lock left its result.
        return readResult(sweepDir, trial.id, steps) ?? (await runLocked(request, options, dir));
      } finally {
        release();
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function runLocked(
  { sweepDir, trial, steps }: TrialRequest,
  options: RunTrialOptions,
  dir: string,
): Promise<TrialResult> {
  const checkpoint = join(dir, 'checkpoint');
  const recording = join(dir, 'run.arrows');
  const ranBy = `${hostname()}:${process.pid}`;
  // A run that already reached the budget (its result file lost, or written by a runner that
  // died just after the run) is read back, not run: resuming past its end is an error.
  if (reachedBudget(recording, Math.min(steps, numberOr(trial.options.steps, Infinity)), trial)) {
    const result = resultFromRecording(trial.id, steps, recording, options, ranBy);
    writeTextAtomically(
      resultPath(sweepDir, trial.id, steps),
      `${JSON.stringify(result, null, 2)}\n`,
    );
    return result;
  }
  const resumable = hasCheckpoint(checkpoint);
  // A base `steps` is the whole run's length; the budget (a rung) stops it earlier.
  const { steps: runLength, ...flags } = trial.options;
  const until = String(Math.min(steps, numberOr(runLength, Infinity)));
  const argv = resumable
    ? // The recording is named here, not taken from the checkpoint: the checkpoint may come
      // from a runner on another machine, whose folder had another path (src/sweep/remoteTrial.ts).
      ['train', '--resume', checkpoint, '--steps', until, '--record', recording]
    : [
        'train',
        ...trialArgv(flags),
        '--steps',
        until,
        '--checkpoint-dir',
        checkpoint,
        '--record',
        recording,
        '--overwrite',
      ];
  argv.push(
    '--checkpoint-every',
    String(options.checkpointEvery),
    '--json',
    ...(options.extraArgs ?? []),
  );
  const started = Date.now();
  const { code, signal, stdout, stderr } = await runChild(argv, options);
  // Not the trial's outcome, so nothing is written and the next runner resumes it: a training
  // process killed (OOM killer, a dying machine) or stopped (a signal, its runner gone) before
  // its budget.
  if (signal !== null || /^grng: stopped by /m.test(stderr))
    throw new Error(
      `trial ${trial.id} was ${signal ? `killed by ${signal}` : 'stopped'} before ${until} steps; it resumes from its checkpoint when run again`,
    );
  const summary = code === 0 ? lastJson(stdout) : undefined;
  let result: TrialResult;
  if (!summary) {
    const error =
      stderr.trim().split('\n').filter(Boolean).at(-1) ?? `grng train exited with ${code}`;
    result = failed(trial.id, steps, ranBy, error, (Date.now() - started) / 1000);
  } else {
    result = resultFromRecording(trial.id, steps, recording, options, ranBy);
  }
  writeTextAtomically(
    resultPath(sweepDir, trial.id, steps),
    `${JSON.stringify(result, null, 2)}\n`,
  );
  return result;
}

/** The trial's numbers from its whole recording (every budget so far), not one process's. */
function resultFromRecording(
  id: string,
  budget: number,
  recording: string,
  options: RunTrialOptions,
  ranBy: string,
): TrialResult {
  const rows = readRecording(recording).batches.flatMap((batch) => recordBatchToRows(batch));
  const last = rows.at(-1);
  const evaluated = rows.filter((row) => row.testAccuracy !== null && row.testLoss !== null);
  const metricOf = (row: (typeof rows)[number]): number | null =>
    options.metric === 'finalLoss' ? row.loss : (row[options.metric] as number | null);
  const values = (options.metric === 'finalLoss' ? rows : evaluated)
    .map(metricOf)
    .filter((v): v is number => v !== null && Number.isFinite(v));
  const best =
    values.length === 0 ? null : options.higherIsBetter ? Math.max(...values) : Math.min(...values);
  const lastEvaluated = evaluated.at(-1);
  const seconds = (last?.wallMs ?? 0) / 1000;
  const steps = last ? last.step + 1 : 0;
  return {
    id,
    status: 'done',
    steps,
    budget,
    metric:
      options.metric === 'finalLoss'
        ? (last?.loss ?? null)
        : lastEvaluated
          ? metricOf(lastEvaluated)
          : null,
    best,
    testAccuracy: lastEvaluated?.testAccuracy ?? null,
    testLoss: lastEvaluated?.testLoss ?? null,
    finalLoss: last?.loss ?? null,
    seconds,
    stepsPerSecond: seconds > 0 ? steps / seconds : 0,
    ranBy,
  };
}

/**
 * Whether a complete recording already reaches `until` steps, or the end of the trial's epochs
 * (`grng train`'s default 3 when it sets none).
 */
function reachedBudget(recording: string, until: number, trial: TrialRequest['trial']): boolean {
  if (!existsSync(recording)) return false;
  try {
    const read = readRecording(recording);
    if (!read.complete) return false;
    const last = read.batches.at(-1);
    const steps = last ? (last.getChild('step')!.get(last.numRows - 1) as number) + 1 : 0;
    const end = read.run.batchesPerEpoch * numberOr(trial.options.epochs, 3);
    return steps >= Math.min(until, end);
  } catch {
    return false;
  }
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === 'number' ? value : fallback;
}

function failed(
  id: string,
  budget: number,
  ranBy: string,
  error: string,
  seconds: number,
): TrialResult {
  return {
    id,
    status: 'failed',
    steps: 0,
    budget,
    metric: null,
    best: null,
    testAccuracy: null,
    testLoss: null,
    finalLoss: null,
    seconds,
    stepsPerSecond: 0,
    ranBy,
    error,
  };
}

function runChild(
  argv: readonly string[],
  options: RunTrialOptions,
): Promise<{ code: number; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [GRNG_BIN, ...argv], {
      // Its own process group, so a terminal's Ctrl-C stops the runner, not the run mid-step;
      // and GRNG_STOP_WITH_PARENT makes it checkpoint and stop when its runner dies (a SIGKILLed
      // worker), instead of training on beside the runner that takes its trial over.
      detached: true,
      env: { ...process.env, ...options.env, GRNG_STOP_WITH_PARENT: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    if (child.pid !== undefined) options.onChild?.(child.pid);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    // Only the tail matters (the error line); a progress bar can print a lot.
    child.stderr.on(
      'data',
      (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-8192)),
    );
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (child.pid !== undefined) options.onChildExit?.(child.pid);
      resolve({ code: code ?? 1, signal, stdout, stderr });
    });
  });
}

function lastJson(stdout: string): Record<string, unknown> | undefined {
  const line = stdout.trim().split('\n').at(-1);
  try {
    return line ? (JSON.parse(line) as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
