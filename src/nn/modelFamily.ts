import type { Layer } from './layer.js';

/**
 * Which defaults a model gets where the measurements chose differently per family: `transformer`
 * when it has a transformer block, `conv` when it has a convolutional layer, else `dense`.
 */
export type ModelFamily = 'dense' | 'conv' | 'transformer';

/**
 * An option's own default for a family (the `conv:` value of an option table entry), if it has one;
 * the caller falls back to its general default.
 */
export function familyDefault<V>(
  rule: { readonly conv?: V; readonly transformer?: V },
  family: ModelFamily,
): V | undefined {
  return family === 'dense' ? undefined : rule[family];
}

/** The {@link ModelFamily} of a model's layers. */
export function modelFamily(model: { readonly layers: readonly Layer[] }): ModelFamily {
  if (model.layers.some((layer) => layer.kind === 'transformerBlock')) return 'transformer';
  return model.layers.some((layer) => layer.kind === 'conv2d') ? 'conv' : 'dense';
}
