import { GrngError } from '../errors.js';
import type { Conv2dLayer } from './conv2d.js';
import type { DenseLayer } from './dense.js';
import type { EmbeddingLayer } from './embedding.js';
import type { Layer } from './layer.js';
import type { LayerSpec, ModelSpec } from './modelSpec.js';
import type { PoolLayer } from './pool.js';
import type { SequenceDenseLayer } from './sequenceDense.js';
import type { TransformerBlockLayer } from './transformerBlock.js';

/**
 * The layer layout of a built model as a {@link ModelSpec}, every default made explicit
 * (activations, strides, padding): what a checkpoint stores so that evaluate, export, generate and
 * resume rebuild the model from the checkpoint alone, and what export maps onto tfjs layers.
 * `buildModel(modelLayout(model))` has the same parameter keys and shapes, and computes the same
 * function once the parameters are loaded.
 *
 * @example
 * const layout = modelLayout(mlp({ inputs: 784, layers: [{ units: 10 }] })); // { inputShape: [784], layers: [{ type: 'dense', units: 10, activation: 'identity' }] }
 */
export function modelLayout(model: {
  readonly layers: readonly Layer[];
  readonly inputShape: readonly number[];
}): ModelSpec {
  return {
    inputShape: [...model.inputShape],
    layers: model.layers.map((layer) => layerSpecOf(layer)),
  };
}

function layerSpecOf(layer: Layer): LayerSpec {
  switch (layer.kind) {
    case 'dense':
    case 'sequenceDense': {
      const dense = layer as DenseLayer | SequenceDenseLayer;
      return { type: 'dense', units: dense.units, activation: dense.activation };
    }
    case 'conv2d': {
      const conv = layer as Conv2dLayer;
      return {
        type: 'conv2d',
        filters: conv.filters,
        kernelSize: [...conv.kernelSize] as [number, number],
        strides: [...conv.strides] as [number, number],
        padding: conv.padding,
        activation: conv.activation,
      };
    }
    case 'maxPool':
    case 'avgPool': {
      const pool = layer as PoolLayer;
      return {
        type: pool.kind,
        poolSize: [...pool.poolSize] as [number, number],
        strides: [...pool.strides] as [number, number],
        padding: pool.padding,
      };
    }
    case 'flatten':
      return { type: 'flatten' };
    case 'embedding': {
      const embedding = layer as EmbeddingLayer;
      return { type: 'embedding', vocabulary: embedding.vocabulary, width: embedding.width };
    }
    case 'transformerBlock': {
      const block = layer as TransformerBlockLayer;
      return { type: 'transformerBlock', heads: block.heads, hidden: block.hidden };
    }
    case 'layerNorm':
      return { type: 'layerNorm' };
    default:
      throw new GrngError(
        'invalid-model',
        `layer ${layer.name} is of kind ${layer.kind}, which has no model-file description`,
        { layer: layer.name },
      );
  }
}
