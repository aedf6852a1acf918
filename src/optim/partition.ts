import type * as tf from '@tensorflow/tfjs';
import { GrngError, invalidOption } from '../errors.js';
import type { Params } from '../types.js';
import { checkChoice, checkKeys } from '../validate.js';
import type { GradientTransformation, TransformResult, UpdateContext } from './transform.js';

/** Which group a parameter belongs to: a function of its key and value, or a key → group map. */
export type ParameterLabel =
  ((key: string, param: tf.Tensor) => string) | Readonly<Record<string, string>>;

export interface PartitionOptions {
  /** One transformation per group, by group name. */
  readonly transforms: Readonly<Record<string, GradientTransformation<any>>>;
  /** The group of every parameter; each must name a key of `transforms`. */
  readonly label: ParameterLabel;
  /**
   * The group whose diagnostics keep their names when several groups report the same one
   * (`learningRate`, say), so the metrics row shows that group's value; the other groups' copies
   * become `group/name`. Without it every colliding name is prefixed.
   */
  readonly primary?: string;
}

/**
 * Each group's own state, by group name: a plain object (checkpoints save it as it is). Groups
 * without parameters have no entry.
 */
export type PartitionState = Readonly<Record<string, unknown>>;

/**
 * Parameter groups, as optax's `multi_transform`: each parameter goes to the transformation its
 * label names, which sees only its group's parameters and gradients (and the whole update
 * context); the updates are merged back into one tree keyed like the parameters. Diagnostics
 * reported by one group keep their names; a name several groups report becomes `group/name`
 * (except for the `primary` group's). A group no parameter is labelled with is never run.
 *
 * A curvature optimizer (K-FAC, RING, RENG) preconditions every dense layer of its model, so its
 * group must hold all of their kernels and biases.
 *
 * @example
 * const opt = partition({
 *   transforms: { kernels: sgd({ learningRate: 0.05, momentum: 0.9 }), biases: adamw({ weightDecay: 0 }) },
 *   label: (key) => (key.endsWith('/kernel') ? 'kernels' : 'biases'),
 * });
 */
