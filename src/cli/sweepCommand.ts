import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { writeFileAtomically, writeTextAtomically } from '../sinks/writeFileAtomically.js';
import { availableParallelism, cpus, hostname } from 'node:os';
import { checkHost, type ServerHandle } from '../sinks/server.js';
import { trialFilesRoutes } from '../sweep/trialFiles.js';
import { basename, join } from 'node:path';
import { GrngError } from '../errors.js';
import { expandTrials, parseSweepConfig, trialArgv, type SweepConfig } from '../sweep/config.js';
import { FULL_RUN, runHalving } from '../sweep/halving.js';
import { localPool } from '../sweep/localPool.js';
import type { RunTrialOptions } from '../sweep/runTrial.js';
import { formatSweepTable, sweepTable, sweepTableArrow, sweepTableCsv } from '../sweep/table.js';
import type { Trial, TrialExecutor } from '../sweep/types.js';
import type { CliIo } from './io.js';
import { writeDigest } from './writeDigest.js';
import { followFolder, type FolderFollowing } from './followFolder.js';
import { withLive, type LiveOptions } from './live.js';
import { sweepSnapshot } from '../sweep/snapshot.js';
import { startSessionClock } from '../sweep/sessionClock.js';
import { digestPath, loadSweep } from '../report/sweepData.js';
import type { SweepRow } from '../sweep/halving.js';

export interface SweepCommandOptions extends LiveOptions {
  readonly out?: string;
  readonly workers?: number;
  readonly queue?: string;
  readonly dryRun?: boolean;
  readonly resume?: boolean;
  readonly json?: boolean;
  readonly backend?: string;
  /** The URL workers on other machines reach this coordinator's trial files at. */
  readonly advertise?: string;
}

/** Checks one trial's `grng train` arguments as the train command would parse them. */
export type TrainArgvCheck = (argv: readonly string[]) => Promise<string | undefined>;

/**
 * `grng sweep CONFIG.json`: expands the config into trials (each checked as a `grng train`
 * command line before anything runs), runs them with successive halving on a local pool of
 * processes or through BullMQ workers, and prints and writes the sweep table.
 */
