// The BullMQ sweep queue (src/sweep/redisQueue.ts) on a real redis-server (Debian package
// redis-server, on a free loopback port, without persistence) with real `grng train` trials on
// the synthetic dataset: workers run in child processes (test/fixtures/sweepWorker.ts) so one can
// be SIGKILLed. Trials run dist/ through bin/grng.js: build it first (`npm test` does).
import { Queue } from 'bullmq';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

// The coordinator's trial files (in this process) judge a remote worker's lock stale after 2 s,
// as the workers below judge shared-folder locks.
vi.hoisted(() => {
  process.env.GRNG_TRIAL_LOCK_STALE_MS = '2000';
});
import { isGrngError } from '../src/errors.js';
import { recordBatchToRows } from '../src/metrics/schema.js';
import type { MetricsRow } from '../src/types.js';
import { hasCheckpoint } from '../src/sinks/checkpointFile.js';
import { expandTrials, parseSweepConfig } from '../src/sweep/config.js';
import {
  checkQueueUrl,
  redisExecutor,
  runWorker,
  TRIAL_QUEUE,
  trialJobId,
  type TrialJobData,
} from '../src/sweep/redisQueue.js';
import { runTrial, trialDir, type RunTrialOptions } from '../src/sweep/runTrial.js';
import type { Trial, TrialExecutor, TrialResult } from '../src/sweep/types.js';
import { readRecording } from '../src/streams/readRecording.js';
import { RunHub } from '../src/sinks/runHub.js';
import { startServer } from '../src/sinks/server.js';
import { trialFilesRoutes } from '../src/sweep/trialFiles.js';
import { startRedis, type RedisServer } from './redisServer.js';
import { needsPackage } from './systemPackages.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const WORKER = join('test', 'fixtures', 'sweepWorker.ts');

/** Four small trials (two optimizers × two learning rates), each ~1 s of training on cpu. */
const trials = expandTrials(
  parseSweepConfig(
    JSON.stringify({
      name: 'queue',
      // 10 epochs of the synthetic set are 640 steps: every budget below ends by its steps.
      base: {
        dataset: 'synthetic',
        model: 'mlp:20-16-4',
        'batch-size': 32,
        epochs: 10,
        'eval-every': 20,
      },
      optimizers: { adamw: { lr: [0.01, 0.003] }, sgd: { lr: [0.05, 0.1] } },
      checkpointEvery: 10,
    }),
    'queue.json',
  ),
);
const STEPS = 40;
const RUN_OPTIONS: RunTrialOptions = {
  metric: 'testAccuracy',
  higherIsBetter: true,
  checkpointEvery: 10,
  extraArgs: ['--backend', 'cpu'],
};

const folders: string[] = [];
function sweepFolder(): string {
  const dir = mkdtempSync(join(tmpdir(), 'grng-queue-'));
  folders.push(dir);
  return dir;
}

/** The redis-server of this file: started by the first test that needs it. */
let redis: Promise<RedisServer> | undefined;
const server = (): Promise<RedisServer> => (redis ??= startRedis());

