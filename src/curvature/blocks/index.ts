import { GrngError } from '../../errors.js';
import type { DenseLayer } from '../../nn/dense.js';
import type { Layer } from '../../nn/layer.js';
import type { KroneckerBlock } from './block.js';
import { denseBlock } from './dense.js';

/**
 * The curvature block of a layer with a signal point, by its kind. A new layer kind with a block
 * (conv2d, sequence dense) adds one line here and its own file beside dense.ts.
 */
export function blockFor(layer: Layer): KroneckerBlock {
  switch (layer.kind) {
    case 'dense':
      return denseBlock(layer as DenseLayer);
    default:
      throw new GrngError(
        'invalid-model',
        `layer ${layer.name} (${layer.kind}) has no curvature block; the K-FAC family covers dense layers`,
        { layer: layer.name, kind: layer.kind },
      );
  }
}

/**
 * The blocks of a model's signal layers, in order: what per-layer signals, factor statistics,
 * inverses and R-Kalman's rows align with.
 *
 * @example
 * const blocks = curvatureBlocks(model); // one per dense layer of an MLP
 */
export function curvatureBlocks(model: {
  readonly signalLayers: readonly Layer[];
}): KroneckerBlock[] {
  return model.signalLayers.map(blockFor);
}

export {
  foldStatistics,
  precondition,
  type KroneckerBlock,
  type OuterProductRows,
} from './block.js';
