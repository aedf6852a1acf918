import type { Initializer } from '../nn/init.js';
import type { RunSummary } from '../sinks/summarize.js';
import { createOptimizer } from '../optim/registry.js';
import { initBackend, type BackendChoice } from '../runtime/backend.js';
import { mlp } from '../nn/sequential.js';
import { progressBar } from '../sinks/progressBar.js';
import { formatSummaryTable } from '../sinks/summaryTable.js';
import { train, type TrainOptions } from '../run/train.js';
import type { CliIo } from './io.js';
import { liveSink, newRunId, withLive, type LiveOptions } from './live.js';
import { optimizerOptionsOf } from './optionFlags.js';
import type { RunHub } from '../sinks/runHub.js';
import { randomUUID } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { disposeCheckpoint, loadCheckpoint } from '../run/checkpoint.js';
import { GrngError } from '../errors.js';
import { RunControl } from '../run/runControl.js';
import { reopenRecording, type ReopenedRecording } from '../sinks/reopenRecording.js';
import { handleStopSignals } from './gracefulStop.js';
import { hasCheckpoint, prepareCheckpointDir } from '../sinks/checkpointFile.js';
import { isTextDataset } from '../run/options.js';
import { explainGroups } from './explainGroups.js';

/** Flags shared by `train` and `compare`, as commander parses them. */
export interface RunCommandOptions extends LiveOptions {
  /**
   * mnist, mnist-full, fashion-mnist, synthetic, fortunes, text:PATH, a folder of idx files or a
   * dataset file path.
   */
  readonly dataset: string;
  /** --context: bytes per window of a text dataset (the model's ctx). */
  readonly context?: number;
  /** --input-shape 28x28x1, parsed. */
  readonly inputShape?: number[];
  readonly model?: string;
  readonly epochs: number;
  readonly steps?: number;
  readonly batchSize: number;
  readonly partial: 'keep' | 'drop';
  readonly seed: number;
  readonly init: Initializer;
  /** Undefined: compare's default (10 steps, 0 for text datasets). */
  readonly evalEvery?: number;
  readonly backend: BackendChoice;
  readonly wasmThreads?: number;
  readonly json?: boolean;
  readonly maxBadSteps?: number;
  /** --explain-groups: print the optimizer's parameter groups instead of training. */
  readonly explainGroups?: boolean;
  /** --save-model DIR: write the trained model as a LayersModel (compare: DIR/OPTIMIZER). */
  readonly saveModel?: string | undefined;
  /** --export-output: what the saved model's predict returns. */
  readonly exportOutput?: 'probabilities' | 'logits';
  // The optimizer flags (--lr, --momentum, ...) come from the option tables: optimizerOptionsOf
  // reads them.
}

export interface TrainCommandOptions extends RunCommandOptions {
  readonly optimizer: string;
  readonly checkpointDir?: string;
  readonly checkpointEvery?: number;
  readonly resume?: string;
}

export interface CompareCommandOptions extends RunCommandOptions {
  readonly optimizers: string[];
  readonly target: number;
}

/** The fields `train --json` prints, in this order (compare adds the rest of the summary). */
export const JSON_FIELDS = [
  'optimizer',
  'backend',
  'dataset',
  'steps',
  'epochs',
  'finalLoss',
  'testAccuracy',
  'testLoss',
  'msPerStep',
  'samplesPerSecond',
  'meanGradNorm',
] as const;

export function trainOptionsOf(
  options: RunCommandOptions,
  optimizer: string,
  extra: Partial<TrainOptions> = {},
): TrainOptions {
  return dropUndefined({
    dataset: options.dataset,
    context: options.context,
    inputShape: options.inputShape,
    model: options.model,
    init: options.init,
    optimizer,
    optimizerOptions: optimizerOptionsOf(options),
    epochs: options.epochs,
    steps: options.steps,
    batchSize: options.batchSize,
    partial: options.partial,
    seed: options.seed,
    evalEvery: options.evalEvery,
    backend: options.backend,
    wasmThreads: options.wasmThreads,
    maxBadSteps: options.maxBadSteps,
    saveModel: options.saveModel
      ? {
          dir: options.saveModel,
          ...(options.exportOutput ? { output: options.exportOutput } : {}),
        }
      : undefined,
    ...extra,
  }) as TrainOptions;
}

/**
 * A LayersModel already in a --save-model folder is kept unless --overwrite says otherwise,
 * checked before training so that an hour of it is not lost to the refusal.
 */
