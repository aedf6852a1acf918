import type { CurvatureOptions, DampingRule } from '../curvature/options.js';
import { GrngError, invalidOption } from '../errors.js';
import { modelFamily, type ModelFamily } from '../nn/modelFamily.js';
import type { Sequential } from '../nn/sequential.js';
import { ADAMW_OPTIONS, adamw, type AdamwOptions } from './adamw.js';
import { KFAC_OPTIONS, kfac, type KfacOptions } from './kfac.js';
import { namedDefaults, optionKeys, type OptionTable, type OptionValues } from './optionSpec.js';
import { RENG_OPTIONS, reng, type RengOptions } from './reng.js';
import { RING_OPTIONS, ring, type RingOptions } from './ring.js';
import { RKALMAN_OPTIONS, rkalman, type RkalmanOptions } from './rkalman.js';
import { SGD_OPTIONS, sgd, type SgdOptions } from './sgd.js';
import { SOPHIA_OPTIONS, sophia, type SophiaOptions } from './sophia.js';
import type { GradientTransformation } from './transform.js';
import { partition } from './partition.js';
import { curvatureBlocks } from '../curvature/blocks/index.js';

/** Optimizers reachable by name from the CLI, `train` and `compare`. */
export const OPTIMIZERS = ['sgd', 'adamw', 'kfac', 'ring', 'reng', 'rkalman', 'sophia'] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

/**
 * Options every named optimizer may receive (plain values: what a CLI or a recording holds); each
 * accepts the ones in its option table. Derived from the tables, so an option added to one is here.
 */
export type NamedOptimizerOptions = Flatten<
  OptionValues<typeof SGD_OPTIONS> &
    OptionValues<typeof ADAMW_OPTIONS> &
    OptionValues<typeof KFAC_OPTIONS> &
    OptionValues<typeof RING_OPTIONS> &
    OptionValues<typeof RENG_OPTIONS> &
    OptionValues<typeof RKALMAN_OPTIONS> &
    OptionValues<typeof SOPHIA_OPTIONS>
>;
type Flatten<T> = { [K in keyof T]: T[K] };

/** A named optimizer, ready for the pipeline: what it needs upstream of `update`. */
export interface NamedOptimizer {
  readonly name: OptimizerName;
  readonly options: NamedOptimizerOptions;
  readonly transform: GradientTransformation<unknown>;
  /** forwardBackward must emit per-layer signals (and per-sample losses). */
  readonly needsSignals: boolean;
  /** fisherScan must run before update, with this damping rule and these options. */
  readonly curvature?: { readonly damping: DampingRule; readonly options: CurvatureOptions };
  /**
   * The parameter groups (see partition): group name → parameter keys. One group, named after
   * the optimizer, unless a curvature optimizer meets parameters without a curvature block; those
   * go to an `adamw` group with AdamW's defaults.
   */
  readonly groups: Readonly<Record<string, readonly string[]>>;
}

interface Entry {
  /** Its option table: the keys it accepts, their defaults by name, bounds and flags. */
  readonly options: OptionTable;
  readonly build: (
    model: Sequential,
    options: NamedOptimizerOptions,
  ) => GradientTransformation<unknown> & { curvature?: NamedOptimizer['curvature'] };
  readonly needsSignals: boolean;
  /**
   * It works on the parameters of curvature blocks only (the K-FAC family, R-Kalman); the rest need
   * a group of their own.
   */
  readonly blocksOnly?: boolean;
}

/** Each named optimizer's table and constructor; the defaults by name are the tables' (`named`). */
const REGISTRY: Record<OptimizerName, Entry> = {
  sgd: { options: SGD_OPTIONS, build: (_, o) => sgd(o as SgdOptions), needsSignals: false },
  adamw: { options: ADAMW_OPTIONS, build: (_, o) => adamw(o as AdamwOptions), needsSignals: false },
  kfac: {
    options: KFAC_OPTIONS,
    build: (m, o) => kfac(m, o as KfacOptions),
    needsSignals: true,
    blocksOnly: true,
  },
  ring: {
    options: RING_OPTIONS,
    build: (m, o) => ring(m, o as RingOptions),
    needsSignals: true,
    blocksOnly: true,
  },
  reng: {
    options: RENG_OPTIONS,
    build: (m, o) => reng(m, o as RengOptions),
    needsSignals: true,
    blocksOnly: true,
  },
  rkalman: {
    options: RKALMAN_OPTIONS,
    build: (m, o) => rkalman(m, o as RkalmanOptions),
    needsSignals: true,
    blocksOnly: true,
  },
  sophia: {
    options: SOPHIA_OPTIONS,
    build: (m, o) => sophia({ ...(o as Omit<SophiaOptions, 'model'>), model: m }),
    needsSignals: false,
  },
};

