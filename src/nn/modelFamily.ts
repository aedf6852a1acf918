import type { Layer } from './layer.js';

/**
 * Which defaults a model gets where the measurements chose differently per family: `conv` when it
 * has a convolutional layer, else `dense`.
 */
export type ModelFamily = 'dense' | 'conv';

/** The {@link ModelFamily} of a model's layers. */
export function modelFamily(model: { readonly layers: readonly Layer[] }): ModelFamily {
  return model.layers.some((layer) => layer.kind === 'conv2d') ? 'conv' : 'dense';
}
