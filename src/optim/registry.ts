import { invalidOption } from '../errors.js';
import { adamw, type AdamwOptions } from './adamw.js';
import { sgd, type SgdOptions } from './sgd.js';
import type { GradientTransformation } from './transform.js';

/** Optimizers reachable by name from the CLI and `train`. */
export const OPTIMIZERS = ['sgd', 'adamw'] as const;
export type OptimizerName = (typeof OPTIMIZERS)[number];

/** Options every named optimizer may receive; each takes the ones it knows. */
export interface NamedOptimizerOptions {
  readonly learningRate?: number;
  readonly momentum?: number;
  readonly nesterov?: boolean;
  readonly weightDecay?: number;
  readonly b1?: number;
  readonly b2?: number;
  readonly eps?: number;
}

/**
 * Defaults when an optimizer is picked by name (CLI, `train`). SGD's momentum 0.9 and η = 0.05
 * are the settings of the reference runs; the `sgd()` function itself keeps PyTorch's momentum 0.
 */
export const OPTIMIZER_DEFAULTS: Record<OptimizerName, NamedOptimizerOptions> = {
  sgd: { learningRate: 0.05, momentum: 0.9, nesterov: false, weightDecay: 0 },
  adamw: { learningRate: 1e-3, weightDecay: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8 },
};

const ACCEPTS: Record<OptimizerName, readonly (keyof NamedOptimizerOptions)[]> = {
  sgd: ['learningRate', 'momentum', 'nesterov', 'weightDecay'],
  adamw: ['learningRate', 'weightDecay', 'b1', 'b2', 'eps'],
};

/** Resolved options of a named optimizer: its defaults overridden by what was given. */
export function resolveOptimizerOptions(name: string, options: NamedOptimizerOptions = {}): NamedOptimizerOptions {
  if (!(OPTIMIZERS as readonly string[]).includes(name)) invalidOption('optimizer', name, `one of ${OPTIMIZERS.join(', ')}`);
  const known = ACCEPTS[name as OptimizerName];
  const resolved: Record<string, unknown> = { ...OPTIMIZER_DEFAULTS[name as OptimizerName] };
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (!known.includes(key as keyof NamedOptimizerOptions)) invalidOption(`option ${key} for optimizer ${name}`, value, `only ${known.join(', ')}`);
    resolved[key] = value;
  }
  return resolved as NamedOptimizerOptions;
}

/** Builds a named optimizer with its defaults; unknown names and options are errors. */
export function createOptimizer(name: string, options: NamedOptimizerOptions = {}): GradientTransformation<unknown> {
  const resolved = resolveOptimizerOptions(name, options);
  switch (name as OptimizerName) {
    case 'sgd':
      return sgd(resolved as SgdOptions);
    case 'adamw':
      return adamw(resolved as AdamwOptions);
  }
}