/** The option table of a named optimizer. */
export function optimizerOptionTable(name: OptimizerName): OptionTable {
  return REGISTRY[name].options;
}

/** Every named optimizer's option table, in {@link OPTIMIZERS} order. */
export function optimizerOptionTables(): Readonly<Record<OptimizerName, OptionTable>> {
  return Object.fromEntries(OPTIMIZERS.map((name) => [name, REGISTRY[name].options])) as Record<
    OptimizerName,
    OptionTable
  >;
}

/** Whether a named optimizer takes an option (e.g. `seed`, to pass the run's seed along). */
export function acceptsOption(name: OptimizerName, key: keyof NamedOptimizerOptions): boolean {
  return Object.hasOwn(REGISTRY[name].options, key);
}

/** The defaults of a named optimizer. */
export function optimizerDefaults(name: OptimizerName): NamedOptimizerOptions {
  return namedDefaults(REGISTRY[name].options) as NamedOptimizerOptions;
}

/**
 * Resolved options of a named optimizer: its defaults overridden by what was given. With
 * `lenient`, options it does not accept are dropped (for `compare`, where one flag set serves
 * several optimizers) instead of being an error.
 */
export function resolveOptimizerOptions(
  name: string,
  options: NamedOptimizerOptions = {},
  { lenient = false, family = 'dense' }: { lenient?: boolean; family?: ModelFamily } = {},
): NamedOptimizerOptions {
  if (!(OPTIMIZERS as readonly string[]).includes(name))
    invalidOption('optimizer', name, `one of ${OPTIMIZERS.join(', ')}`);
  const table = REGISTRY[name as OptimizerName].options;
  const resolved: Record<string, unknown> = namedDefaults(table, family);
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (!Object.hasOwn(table, key)) {
      if (lenient) continue;
      // The context names the option itself, so the CLI can put its flag in front.
      throw new GrngError(
        'invalid-option',
        `invalid option ${key} for optimizer ${name}: ${JSON.stringify(value)} (${name} takes only ${optionKeys(table).join(', ')})`,
        { option: key, value, optimizer: name },
      );
    }
    resolved[key] = value;
  }
  return resolved as NamedOptimizerOptions;
}

/**
 * Builds a named optimizer for a model, with its defaults; unknown names and options are errors.
 */
export function createOptimizer(
  name: string,
  model: Sequential,
  options: NamedOptimizerOptions = {},
  { lenient = false } = {},
): NamedOptimizer {
  const resolved = resolveOptimizerOptions(name, options, { lenient, family: modelFamily(model) });
  const entry = REGISTRY[name as OptimizerName];
  const built = entry.build(model, resolved);
  const keys = Object.keys(model.params);
  const blockKeys = new Set(
    entry.blocksOnly ? curvatureBlocks(model).flatMap((block) => block.params) : keys,
  );
  const rest = keys.filter((key) => !blockKeys.has(key));
  // Parameters without a block (embeddings, norms: docs/algorithms.md) take AdamW with its named
  // defaults, as kfac-jax and SOAP leave them to a first-order method; the optimizer's own
  // diagnostics (learning rate, damping) keep their names.
  const transform =
    rest.length === 0
      ? built
      : partition({
          transforms: { [name]: built, adamw: adamw(optimizerDefaults('adamw') as AdamwOptions) },
          label: (key) => (blockKeys.has(key) ? name : 'adamw'),
          primary: name,
        });
  return {
    name: name as OptimizerName,
    options: resolved,
    transform,
    needsSignals: entry.needsSignals,
    groups:
      rest.length === 0
        ? { [name]: keys }
        : { [name]: keys.filter((key) => blockKeys.has(key)), adamw: rest },
    ...(built.curvature ? { curvature: built.curvature } : {}),
  };
}
