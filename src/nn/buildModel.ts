import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import type { Params } from '../types.js';
import { conv2dLayer } from './conv2d.js';
import { denseLayer } from './dense.js';
import { flattenLayer } from './flatten.js';
import { initConv2d, initDense, type Initializer } from './init.js';
import type { Layer } from './layer.js';
import type { ModelSpec } from './modelSpec.js';
import { poolLayer } from './pool.js';
import { embeddingLayer, MAX_VOCABULARY } from './embedding.js';
import { layerNormLayer } from './layerNorm.js';
import { sequenceDenseLayer } from './sequenceDense.js';
import { transformerBlockLayer } from './transformerBlock.js';
import { MAX_PARAMETERS, Sequential } from './sequential.js';

/**
 * Builds the model a {@link ModelSpec} describes (a `cnn:` spec or a JSON model file): layers
 * named by kind and position (`conv0`, `pool0`, `flatten0`, `dense0`, ...), shapes carried from
 * layer to layer, weights initialised as PyTorch does by default (`init`), each parametrised layer
 * seeded by its position exactly as `mlp()` seeds its dense layers. A layer that cannot take the
 * shape before it is an error naming the layer.
 *
 * @example
 * const model = buildModel(parseCnnSpec('cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10'), { seed: 1 });
 */