export async function runSweepCommand(
  file: string,
  options: SweepCommandOptions,
  io: CliIo,
  checkTrainArgv: TrainArgvCheck,
): Promise<void> {
  const config = readConfig(file);
  const trials = expandTrials(config);
  for (const trial of trials) {
    const problem = await checkTrainArgv(trialArgv(trial.options));
    if (problem)
      throw new GrngError(
        'invalid-option',
        `${file}: trial ${trial.id} (${describe(trial)}): ${problem}`,
        { option: 'config', path: file },
      );
  }
  const budgets = [...(config.halving?.rungs ?? []), FULL_RUN];
  const plan = `${trials.length} trials (${Object.keys(config.optimizers).length} optimizers, ${config.seeds.length} seed${config.seeds.length === 1 ? '' : 's'}), ${config.search.kind} search, ${budgets.length > 1 ? `successive halving at ${config.halving!.rungs.join(', ')} steps keeping 1/${config.halving!.reduction} per optimizer, then the whole run` : 'each the whole run'}; metric ${config.metric.name}`;
  if (options.dryRun) {
    io.out(`${plan}\n`);
    for (const trial of trials) io.out(`${trial.id}  ${describe(trial)}\n`);
    return;
  }
  const dir = options.out ?? join('runs', 'sweeps', config.name);
  // BullMQ (and its Redis client) load only for a queued sweep.
  const redis = options.queue ? await import('../sweep/redisQueue.js') : undefined;
  // Checked before the folder is made: a typo must not leave a sweep that needs --resume.
  if (options.queue) redis!.checkQueueUrl(options.queue);
  if (options.serve) checkHost(options.host);
  // Workers without this folder run trials through its files on the dashboard's server, which
  // must then have a token (anything that writes is authenticated).
  const remoteFiles = options.queue !== undefined && options.serve === true && !!options.token;
  if (options.advertise !== undefined && !remoteFiles)
    throw new GrngError(
      'invalid-option',
      '--advertise: trial files are served only with --queue, --serve and --token',
      { option: 'advertise', value: options.advertise },
    );
  if (options.advertise !== undefined) checkAdvertise(options.advertise);
  if (options.queue && options.serve && !options.token)
    io.err(
      'grng: note: without --token the dashboard serves no trial files; workers need this folder at the same path\n',
    );
  prepareSweepDir(dir, config, trials, options.resume ?? false);
  const redactedQueue = options.queue ? redis!.redacted(options.queue) : undefined;
  const workers = options.workers ?? defaultWorkers();
  io.err(
    `grng: sweep ${config.name}: ${plan}; ${options.queue ? `queue ${redactedQueue} (run grng worker --queue ${redactedQueue} on each machine)` : `${workers} local worker${workers === 1 ? '' : 's'}`}; folder ${dir}\n`,
  );
  const children = new Set<number>();
  const runOptions: RunTrialOptions = {
    onChild: (pid) => children.add(pid),
    onChildExit: (pid) => children.delete(pid),
    metric: config.metric.name,
    higherIsBetter: config.metric.higherIsBetter,
    checkpointEvery: config.checkpointEvery,
    ...(options.backend ? { extraArgs: ['--backend', options.backend] } : {}),
  };
  let executor: TrialExecutor | undefined;
  const executorFor = (server: ServerHandle | undefined): TrialExecutor => {
    if (!options.queue) return localPool(workers, runOptions);
    const filesUrl =
      remoteFiles && server ? (options.advertise ?? advertisedUrl(server)) : undefined;
    if (filesUrl) io.err(`grng: trial files for workers without this folder at ${filesUrl}\n`);
    return redis!.redisExecutor(options.queue, runOptions, filesUrl ? { filesUrl } : {});
  };
  const started = Date.now();
  let finished = 0;
  let rows: SweepRow[] | undefined;
  const run = async (): Promise<void> => {
    rows = await runHalving(config, trials, dir, executor!, (result, trial, kept) => {
      if (kept) return;
      finished += 1;
      const outcome =
        result.status === 'failed'
          ? `failed: ${result.error}`
          : `${config.metric.name} ${result.metric === null ? '–' : result.metric.toFixed(4)} at step ${result.steps} (${result.seconds.toFixed(1)} s)`;
      io.err(`grng: [${finished}] ${trial.id} ${describe(trial)} → ${outcome}\n`);
    });
  };
  const stop = new AbortController();
  let following: FolderFollowing | undefined;
  let table: ReturnType<typeof sweepTable> | undefined;
  try {
    // With --serve the dashboard follows every trial's recording as its process writes it, and
    // the sweep view reads the folder at each request.
    await withLive(
      options,
      io,
      async (hub, server) => {
        executor = executorFor(server);
        if (hub) {
          following = followFolder(dir, hub, {
            signal: stop.signal,
            warn: (message) => io.err(`grng: warning: ${message}\n`),
          });
          await following.ready;
        }
        // Each session's wall clock, so a report can say what the sweep cost (resumes add up).
        const clock = startSessionClock(dir, {
          workers: options.queue ? 'queue' : workers,
          host: hostname(),
          cpus: availableParallelism(),
          ...(cpus()[0] && { cpu: cpus()[0]!.model.trim() }),
        });
        // Stopped by a signal (Ctrl-C, a job system's SIGTERM), the sweep records its time, starts
        // no more trials and stops the ones running (their own process groups, so they would
        // miss a terminal's Ctrl-C): each checkpoints after its current step (trainCommand.ts)
        // and its runner releases its lock, so --resume takes each up where it stopped. Exits
        // once they are gone; a second signal exits at once (they then stop with their parent).
        let stopping = false;
        const onSignal = (signal: NodeJS.Signals): void => {
          const code = signal === 'SIGINT' ? 130 : 143;
          if (stopping) process.exit(code);
          stopping = true;
          clock.stop();
          io.err(
            `grng: sweep ${config.name}: stopped by ${signal}; trials in progress checkpoint and stop; go on with grng sweep ${file}${options.out ? ` --out ${dir}` : ''} --resume\n`,
          );
          void executor!.close();
          void stopTrialProcesses(children).then(() => process.exit(code));
        };
        process.once('SIGTERM', onSignal);
        process.once('SIGINT', onSignal);
        try {
          await run();
        } finally {
          process.off('SIGTERM', onSignal);
          process.off('SIGINT', onSignal);
          clock.stop();
          await executor.close();
        }
        table = sweepTable(rows!);
        writeTextAtomically(
          join(dir, 'results.json'),
          `${JSON.stringify(table.records, null, 2)}\n`,
        );
        writeTextAtomically(join(dir, 'results.csv'), sweepTableCsv(table));
        writeFileAtomically(join(dir, 'results.arrow'), [sweepTableArrow(table)]);
        // A report's sweep keeps its digest beside its config at once: the folder may not
        // outlive this machine, and the report regenerates from the digest (sweepData.ts).
        if (config.report) {
          const digest = digestPath(file, config.name);
          if (writeDigest(loadSweep(dir, file, trials), digest))
            io.err(
              `grng: sweep ${config.name}: digest ${digest} written (commit it with the config)\n`,
            );
        }
      },
      {
        sweep: () => sweepSnapshot(dir),
        finished: 'sweep done',
        ...(remoteFiles ? { routes: trialFilesRoutes(dir) } : {}),
      },
    );
  } finally {
    stop.abort();
    await following?.done;
  }
  if (!table) return;
  io.out(formatSweepTable(table, config.metric.name));
  const hours = (Date.now() - started) / 3_600_000;
  io.err(
    `grng: ${trials.length} trials in ${(hours * 60).toFixed(1)} min (${(trials.length / hours).toFixed(0)} trials per hour); table in ${join(dir, 'results.csv')}, .json, .arrow\n`,
  );
  if (options.json) io.out(`${JSON.stringify(table.records)}\n`);
}

