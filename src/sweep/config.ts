import { createHash } from 'node:crypto';
import seedrandom from 'seedrandom';
import { GrngError } from '../errors.js';
import type { Trial } from './types.js';

/** A value a flag takes in a sweep: what `grng train --flag VALUE` would be given. */
export type FlagValue = string | number | boolean;

/** A search axis: a list of values, or (random search) a range to draw from. */
export type Axis =
  | readonly FlagValue[]
  | {
      readonly min: number;
      readonly max: number;
      readonly log?: boolean;
      readonly integer?: boolean;
    };

/** Successive halving: every configuration to the first rung, the best 1/reduction on, … */
export interface Halving {
  /** Step budgets of the rungs before the last; the last rung is the full run. */
  readonly rungs: readonly number[];
  /** Keep the best ⌈n / reduction⌉ configurations of each optimizer at each rung; default 3. */
  readonly reduction: number;
}

/**
 * A sweep as its JSON file says it (README: Sweeps). Keys are `grng train`'s flags without the
 * dashes (`lr`, `batch-size`, `damping`), so a trial is exactly a `grng train` command line.
 */
export interface SweepConfig {
  readonly name: string;
  /** Flags every trial has (dataset, model, epochs or steps, eval-every, …). */
  readonly base: Readonly<Record<string, FlagValue>>;
  /** Per optimizer, its own axes (each its own learning-rate grid: equal tuning budgets). */
  readonly optimizers: Readonly<Record<string, Readonly<Record<string, Axis>>>>;
  /** Axes every optimizer shares. */
  readonly space: Readonly<Record<string, Axis>>;
  /** Seeds: every configuration runs once per seed. */
  readonly seeds: readonly number[];
  /** `grid` (every combination) or `random` (`samples` draws per optimizer, seeded). */
  readonly search:
    | { readonly kind: 'grid' }
    | { readonly kind: 'random'; readonly samples: number; readonly seed: number };
  /** The metric trials are ranked by, and whether higher is better. */
  readonly metric: { readonly name: SweepMetricName; readonly higherIsBetter: boolean };
  readonly halving?: Halving;
  /** Steps between checkpoints of a trial (what a retried trial repeats at most); default 50. */
  readonly checkpointEvery: number;
  /** How `grng report` presents this sweep (docs/results.md); no effect on running it. */
  readonly report?: ReportSpec;
}

/**
 * A sweep's place in the report: a comparison of tuned optimizers, or an ablation of one choice
 * (its `defaults` mark the library's default value of each varied setting).
 */
export interface ReportSpec {
  readonly kind: 'comparison' | 'ablation';
  readonly title: string;
  /** What the ablation asks, in a sentence. */
  readonly question?: string;
  /** The library's default of each setting the sweep varies (ablations), e.g. {"ring-norm": "mean"}. */
  readonly defaults?: Readonly<Record<string, FlagValue>>;
  /** A metric value to reach, for "time to target" (comparisons). */
  readonly target?: number;
}

export const SWEEP_METRICS = ['testAccuracy', 'testLoss', 'finalLoss'] as const;
export type SweepMetricName = (typeof SWEEP_METRICS)[number];

const TOP_KEYS = [
  'name',
  'base',
  'optimizers',
  'space',
  'seeds',
  'search',
  'metric',
  'halving',
  'checkpointEvery',
  'report',
];

/** Flags a sweep sets itself for each trial; a config may not. */
export const SWEEP_OWNED_FLAGS = [
  'optimizer',
  'optimizers',
  'seed',
  'checkpoint-dir',
  'checkpoint-every',
  'resume',
  'record',
  'json',
  'serve',
  'keep-serving',
  'save-model',
  'overwrite',
];

/**
 * Reads a sweep config (JSON), checking its structure; every problem is one line naming the file
 * and the key (`sweeps/a.json: optimizers.ring.lr must be a non-empty list of values or a range
 * {min, max}`). Whether each flag exists and takes its values is checked against `grng train`
 * by the CLI, which knows the flags.
 *
 * @example
 * const config = parseSweepConfig(readFileSync('sweeps/mnist-lr.json', 'utf8'), 'sweeps/mnist-lr.json');
 */
