import { join } from 'node:path';
import type { CliIo } from './io.js';
import { existsSync, statSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKENDS, initBackend } from '../runtime/backend.js';
import { INITIALIZERS } from '../nn/init.js';
import { parseShape } from '../data/dataset.js';
import { createOptimizer, OPTIMIZERS } from '../optim/registry.js';
import { mlp } from '../nn/sequential.js';
import { EXPORT_OUTPUTS } from '../interop/layersModel.js';
import {
  addOptimizerOptions,
  cliMessage,
  integer,
  number,
  optimizerOptionsOf,
} from './optionFlags.js';
import {
  runCompareCommand,
  runTrainCommand,
  trainOptionsOf,
  type CompareCommandOptions,
  type TrainCommandOptions,
} from './trainCommand.js';
import { runGenerateCommand, type GenerateCommandOptions } from './generateCommand.js';
import { runSweepCommand, type SweepCommandOptions } from './sweepCommand.js';
import { runWorkerCommand, type WorkerCommandOptions } from './workerCommand.js';
import { runReportCommand, type ReportCommandOptions } from './reportCommand.js';
import { isGrngError } from '../errors.js';
import { resolveTrainOptions } from '../run/options.js';
import {
  runEvaluateCommand,
  runExportCommand,
  runPredictCommand,
  type EvaluateCommandOptions,
  type ExportCommandOptions,
  type PredictCommandOptions,
} from './modelCommands.js';
import {
  runReplayCommand,
  runServeCommand,
  type ReplayCommandOptions,
  type ServeCommandOptions,
} from './replayCommand.js';

// The commands take CliIo from its own module, so none of them imports this one (no file cycle).
export type { CliIo } from './io.js';

/** A string flag that must not be blank (an empty --token would silently mean "no token"). */
const nonEmpty =
  (flag: string) =>
  (value: string): string => {
    if (value.trim() === '')
      throw new InvalidArgumentError(`${flag} must not be empty, got "${value}".`);
    return value;
  };

/** --input-shape 28x28x1: whole numbers joined by x. */
const inputShape = (value: string): number[] => {
  const shape = parseShape(value);
  if (!shape)
    throw new InvalidArgumentError(
      `--input-shape must be whole numbers ≥ 1 joined by x, e.g. 28x28x1, got "${value}".`,
    );
  return shape;
};

/** --record names a file to create; a folder there is a mistake to catch before training. */
const recordingPath = (value: string): string => {
  if (value.trim() === '')
    throw new InvalidArgumentError(`--record must name a file, got "${value}".`);
  if (value.endsWith('/') || (existsSync(value) && statSync(value).isDirectory()))
    throw new InvalidArgumentError(`--record must name a file, got the folder "${value}".`);
  return value;
};

/**
 * Flags shared by `train` and `compare`: data, model, schedule, backend, optimizer options (from
 * the optimizers' option tables).
 */
/** `--backend`, shared by every command that starts a backend. */
function backendOption(): Option {
  return new Option('--backend <name>', 'tfjs backend (env GRNG_BACKEND overrides auto)')
    .choices(['auto', ...BACKENDS])
    .default('auto');
}

/** `--wasm-threads`, shared by every command that starts a backend. */
function wasmThreadsOption(): [string, string, (value: string) => number] {
  return [
    '--wasm-threads <n>',
    'threads of the wasm backend: > 1 runs its multi-threaded build (faster only when the cores are free; env GRNG_WASM_THREADS)',
    integer('--wasm-threads', 1, 8),
  ];
}

