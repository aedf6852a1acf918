import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';

/** Applies `fn` to every leaf of one or more parameter trees with the same keys. */
export function mapParams(tree: Params, fn: (value: tf.Tensor, key: string) => tf.Tensor): Params {
  const out: Params = {};
  for (const key of Object.keys(tree)) out[key] = fn(tree[key]!, key);
  return out;
}

/**
 * `make(key)` for every key, or undefined as soon as one gives undefined, with what was made
 * disposed: for per-parameter fast paths that must cover the whole tree or step aside.
 */
export function mapAllOrNone<T extends tf.TensorContainer>(
  keys: readonly string[],
  make: (key: string) => T | undefined,
): Record<string, T> | undefined {
  const out: Record<string, T> = {};
  for (const key of keys) {
    const value = make(key);
    if (value === undefined) {
      tf.dispose(tensorsIn(out));
      return undefined;
    }
    out[key] = value;
  }
  return out;
}

/** All tensors reachable in a container (objects, arrays), for ownership bookkeeping. */
export function tensorsIn(container: unknown, into: tf.Tensor[] = []): tf.Tensor[] {
  if (container instanceof tf.Tensor) into.push(container);
  else if (Array.isArray(container)) for (const item of container) tensorsIn(item, into);
  else if (container !== null && typeof container === 'object' && !ArrayBuffer.isView(container)) {
    for (const value of Object.values(container)) tensorsIn(value, into);
  }
  return into;
}

/** Disposes the tensors of `previous` that `next` no longer references. */
export function disposeReplaced(previous: unknown, next: unknown): void {
  const kept = new Set(tensorsIn(next));
  for (const t of tensorsIn(previous)) if (!kept.has(t)) t.dispose();
}