export function parseSweepConfig(text: string, source: string): SweepConfig {
  const fail = (key: string, problem: string): never => {
    throw new GrngError('invalid-option', `${source}: ${key} ${problem}`, {
      option: 'config',
      path: source,
      key,
    });
  };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    fail('(the file)', `is not JSON (${(error as Error).message})`);
  }
  if (!isObject(value))
    return fail('(the file)', 'must be an object { "base": …, "optimizers": … }');
  const unknown = Object.keys(value).find((key) => !TOP_KEYS.includes(key));
  if (unknown) fail(unknown, `is not a sweep key (one of ${TOP_KEYS.join(', ')})`);
  const name = value.name ?? 'sweep';
  if (typeof name !== 'string' || !/^[\w.-]{1,64}$/.test(name))
    fail('name', 'must be 1–64 letters, digits, "_", "-" or "."');
  const base = flags(value.base ?? {}, 'base', fail);
  if (!isObject(value.optimizers) || Object.keys(value.optimizers).length === 0)
    fail('optimizers', 'must name at least one optimizer, each with its axes ({} for none)');
  const optimizers = Object.fromEntries(
    Object.entries(value.optimizers as Record<string, unknown>).map(([optimizer, axes]) => [
      optimizer,
      axesOf(axes, `optimizers.${optimizer}`, fail),
    ]),
  );
  const space = axesOf(value.space ?? {}, 'space', fail);
  const seeds = value.seeds ?? [1];
  if (
    !Array.isArray(seeds) ||
    seeds.length === 0 ||
    !seeds.every((s) => Number.isSafeInteger(s) && s >= 0) ||
    new Set(seeds).size !== seeds.length
  )
    fail('seeds', 'must be a non-empty list of different whole numbers ≥ 0');
  const search = searchOf(value.search ?? 'grid', fail);
  const randomAxes = [
    ...Object.entries(space).map(([key, axis]) => [`space.${key}`, axis] as const),
    ...Object.entries(optimizers).flatMap(([optimizer, axes]) =>
      Object.entries(axes).map(([key, axis]) => [`optimizers.${optimizer}.${key}`, axis] as const),
    ),
  ].filter(([, axis]) => !Array.isArray(axis));
  if (search.kind === 'grid' && randomAxes.length > 0)
    fail(
      randomAxes[0]![0],
      'is a range {min, max}: a grid needs a list (or use "search": {"random": N})',
    );
  const metricName = value.metric ?? 'testAccuracy';
  if (!(SWEEP_METRICS as readonly unknown[]).includes(metricName))
    fail('metric', `must be one of ${SWEEP_METRICS.join(', ')}`);
  const halving = value.halving === undefined ? undefined : halvingOf(value.halving, fail);
  const report = value.report === undefined ? undefined : reportOf(value.report, fail);
  const checkpointEvery = value.checkpointEvery ?? 50;
  if (!Number.isSafeInteger(checkpointEvery) || (checkpointEvery as number) < 1)
    fail('checkpointEvery', 'must be a whole number ≥ 1');
  for (const key of [
    ...Object.keys(base),
    ...Object.keys(space),
    ...Object.values(optimizers).flatMap(Object.keys),
  ])
    if (SWEEP_OWNED_FLAGS.includes(key))
      fail(
        key,
        `is set by the sweep for each trial (${key === 'seed' ? 'use "seeds"' : key === 'optimizer' ? 'use "optimizers"' : 'leave it out'})`,
      );
  return {
    name: name as string,
    base,
    optimizers,
    space,
    seeds: seeds as number[],
    search,
    metric: { name: metricName as SweepMetricName, higherIsBetter: metricName === 'testAccuracy' },
    ...(halving ? { halving } : {}),
    checkpointEvery: checkpointEvery as number,
    ...(report ? { report } : {}),
  };
}

/**
 * The trials of a sweep, in a stable order (optimizer, then configuration, then seed): a grid
 * takes every combination of each optimizer's axes with the shared ones; random search draws
 * `samples` configurations per optimizer from a generator seeded by the config. Each trial is
 * every configuration × every seed, and its id the hash of its flags.
 *
 * @example
 * expandTrials(config).map((t) => t.id);
 */