function addRunOptions(command: Command): Command {
  command
    .option(
      '--dataset <name|path>',
      'mnist (10,000 digits), mnist-full (60,000 + 10,000), fashion-mnist (Debian package dataset-fashion-mnist), synthetic, fortunes (byte-level text, Debian package fortunes), text:PATH (any file as byte-level text), a folder of idx[.gz] files, or a .csv / .arrow / .arrows / .feather file with a "label" column and numeric features (README: Data); the text datasets need a --model gpt:... (README: Language models)',
      'mnist',
    )
    .option(
      '--context <n>',
      "bytes per window of a text dataset (fortunes, text:PATH); default and only value: the model's ctx",
      integer('--context', 1),
    )
    .option(
      '--input-shape <shape>',
      "shape of one example, e.g. 28x28x1 for a file of 784-pixel rows (batches [m, 28, 28, 1]); its product must be the feature count; replaces the dataset's own (idx images are HxWx1)",
      inputShape,
    )
    .option(
      '--model <spec>',
      'model: mlp:784-256-10 (relu between layers; mlp:784-256-10:tanh), cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10, gpt:L2-d128-h4-ctx64 (README: Model specs, Language models) or a JSON model file (default: mlp:<features>-256-<classes>)',
    )
    .option('--epochs <n>', 'passes over the training set', integer('--epochs', 1), 3)
    .option('--steps <n>', 'stop after N steps', integer('--steps', 1))
    .option('--batch-size <n>', 'rows per batch', integer('--batch-size', 1), 128)
    .addOption(
      new Option('--partial <policy>', 'last partial batch of an epoch')
        .choices(['keep', 'drop'])
        .default('keep'),
    )
    .option(
      '--seed <n>',
      'seed of initial weights, data order and label sampling',
      integer('--seed', 0),
      1,
    )
    .addOption(
      new Option('--init <kind>', 'weight initialisation')
        .choices([...INITIALIZERS])
        .default('torch'),
    )
    .addOption(backendOption())
    .option(...wasmThreadsOption())
    .option(
      '--json',
      'print the JSON summary as the last line of stdout (text datasets add testBitsPerCharacter: testLoss / ln 2)',
    )
    .option(
      '--explain-groups',
      "print each optimizer's parameter groups (which parameters its curvature preconditions, which it leaves to another optimizer) with their sizes, then exit without training",
    )
    .option(
      '--max-bad-steps <n>',
      'consecutive non-finite (NaN/Inf) steps, each skipped, before training stops with an error (default 10)',
      integer('--max-bad-steps', 1),
    );
  addOptimizerOptions(command);
  return addLiveOptions(command)
    .option(
      '--record <path>',
      'record the metrics to an Arrow IPC stream file (.arrows); compare writes one file per optimizer (NAME.OPTIMIZER.arrows)',
      recordingPath,
    )
    .option(
      '--save-model <dir>',
      'when training ends (or is stopped), write the model as a TensorFlow.js LayersModel (model.json + weights.bin, loadable with tf.loadLayersModel); compare writes DIR/OPTIMIZER (README: Saving and loading models)',
      nonEmpty('--save-model'),
    )
    .addOption(exportOutputOption())
    .option('--overwrite', 'replace an existing recording, checkpoint or saved model');
}

/** `--export-output`: what a saved model's predict returns. */
function exportOutputOption(): Option {
  return new Option(
    '--export-output <kind>',
    "what the saved model's predict returns: class probabilities (a softmax after the last layer) or grng's raw logits",
  )
    .choices([...EXPORT_OUTPUTS])
    .default('probabilities');
}

/** Flags of the dashboard server. */
function addLiveOptions(command: Command, { serveFlag = true } = {}): Command {
  if (serveFlag)
    command
      .option('--serve', 'serve the live dashboard while training (prints its URL)')
      .option('--keep-serving', 'keep serving after the run ends, until Ctrl-C')
      .option(
        '--no-keep-serving',
        'stop serving when the run ends (the default; overrides an earlier --keep-serving: npm start -- --no-keep-serving)',
      );
  return command
    .option('--port <n>', 'dashboard port (0 = any free port)', integer('--port', 0, 65535), 8080)
    .option(
      '--host <address>',
      'address to bind (default 127.0.0.1: this machine only)',
      '127.0.0.1',
    )
    .option(
      '--token <token>',
      'require this token on every dashboard connection',
      nonEmpty('--token'),
    )
    .option(
      '--max-clients <n>',
      'most dashboard WebSocket clients at once; more are refused with HTTP 503',
      integer('--max-clients', 1),
      64,
    );
}

