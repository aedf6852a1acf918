import * as tf from '@tensorflow/tfjs';
import { GrngError, isGrngError } from '../errors.js';
import type { Activation } from '../nn/activations.js';
import { buildModel } from '../nn/buildModel.js';
import { modelLayout } from '../nn/modelLayout.js';
import type { Layer } from '../nn/layer.js';
import type { LayerSpec } from '../nn/modelSpec.js';
import type { Sequential } from '../nn/sequential.js';
import type { Params } from '../types.js';
import { VERSION } from '../version.js';
import { mapKerasTopology, type KerasMapping } from './kerasTopology.js';
import { GrngEmbedding, GrngTransformerBlock } from './tfjsLayers.js';

/** What the exported model's `predict` can return. */
export const EXPORT_OUTPUTS = ['probabilities', 'logits'] as const;
export type ExportOutput = (typeof EXPORT_OUTPUTS)[number];

export interface ToLayersModelOptions {
  /**
   * `probabilities` (default): the last Dense layer gets a softmax, so `predict` gives class (or
   * next-token) probabilities, what a served model is asked for; `logits`: grng's raw outputs.
   */
  readonly output?: ExportOutput;
}

/** What an export records about itself in model.json's `userDefinedMetadata.grng`. */
export interface GrngExportMetadata {
  readonly grngVersion: string;
  /** The grng model's description (`cnn:…`, `gpt:…`, a file). */
  readonly model: string;
  readonly output: ExportOutput;
  /** Predictions per example: 1 for a classifier, the positions of a language model. */
  readonly labelsPerExample: number;
}

const KERAS_ACTIVATION: Readonly<Record<Activation, string>> = {
  identity: 'linear',
  relu: 'relu',
  tanh: 'tanh',
  gelu: 'gelu',
};

/**
 * A TensorFlow.js LayersModel computing what a grng model computes, with copies of its current
 * weights: Dense, Conv2D, MaxPooling2D, AveragePooling2D and Flatten for MLPs and CNNs (tfjs's
 * layouts are grng's: in×out dense kernels, HWIO conv kernels, NHWC images, row-major flatten);
 * a language model uses grng's own GrngEmbedding and GrngTransformerBlock classes
 * (interop/tfjsLayers.ts, registered with tfjs when grng is imported) plus LayerNormalization
 * and Dense. Layer names are grng's (`conv0`, `dense1`, …). Dispose the result when done.
 *
 * @example
 * const keras = toLayersModel(model); keras.predict(tf.zeros([1, 28, 28, 1])); keras.dispose();
 */
export function toLayersModel(
  model: Sequential,
  options: ToLayersModelOptions = {},
): tf.LayersModel {
  const output = options.output ?? 'probabilities';
  if (output !== 'probabilities' && output !== 'logits')
    throw new GrngError(
      'invalid-option',
      `invalid output ${JSON.stringify(output)}: probabilities or logits`,
      {
        option: 'output',
      },
    );
  const layout = modelLayout(model);
  const inputShape = [...layout.inputShape];
  const kerasLayers = layout.layers.map((spec, index) => {
    const first = index === 0 ? { inputShape } : {};
    const last = index === layout.layers.length - 1;
    return kerasLayerOf(spec, model.layers[index]!, first, last && output === 'probabilities');
  });
  const keras = tf.sequential({ layers: kerasLayers, name: 'grng' });
  tf.tidy(() => {
    model.layers.forEach((layer, index) => {
      if (layer.params.length > 0)
        kerasLayers[index]!.setWeights(layer.params.map((key) => model.params[key]!));
    });
  });
  const metadata: GrngExportMetadata = {
    grngVersion: VERSION,
    model: model.description,
    output,
    labelsPerExample: model.labelsPerExample,
  };
  keras.setUserDefinedMetadata({ grng: metadata });
  return keras;
}