export function buildModel(
  spec: ModelSpec,
  {
    seed = 1,
    init = 'torch',
    description,
  }: { seed?: number; init?: Initializer; description?: string } = {},
): Sequential {
  const layers: Layer[] = [];
  const initial: Params = {};
  const counts: Record<string, number> = {};
  const nameOf = (prefix: string): string =>
    `${prefix}${(counts[prefix] = (counts[prefix] ?? -1) + 1)}`;
  let shape: readonly number[] = spec.inputShape;
  let parametrised = 0;
  let parameters = 0;
  const fail = (index: number, problem: string): never => {
    const name = description === undefined ? 'model' : `model ${description}`;
    throw new GrngError(
      'invalid-model',
      `invalid ${name}: layer ${index} (${spec.layers[index]!.type}) ${problem}`,
      {
        option: 'model',
        layer: index,
      },
    );
  };
  try {
    spec.layers.forEach((layerSpec, index) => buildLayer(layerSpec, index));
  } catch (error) {
    tf.dispose(Object.values(initial));
    throw error;
  }
  return new Sequential(layers, initial, description ?? 'model');

  function buildLayer(layerSpec: ModelSpec['layers'][number], index: number): void {
    const last = index === spec.layers.length - 1;
    const weightSeed = seed * 1009 + parametrised * 2 + 1;
    let layer: Layer;
    if (
      layerSpec.type === 'conv2d' ||
      layerSpec.type === 'maxPool' ||
      layerSpec.type === 'avgPool'
    ) {
      if (shape.length !== 3)
        fail(
          index,
          `needs image-shaped input [height, width, channels], got [${shape.join(', ')}]`,
        );
    }
    switch (layerSpec.type) {
      case 'conv2d': {
        const activation = layerSpec.activation ?? (last ? 'identity' : 'relu');
        const [kh, kw] = layerSpec.kernelSize;
        layer = conv2dLayer({
          name: nameOf('conv'),
          index: parametrised,
          inputShape: shape,
          filters: layerSpec.filters,
          kernelSize: layerSpec.kernelSize,
          strides: layerSpec.strides ?? [1, 1],
          padding: layerSpec.padding ?? 'same',
          activation,
        });
        const { kernel, bias } = initConv2d(
          kh,
          kw,
          shape[2]!,
          layerSpec.filters,
          activation,
          init,
          weightSeed,
        );
        Object.assign(initial, { [`${layer.name}/kernel`]: kernel, [`${layer.name}/bias`]: bias });
        parameters += (kh * kw * shape[2]! + 1) * layerSpec.filters;
        parametrised += 1;
        break;
      }
      case 'maxPool':
      case 'avgPool':
        layer = poolLayer({
          name: nameOf('pool'),
          kind: layerSpec.type,
          inputShape: shape,
          poolSize: layerSpec.poolSize,
          strides: layerSpec.strides ?? layerSpec.poolSize,
          padding: layerSpec.padding ?? 'valid',
        });
        break;
      case 'flatten':
        layer = flattenLayer(nameOf('flatten'), shape);
        break;
      case 'embedding': {
        if (index !== 0 || shape.length !== 1)
          fail(index, 'must be the first layer, over token ids [positions]');
        if (layerSpec.vocabulary > MAX_VOCABULARY)
          fail(
            index,
            `has a vocabulary of ${layerSpec.vocabulary}, more than the ${MAX_VOCABULARY} its one-hot lookup takes`,
          );
        const embedding = embeddingLayer({
          name: nameOf('embed'),
          vocabulary: layerSpec.vocabulary,
          positions: shape[0]!,
          width: layerSpec.width,
        });
        // GPT-2's N(0, 0.02) for both tables: unit-variance rows (PyTorch's nn.Embedding default)
        // would swamp the residual stream at the first layer norm's input.
        Object.assign(
          initial,
          tf.tidy(() => ({
            [embedding.tokens]: tf.randomNormal(
              [layerSpec.vocabulary, layerSpec.width],
              0,
              0.02,
              'float32',
              weightSeed,
            ),
            [embedding.positionTable]: tf.randomNormal(
              [shape[0]!, layerSpec.width],
              0,
              0.02,
              'float32',
              weightSeed + 0.5,
            ),
          })),
        );
        parameters += (layerSpec.vocabulary + shape[0]!) * layerSpec.width;
        parametrised += 1;
        layer = embedding;
        break;
      }
      case 'transformerBlock': {
        if (shape.length !== 2 || layers[0]?.kind !== 'embedding')
          fail(
            index,
            `needs a sequence [positions, width] after an embedding, got [${shape.join(', ')}]`,
          );
        const [positions, width] = shape as [number, number];
        if (width % layerSpec.heads !== 0)
          fail(index, `has ${layerSpec.heads} heads, which do not divide the width ${width}`);
        const block = transformerBlockLayer({
          name: nameOf('block'),
          positions,
          width,
          heads: layerSpec.heads,
          hidden: layerSpec.hidden ?? 4 * width,
        });
        for (const sublayer of block.sublayers) {
          if (sublayer.kind === 'layerNorm') {
            Object.assign(initial, layerNormInitial(sublayer.scale, sublayer.shift, width));
            parameters += 2 * width;
          } else {
            const { kernel, bias } = initDense(
              sublayer.inputs,
              sublayer.units,
              sublayer.activation,
              init,
              seed * 1009 + parametrised * 2 + 1,
            );
            Object.assign(initial, { [sublayer.kernel]: kernel, [sublayer.bias]: bias });
            parameters += (sublayer.inputs + 1) * sublayer.units;
            parametrised += 1;
          }
        }
        layer = block;
        break;
      }
      case 'layerNorm': {
        const norm = layerNormLayer(nameOf('norm'), shape);
        Object.assign(initial, layerNormInitial(norm.scale, norm.shift, shape.at(-1)!));
        parameters += 2 * shape.at(-1)!;
        layer = norm;
        break;
      }
      case 'dense': {
        const activation = layerSpec.activation ?? (last ? 'identity' : 'relu');
        if (shape.length === 2 && layers[0]?.kind === 'embedding') {
          // Over a sequence: the same kernel at every position (a language model's head).
          const dense = sequenceDenseLayer({
            name: nameOf('dense'),
            positions: shape[0]!,
            inputs: shape[1]!,
            units: layerSpec.units,
            activation,
          });
          const { kernel, bias } = initDense(
            dense.inputs,
            dense.units,
            activation,
            init,
            weightSeed,
          );
          Object.assign(initial, { [dense.kernel]: kernel, [dense.bias]: bias });
          parameters += (dense.inputs + 1) * dense.units;
          parametrised += 1;
          layer = dense;
          break;
        }
        if (shape.length !== 1)
          fail(
            index,
            `needs flat input, got [${shape.join(', ')}] (put a flatten layer before it)`,
          );
        const dense = denseLayer({
          name: nameOf('dense'),
          index: counts.dense!,
          inputs: shape[0]!,
          units: layerSpec.units,
          activation,
        });
        const { kernel, bias } = initDense(dense.inputs, dense.units, activation, init, weightSeed);
        Object.assign(initial, { [dense.kernel]: kernel, [dense.bias]: bias });
        parameters += (dense.inputs + 1) * dense.units;
        parametrised += 1;
        layer = dense;
        break;
      }
    }
    if (layer.outputShape.some((d) => d < 1))
      fail(
        index,
        `leaves nothing of its input [${shape.join(', ')}] (output [${layer.outputShape.join(', ')}])`,
      );
    if (parameters > MAX_PARAMETERS)
      fail(
        index,
        `brings the model to ${parameters.toExponential(2)} parameters, more than the ${MAX_PARAMETERS} (2^31 - 1) a model can have`,
      );
    layers.push(layer);
    shape = layer.outputShape;
  }
}

/** A layer norm's initial scale (ones) and shift (zeros), as PyTorch's nn.LayerNorm. */
function layerNormInitial(scale: string, shift: string, width: number): Params {
  return { [scale]: tf.ones([width]), [shift]: tf.zeros([width]) };
}
