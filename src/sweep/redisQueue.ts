import { Queue, QueueEvents, Worker, type Job, type JobsOptions, type RedisOptions } from 'bullmq';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GrngError } from '../errors.js';
import { FULL_RUN } from './halving.js';
import { runRemoteTrial, type TrialFilesEndpoint } from './remoteTrial.js';
import { resultPath, runTrial, type RunTrialOptions } from './runTrial.js';
import type { TrialExecutor, TrialRequest, TrialResult } from './types.js';

/** The BullMQ queue a sweep's coordinator fills and `grng worker` takes trials from. */
export const TRIAL_QUEUE = 'grng-trials';

/** What a trial's worker needs besides the request: JSON only, as it travels through Redis. */
export type QueuedRunOptions = Pick<
  RunTrialOptions,
  'metric' | 'higherIsBetter' | 'checkpointEvery' | 'extraArgs'
>;

/** A job's data: the request (its sweep folder absolute) and how to run it. */
export interface TrialJobData {
  readonly request: TrialRequest;
  readonly runOptions: QueuedRunOptions;
  /**
   * The coordinator's URL for its trial files (`grng sweep --serve --token`), for workers on
   * machines without the sweep folder (src/sweep/remoteTrial.ts). The token does not travel here.
   */
  readonly files?: string;
}

/** How a worker gets at a trial's files. */
export type WorkerFiles = 'auto' | 'shared' | 'http';

/**
 * Retries are for a worker whose run threw (its process could not start, the shared folder
 * hiccuped): a trial whose training failed completes with a 'failed' result and is not retried,
 * as it would fail the same way. Finished jobs stay a week, so a trial asked for again (a resumed
 * sweep, a second coordinator) gets the stored result without a worker.
 */
const JOB_OPTIONS: JobsOptions = {
  attempts: 5,
  backoff: { type: 'exponential', delay: 5_000 },
  removeOnComplete: { age: 7 * 24 * 3600 },
  removeOnFail: { age: 7 * 24 * 3600 },
};

/**
 * Workers renew their lock on a job every 3 s; the stalled check runs every 3 s; so a job whose
 * worker died (SIGKILL, lost machine) is back in the queue within 6–12 s. Short locks are safe
 * here because training runs in a child process: the worker's event loop is idle and never
 * misses a renewal. A job that stalls more than 3 times fails (a trial that kills its workers).
 */
const WORKER_LOCKS = { lockDuration: 6_000, stalledInterval: 3_000, maxStalledCount: 3 } as const;

/**
 * How often a waiting coordinator looks at its jobs besides the queue's events: an event missed
 * while Redis was away, or a job lost with a Redis that restarted without persistence (it is
 * added again; runTrial's result file and lock make the second delivery run nothing twice).
 */
const POLL_MS = 2_000;

/**
 * The coordinator's side of a sweep on Redis: each request becomes a BullMQ job on TRIAL_QUEUE,
 * named by trial, budget and sweep folder, so a request made twice (a resumed sweep, two
 * coordinators) is one job, and a job already completed answers with its result. `run` resolves
 * with the result a worker returned; a job that failed all its attempts resolves as a 'failed'
 * result with the error. Redis unreachable for `timeoutMs` (default 30 s) rejects with one line
 * naming the URL; shorter outages (a restart) are waited out. The sweep folder must be at the
 * same path for the coordinator and every worker (one machine, or the same mount point).
 *
 * @example
 * const executor = redisExecutor('redis://127.0.0.1:6379', { metric: 'testAccuracy', higherIsBetter: true, checkpointEvery: 50 }, {});
 * try { console.log(await executor.run({ sweepDir, trial, steps: 300 })); } finally { await executor.close(); }
 */