/** The `grng` command line. Parse with `program.parseAsync(argv, { from: 'user' })`. */
export function buildProgram(io: CliIo): Command {
  const program = new Command('grng')
    .description(
      'Train neural networks with regularized natural gradients (RENG, RING, R-Kalman) and baselines, as RxJS pipelines on TensorFlow.js.',
    )
    .showSuggestionAfterError(true)
    // Commander puts "(Did you mean …?)" on a second line; every bad input is one line here.
    .configureOutput({
      writeOut: io.out,
      writeErr: io.err,
      outputError: (message, write) =>
        write(
          `grng: ${message
            .replace(/^error: /, '')
            .trimEnd()
            .replace(/\s*\n\s*/g, ' ')}\n`,
        ),
    })
    .exitOverride();

  addRunOptions(
    program.command('train').description('train a model on a dataset and print a summary'),
  )
    .addOption(
      new Option('--optimizer <name>', 'optimizer').choices([...OPTIMIZERS]).default('adamw'),
    )
    .option(
      '--eval-every <n>',
      'evaluate on the test set every N steps (always at epoch ends and the last step; 0: only there)',
      integer('--eval-every', 0),
      0,
    )
    .option(
      '--checkpoint-dir <dir>',
      'write the complete training state to this folder (atomically): every --checkpoint-every steps, at the end, and on Ctrl-C/SIGTERM',
    )
    .option(
      '--checkpoint-every <n>',
      'steps between checkpoints (default: one per epoch; needs --checkpoint-dir)',
      integer('--checkpoint-every', 1),
    )
    .option(
      '--resume <dir>',
      'continue the run checkpointed in this folder (same configuration; --epochs/--steps may extend it; appends to its recording)',
    )
    .action(async (options: TrainCommandOptions, command: Command) => {
      await runTrainCommand(options, io, (key) => command.getOptionValueSource(key));
    });

  addRunOptions(
    program
      .command('compare')
      .description(
        'train several optimizers on the same data order and initial weights; print one table',
      ),
  )
    .option(
      '--optimizers <list>',
      `comma-separated, from ${OPTIMIZERS.join(', ')}`,
      (value: string) => {
        const names = value
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
        const unknown = names.filter((n) => !(OPTIMIZERS as readonly string[]).includes(n));
        if (names.length === 0 || unknown.length > 0)
          throw new InvalidArgumentError(
            `--optimizers must list optimizers from ${OPTIMIZERS.join(', ')}, got "${value}".`,
          );
        return names;
      },
      [...OPTIMIZERS],
    )
    .option(
      '--target <accuracy>',
      'test accuracy for the epochs-to-target column',
      number('--target', { min: 0, max: 1 }),
      0.9,
    )
    .option(
      '--eval-every <n>',
      'evaluate on the test set every N steps (always at epoch ends and the last step; 0: only there); default 10, 0 for text datasets (their validation pass costs many steps)',
      integer('--eval-every', 0),
    )
    .action(async (options: CompareCommandOptions) => {
      await runCompareCommand(options, io);
    });

  program
    .command('generate')
    .description(
      'sample text from a byte-level language model (a checkpoint of grng train --model gpt:...): prints the prompt, then the generated bytes as they come',
    )
    .option('--checkpoint <dir>', 'the checkpoint folder of a trained run (--checkpoint-dir)')
    .option(
      '--model <spec>',
      'a saved token model (a LayersModel folder from grng export or --save-model), or an untrained one (gpt:L2-d128-h4-ctx64, seeded by --seed: for trying the command)',
    )
    .option('--prompt <text>', 'text to continue (empty: start from a newline)', '')
    .option('--tokens <n>', 'bytes to generate', integer('--tokens', 1), 200)
    .option(
      '--temperature <t>',
      'sample from softmax(logits / t); 0 = greedy (the most likely byte)',
      number('--temperature', { min: 0 }),
      1,
    )
    .option(
      '--seed <n>',
      'seed of the sampling (and of an untrained --model)',
      integer('--seed', 0),
      1,
    )
    .addOption(
      new Option('--init <kind>', 'weight initialisation of an untrained --model')
        .choices([...INITIALIZERS])
        .default('torch'),
    )
    .addOption(backendOption())
    .option(...wasmThreadsOption())
    .action(async (options: GenerateCommandOptions) => {
      await runGenerateCommand(options, io);
    });

  const modelSource = (command: Command): Command =>
    command
      .option(
        '--model <dir|spec>',
        'a saved TensorFlow.js LayersModel (a folder with model.json, or the model.json: grng export, --save-model, or tfjs/Keras), or an untrained spec seeded by --seed',
      )
      .option(
        '--checkpoint <dir>',
        'a training checkpoint (--checkpoint-dir): its model, weights and dataset',
      )
      .option('--seed <n>', 'seed of an untrained --model spec', integer('--seed', 0))
      .addOption(backendOption())
      .option(...wasmThreadsOption());

  modelSource(
    program
      .command('export')
      .description(
        "write a checkpoint's model as a TensorFlow.js LayersModel (model.json + weights.bin) for tf.loadLayersModel",
      ),
  )
    .requiredOption(
      '--out <dir>',
      'the folder to write model.json and weights.bin into',
      nonEmpty('--out'),
    )
    .addOption(exportOutputOption())
    .option('--overwrite', 'replace a model already in --out')
    .action(async (options: ExportCommandOptions) => {
      await runExportCommand(options, io);
    });

  modelSource(
    program
      .command('evaluate')
      .description(
        "loss, accuracy and confusion matrix of a saved model on a dataset's test split (the numbers train reports)",
      ),
  )
    .option('--dataset <name|path>', "as for train (default: the checkpoint's dataset, else mnist)")
    .option(
      '--input-shape <shape>',
      "shape of one example, as for train (default: the checkpoint's, or the model's when only the shape differs)",
      inputShape,
    )
    .addOption(
      new Option('--split <split>', 'which split to evaluate')
        .choices(['test', 'train'])
        .default('test'),
    )
    .option(
      '--batch-size <n>',
      'examples per forward pass (default: about 8,192 logits rows)',
      integer('--batch-size', 1),
    )
    .option('--json', 'also print the result as one JSON line (with the confusion matrix)')
    .action(async (options: EvaluateCommandOptions) => {
      await runEvaluateCommand(options, io);
    });

  modelSource(
    program
      .command('predict')
      .description(
        'class probabilities and the predicted class of every row of a CSV or Arrow file',
      ),
  )
    .requiredOption(
      '--input <file>',
      'rows to classify: .csv (header; numeric feature columns, an optional label column) or .arrow/.arrows/.feather (README: Data)',
      nonEmpty('--input'),
    )
    .option(
      '--out <file>',
      'write row, [label,] predicted, p0…pK to .csv, .arrow or .arrows (default: CSV on stdout)',
      nonEmpty('--out'),
    )
    .option('--batch-size <n>', 'rows per forward pass', integer('--batch-size', 1), 1024)
    .option('--overwrite', 'replace an existing --out file')
    .action(async (options: PredictCommandOptions) => {
      await runPredictCommand(options, io);
    });

  addLiveOptions(
    program
      .command('sweep')
      .description(
        'run a search (grid, random, per-optimizer spaces, seeds; successive halving) on local worker processes or BullMQ workers, and print the sweep table (README: Sweeps)',
      )
      .argument('<config>', 'sweep config (JSON), e.g. sweeps/mnist-lr.json'),
  )
    .option(
      '--out <dir>',
      'the sweep folder: trials, recordings, results (default runs/sweeps/NAME)',
      nonEmpty('--out'),
    )
    .option(
      '--workers <n>',
      'local trial processes at once (default: one per core; each trial runs one BLAS thread, so any worker count gives the same numbers)',
      integer('--workers', 1, 64),
    )
    .option(
      '--queue <url>',
      'put the trials on a BullMQ queue at redis://HOST:PORT instead; run grng worker --queue URL on each machine',
      nonEmpty('--queue'),
    )
    .option('--dry-run', 'print the trials (id and settings) and the plan, run nothing')
    .option(
      '--resume',
      'continue the sweep in --out: finished trials are kept, unfinished ones resume from their checkpoints',
    )
    .option('--json', 'also print the table as one JSON line')
    .option(
      '--advertise <url>',
      "with --queue --serve --token: the http://HOST:PORT workers on other machines reach this dashboard's trial files at (default this machine's name and --port)",
      nonEmpty('--advertise'),
    )
    .addOption(
      new Option('--backend <name>', 'tfjs backend of every trial').choices(['auto', ...BACKENDS]),
    )
    .action(async (config: string, options: SweepCommandOptions) => {
      await runSweepCommand(config, options, io, checkTrainArgv);
    });

  program
    .command('report')
    .description(
      "write docs/results.md and its SVG plots from finished sweeps: the paper's claims, each model family's tuned optimizers, the ablations (README: The evidence)",
    )
    .argument('<configs...>', 'sweep configs with a "report" block, e.g. sweeps/report/*.json')
    .option(
      '--runs <dir>',
      "where the sweeps' folders are (RUNS/NAME, grng sweep's default)",
      nonEmpty('--runs'),
      join('runs', 'sweeps'),
    )
    .option('--out <file>', 'the report', nonEmpty('--out'), join('docs', 'results.md'))
    .option(
      '--plots <dir>',
      'folder of the SVG plots (default: results/ beside --out)',
      nonEmpty('--plots'),
    )
    .option('--run', 'first run every sweep that has no results yet (resuming unfinished ones)')
    .action(async (configs: string[], options: ReportCommandOptions) => {
      await runReportCommand(configs, options, io, (config, out, resume) =>
        runSweepCommand(config, { out, resume, port: 8080, host: '127.0.0.1' }, io, checkTrainArgv),
      );
    });

  program
    .command('worker')
    .description(
      'run sweep trials from a BullMQ queue (grng sweep --queue), one process per trial, until Ctrl-C',
    )
    .requiredOption('--queue <url>', "redis://HOST:PORT of the sweep's queue", nonEmpty('--queue'))
    .option(
      '--concurrency <n>',
      'trials at once on this machine (each runs one BLAS thread: give it the cores)',
      integer('--concurrency', 1, 64),
      1,
    )
    .addOption(
      new Option(
        '--files <how>',
        "how trials' files are reached: shared (the sweep folder at the coordinator's path), http (through the coordinator's dashboard, with --token), auto (http when the coordinator serves trial files and its folder is not here)",
      )
        .choices(['auto', 'shared', 'http'])
        .default('auto'),
    )
    .option(
      '--token <token>',
      "the token grng sweep --serve was given: for trials run through the coordinator's trial files",
      nonEmpty('--token'),
    )
    .option(
      '--cache <dir>',
      "this machine's folder for trials run through trial files (default the temp folder's grng-worker)",
      nonEmpty('--cache'),
    )
    .action(async (options: WorkerCommandOptions) => {
      await runWorkerCommand(options, io);
    });

  addLiveOptions(
    program
      .command('replay')
      .description('replay recordings: a summary table, or through the dashboard')
      .argument('<files...>', 'recordings (.arrows)'),
  )
    .option(
      '--speed <n>',
      'replay pace: recorded pace × N (default: as fast as possible)',
      number('--speed'),
    )
    .option('--summary', 'print a per-run summary table (the default without --serve)')
    .action(async (files: string[], options: ReplayCommandOptions) => {
      await runReplayCommand(files, options, io);
    });

  addLiveOptions(
    program
      .command('serve')
      .description(
        'serve the dashboard for every recording in a folder, following those still being written and new ones (a sweep folder: its trials and the sweep view)',
      )
      .argument('<dir>', 'folder of recordings (.arrows)'),
    { serveFlag: false },
  ).action(async (dir: string, options: ServeCommandOptions) => {
    await runServeCommand(dir, options, io);
  });

  // Commander's "too many arguments … got 1" does not say which word; name it, since it is
  // often a value given to a flag that takes none (`--nesterov 1`).
  for (const command of program.commands) command.allowExcessArguments(true);
  program.hook('preAction', (_program, action) => {
    const takes = action.registeredArguments;
    if (takes.at(-1)?.variadic) return;
    const stray = action.args[takes.length];
    if (stray === undefined) return;
    const expected =
      takes.length === 0
        ? 'it takes only options'
        : `it takes ${takes.map((a) => `<${a.name()}>`).join(' ')} and options`;
    action.error(
      `unexpected argument ${JSON.stringify(stray)} for '${action.name()}' (${expected}; flags such as --json take no value)`,
      { code: 'commander.excessArguments' },
    );
  });

  return program;
}

