import type { CurvatureOptions, DampingRule, InverseMethod } from '../curvature/options.js';
import { GrngError, invalidOption } from '../errors.js';
import type { Sequential } from '../nn/sequential.js';
import { adamw, type AdamwOptions } from './adamw.js';
import { kfac, type KfacOptions } from './kfac.js';
import { reng, type RengOptions } from './reng.js';
import { ring, type RingOptions } from './ring.js';
import { rkalman, type RkalmanOptions } from './rkalman.js';
import { sgd, type SgdOptions } from './sgd.js';
import { sophia, type SophiaOptions } from './sophia.js';
import type { GradientTransformation } from './transform.js';

/** Optimizers reachable by name from the CLI, `train` and `compare`. */
export const OPTIMIZERS = ['sgd', 'adamw', 'kfac', 'ring', 'reng', 'rkalman', 'sophia'] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

/** Options every named optimizer may receive; each accepts the ones it knows. */
export interface NamedOptimizerOptions {
  readonly learningRate?: number;
  readonly momentum?: number;
  readonly nesterov?: boolean;
  readonly weightDecay?: number;
  readonly b1?: number;
  readonly b2?: number;
  readonly eps?: number;
  readonly damping?: number;
  readonly rho?: number;
  readonly klClip?: number;
  readonly fisher?: 'sampled' | 'empirical';
  readonly beta?: number;
  readonly statsEvery?: number;
  readonly inverseEvery?: number;
  readonly newtonTolerance?: number;
  readonly newtonMaxIterations?: number;
  readonly newtonWarmTrials?: number;
  readonly inverse?: InverseMethod;
  readonly ringNorm?: 'mean' | 'step';
  readonly hvp?: 'double-backprop' | 'finite-difference';
  readonly seed?: number;
  readonly gamma?: number;
  readonly hessianEvery?: number;
  readonly rows?: number;
  readonly p0?: number;
  readonly r0?: number;
  readonly fading?: number;
  readonly processNoise?: number;
  readonly betaR?: number;
  readonly rMin?: number;
  readonly pMin?: number;
}

/** A named optimizer, ready for the pipeline: what it needs upstream of `update`. */
export interface NamedOptimizer {
  readonly name: OptimizerName;
  readonly options: NamedOptimizerOptions;
  readonly transform: GradientTransformation<unknown>;
  /** forwardBackward must emit per-layer signals (and per-sample losses). */
  readonly needsSignals: boolean;
  /** fisherScan must run before update, with this damping rule and these options. */
  readonly curvature?: { readonly damping: DampingRule; readonly options: CurvatureOptions };
}

const CURVATURE = ['damping', 'klClip', 'fisher', 'beta', 'statsEvery', 'inverseEvery', 'newtonTolerance', 'newtonMaxIterations', 'newtonWarmTrials', 'inverse', 'seed', 'learningRate', 'momentum', 'weightDecay'] as const;

interface Entry {
  readonly defaults: NamedOptimizerOptions;
  readonly accepts: readonly (keyof NamedOptimizerOptions)[];
  readonly build: (model: Sequential, options: NamedOptimizerOptions) => GradientTransformation<unknown> & { curvature?: NamedOptimizer['curvature'] };
  readonly needsSignals: boolean;
}

/**
 * Defaults when an optimizer is picked by name. SGD's momentum 0.9 and η = 0.05 are the settings
 * of the reference runs (the `sgd()` function itself keeps PyTorch's momentum 0); the
 * natural-gradient defaults are the spec's (§4).
 */