function checkSaveModelDirs(dirs: readonly string[], overwrite: boolean | undefined): void {
  for (const dir of dirs) {
    // The folder, or the first of its parents that exists, must be a folder (compare's DIR/sgd
    // under a file DIR would fail only after training).
    let existing = dir;
    while (!existsSync(existing) && dirname(existing) !== existing) existing = dirname(existing);
    if (!statSync(existing).isDirectory())
      throw new GrngError(
        'invalid-option',
        `--save-model ${dir}: ${existing} is a file, not a folder`,
        { option: 'saveModel', path: existing },
      );
    const saved = join(dir, 'model.json');
    if (existsSync(saved) && !overwrite)
      throw new GrngError(
        'invalid-option',
        `--save-model ${dir} already holds a model (${saved}): replace it with --overwrite, or choose another folder`,
        { option: 'saveModel', path: saved },
      );
  }
}

interface LiveRun {
  readonly options: LiveOptions;
  readonly hub: RunHub | undefined;
  readonly many: boolean;
  readonly group?: string;
  readonly control: RunControl;
  readonly resumed?: ReopenedRecording;
  readonly runId?: string;
}

async function runOne(trainOptions: TrainOptions, io: CliIo, live: LiveRun): Promise<RunSummary> {
  return train({ ...trainOptions, control: live.control }, (meta) => {
    const from =
      meta.startStep > 0 ? `, resuming at step ${meta.startStep} from ${meta.resumedFrom}` : '';
    io.err(
      `grng: backend ${meta.backend} (${meta.backendDetail}); ${meta.model} (${meta.parameters} parameters) on ${meta.dataset}, ${meta.optimizer} ${JSON.stringify(meta.optimizerOptions)}, ${meta.totalSteps} steps${from}\n`,
    );
    for (const note of meta.modelNotes ?? []) io.err(`grng: ${meta.model}: ${note}\n`);
    const groups = Object.entries(meta.groups);
    // Said only when it is not the whole model: which parameters the optimizer leaves to another.
    // A transformer has dozens, so a long group is counted here and listed by --explain-groups.
    if (groups.length > 1)
      io.err(
        `grng: parameter groups: ${groups.map(([group, keys]) => `${group} (${keys.length > 4 ? `${keys.length} parameters` : keys.join(', ')})`).join('; ')}${groups.some(([, keys]) => keys.length > 4) ? ' (--explain-groups lists them)' : ''}\n`,
      );
    const bar = progressBar({ total: meta.totalSteps, label: meta.optimizer });
    const arrow = liveSink(meta, live.options, live.hub, meta.optimizer, live.many, {
      ...(live.group ? { group: live.group } : {}),
      ...(live.runId ? { id: live.runId } : {}),
      ...(live.resumed ? { resumed: live.resumed } : {}),
      control: live.control,
    });
    return arrow ? (rows) => rows.pipe(arrow, bar) : bar;
  });
}

/** Where a flag's value came from (commander): `cli` when typed, `default` otherwise. */
export type OptionSource = (key: string) => string | undefined;