export function redisExecutor(
  url: string,
  runOptions: RunTrialOptions,
  options: {
    readonly timeoutMs?: number;
    /** The coordinator's trial-files URL, for workers without the sweep folder. */
    readonly filesUrl?: string;
  } = {},
): TrialExecutor {
  let closed = false;
  const connection = connectionOf(url, () => closed);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const queued: QueuedRunOptions = {
    metric: runOptions.metric,
    higherIsBetter: runOptions.higherIsBetter,
    checkpointEvery: runOptions.checkpointEvery,
    ...(runOptions.extraArgs ? { extraArgs: [...runOptions.extraArgs] } : {}),
  };
  const queue = new Queue<TrialJobData, TrialResult>(TRIAL_QUEUE, { connection });
  const events = new QueueEvents(TRIAL_QUEUE, { connection });
  // Errors come as events while ioredis reconnects; the last one explains a timeout.
  let lastError: Error | undefined;
  queue.on('error', (error) => (lastError = error));
  events.on('error', (error) => (lastError = error));

  const sleepers = new Map<string, Set<() => void>>();
  const wake = (jobId: string): void => {
    for (const sleeper of sleepers.get(jobId) ?? []) sleeper();
  };
  events.on('completed', ({ jobId }) => wake(jobId));
  events.on('failed', ({ jobId }) => wake(jobId));
  /** Waits for news of the job (its event), or POLL_MS. */
  const nap = (jobId: string): Promise<void> =>
    new Promise((done) => {
      const set = sleepers.get(jobId) ?? new Set();
      sleepers.set(jobId, set);
      const sleeper = (): void => {
        clearTimeout(timer);
        set.delete(sleeper);
        if (set.size === 0) sleepers.delete(jobId);
        done();
      };
      const timer = setTimeout(sleeper, POLL_MS);
      set.add(sleeper);
    });

  /** A Redis call, or one line naming the URL once Redis has not answered for timeoutMs. */
  const answer = async <T>(call: () => Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const why = lastError ? ` (${oneLine(lastError.message)})` : '';
        reject(
          new GrngError(
            'invalid-option',
            `--queue ${redacted(url)}: Redis did not answer within ${timeoutMs / 1000} s${why}`,
            { option: 'queue', value: redacted(url) },
          ),
        );
      }, timeoutMs);
    });
    try {
      return await Promise.race([call(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  };

  return {
    async run(request: TrialRequest): Promise<TrialResult> {
      // Workers run in other folders, maybe on other machines: the path must not be relative.
      const sweepDir = resolve(request.sweepDir);
      const data: TrialJobData = {
        request: { ...request, sweepDir },
        runOptions: queued,
        ...(options.filesUrl ? { files: options.filesUrl } : {}),
      };
      const jobId = trialJobId(data.request);
      // A finished job is run again at most once per request, so this never loops: a job that
      // failed before this request gets its attempts anew; a completed one whose result file is
      // gone (the sweep folder deleted and the sweep started over) is removed and added again.
      let seenBefore = true;
      let ranAgain = false;
      for (;;) {
        if (closed) throw new Error(`the queue executor on ${redacted(url)} is closed`);
        const state = await answer(() => queue.getJobState(jobId));
        if (state === 'unknown') {
          // Not there (never added, removed, or lost with Redis's data): add it; a job another
          // coordinator added in between is kept, as BullMQ adds an id only once.
          await answer(() => queue.add('trial', data, { ...JOB_OPTIONS, jobId }));
        } else if (state === 'waiting' || state === 'delayed' || state === 'prioritized') {
          // Added by an earlier coordinator of this sweep (a --resume), maybe on another port:
          // its workers must reach this one's trial files.
          const job = await answer(() => queue.getJob(jobId));
          if (job && job.data.files !== data.files)
            await answer(() => job.updateData(data).catch(() => undefined));
        } else if (state === 'completed' || state === 'failed') {
          const job = await answer(() => queue.getJob(jobId));
          const { trial, steps } = data.request;
          const again =
            !ranAgain &&
            (state === 'failed' ? seenBefore : !existsSync(resultPath(sweepDir, trial.id, steps)));
          if (job && !again)
            return state === 'completed'
              ? job.returnvalue
              : failedResult(job, job.failedReason || 'the job failed');
          if (job) {
            ranAgain = true;
            await answer(
              () =>
                (state === 'failed'
                  ? job.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: true })
                  : job.remove()
                ).catch(() => undefined), // another coordinator did it first
            );
            seenBefore = false;
            continue;
          }
        }
        seenBefore = false;
        await nap(jobId);
      }
    },
    async close(): Promise<void> {
      closed = true;
      for (const jobId of [...sleepers.keys()]) wake(jobId);
      await Promise.all([closeWithin(events), closeWithin(queue)]);
    },
  };
}

/**
 * A `grng worker`: takes trials from TRIAL_QUEUE and runs each with runTrial (its own `grng
 * train` process, resumed from the trial's checkpoint when an earlier run of it died), at most
 * `concurrency` at once. Runs until `signal` aborts, then finishes the trials in progress and
 * resolves. A worker that dies (SIGKILL, lost machine) has its jobs given to another worker
 * within about 10 s; its training processes are SIGTERMed when its process exits (they write a
 * checkpoint), so a second Ctrl-C, which exits at once, leaves none behind. An unreachable Redis
 * is retried for ever, each new error told once through onLine.
 *
 * @example
 * const stop = new AbortController();
 * process.once('SIGINT', () => stop.abort());
 * await runWorker('redis://127.0.0.1:6379', { concurrency: 2, signal: stop.signal, onLine: console.log });
 */