const REGISTRY: Record<OptimizerName, Entry> = {
  sgd: {
    defaults: { learningRate: 0.05, momentum: 0.9, nesterov: false, weightDecay: 0 },
    accepts: ['learningRate', 'momentum', 'nesterov', 'weightDecay'],
    build: (_, o) => sgd(o as SgdOptions),
    needsSignals: false,
  },
  adamw: {
    defaults: { learningRate: 1e-3, weightDecay: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8 },
    accepts: ['learningRate', 'weightDecay', 'b1', 'b2', 'eps'],
    build: (_, o) => adamw(o as AdamwOptions),
    needsSignals: false,
  },
  kfac: {
    defaults: { learningRate: 0.05, damping: 1e-3, momentum: 0.9, klClip: 1e-3, weightDecay: 0, fisher: 'sampled', beta: 0.95, statsEvery: 1, inverseEvery: 10 },
    accepts: [...CURVATURE],
    build: (m, o) => kfac(m, o as KfacOptions),
    needsSignals: true,
  },
  ring: {
    defaults: { learningRate: 0.05, damping: 1e-3, rho: 0.1, ringNorm: 'mean', momentum: 0.9, klClip: 1e-3, weightDecay: 0, fisher: 'sampled', beta: 0.95, statsEvery: 1, inverseEvery: 10 },
    accepts: [...CURVATURE, 'rho', 'ringNorm'],
    build: (m, o) => ring(m, o as RingOptions),
    needsSignals: true,
  },
  reng: {
    defaults: { learningRate: 0.05, damping: 1e-3, rho: 0.1, hvp: 'double-backprop', momentum: 0.9, klClip: 1e-3, weightDecay: 0, fisher: 'sampled', beta: 0.95, statsEvery: 1, inverseEvery: 10 },
    accepts: [...CURVATURE, 'rho', 'hvp'],
    build: (m, o) => reng(m, o as RengOptions),
    needsSignals: true,
  },
  rkalman: {
    defaults: { learningRate: 1, rows: 32, p0: 0.1, r0: 1, fading: 0.999, processNoise: 0, rho: 0.1, betaR: 0.99, rMin: 1e-2, pMin: 1e-6 },
    accepts: ['learningRate', 'rows', 'p0', 'r0', 'fading', 'processNoise', 'rho', 'betaR', 'rMin', 'pMin'],
    build: (m, o) => rkalman(m, o as RkalmanOptions),
    needsSignals: true,
  },
  sophia: {
    defaults: { learningRate: 1e-3, b1: 0.965, b2: 0.99, gamma: 0.04, weightDecay: 0.1, eps: 1e-12, hessianEvery: 10 },
    accepts: ['learningRate', 'b1', 'b2', 'gamma', 'weightDecay', 'eps', 'hessianEvery', 'seed'],
    build: (m, o) => sophia({ ...(o as Omit<SophiaOptions, 'model'>), model: m }),
    needsSignals: false,
  },
};

/** Whether a named optimizer takes an option (e.g. `seed`, to pass the run's seed along). */
export function acceptsOption(name: OptimizerName, key: keyof NamedOptimizerOptions): boolean {
  return REGISTRY[name].accepts.includes(key);
}

/** The defaults of a named optimizer. */
export function optimizerDefaults(name: OptimizerName): NamedOptimizerOptions {
  return REGISTRY[name].defaults;
}

/**
 * Resolved options of a named optimizer: its defaults overridden by what was given. With
 * `lenient`, options it does not accept are dropped (for `compare`, where one flag set serves
 * several optimizers) instead of being an error.
 */
export function resolveOptimizerOptions(name: string, options: NamedOptimizerOptions = {}, { lenient = false } = {}): NamedOptimizerOptions {
  if (!(OPTIMIZERS as readonly string[]).includes(name)) invalidOption('optimizer', name, `one of ${OPTIMIZERS.join(', ')}`);
  const entry = REGISTRY[name as OptimizerName];
  const resolved: Record<string, unknown> = { ...entry.defaults };
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (!entry.accepts.includes(key as keyof NamedOptimizerOptions)) {
      if (lenient) continue;
      // The context names the option itself, so the CLI can put its flag in front.
      throw new GrngError('invalid-option', `invalid option ${key} for optimizer ${name}: ${JSON.stringify(value)} (${name} takes only ${entry.accepts.join(', ')})`, { option: key, value, optimizer: name });
    }
    resolved[key] = value;
  }
  return resolved as NamedOptimizerOptions;
}

/** Builds a named optimizer for a model, with its defaults; unknown names and options are errors. */
export function createOptimizer(name: string, model: Sequential, options: NamedOptimizerOptions = {}, { lenient = false } = {}): NamedOptimizer {
  const resolved = resolveOptimizerOptions(name, options, { lenient });
  const entry = REGISTRY[name as OptimizerName];
  const transform = entry.build(model, resolved);
  return {
    name: name as OptimizerName,
    options: resolved,
    transform,
    needsSignals: entry.needsSignals,
    ...(transform.curvature ? { curvature: transform.curvature } : {}),
  };
}
