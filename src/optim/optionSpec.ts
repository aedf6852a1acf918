import { GrngError } from '../errors.js';
import { checkOption, type ValueRule } from '../validate.js';
import { familyDefault, type ModelFamily } from '../nn/modelFamily.js';
import { checkHyper, type Hyper } from './schedules.js';

/**
 * What an option table says about one option besides its values: where it is set from the CLI,
 * what it does and its defaults. The table's key is the option's name in the library.
 */
interface Described<V> {
  /** The CLI flag. Optimizers that share a key share its flag (`--lr` sets every learningRate). */
  readonly flag: `--${string}`;
  /** One phrase for `--help`; the CLI adds the optimizers that take it and their defaults. */
  readonly help: string;
  /** The constructor's default; absent where the constructor requires the option. */
  readonly default?: V;
  /**
   * The default when the optimizer is picked by name (registry, CLI), where it differs from the
   * constructor's: e.g. SGD's momentum 0.9 of the reference runs against `sgd()`'s 0.
   */
  readonly named?: V;
  /**
   * The default for a model with a convolutional layer ({@link ModelFamily} `conv`), where the
   * measurement on the benchmark CNN chose another value than for MLPs (docs/algorithms.md).
   */
  readonly conv?: V;
  /** The default for a transformer ({@link ModelFamily} `transformer`), where measured apart. */
  readonly transformer?: V;
  /**
   * `false`: picking the optimizer by name leaves the option out of its resolved options (and so
   * out of recordings' hyper-parameters) unless given; the constructor's default applies. Holds
   * for the options the registry never listed, so recordings keep the hyper-parameters they had.
   */
  readonly listed?: false;
  /** The flag is the run's (`--seed`), which hands its value to optimizers that take the key. */
  readonly runFlag?: true;
  /** The flag's value placeholder in `--help` and commander's messages; default number, n, kind. */
  readonly placeholder?: string;
}

export type NumberOptionSpec = Extract<ValueRule, { kind: 'number' }> &
  Described<number> & {
    /**
     * Also a {@link Schedule} (number | (step) => number) in the library; the CLI gives a number.
     */
    readonly schedule?: true;
  };
export type IntegerOptionSpec = Extract<ValueRule, { kind: 'integer' }> &
  Described<number> & {
    /**
     * Where the flag's parser starts accepting when it is below `min`: the constructor then rejects
     * the rest with its own wording (`invalid --kalman-rows: 0`, as it always has).
     */
    readonly flagMin?: number;
  };
export type BooleanOptionSpec = Extract<ValueRule, { kind: 'boolean' }> & Described<boolean>;
export type ChoiceOptionSpec = Extract<ValueRule, { kind: 'choice' }> & Described<string>;
export type OptionSpec =
  NumberOptionSpec | IntegerOptionSpec | BooleanOptionSpec | ChoiceOptionSpec;

/** One optimizer's options, in the order they are listed, validated and shown. */
export type OptionTable = Readonly<Record<string, OptionSpec>>;

/** The plain value of an option (a number, never a schedule: what a CLI or a recording holds). */
export type PlainValue<S> = S extends {
  readonly kind: 'choice';
  readonly choices: readonly (infer C)[];
}
  ? C
  : S extends { readonly kind: 'boolean' }
    ? boolean
    : number;
/** The value a constructor reads: a schedule where the table allows one. */
export type OptionValue<S> = S extends { readonly schedule: true } ? Hyper : PlainValue<S>;
/** The option object a table describes, every option optional, plain values only. */
export type OptionValues<T extends OptionTable> = { readonly [K in keyof T]?: PlainValue<T[K]> };

/**
 * Reads one option for a constructor: the given value or the table's default, checked against
 * the table's bounds or choices (each failure names the option and the value).
 *
 * @example
 * const momentum = readOption(SGD_OPTIONS, options, 'momentum'); // 0 unless given; [0, 1)
 */
export function readOption<T extends OptionTable, K extends keyof T & string>(
  table: T,
  options: object,
  key: K,
  family: ModelFamily = 'dense',
): OptionValue<T[K]> {
  const spec: OptionSpec = table[key]!;
  const value =
    (options as Record<string, unknown>)[key] ??
    familyDefault<unknown>(spec, family) ??
    spec.default;
  if (spec.kind === 'number' && spec.schedule) {
    return checkHyper(key, value, {
      min: spec.min ?? -Infinity,
      max: spec.max ?? Infinity,
      minExclusive: spec.minExclusive ?? false,
    }) as OptionValue<T[K]>;
  }
  return checkOption(key, spec, value) as OptionValue<T[K]>;
}

/** The option keys of a table, for `checkKeys` and the registry. */
export function optionKeys(table: OptionTable): string[] {
  return Object.keys(table);
}

/** The default an option has when its optimizer is picked by name, for a model family. */
export function namedDefault(
  spec: OptionSpec,
  family: ModelFamily = 'dense',
): number | boolean | string | undefined {
  return familyDefault<number | boolean | string>(spec, family) ?? spec.named ?? spec.default;
}

/**
 * The options picking an optimizer by name fills in: every listed option with a default (the
 * model family's where it has one).
 */