export async function runWorker(
  url: string,
  options: {
    readonly concurrency?: number;
    readonly env?: NodeJS.ProcessEnv;
    readonly signal?: AbortSignal;
    readonly onLine?: (line: string) => void;
    /**
     * 'shared': the sweep folder is on this machine at the coordinator's path (one machine, NFS);
     * 'http': through the coordinator's trial files, with `token`; 'auto' (default): http when
     * the coordinator serves trial files and its folder is not here, else shared.
     */
    readonly files?: WorkerFiles;
    /** The coordinator's token, for trials run through its trial files. */
    readonly token?: string;
    /** This machine's folder for trials run through trial files; default the OS's temp folder. */
    readonly cacheDir?: string;
  } = {},
): Promise<void> {
  let stopping = false;
  const connection = connectionOf(url, () => stopping);
  const say = options.onLine ?? (() => undefined);
  if (options.signal?.aborted) return;
  const children = new Set<number>();
  let active = 0; // trials in the processor
  const name = `${hostname()}:${process.pid}`;
  const worker = new Worker<TrialJobData, TrialResult>(
    TRIAL_QUEUE,
    async (job) => {
      const { request, runOptions } = job.data;
      const budget = request.steps >= FULL_RUN ? 'its end' : `${request.steps} steps`;
      const what = `trial ${request.trial.id} to ${budget} (job ${job.id})`;
      const attempt = job.attemptsStarted > 1 ? `, attempt ${job.attemptsStarted}` : '';
      say(`${what}: started${attempt}`);
      let child: number | undefined;
      active += 1;
      try {
        const trialOptions: RunTrialOptions = {
          ...runOptions,
          ...(options.env ? { env: options.env } : {}),
          onChild: (pid) => children.add((child = pid)),
        };
        const endpoint = filesOf(job.data, options.files ?? 'auto', options.token);
        const result = endpoint
          ? await runRemoteTrial(request, endpoint, {
              ...trialOptions,
              cacheDir: options.cacheDir ?? join(tmpdir(), 'grng-worker'),
            })
          : await runTrial(request, trialOptions);
        say(
          `${what}: ${result.status === 'done' ? `done at step ${result.steps}` : `failed: ${result.error ?? ''}`}`,
        );
        return result;
      } catch (error) {
        const attempts = job.opts.attempts ?? 1;
        const left = attempts - job.attemptsMade - 1;
        say(
          `${what}: error: ${oneLine((error as Error).message)} (attempt ${job.attemptsMade + 1} of ${attempts}${left > 0 ? ', retried later' : ''})`,
        );
        throw error;
      } finally {
        active -= 1;
        if (child !== undefined) children.delete(child);
      }
    },
    {
      connection,
      name,
      concurrency: options.concurrency ?? 1,
      ...WORKER_LOCKS,
    },
  );
  let lastError = '';
  worker.on('error', (error) => {
    const line = oneLine(error.message);
    if (line !== lastError) say(`queue ${redacted(url)}: ${line}`);
    lastError = line;
  });
  worker.on('ready', () => {
    if (lastError) say(`queue ${redacted(url)}: connected`);
    lastError = '';
  });
  // process.exit (a second Ctrl-C) does not end children: stop their training with a checkpoint.
  const stopChildren = (): void => {
    for (const pid of children) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // Already gone.
      }
    }
  };
  process.on('exit', stopChildren);
  try {
    await new Promise<void>((done) => {
      options.signal?.addEventListener('abort', () => done(), { once: true });
      worker.once('closed', () => done());
    });
    if (worker.isRunning() && children.size > 0)
      say(`stopping after the ${children.size === 1 ? 'trial' : 'trials'} in progress`);
    // Closing waits for the trials in progress and reports them, reconnecting to a Redis that
    // is away for a while; 2 s after the last one, reconnecting stops so closing cannot hang.
    let idle = 0;
    const giveUp = setInterval(() => {
      idle = active === 0 ? idle + 1 : 0;
      if (idle >= 4) stopping = true;
    }, 500);
    try {
      await worker.close();
    } finally {
      clearInterval(giveUp);
    }
  } finally {
    process.off('exit', stopChildren);
  }
}