export function expandTrials(config: SweepConfig): Trial[] {
  const trials: Trial[] = [];
  for (const [optimizer, own] of Object.entries(config.optimizers)) {
    const axes = { ...config.space, ...own };
    const configurations =
      config.search.kind === 'grid'
        ? grid(axes as Record<string, readonly FlagValue[]>)
        : draws(axes, config.search.samples, `${config.search.seed}:${optimizer}`);
    for (const varied of configurations)
      for (const seed of config.seeds) {
        const settings = { optimizer, ...varied, seed };
        const flagsOf = { ...config.base, ...settings };
        trials.push({ id: trialId(flagsOf), settings, options: flagsOf });
      }
  }
  const seen = new Map<string, Trial>();
  for (const trial of trials) {
    const before = seen.get(trial.id);
    if (before)
      throw new GrngError(
        'invalid-option',
        `sweep ${config.name}: two trials have the same flags (${JSON.stringify(trial.settings)}); a value is listed twice`,
        { option: 'config' },
      );
    seen.set(trial.id, trial);
  }
  return trials;
}

/** 12 hex digits of the SHA-256 of the flags in key order: the same run, the same id. */
export function trialId(flagsOf: Readonly<Record<string, FlagValue>>): string {
  const canonical = JSON.stringify(
    Object.keys(flagsOf)
      .sort()
      .map((key) => [key, flagsOf[key]]),
  );
  return createHash('sha256').update(canonical).digest('hex').slice(0, 12);
}

/** A trial's `grng train` arguments (without the ones the sweep adds: checkpoint, record, json). */
export function trialArgv(options: Readonly<Record<string, unknown>>): string[] {
  return Object.entries(options).flatMap(([key, value]) =>
    value === true ? [`--${key}`] : value === false ? [] : [`--${key}`, String(value)],
  );
}

function grid(axes: Readonly<Record<string, readonly FlagValue[]>>): Record<string, FlagValue>[] {
  return Object.entries(axes).reduce<Record<string, FlagValue>[]>(
    (combinations, [key, values]) =>
      combinations.flatMap((combination) => values.map((v) => ({ ...combination, [key]: v }))),
    [{}],
  );
}

function draws(
  axes: Readonly<Record<string, Axis>>,
  samples: number,
  seed: string,
): Record<string, FlagValue>[] {
  const random = seedrandom(`grng-sweep-${seed}`);
  const draw = (): Record<string, FlagValue> =>
    Object.fromEntries(
      Object.entries(axes).map(([key, axis]) => {
        if (Array.isArray(axis)) return [key, axis[Math.floor(random() * axis.length)]!];
        const { min, max, log, integer } = axis as Exclude<Axis, readonly FlagValue[]>;
        const u = random();
        let v = log
          ? Math.exp(Math.log(min) + u * (Math.log(max) - Math.log(min)))
          : min + u * (max - min);
        // Four significant digits: the id and the table stay readable, and the draw stays a draw.
        v = integer ? Math.round(v) : Number(v.toPrecision(4));
        return [key, v];
      }),
    );
  // Distinct configurations: a small list axis would repeat a draw, and a repeated trial is one
  // trial. A space with fewer configurations than asked gives what it has.
  const seen = new Map<string, Record<string, FlagValue>>();
  for (let attempt = 0; seen.size < samples && attempt < samples * 50; attempt++) {
    const configuration = draw();
    const key = JSON.stringify(configuration);
    if (!seen.has(key)) seen.set(key, configuration);
  }
  return [...seen.values()];
}

function flags(
  value: unknown,
  key: string,
  fail: (key: string, problem: string) => never,
): Record<string, FlagValue> {
  if (!isObject(value)) return fail(key, 'must be an object of flags, e.g. { "dataset": "mnist" }');
  for (const [flag, v] of Object.entries(value)) {
    if (flag.startsWith('-')) fail(`${key}.${flag}`, 'must be written without dashes');
    if (!['string', 'number', 'boolean'].includes(typeof v))
      fail(`${key}.${flag}`, 'must be a string, number or true/false');
  }
  return value as Record<string, FlagValue>;
}

