import { GrngError } from '../../errors.js';
import type { DenseLayer } from '../../nn/dense.js';
import type { Layer } from '../../nn/layer.js';
import type { Conv2dLayer } from '../../nn/conv2d.js';
import type { KroneckerBlock } from './block.js';
import { conv2dBlock, type ConvBlockOptions } from './conv2d.js';
import { denseBlock } from './dense.js';
import type { SequenceDenseLayer } from '../../nn/sequenceDense.js';
import { sequenceDenseBlock, type SequenceBlockOptions } from './sequenceDense.js';

/** The curvature options blocks read (see curvature/options.ts); the defaults where absent. */
export type BlockOptions = ConvBlockOptions & SequenceBlockOptions;

/**
 * The curvature block of a layer with a signal point, by its kind. A new layer kind with a block
 * adds one line here and its own file beside dense.ts. `options` reach the
 * blocks that read them (conv2d: convFactors, convPatchRows); the defaults otherwise.
 */
export function blockFor(layer: Layer, options: BlockOptions = {}): KroneckerBlock {
  switch (layer.kind) {
    case 'dense':
      return denseBlock(layer as DenseLayer);
    case 'conv2d':
      return conv2dBlock(layer as Conv2dLayer, options);
    case 'sequenceDense':
      return sequenceDenseBlock(layer as SequenceDenseLayer, options);
    default:
      throw new GrngError(
        'invalid-model',
        `layer ${layer.name} (${layer.kind}) has no curvature block; the K-FAC family covers dense, conv2d and sequence-dense layers`,
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
export function curvatureBlocks(
  model: { readonly signalLayers: readonly Layer[] },
  options: BlockOptions = {},
): KroneckerBlock[] {
  return model.signalLayers.map((layer) => blockFor(layer, options));
}

export {
  foldStatistics,
  precondition,
  type KroneckerBlock,
  type OuterProductRows,
  type StatisticsContext,
} from './block.js';