function kerasLayerOf(
  spec: LayerSpec,
  { name, inputShape }: Layer,
  first: { inputShape?: number[] },
  softmax: boolean,
): tf.layers.Layer {
  const activation = (value: Activation | undefined): string =>
    softmax ? 'softmax' : KERAS_ACTIVATION[value ?? 'identity'];
  switch (spec.type) {
    case 'dense':
      return tf.layers.dense({
        ...first,
        name,
        units: spec.units,
        activation: activation(spec.activation) as 'linear',
      });
    case 'conv2d':
      return tf.layers.conv2d({
        ...first,
        name,
        filters: spec.filters,
        kernelSize: [...spec.kernelSize],
        strides: [...(spec.strides ?? [1, 1])],
        padding: spec.padding ?? 'same',
        activation: activation(spec.activation) as 'linear',
      });
    case 'maxPool':
    case 'avgPool': {
      const args = {
        ...first,
        name,
        poolSize: [...spec.poolSize] as [number, number],
        strides: [...(spec.strides ?? spec.poolSize)] as [number, number],
        padding: spec.padding ?? 'valid',
      };
      return spec.type === 'maxPool'
        ? tf.layers.maxPooling2d(args)
        : tf.layers.averagePooling2d(args);
    }
    case 'flatten':
      return tf.layers.flatten({ ...first, name });
    case 'layerNorm':
      return tf.layers.layerNormalization({ ...first, name, axis: -1, epsilon: 1e-5 });
    case 'embedding':
      return new GrngEmbedding({
        ...first,
        name,
        vocabulary: spec.vocabulary,
        positions: inputShape[0]!,
        width: spec.width,
      });
    case 'transformerBlock':
      return new GrngTransformerBlock({
        ...first,
        name,
        positions: inputShape[0]!,
        width: inputShape[1]!,
        heads: spec.heads,
        hidden: spec.hidden ?? 4 * inputShape[1]!,
      });
  }
}

/**
 * A grng model with the architecture and weights of a TensorFlow.js LayersModel built with
 * `tf.sequential()` (or a Keras Sequential converted by tensorflowjs_converter); see
 * mapKerasTopology for what maps and the errors. The LayersModel is left as it was (dispose it
 * yourself); the grng model holds copies of its weights.
 *
 * @example
 * const model = fromLayersModel(await tf.loadLayersModel(layersModelFiles('saved/model.json')));
 */
export function fromLayersModel(
  keras: tf.LayersModel,
  {
    description = keras.name,
    source = `LayersModel ${keras.name}`,
  }: { description?: string; source?: string } = {},
): Sequential {
  const mapping = mapKerasTopology(keras.toJSON(null, false), source);
  return buildMapped(mapping, description, source, (name) => keras.getLayer(name).getWeights());
}

/**
 * Builds a mapped topology and loads its weights: `weightsOf(kerasLayerName)` gives a Keras
 * layer's weights in its own order (which is the grng layer's `params` order). Errors from the
 * build name the Keras layer.
 */
export function buildMapped(
  mapping: KerasMapping,
  description: string,
  source: string,
  weightsOf: (name: string) => tf.Tensor[],
): Sequential {
  let model: Sequential;
  try {
    model = buildModel(mapping.spec, { description });
  } catch (error) {
    const index = isGrngError(error) ? error.context.layer : undefined;
    if (typeof index !== 'number') throw error;
    throw new GrngError(
      'invalid-model',
      `model ${source}: layer ${mapping.origins[index]}: ${(error as Error).message.replace(/^invalid model[^:]*: layer \d+ \([^)]*\) /, '')}`,
      { option: 'model', path: source, layer: mapping.origins[index] },
      { cause: error },
    );
  }
  try {
    loadMappedWeights(model, mapping, source, weightsOf);
  } catch (error) {
    model.dispose();
    throw error;
  }
  return model;
}

/**
 * Puts a mapped Keras model's weights into a grng model built from the same mapping (its layers
 * one to one with `mapping.spec`); a count or shape that differs is an error naming the layer.
 */
export function loadMappedWeights(
  model: Sequential,
  mapping: KerasMapping,
  source: string,
  weightsOf: (name: string) => tf.Tensor[],
): void {
  const values: Params = {};
  model.layers.forEach((layer, index) => {
    const from = mapping.weightsFrom[index];
    if (layer.params.length === 0 || from === undefined) return;
    const weights = weightsOf(from);
    if (weights.length !== layer.params.length)
      throw new GrngError(
        'invalid-model',
        `model ${source}: layer ${mapping.origins[index]} has ${weights.length} weights, grng's ${layer.kind} layer takes ${layer.params.length} (${layer.params.join(', ')})`,
        { option: 'model', path: source, layer: mapping.origins[index] },
      );
    layer.params.forEach((key, i) => {
      const want = model.params[key]!.shape;
      if (weights[i]!.shape.join() !== want.join())
        throw new GrngError(
          'shape',
          `model ${source}: layer ${mapping.origins[index]} weight ${i} has shape [${weights[i]!.shape.join(', ')}], grng's ${key} is [${want.join(', ')}]`,
          { option: 'model', path: source, layer: mapping.origins[index] },
        );
      values[key] = weights[i]!;
    });
  });
  model.load(values);
}