export async function runTrainCommand(
  options: TrainCommandOptions,
  io: CliIo,
  sourceOf: OptionSource = () => 'cli',
): Promise<void> {
  if (options.explainGroups) {
    if (options.resume)
      throw new GrngError(
        'invalid-option',
        '--explain-groups takes the run configuration from the flags, not --resume',
        { option: 'resume' },
      );
    await explainGroups([trainOptionsOf(options, options.optimizer)], io, options.json ?? false);
    return;
  }
  if (options.checkpointEvery !== undefined && !options.checkpointDir && !options.resume) {
    throw new GrngError(
      'invalid-option',
      '--checkpoint-every needs --checkpoint-dir (where to write the checkpoints)',
      { option: 'checkpointEvery' },
    );
  }
  if (options.checkpointDir !== undefined) {
    // Checked here too (prepareRun checks it for API callers): an empty value never reaches it.
    prepareCheckpointDir(options.checkpointDir);
    // Another run's checkpoint is not replaced by accident.
    if (
      options.checkpointDir !== options.resume &&
      hasCheckpoint(options.checkpointDir) &&
      !options.overwrite
    ) {
      throw new GrngError(
        'invalid-option',
        `--checkpoint-dir ${options.checkpointDir} already holds a checkpoint: continue it with --resume ${options.checkpointDir}, or replace it with --overwrite`,
        { option: 'checkpointDir' },
      );
    }
  }
  if (options.saveModel) checkSaveModelDirs([options.saveModel], options.overwrite);
  const checkpointDir = options.checkpointDir ?? options.resume;
  const control = new RunControl();
  const restoreSignals = handleStopSignals(io, control);
  const stopWatching = stopWithParent(control);
  let summary!: RunSummary;
  try {
    const checkpoint = options.resume ? loadCheckpoint(options.resume) : undefined;
    let trainOptions: TrainOptions;
    let resumed: ReopenedRecording | undefined;
    let live: LiveOptions = options;
    let runId: string | undefined;
    try {
      trainOptions = checkpoint
        ? { ...trainOptionsOfGiven(options, sourceOf, checkpoint.backend), resume: checkpoint }
        : trainOptionsOf(options, options.optimizer);
      if (checkpointDir)
        trainOptions = {
          ...trainOptions,
          checkpoint: {
            dir: checkpointDir,
            ...(options.checkpointEvery ? { every: options.checkpointEvery } : {}),
          },
        };
      // A resumed run appends to the recording its checkpoint names, unless told otherwise.
      const recordPath = options.record ?? checkpoint?.recording?.path;
      if (checkpoint && recordPath) {
        if (existsSync(recordPath)) {
          resumed = reopenRecording(recordPath, checkpoint.step);
          if (resumed.lastStep < checkpoint.step)
            io.err(
              `grng: warning: ${recordPath} ends at step ${resumed.lastStep}, the checkpoint at ${checkpoint.step}: steps ${resumed.lastStep + 1}–${checkpoint.step} are missing from it\n`,
            );
        } else {
          io.err(
            `grng: warning: recording ${recordPath} of the checkpointed run is gone; starting a new one\n`,
          );
        }
        live = { ...options, record: recordPath };
      }
      runId =
        resumed?.run.id ??
        (recordPath || options.serve
          ? newRunId(checkpoint?.run.optimizer ?? options.optimizer)
          : undefined);
      if (recordPath && runId)
        trainOptions = { ...trainOptions, recording: { path: recordPath, runId } };
    } catch (error) {
      if (checkpoint) disposeCheckpoint(checkpoint);
      throw error;
    }
    // The report comes when training is done, before any --keep-serving.
    const report = (): void => {
      restoreSignals();
      if (control.stopReason)
        io.err(
          `grng: stopped by ${control.stopReason} after ${summary.steps} steps${checkpointDir ? `; checkpoint in ${checkpointDir} (continue with --resume ${checkpointDir})` : ' (no --checkpoint-dir: not checkpointed)'}\n`,
        );
      printSummaries(
        io,
        formatSummaryTable([summary]),
        options.json ? jsonSummary(summary, JSON_FIELDS) : undefined,
      );
    };
    await withLive(
      live,
      io,
      async (hub) => {
        summary = await runOne(trainOptions, io, {
          options: live,
          hub,
          many: false,
          control,
          ...(resumed ? { resumed } : {}),
          ...(runId ? { runId } : {}),
        });
      },
      { stopped: () => control.stopRequested, done: report, finished: 'training done' },
    );
  } finally {
    restoreSignals();
    stopWatching();
  }
}

/**
 * With GRNG_STOP_WITH_PARENT=1 (a sweep's trial process), a run whose parent process has gone
 * (its runner was killed; the process is re-parented) stops after its current step and
 * checkpoints, as on Ctrl-C: the runner that takes the trial over resumes it, with no second
 * process writing the same files.
 */
function stopWithParent(control: RunControl): () => void {
  if (process.env.GRNG_STOP_WITH_PARENT !== '1') return () => undefined;
  const parent = process.ppid;
  const timer = setInterval(() => {
    if (process.ppid !== parent) control.requestStop('its parent process exiting');
  }, 500);
  timer.unref();
  return () => clearInterval(timer);
}

/**
 * The JSON summary fields of a run; a text dataset adds testBitsPerCharacter, the test loss (nats
 * per byte) in bits, the figure character-level language-model results quote.
 */
function jsonSummary(summary: RunSummary, fields: readonly (keyof RunSummary)[]): object {
  const json: Record<string, unknown> = Object.fromEntries(fields.map((k) => [k, summary[k]]));
  if (isTextDataset(summary.dataset))
    json.testBitsPerCharacter = summary.testLoss === null ? null : summary.testLoss / Math.LN2;
  return json;
}

/** The table on stdout; with --json the table goes to stderr and the JSON is stdout's last line. */
function printSummaries(io: CliIo, table: string, json: unknown): void {
  if (json === undefined) {
    io.out(`${table}\n`);
    return;
  }
  io.err(`${table}\n`);
  io.out(`${JSON.stringify(json)}\n`);
}

/**
 * Builds every optimizer of a comparison once on a 2-2-2 model, so a bad value for any of them is
 * an error before the first one trains rather than when its turn comes.
 */