export function namedDefaults(
  table: OptionTable,
  family: ModelFamily = 'dense',
): Record<string, number | boolean | string> {
  const defaults: Record<string, number | boolean | string> = {};
  for (const [key, spec] of Object.entries(table)) {
    const value = namedDefault(spec, family);
    if (spec.listed !== false && value !== undefined) defaults[key] = value;
  }
  return defaults;
}

/** One CLI flag and every optimizer option it sets. */
export interface OptionFlag {
  readonly flag: string;
  readonly key: string;
  /** The first optimizer's spec: kind, placeholder and the parser's bounds (equal for all). */
  readonly spec: OptionSpec;
  /** Each optimizer that takes the option, with its spec, in the order given. */
  readonly takenBy: readonly { readonly optimizer: string; readonly spec: OptionSpec }[];
}

/**
 * The flags of a set of option tables (one per optimizer), in order of first appearance, each
 * with the optimizers that take it; run flags (`--seed`) are left out. A key with two flags, or
 * a flag with two keys, kinds, choice lists or integer bounds, is a programming error.
 */
export function optionFlags(tables: Readonly<Record<string, OptionTable>>): OptionFlag[] {
  const byFlag = new Map<
    string,
    {
      flag: string;
      key: string;
      spec: OptionSpec;
      takenBy: { optimizer: string; spec: OptionSpec }[];
    }
  >();
  const flagOfKey = new Map<string, string>();
  for (const [optimizer, table] of Object.entries(tables)) {
    for (const [key, spec] of Object.entries(table)) {
      const known = flagOfKey.get(key);
      if (known !== undefined && known !== spec.flag)
        throw new GrngError(
          'internal',
          `option ${key} has two flags: ${known} and ${spec.flag} (${optimizer})`,
          { option: key },
        );
      flagOfKey.set(key, spec.flag);
      if (spec.runFlag) continue;
      const entry = byFlag.get(spec.flag);
      if (!entry) {
        byFlag.set(spec.flag, { flag: spec.flag, key, spec, takenBy: [{ optimizer, spec }] });
        continue;
      }
      if (entry.key !== key || !sameParser(entry.spec, spec))
        throw new GrngError(
          'internal',
          `flag ${spec.flag} means different things for ${entry.takenBy[0]!.optimizer} and ${optimizer}`,
          { option: key },
        );
      entry.takenBy.push({ optimizer, spec });
    }
  }
  return [...byFlag.values()];
}

/** Whether two specs give a flag the same parser (kind, integer bounds, choices, placeholder). */
function sameParser(a: OptionSpec, b: OptionSpec): boolean {
  if (a.kind !== b.kind || a.placeholder !== b.placeholder) return false;
  if (a.kind === 'integer' && b.kind === 'integer')
    return (a.flagMin ?? a.min) === (b.flagMin ?? b.min) && a.max === b.max;
  if (a.kind === 'choice' && b.kind === 'choice') return a.choices.join() === b.choices.join();
  return true;
}

/**
 * The `--help` text of a flag: its phrase, the optimizers that take it and their defaults by
 * name, e.g. `learning rate η (default: sgd/kfac 0.05, adamw 1e-3)` or `damping λ (kfac, ring,
 * reng; default 1e-3)`. Optimizers whose tables word it differently get a clause each.
 */
export function flagHelp(flag: OptionFlag): string {
  const byHelp = new Map<string, { optimizer: string; spec: OptionSpec }[]>();
  for (const taker of flag.takenBy)
    byHelp.set(taker.spec.help, [...(byHelp.get(taker.spec.help) ?? []), taker]);
  return [...byHelp]
    .map(([help, takers]) => {
      const names = takers.map((t) => t.optimizer);
      if (flag.spec.kind === 'boolean') return `${help} (${names.join(', ')})`;
      const byDefault = new Map<string, string[]>();
      for (const t of takers) {
        const conv = t.spec.conv === undefined ? '' : `, conv nets ${formatDefault(t.spec.conv)}`;
        const transformer =
          t.spec.transformer === undefined
            ? ''
            : `, transformers ${formatDefault(t.spec.transformer)}`;
        const shown = formatDefault(namedDefault(t.spec)) + conv + transformer;
        byDefault.set(shown, [...(byDefault.get(shown) ?? []), t.optimizer]);
      }
      if (byDefault.size === 1)
        return `${help} (${names.join(', ')}; default ${[...byDefault.keys()][0]})`;
      return `${help} (default: ${[...byDefault].map(([shown, who]) => `${who.join('/')} ${shown}`).join(', ')})`;
    })
    .join('; ');
}

/** A default as the docs write it: the shorter of 0.001 and 1e-3. */
export function formatDefault(value: number | boolean | string | undefined): string {
  if (typeof value !== 'number') return String(value ?? 'none');
  const plain = String(value);
  const exponential = value.toExponential().replace('e+', 'e');
  return exponential.length < plain.length ? exponential : plain;
}

/**
 * ρ, the gradient-regularisation strength the three GRNG optimizers share (RING's damping term,
 * RENG's Hg weight, R-Kalman's prior shrinkage): one entry, so its flag, bounds and default are
 * written once. Default 0.1 [ours: tune].
 */
export const GRADIENT_REGULARIZATION_OPTION = {
  kind: 'number',
  min: 0,
  default: 0.1,
  flag: '--rho',
  help: 'gradient-regularisation strength ρ',
} as const satisfies NumberOptionSpec;