/**
 * Where a worker finds a job's trial files: undefined for the shared sweep folder (it is on this
 * machine), else the coordinator's endpoint. Throws one line saying what is missing.
 */
function filesOf(
  data: TrialJobData,
  mode: WorkerFiles,
  token: string | undefined,
): TrialFilesEndpoint | undefined {
  const { sweepDir } = data.request;
  // A coordinator that serves no trial files has its workers share its folder (as before trial
  // files existed): runTrial makes the trial's folder under that path.
  if (mode === 'shared' || (mode === 'auto' && !data.files)) return undefined;
  if (mode === 'auto' && existsSync(join(sweepDir, 'sweep.json'))) return undefined;
  if (!data.files)
    throw new Error(
      `the sweep folder ${sweepDir} is not on this machine and its coordinator serves no trial files: start grng sweep with --serve --token (README: Sweeps)`,
    );
  if (!token)
    throw new Error(
      `the sweep folder ${sweepDir} is not on this machine: give grng worker the sweep's --token to use its trial files at ${data.files}`,
    );
  return { url: data.files, token };
}

/**
 * The job of a request: trial, budget, and a hash of the (absolute) sweep folder, so the same
 * trial in two sweeps is two jobs.
 *
 * @example
 * trialJobId({ sweepDir: '/runs/sweeps/a', trial, steps: 300 }); // '3f2a…-300-9c1d…'
 */
export function trialJobId(request: TrialRequest): string {
  const folder = createHash('sha256').update(resolve(request.sweepDir)).digest('hex').slice(0, 12);
  return `${request.trial.id}-${request.steps}-${folder}`;
}

/**
 * Checks a `--queue` URL without connecting (before a command creates anything): a URL that is
 * not redis://HOST:PORT or rediss://HOST:PORT (a password and /DB allowed) is a GrngError naming
 * the option, its password hidden.
 *
 * @example
 * checkQueueUrl('http://localhost:6379'); // throws 'invalid --queue: "http://localhost:6379" (expected redis://HOST:PORT or rediss://HOST:PORT)'
 */
export function checkQueueUrl(url: string): void {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  const ok =
    parsed !== undefined &&
    (parsed.protocol === 'redis:' || parsed.protocol === 'rediss:') &&
    parsed.hostname !== '' &&
    parsed.port !== '' &&
    /^(\/\d*)?$/.test(parsed.pathname) &&
    parsed.search === '' &&
    parsed.hash === '';
  if (!ok)
    throw new GrngError(
      'invalid-option',
      `invalid --queue: ${JSON.stringify(redacted(url))} (expected redis://HOST:PORT or rediss://HOST:PORT)`,
      { option: 'queue', value: redacted(url) },
    );
}

/**
 * The connection options of a `--queue` URL (checked). Once `closing` says so, reconnecting
 * stops, so closing never waits for a Redis that is not there.
 */
function connectionOf(url: string, closing: () => boolean): RedisOptions {
  checkQueueUrl(url);
  return {
    url,
    // BullMQ requires it: a command waits for the reconnect instead of failing.
    maxRetriesPerRequest: null,
    // Reconnect soon after Redis is back (BullMQ's default waits up to 20 s between tries).
    retryStrategy: (times) => (closing() ? null : Math.min(250 * times, 2_000)),
    connectTimeout: 5_000,
  };
}

/** The URL without its password, for messages. */
export function redacted(url: string): string {
  return url.replace(/^(rediss?:\/\/[^:@/]*:)[^@/]*@/, '$1***@');
}

function oneLine(text: string): string {
  return text.trim().replace(/\s*\n\s*/g, ' ');
}

function failedResult(job: Job<TrialJobData, TrialResult>, error: string): TrialResult {
  return {
    id: job.data.request.trial.id,
    status: 'failed',
    steps: 0,
    budget: job.data.request.steps,
    metric: null,
    best: null,
    testAccuracy: null,
    testLoss: null,
    finalLoss: null,
    seconds: 0,
    stepsPerSecond: 0,
    ranBy: job.processedBy ?? 'queue',
    error: oneLine(error),
  };
}

/**
 * Closes a queue or its events. One that never reached Redis waits for its client's next
 * reconnect try (at most 2 s), which the retry strategy then ends; bounded all the same.
 */
async function closeWithin(closeable: Queue | QueueEvents): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((done) => (timer = setTimeout(done, 5_000)));
  try {
    await Promise.race([closeable.close().catch(() => undefined), late]);
  } finally {
    clearTimeout(timer);
  }
}