async function checkEveryOptimizer(options: CompareCommandOptions): Promise<void> {
  await initBackend(
    options.backend,
    options.wasmThreads === undefined ? {} : { wasmThreads: options.wasmThreads },
  );
  const probe = mlp({ inputs: 2, layers: [{ units: 2 }, { units: 2 }], seed: 0 });
  try {
    for (const optimizer of options.optimizers)
      createOptimizer(optimizer, probe, optimizerOptionsOf(options), { lenient: true });
  } finally {
    probe.dispose();
  }
}

/**
 * The options of a resumed run the user actually typed (commander fills in defaults for the
 * rest, which must not be mistaken for changes to the checkpoint's configuration).
 */
function trainOptionsOfGiven(
  options: TrainCommandOptions,
  sourceOf: OptionSource,
  checkpointBackend: string,
): TrainOptions {
  const typed = Object.fromEntries(
    Object.entries(options).filter(
      ([key]) => sourceOf(key) !== 'default' && sourceOf(key) !== undefined,
    ),
  ) as unknown as TrainCommandOptions;
  // The backend the run was on, unless another is asked for: the trajectory then repeats exactly.
  const backend =
    sourceOf('backend') === 'default' && !process.env.GRNG_BACKEND
      ? (checkpointBackend as BackendChoice)
      : options.backend;
  const given = trainOptionsOf({ ...typed, backend } as TrainCommandOptions, typed.optimizer);
  const optimizerOptions = given.optimizerOptions ?? {};
  const { optimizerOptions: _dropped, ...rest } = given;
  return Object.keys(optimizerOptions).length > 0 ? { ...rest, optimizerOptions } : rest;
}

/**
 * Trains each optimizer in turn with the same seed (so the same initial weights, data order and
 * label samples) and prints one table; options an optimizer does not take are ignored for it.
 * Ctrl-C/SIGTERM stops the optimizer in progress after its current step and skips the rest.
 */
export async function runCompareCommand(options: CompareCommandOptions, io: CliIo): Promise<void> {
  if (options.explainGroups) {
    await explainGroups(
      options.optimizers.map((optimizer) =>
        trainOptionsOf(options, optimizer, { lenientOptions: true }),
      ),
      io,
      options.json ?? false,
    );
    return;
  }
  const saveDir = (optimizer: string): string | undefined =>
    options.saveModel === undefined ? undefined : join(options.saveModel, optimizer);
  if (options.saveModel)
    checkSaveModelDirs(options.optimizers.map(saveDir) as string[], options.overwrite);
  const summaries: RunSummary[] = [];
  const group = `compare-${randomUUID().slice(0, 8)}`;
  await checkEveryOptimizer(options);
  const control = new RunControl();
  const restoreSignals = handleStopSignals(io, control);
  try {
    // The table comes when training is done, before any --keep-serving.
    const report = (): void => {
      restoreSignals();
      if (control.stopReason)
        io.err(
          `grng: stopped by ${control.stopReason}; ${summaries.length} of ${options.optimizers.length} optimizers run\n`,
        );
      const fields = [
        ...JSON_FIELDS,
        'meanUpdateGradCorrelation',
        'epochsToTarget',
        'secondsToTarget',
      ] as const;
      printSummaries(
        io,
        formatSummaryTable(summaries, { targetAccuracy: options.target }),
        options.json ? summaries.map((s) => jsonSummary(s, fields)) : undefined,
      );
    };
    await withLive(
      options,
      io,
      async (hub) => {
        for (const optimizer of options.optimizers) {
          if (control.stopRequested) break;
          summaries.push(
            await runOne(
              trainOptionsOf({ ...options, saveModel: saveDir(optimizer) }, optimizer, {
                lenientOptions: true,
                targetAccuracy: options.target,
                evalEvery: compareEvalEvery(options),
              }),
              io,
              { options, hub, many: true, group, control },
            ),
          );
        }
      },
      { stopped: () => control.stopRequested, done: report, finished: 'training done' },
    );
  } finally {
    restoreSignals();
  }
}

/**
 * Compare evaluates every 10 steps for its curves, but a text dataset's validation pass (every
 * window, every position) costs many training steps, so there it is the last step and epoch ends
 * unless --eval-every says otherwise.
 */
function compareEvalEvery(options: CompareCommandOptions): number {
  return options.evalEvery ?? (isTextDataset(options.dataset) ? 0 : 10);
}

function dropUndefined<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as {
    [K in keyof T]: Exclude<T[K], undefined>;
  };
}