interface WorkerProcess {
  readonly child: ChildProcess;
  /** `host:pid`, as runTrial writes it in ranBy. */
  readonly ranBy: string;
  output(): string;
  /** Resolves when a line of its output matches. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
}

const workers: WorkerProcess[] = [];
/**
 * A worker in a process group of its own (detached), so a SIGKILL to the group takes its trial's
 * `grng train` child with it, as a machine that dies would.
 */
function startWorker(url: string, files: readonly string[] = []): WorkerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, url, ...files], {
    cwd: ROOT,
    // A dead worker's trial lock is taken over after 2 s instead of 30 s.
    env: { ...process.env, GRNG_TRIAL_LOCK_STALE_MS: '2000' },
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  let output = '';
  const waiters = new Set<() => void>();
  const take = (chunk: Buffer): void => {
    output += chunk.toString('utf8');
    for (const waiter of waiters) waiter();
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  const worker: WorkerProcess = {
    child,
    ranBy: `${hostname()}:${child.pid}`,
    output: () => output,
    waitFor: (pattern, timeoutMs = 30_000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          if (!pattern.test(output)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`worker ${child.pid} never printed ${pattern}:\n${tail(output)}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
  };
  workers.push(worker);
  return worker;
}

/** SIGTERM: the worker finishes its trial in progress and exits (killed after 20 s). */
async function stopWorker(worker: WorkerProcess): Promise<void> {
  if (worker.child.exitCode !== null || worker.child.signalCode !== null) return;
  const exited = new Promise((resolve) => worker.child.once('exit', resolve));
  worker.child.kill('SIGTERM');
  const late = setTimeout(() => killGroup(worker), 20_000);
  await exited;
  clearTimeout(late);
}

function killGroup(worker: WorkerProcess): void {
  try {
    process.kill(-worker.child.pid!, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

const executors: TrialExecutor[] = [];
function executor(url: string, timeoutMs?: number, filesUrl?: string): TrialExecutor {
  const made = redisExecutor(url, RUN_OPTIONS, {
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
    ...(filesUrl ? { filesUrl } : {}),
  });
  executors.push(made);
  return made;
}

/** The rows of a trial's recording, in order (every budget and resume appended). */
function recordedRows(sweepDir: string, trial: Trial): MetricsRow[] {
  const path = join(trialDir(sweepDir, trial.id), 'run.arrows');
  return readRecording(path).batches.flatMap((batch) => recordBatchToRows(batch));
}

const recordedSteps = (sweepDir: string, trial: Trial): number[] =>
  recordedRows(sweepDir, trial).map((row) => row.step);

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** The result files in a trial's folder (and nothing half-written). */
const resultFiles = (sweepDir: string, trial: Trial): string[] =>
  readdirSync(trialDir(sweepDir, trial.id)).filter((name) => name.startsWith('result-'));

/** What a run computed, without who ran it and how fast. */
function numbers(result: TrialResult): Partial<TrialResult> {
  const { seconds: _seconds, stepsPerSecond: _speed, ranBy: _ranBy, ...rest } = result;
  return rest;
}

const tail = (text: string): string => text.split('\n').slice(-20).join('\n');

afterEach(async () => {
  await Promise.all(executors.splice(0).map((e) => e.close()));
  await Promise.all(workers.splice(0).map((w) => stopWorker(w)));
});

afterAll(async () => {
  for (const worker of workers) killGroup(worker);
  await (await redis?.catch(() => undefined))?.stop();
  for (const dir of folders) rmSync(dir, { recursive: true, force: true });
});

describe('sweep trials through BullMQ on redis-server', () => {
  beforeEach((context) => needsPackage(context, 'redis-server'));

  it('two workers run 4 trials: each done once, with the numbers runTrial gives directly', async () => {
    const { url } = await server();
    const pair = [startWorker(url), startWorker(url)];
    const sweepDir = sweepFolder();
    const directDir = sweepFolder();
    const queue = executor(url);
    const [queued, direct] = await Promise.all([
      Promise.all(trials.map((trial) => queue.run({ sweepDir, trial, steps: STEPS }))),
      Promise.all(
        trials.map((trial) => runTrial({ sweepDir: directDir, trial, steps: STEPS }, RUN_OPTIONS)),
      ),
    ]);
    for (const [i, trial] of trials.entries()) {
      const result = queued[i]!;
      expect(result.status, result.error).toBe('done');
      expect(result).toMatchObject({ id: trial.id, steps: STEPS, budget: STEPS });
      expect(pair.map((w) => w.ranBy)).toContain(result.ranBy);
      expect(numbers(result)).toEqual(numbers(direct[i]!));
      expect(resultFiles(sweepDir, trial)).toEqual([`result-${STEPS}.json`]);
      expect(recordedSteps(sweepDir, trial)).toEqual(range(STEPS));
    }
  });

  it('a trial delivered twice (two coordinators, and a second job of the same request) runs once', async () => {
    const { url } = await server();
    const pair = [startWorker(url), startWorker(url)];
    const sweepDir = sweepFolder();
    const request = { sweepDir, trial: trials[0]!, steps: STEPS };
    // A second job under another id: both workers get the trial at once, and runTrial's lock
    // and result file make one of them wait for the other's result.
    const raw = new Queue<TrialJobData, TrialResult>(TRIAL_QUEUE, {
      connection: { url, maxRetriesPerRequest: null },
    });
    try {
      await raw.add(
        'trial',
        { request, runOptions: RUN_OPTIONS },
        { jobId: `${trialJobId(request)}-again` },
      );
      const one = executor(url);
      const [a, b, c] = await Promise.all([
        one.run(request),
        executor(url).run(request),
        one.run(request),
      ]);
      const again = await raw.getJob(`${trialJobId(request)}-again`);
      await expect.poll(async () => again!.getState(), { timeout: 30_000 }).toBe('completed');
      const second = (await raw.getJob(`${trialJobId(request)}-again`))!.returnvalue;
      expect(a.status, a.error).toBe('done');
      for (const other of [b, c, second]) expect(other).toEqual(a);
      expect(pair.map((w) => w.ranBy)).toContain(a.ranBy);
      // The three requests were one job, started once.
      expect((await raw.getJob(trialJobId(request)))!.attemptsStarted).toBe(1);
    } finally {
      await raw.close();
    }
    expect(resultFiles(sweepDir, trials[0]!)).toEqual([`result-${STEPS}.json`]);
    expect(recordedSteps(sweepDir, trials[0]!)).toEqual(range(STEPS));
  });

  it('a completed job whose sweep folder was deleted runs again (the sweep started over)', async () => {
    const { url } = await server();
    startWorker(url);
    const sweepDir = sweepFolder();
    const request = { sweepDir, trial: trials[2]!, steps: STEPS };
    const first = await executor(url).run(request);
    rmSync(sweepDir, { recursive: true });
    const second = await executor(url).run(request);
    expect(second.status, second.error).toBe('done');
    expect(numbers(second)).toEqual(numbers(first));
    expect(resultFiles(sweepDir, trials[2]!)).toEqual([`result-${STEPS}.json`]);
    expect(recordedSteps(sweepDir, trials[2]!)).toEqual(range(STEPS));
  });

  it('a job that failed all its attempts before is given them anew, then is a failed result with the error', async () => {
    const { url } = await server();
    const worker = startWorker(url);
    // A sweep folder under a file: runTrial cannot make the trial's folder, so every attempt throws.
    const file = join(sweepFolder(), 'a-file');
    writeFileSync(file, '');
    const request = { sweepDir: join(file, 'sweep'), trial: trials[0]!, steps: STEPS };
    const raw = new Queue<TrialJobData, TrialResult>(TRIAL_QUEUE, {
      connection: { url, maxRetriesPerRequest: null },
    });
    try {
      // As an earlier coordinator would have left it, with one attempt.
      await raw.add(
        'trial',
        { request, runOptions: RUN_OPTIONS },
        { jobId: trialJobId(request), attempts: 1 },
      );
      await expect
        .poll(() => raw.getJobState(trialJobId(request)), { timeout: 30_000 })
        .toBe('failed');
      const result = await executor(url).run(request);
      expect(result).toMatchObject({
        id: trials[0]!.id,
        status: 'failed',
        steps: 0,
        budget: STEPS,
      });
      expect(result.ranBy).toBe(worker.ranBy);
      expect(result.error).toMatch(/^ENOTDIR: not a directory/);
      // Two runs: the earlier coordinator's, and the one this request gave it.
      expect(worker.output().match(/: error: ENOTDIR.*\(attempt 1 of 1\)/g)).toHaveLength(2);
    } finally {
      await raw.close();
    }
  });

  it('a worker SIGKILLed mid-trial: another worker takes the job and resumes from the checkpoint', async () => {
    const { url } = await server();
    const sweepDir = sweepFolder();
    const trial = trials[1]!;
    const steps = 400;
    const first = startWorker(url);
    const running = executor(url).run({ sweepDir, trial, steps });
    await first.waitFor(/started/);
    const second = startWorker(url);
    const checkpoint = join(trialDir(sweepDir, trial.id), 'checkpoint');
    await expect
      .poll(() => hasCheckpoint(checkpoint), { timeout: 30_000, interval: 50 })
      .toBe(true);
    const killed = new Promise((resolve) => first.child.once('exit', resolve));
    killGroup(first);
    await killed;
    const before = recordedRows(sweepDir, trial);
    const result = await running;
    expect(result.status, result.error).toBe('done');
    expect(result).toMatchObject({ steps, budget: steps, ranBy: second.ranBy });
    await second.waitFor(new RegExp(`trial ${trial.id} to ${steps} steps .*: done`));
    // Resumed, not started over: the rows before the first checkpoint are the first worker's
    // (their clock readings kept; a fresh start would have overwritten the recording), and
    // every step is there once.
    const after = recordedRows(sweepDir, trial);
    const kept = before.filter((row) => row.step < RUN_OPTIONS.checkpointEvery);
    expect(kept.length).toBeGreaterThan(0);
    expect(before.length).toBeLessThan(steps);
    expect(after.slice(0, kept.length).map((r) => r.wallMs)).toEqual(kept.map((r) => r.wallMs));
    expect(after.map((row) => row.step)).toEqual(range(steps));
    expect(resultFiles(sweepDir, trial)).toEqual([`result-${steps}.json`]);
  });

  it('a worker asked to stop (SIGTERM) finishes its trial in progress, reports it, then exits', async () => {
    const { url } = await server();
    const worker = startWorker(url);
    const sweepDir = sweepFolder();
    const trial = trials[3]!;
    const running = executor(url).run({ sweepDir, trial, steps: 200 });
    await worker.waitFor(/started/);
    const exited = new Promise((resolve) => worker.child.once('exit', resolve));
    worker.child.kill('SIGTERM');
    const result = await running;
    expect(result).toMatchObject({ status: 'done', steps: 200, ranBy: worker.ranBy });
    expect(await exited).toBe(0);
    expect(worker.output()).toMatch(/: done at step 200\n(.*\n)*stopped\n$/);
  });

  it('Redis stopped and restarted mid-sweep (losing every key): workers and the coordinator reconnect and the sweep completes', async () => {
    const redisServer = await server();
    const { url } = redisServer;
    const pair = [startWorker(url), startWorker(url)];
    const sweepDir = sweepFolder();
    const queue = executor(url);
    const all = Promise.all(trials.map((trial) => queue.run({ sweepDir, trial, steps: STEPS })));
    await Promise.race(pair.map((w) => w.waitFor(/started/)));
    await redisServer.stop();
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await redisServer.restart();
    const results = await all;
    for (const [i, trial] of trials.entries()) {
      expect(results[i]!.status, results[i]!.error).toBe('done');
      expect(results[i]!.steps).toBe(STEPS);
      expect(resultFiles(sweepDir, trial)).toEqual([`result-${STEPS}.json`]);
      expect(recordedSteps(sweepDir, trial)).toEqual(range(STEPS));
    }
  });
});

describe('workers without the sweep folder (through the coordinator’s trial files)', () => {
  beforeEach((context) => needsPackage(context, 'redis-server'));

  it('two workers with their own folders run the trials, one SIGKILLed mid-trial: everything lands at the coordinator, resumed, each step once, the numbers of direct runs', async () => {
    const { url } = await server();
    const token = 'sweep-files-token';
    const sweepDir = sweepFolder();
    writeFileSync(join(sweepDir, 'sweep.json'), JSON.stringify({ config: {}, trials }));
    const dashboard = await startServer({
      hub: new RunHub(),
      port: 0,
      token,
      routes: trialFilesRoutes(sweepDir),
    });
    try {
      const files = `http://127.0.0.1:${dashboard.port}`;
      const first = startWorker(url, [token, sweepFolder()]);
      const queue = executor(url, undefined, files);
      const long = trials[1]!;
      const steps = (trial: Trial): number => (trial === long ? 400 : STEPS);
      const all = Promise.all(
        trials.map((trial) => queue.run({ sweepDir, trial, steps: steps(trial) })),
      );
      // The long trial's first checkpoint reached the coordinator: kill the worker running it.
      await first.waitFor(new RegExp(`trial ${long.id} .*: started`), 60_000);
      const second = startWorker(url, [token, sweepFolder()]);
      await expect
        .poll(() => hasCheckpoint(join(trialDir(sweepDir, long.id), 'checkpoint')), {
          timeout: 30_000,
          interval: 50,
        })
        .toBe(true);
      const killed = new Promise((resolve) => first.child.once('exit', resolve));
      killGroup(first);
      await killed;
      const results = await all;
      const directDir = sweepFolder();
      for (const [i, trial] of trials.entries()) {
        const result = results[i]!;
        expect(result.status, result.error).toBe('done');
        expect(result.steps).toBe(steps(trial));
        const direct = await runTrial(
          { sweepDir: directDir, trial, steps: steps(trial) },
          RUN_OPTIONS,
        );
        expect(numbers(result)).toEqual(numbers(direct));
        expect(resultFiles(sweepDir, trial)).toEqual([`result-${steps(trial)}.json`]);
        expect(recordedSteps(sweepDir, trial)).toEqual(range(steps(trial)));
      }
      expect(results[1]!.ranBy).toBe(second.ranBy);
      expect(second.output()).toMatch(
        new RegExp(`trial ${long.id} to 400 steps .*: done at step 400`),
      );
    } finally {
      await dashboard.close();
    }
  });
});