function axesOf(
  value: unknown,
  key: string,
  fail: (key: string, problem: string) => never,
): Record<string, Axis> {
  if (!isObject(value)) return fail(key, 'must be an object of axes, e.g. { "lr": [0.01, 0.1] }');
  for (const [flag, axis] of Object.entries(value)) {
    const where = `${key}.${flag}`;
    if (flag.startsWith('-')) fail(where, 'must be written without dashes');
    if (Array.isArray(axis)) {
      if (
        axis.length === 0 ||
        !axis.every((v) => ['string', 'number', 'boolean'].includes(typeof v))
      )
        fail(where, 'must be a non-empty list of values or a range {min, max}');
      if (new Set(axis).size !== axis.length) fail(where, 'lists a value twice');
    } else if (isObject(axis)) {
      const { min, max, log, integer, ...rest } = axis;
      const extra = Object.keys(rest)[0];
      if (extra) fail(`${where}.${extra}`, 'is not a range key (min, max, log, integer)');
      if (
        typeof min !== 'number' ||
        typeof max !== 'number' ||
        !(min < max) ||
        !Number.isFinite(max)
      )
        fail(where, 'must have numbers min < max');
      if (log === true && (min as number) <= 0) fail(where, 'is a log range, so min must be > 0');
      if (log !== undefined && typeof log !== 'boolean')
        fail(`${where}.log`, 'must be true or false');
      if (integer !== undefined && typeof integer !== 'boolean')
        fail(`${where}.integer`, 'must be true or false');
    } else fail(where, 'must be a non-empty list of values or a range {min, max}');
  }
  return value as Record<string, Axis>;
}

function searchOf(
  value: unknown,
  fail: (key: string, problem: string) => never,
): SweepConfig['search'] {
  if (value === 'grid') return { kind: 'grid' };
  if (isObject(value) && Object.keys(value).every((k) => k === 'random' || k === 'seed')) {
    const samples = value.random;
    const seed = value.seed ?? 1;
    if (!Number.isSafeInteger(samples) || (samples as number) < 1)
      fail('search.random', 'must be the number of draws per optimizer (a whole number ≥ 1)');
    if (!Number.isSafeInteger(seed) || (seed as number) < 0)
      fail('search.seed', 'must be a whole number ≥ 0');
    return { kind: 'random', samples: samples as number, seed: seed as number };
  }
  return fail('search', 'must be "grid" or { "random": N, "seed": S }');
}

function halvingOf(value: unknown, fail: (key: string, problem: string) => never): Halving {
  if (!isObject(value)) return fail('halving', 'must be { "rungs": [steps, …], "reduction": 3 }');
  const extra = Object.keys(value).find((k) => k !== 'rungs' && k !== 'reduction');
  if (extra) fail(`halving.${extra}`, 'is not a halving key (rungs, reduction)');
  const rungs = value.rungs;
  if (
    !Array.isArray(rungs) ||
    rungs.length === 0 ||
    !rungs.every((r, i) => Number.isSafeInteger(r) && r >= 1 && (i === 0 || r > rungs[i - 1]))
  )
    fail('halving.rungs', 'must be increasing step budgets ≥ 1, e.g. [100, 300]');
  const reduction = value.reduction ?? 3;
  if (typeof reduction !== 'number' || !(reduction > 1))
    fail('halving.reduction', 'must be a number > 1 (keep the best 1/reduction at each rung)');
  return { rungs: rungs as number[], reduction: reduction as number };
}

function reportOf(value: unknown, fail: (key: string, problem: string) => never): ReportSpec {
  if (!isObject(value))
    return fail('report', 'must be { "kind": "comparison" | "ablation", "title": … }');
  const keys = ['kind', 'title', 'question', 'defaults', 'target'];
  const extra = Object.keys(value).find((k) => !keys.includes(k));
  if (extra) fail(`report.${extra}`, `is not a report key (${keys.join(', ')})`);
  if (value.kind !== 'comparison' && value.kind !== 'ablation')
    fail('report.kind', 'must be "comparison" or "ablation"');
  if (typeof value.title !== 'string' || value.title.trim() === '')
    fail('report.title', 'must be a non-empty string');
  if (value.question !== undefined && typeof value.question !== 'string')
    fail('report.question', 'must be a string');
  if (
    value.target !== undefined &&
    !(typeof value.target === 'number' && Number.isFinite(value.target))
  )
    fail('report.target', 'must be a number');
  const defaults =
    value.defaults === undefined ? undefined : flags(value.defaults, 'report.defaults', fail);
  return {
    kind: value.kind as ReportSpec['kind'],
    title: value.title as string,
    ...(typeof value.question === 'string' ? { question: value.question } : {}),
    ...(defaults ? { defaults } : {}),
    ...(typeof value.target === 'number' ? { target: value.target } : {}),
  };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