export function partition(options: PartitionOptions): GradientTransformation<PartitionState> {
  checkKeys('partition', options, ['transforms', 'label', 'primary']);
  const { transforms, label, primary } = options;
  if (!isPlainObject(transforms) || Object.keys(transforms).length === 0)
    invalidOption(
      'partition transforms',
      transforms,
      'an object with one transformation per group name',
    );
  const groups = Object.keys(transforms);
  for (const group of groups) {
    const t = transforms[group] as Partial<GradientTransformation> | undefined;
    if (typeof t?.init !== 'function' || typeof t.update !== 'function')
      invalidOption(
        `partition transforms.${group}`,
        t,
        'a gradient transformation { init, update }',
      );
  }
  const labelMap = typeof label === 'function' ? undefined : label;
  if (typeof label !== 'function') {
    if (!isPlainObject(label))
      invalidOption(
        'partition label',
        label,
        'a function (key, param) => group name, or an object mapping each parameter key to a group name',
      );
    for (const [key, group] of Object.entries(label))
      if (!groups.includes(group)) throw noTransform(key, group, groups);
  }
  if (primary !== undefined) checkChoice('partition primary', primary, groups);

  /** Parameter keys by group, in the order of `keys`; throws on a key without a (known) group. */
  const assign = (
    keys: readonly string[],
    value: (key: string) => tf.Tensor,
  ): Map<string, string[]> => {
    const byGroup = new Map<string, string[]>();
    for (const key of keys) {
      const group = labelMap
        ? labelMap[key]
        : (label as (key: string, param: tf.Tensor) => string)(key, value(key));
      if (typeof group !== 'string') {
        throw new GrngError(
          'invalid-option',
          `partition: parameter "${key}" has no group (label gave ${group === undefined ? 'undefined' : JSON.stringify(group)}; groups: ${groups.join(', ')})`,
          { option: 'label', parameter: key },
        );
      }
      if (!groups.includes(group)) throw noTransform(key, group, groups);
      if (!byGroup.has(group)) byGroup.set(group, []);
      byGroup.get(group)!.push(key);
    }
    if (labelMap) {
      // A label for a parameter the model lacks is a typo that would otherwise pass silently.
      const stray = Object.keys(labelMap).filter((key) => !keys.includes(key));
      if (stray.length > 0)
        throw new GrngError(
          'invalid-option',
          `partition: label names parameter "${stray[0]}", which the model does not have (parameters: ${keys.join(', ')})`,
          { option: 'label', parameter: stray[0] },
        );
    }
    // Transform order, so the state's keys do not depend on the parameters' order.
    return new Map(groups.filter((g) => byGroup.has(g)).map((g) => [g, byGroup.get(g)!]));
  };

  return {
    init(params: Params): PartitionState {
      const state: Record<string, unknown> = {};
      for (const [group, keys] of assign(Object.keys(params), (key) => params[key]!))
        state[group] = transforms[group]!.init(pick(params, keys));
      return state;
    },
    update(
      updates: Params,
      state: PartitionState,
      params: Params,
      context: UpdateContext,
    ): TransformResult<PartitionState> {
      const keys = Object.keys(updates);
      const merged: Params = {};
      const next: Record<string, unknown> = {};
      const reports: Array<[string, Readonly<Record<string, tf.Scalar | number>>]> = [];
      for (const [group, groupKeys] of assign(keys, (key) => params[key] ?? updates[key]!)) {
        if (!(group in state)) {
          throw new GrngError(
            'invalid-data',
            `partition: the optimizer state has no entry for group "${group}" (it holds ${Object.keys(state).join(', ') || 'none'}): was it made by a different partition?`,
            { option: 'state', group },
          );
        }
        const result = transforms[group]!.update(
          pick(updates, groupKeys),
          state[group],
          pick(params, groupKeys),
          context,
        );
        for (const key of groupKeys) {
          if (!result.updates[key])
            throw new GrngError(
              'internal',
              `partition: group "${group}" produced no update for parameter ${key}`,
              { group, parameter: key },
            );
          merged[key] = result.updates[key];
        }
        next[group] = result.state;
        if (result.diagnostics) reports.push([group, result.diagnostics]);
      }
      // Parameters' order, as every other transformation returns it.
      const ordered: Params = {};
      for (const key of keys) ordered[key] = merged[key]!;
      return { updates: ordered, state: next, diagnostics: mergeDiagnostics(reports, primary) };
    },
  };
}

function noTransform(key: string, group: string, groups: readonly string[]): GrngError {
  return new GrngError(
    'invalid-option',
    `partition: parameter "${key}" is labelled ${JSON.stringify(group)}, which has no transform (transforms: ${groups.join(', ')})`,
    { option: 'label', parameter: key, label: group },
  );
}

function pick(tree: Params, keys: readonly string[]): Params {
  const out: Params = {};
  for (const key of keys) if (tree[key] !== undefined) out[key] = tree[key];
  return out;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * One group's names as they are; a name several groups report as `group/name` (but the primary's).
 */
function mergeDiagnostics(
  reports: ReadonlyArray<[string, Readonly<Record<string, tf.Scalar | number>>]>,
  primary: string | undefined,
): Record<string, tf.Scalar | number> {
  const reporters = new Map<string, number>();
  for (const [, diagnostics] of reports)
    for (const name of Object.keys(diagnostics))
      reporters.set(name, (reporters.get(name) ?? 0) + 1);
  const out: Record<string, tf.Scalar | number> = {};
  for (const [group, diagnostics] of reports) {
    for (const [name, value] of Object.entries(diagnostics)) {
      out[reporters.get(name)! > 1 && group !== primary ? `${group}/${name}` : name] = value;
    }
  }
  return out;
}