describe('queue URLs', () => {
  it('a bad --queue URL is one line naming --queue, for the coordinator and the worker', async () => {
    for (const url of ['http://127.0.0.1:6379', 'redis://127.0.0.1', 'localhost:6379', '']) {
      let error: unknown;
      try {
        redisExecutor(url, RUN_OPTIONS, {});
      } catch (caught) {
        error = caught;
      }
      expect(isGrngError(error) && error.context.option).toBe('queue');
      expect((error as Error).message).toBe(
        `invalid --queue: ${JSON.stringify(url)} (expected redis://HOST:PORT or rediss://HOST:PORT)`,
      );
    }
    await expect(runWorker('redis:/nope', {})).rejects.toThrow(/^invalid --queue: "redis:\/nope"/);
    for (const url of ['redis://127.0.0.1:6379', 'rediss://user:pw@redis.example:6380/2'])
      expect(() => checkQueueUrl(url)).not.toThrow();
    // A password never shows in a message.
    expect(() => redisExecutor('redis://:s3cret@127.0.0.1', RUN_OPTIONS)).toThrow(
      'invalid --queue: "redis://:***@127.0.0.1"',
    );
  });

  it('an unreachable Redis fails the coordinator within its timeout, in one line naming the URL', async () => {
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}`;
    const queue = executor(url, 1500);
    const started = Date.now();
    const error = await queue
      .run({ sweepDir: sweepFolder(), trial: trials[0]!, steps: STEPS })
      .catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(isGrngError(error) && error.context.option).toBe('queue');
    expect((error as Error).message).toMatch(
      new RegExp(`^--queue ${url}: Redis did not answer within 1.5 s \\(.*ECONNREFUSED.*\\)$`),
    );
    const closing = Date.now();
    await queue.close();
    expect(Date.now() - closing).toBeLessThan(3000);
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}
