import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKENDS } from '../backend.js';
import { INITIALIZERS } from '../nn/init.js';
import { OPTIMIZERS } from '../optim/registry.js';
import { runTrainCommand, type TrainCommandOptions } from './trainCommand.js';

/** Where the CLI writes; injectable so tests can run it in-process. */
export interface CliIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly isTTY: boolean;
}

const number = (flag: string) => (value: string): number => {
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed)) throw new InvalidArgumentError(`${flag} must be a number, got "${value}".`);
  return parsed;
};

const integer = (flag: string, min: number) => (value: string): number => {
  const parsed = Number(value);
  if (!/^-?\d+$/.test(value.trim()) || parsed < min) throw new InvalidArgumentError(`${flag} must be an integer ≥ ${min}, got "${value}".`);
  return parsed;
};

/** The `grng` command line. Parse with `program.parseAsync(argv)`. */
export function buildProgram(io: CliIo): Command {
  const program = new Command('grng')
    .description('Train neural networks with regularized natural gradients (RENG, RING, R-Kalman) and baselines, as RxJS pipelines on TensorFlow.js.')
    .showSuggestionAfterError(true)
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride();

  program
    .command('train')
    .description('train a model on a dataset and print a summary')
    .addOption(new Option('--dataset <name>', 'dataset').choices(['mnist', 'synthetic']).default('mnist'))
    .option('--model <spec>', 'model spec, e.g. mlp:784-256-10 (relu between layers) or mlp:784-256-10:tanh (default: mlp:<features>-256-<classes>)')
    .addOption(new Option('--optimizer <name>', 'optimizer').choices([...OPTIMIZERS]).default('adamw'))
    .option('--lr <number>', 'learning rate (default: sgd 0.05, adamw 1e-3)', number('--lr'))
    .option('--momentum <number>', 'SGD momentum (default 0.9)', number('--momentum'))
    .option('--nesterov', 'SGD Nesterov momentum')
    .option('--weight-decay <number>', 'weight decay (default: sgd 0, adamw 1e-2)', number('--weight-decay'))
    .option('--b1 <number>', 'AdamW β₁ (default 0.9)', number('--b1'))
    .option('--b2 <number>', 'AdamW β₂ (default 0.999)', number('--b2'))
    .option('--eps <number>', 'AdamW ε (default 1e-8)', number('--eps'))
    .option('--epochs <n>', 'passes over the training set', integer('--epochs', 1), 3)
    .option('--steps <n>', 'stop after N steps', integer('--steps', 1))
    .option('--batch-size <n>', 'rows per batch', integer('--batch-size', 1), 128)
    .addOption(new Option('--partial <policy>', 'last partial batch of an epoch').choices(['keep', 'drop']).default('keep'))
    .option('--seed <n>', 'seed of initial weights and data order', integer('--seed', 0), 1)
    .addOption(new Option('--init <kind>', 'weight initialisation').choices([...INITIALIZERS]).default('torch'))
    .option('--eval-every <n>', 'evaluate on the test set every N steps (always at epoch ends)', integer('--eval-every', 0), 0)
    .addOption(new Option('--backend <name>', 'tfjs backend (env GRNG_BACKEND overrides auto)').choices(['auto', ...BACKENDS]).default('auto'))
    .option('--json', 'print one JSON summary object as the last line of stdout')
    .action(async (options: TrainCommandOptions) => {
      await runTrainCommand(options, io);
    });

  return program;
}