/**
 * Checks a sweep trial's `grng train` arguments as train would, without training: the flags and
 * their values (commander), then the options the train command resolves (optimizer options, the
 * model); the problem's one line, or undefined.
 */
async function checkTrainArgv(argv: readonly string[]): Promise<string | undefined> {
  let said = '';
  const checker = buildProgram({
    out: () => undefined,
    err: (t) => void (said += t),
    isTTY: false,
  });
  const train = checker.commands.find((c) => c.name() === 'train')!;
  train.action((options: TrainCommandOptions) => {
    resolveTrainOptions({ ...trainOptionsOf(options, options.optimizer) });
    // Option values are checked where the optimizer is built: on a 2-2-2 probe, as compare does.
    const probe = mlp({ inputs: 2, layers: [{ units: 2 }, { units: 2 }], seed: 0 });
    try {
      createOptimizer(options.optimizer, probe, optimizerOptionsOf(options));
    } finally {
      probe.dispose();
    }
  });
  // The probe needs a backend; the coordinator trains nothing, so the plain cpu one does.
  await initBackend('cpu');
  try {
    await checker.parseAsync(['train', ...argv], { from: 'user' });
    return undefined;
  } catch (error) {
    if (isGrngError(error)) return cliMessage(error);
    return said.replace(/^grng: /, '').trim() || (error as Error).message;
  }
}
