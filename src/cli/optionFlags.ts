import { InvalidArgumentError, Option, type Command } from 'commander';
import type { GrngError } from '../errors.js';
import { flagHelp, optionFlags, type OptionFlag } from '../optim/optionSpec.js';
import { optimizerOptionTables, type NamedOptimizerOptions } from '../optim/registry.js';

/** A flag's number parser: the one line commander prints names the flag and the value. */
export const number =
  (flag: string, { min = -Infinity, max = Infinity } = {}) =>
  (value: string): number => {
    const parsed = Number(value);
    if (value.trim() === '' || !Number.isFinite(parsed))
      throw new InvalidArgumentError(`${flag} must be a number, got "${value}".`);
    if (parsed < min || parsed > max)
      throw new InvalidArgumentError(
        `${flag} must be a number in [${min}, ${max}], got "${value}".`,
      );
    return parsed;
  };

export const integer =
  (flag: string, min: number, max = Number.MAX_SAFE_INTEGER) =>
  (value: string): number => {
    const parsed = Number(value);
    const range = max < Number.MAX_SAFE_INTEGER ? `≥ ${min} and ≤ ${max}` : `≥ ${min}`;
    if (!/^-?\d+$/.test(value.trim()) || parsed < min || parsed > max)
      throw new InvalidArgumentError(`${flag} must be an integer ${range}, got "${value}".`);
    return parsed;
  };

/**
 * The optimizer flags of `train` and `compare`, one per option key, derived from the optimizers'
 * option tables: a number flag's bounds are checked by the optimizer (`invalid --lr: -1 (…)`),
 * an integer flag's by its parser, a choice's by commander.
 */
export const OPTIMIZER_FLAGS: readonly OptionFlag[] = optionFlags(optimizerOptionTables());

function optimizerOption({ flag, spec, ...rest }: OptionFlag): Option {
  const help = flagHelp({ flag, spec, ...rest });
  switch (spec.kind) {
    case 'boolean':
      return new Option(flag, help);
    case 'choice':
      return new Option(`${flag} <${spec.placeholder ?? 'kind'}>`, help).choices(spec.choices);
    case 'integer':
      return new Option(`${flag} <${spec.placeholder ?? 'n'}>`, help).argParser(
        integer(flag, spec.flagMin ?? spec.min, spec.max),
      );
    case 'number':
      return new Option(`${flag} <${spec.placeholder ?? 'number'}>`, help).argParser(number(flag));
  }
}

/**
 * Adds the optimizer flags to a command, without commander defaults: an option not typed is the
 * optimizer's default by name (its help says which), and a resumed run tells typed from default.
 */
export function addOptimizerOptions(command: Command): Command {
  for (const flag of OPTIMIZER_FLAGS)
    command.addOption(
      optimizerOption(flag).helpGroup(
        'Optimizer options (for the optimizers named; train rejects one its optimizer does not take, compare ignores it there):',
      ),
    );
  return command;
}

/** Where commander puts each optimizer flag's value (`--stats-decay` → statsDecay). */
const ATTRIBUTES = OPTIMIZER_FLAGS.map((f) => ({
  key: f.key,
  attribute: new Option(f.flag).attributeName(),
}));

/**
 * The optimizer options among the parsed flags of `train` / `compare`, keyed as the library names
 * them.
 */
export function optimizerOptionsOf(parsed: object): NamedOptimizerOptions {
  const values = parsed as Record<string, unknown>;
  return Object.fromEntries(
    ATTRIBUTES.filter(({ attribute }) => values[attribute] !== undefined).map(
      ({ key, attribute }) => [key, values[attribute]],
    ),
  ) as NamedOptimizerOptions;
}

/**
 * The CLI flag that sets each library option. The library names its own options in errors
 * (`invalid learningRate: -1`); a CLI user typed `--lr -1`, so the CLI translates before it
 * prints. Keys are the `option` a GrngError carries in its context.
 */
export const FLAG_OF_OPTION: Readonly<Record<string, string>> = {
  // train / compare
  dataset: '--dataset',
  context: '--context',
  inputShape: '--input-shape',
  model: '--model',
  epochs: '--epochs',
  steps: '--steps',
  batchSize: '--batch-size',
  partial: '--partial',
  seed: '--seed',
  init: '--init',
  backend: '--backend',
  optimizer: '--optimizer',
  evalEvery: '--eval-every',
  targetAccuracy: '--target',
  // recording, replay, dashboard server
  record: '--record',
  speed: '--speed',
  port: '--port',
  host: '--host',
  token: '--token',
  maxClients: '--max-clients',
  // checkpoints and faults
  resume: '--resume',
  checkpointDir: '--checkpoint-dir',
  checkpointEvery: '--checkpoint-every',
  maxBadSteps: '--max-bad-steps',
  wasmThreads: '--wasm-threads',
  // saved models: export, evaluate, predict, --save-model
  saveModel: '--save-model',
  'saveModel.dir': '--save-model',
  output: '--export-output',
  'saveModel.output': '--export-output',
  checkpoint: '--checkpoint',
  input: '--input',
  out: '--out',
  // optimizer options: each key's flag, from the optimizers' option tables
  ...Object.fromEntries(
    Object.values(optimizerOptionTables()).flatMap((table) =>
      Object.entries(table).map(([key, spec]) => [key, spec.flag]),
    ),
  ),
};

/**
 * The one line the CLI prints for a GrngError: the library's message with the library option
 * replaced by the flag that set it (`invalid --lr: -1 (…)`), or the flag put in front when the
 * message words it otherwise (`--model: invalid model spec …`). Line breaks become spaces.
 *
 * @example
 * cliMessage(new GrngError('invalid-option', 'invalid rows: 0 (expected an integer ≥ 1)', { option: 'rows', value: 0 })); // 'invalid --kalman-rows: 0 (expected an integer ≥ 1)'
 */
export function cliMessage(error: GrngError): string {
  const message = error.message.trim().replace(/\s*\n\s*/g, ' ');
  const option = error.context.option;
  const flag =
    typeof option === 'string' && Object.hasOwn(FLAG_OF_OPTION, option)
      ? FLAG_OF_OPTION[option]!
      : undefined;
  if (!flag || message.includes(flag)) return message;
  const libraryWording = `invalid ${option as string}: `;
  if (message.startsWith(libraryWording))
    return `invalid ${flag}: ${message.slice(libraryWording.length)}`;
  return `${flag}: ${message}`;
}