/**
 * Where workers reach this machine's server: its bound address, or its host name when bound to
 * every interface (0.0.0.0, ::), which is only a listening address.
 */
function advertisedUrl(server: ServerHandle): string {
  const everywhere = server.host === '0.0.0.0' || server.host === '::' || server.host === '';
  const host = everywhere ? hostname() : server.host;
  return `http://${host.includes(':') ? `[${host}]` : host}:${server.port}`;
}

function checkAdvertise(url: string): void {
  let parsed: URL | undefined;
  try {
    parsed = new URL(url);
  } catch {
    parsed = undefined;
  }
  if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || parsed.search)
    throw new GrngError(
      'invalid-option',
      `invalid --advertise: ${JSON.stringify(url)} (expected http://HOST:PORT, the address workers reach this machine's dashboard at)`,
      { option: 'advertise', value: url },
    );
}

/** Local workers by default: one per core (measured in docs/benchmarks.md, "Sweeps"). */
export function defaultWorkers(): number {
  return Math.max(1, availableParallelism());
}

function readConfig(file: string): SweepConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    throw new GrngError(
      'invalid-option',
      `sweep config ${file} cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
      { option: 'config', path: file },
    );
  }
  return parseSweepConfig(text, file);
}

/**
 * The sweep folder: created with the config and its trials (sweep.json); a folder holding another
 * sweep is refused, the same sweep continues only with --resume (finished trials are kept).
 */
function prepareSweepDir(
  dir: string,
  config: SweepConfig,
  trials: readonly Trial[],
  resume: boolean,
): void {
  const path = join(dir, 'sweep.json');
  const ids = trials.map((t) => t.id);
  if (existsSync(path)) {
    const before = JSON.parse(readFileSync(path, 'utf8')) as { trials?: { id: string }[] };
    const same = JSON.stringify((before.trials ?? []).map((t) => t.id)) === JSON.stringify(ids);
    if (!resume)
      throw new GrngError(
        'invalid-option',
        `--out ${dir} already holds a sweep${same ? '' : ' of other trials'}: ${same ? 'continue it with --resume' : 'choose another folder'}`,
        { option: 'out', path: dir },
      );
    if (!same)
      throw new GrngError(
        'invalid-option',
        `--resume: ${dir} holds a sweep of other trials than ${basename(dir)}'s config now makes (the config changed); start a new folder`,
        { option: 'resume', path: dir },
      );
    return;
  }
  if (resume)
    throw new GrngError('invalid-option', `--resume: ${dir} holds no sweep to continue`, {
      option: 'resume',
      path: dir,
    });
  mkdirSync(dir, { recursive: true });
  writeTextAtomically(path, `${JSON.stringify({ config, trials }, null, 2)}\n`);
}

function describe(trial: Trial): string {
  return Object.entries(trial.settings)
    .map(([k, v]) => (k === 'optimizer' ? String(v) : `${k}=${String(v)}`))
    .join(' ');
}

/**
 * SIGTERMs the trial processes still running and resolves once each has exited and its runner has
 * released its trial's lock (`pids` is kept to the running ones by onChild/onChildExit; the lock
 * is released in the microtasks after a child's exit, before the next timer).
 */
async function stopTrialProcesses(pids: ReadonlySet<number>): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // Already gone.
    }
  }
  while (pids.size > 0) await new Promise((resolve) => setTimeout(resolve, 100));
}
