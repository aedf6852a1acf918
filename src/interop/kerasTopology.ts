import { GrngError } from '../errors.js';
import type { Activation } from '../nn/activations.js';
import { LAYER_NORM_EPSILON } from '../nn/layerNorm.js';
import type { LayerSpec, ModelSpec } from '../nn/modelSpec.js';

/** The Keras/tfjs-layers classes a model file may use, as the errors list them. */
export const SUPPORTED_KERAS_LAYERS = [
  'InputLayer',
  'Dense',
  'Conv2D',
  'MaxPooling2D',
  'AveragePooling2D',
  'Flatten',
  'Activation',
  'Dropout',
  'LayerNormalization',
  'GrngEmbedding',
  'GrngTransformerBlock',
] as const;

/** Keras activation names grng computes, and the grng activation each one is. */
const KERAS_ACTIVATIONS: Readonly<Record<string, Activation>> = {
  linear: 'identity',
  relu: 'relu',
  tanh: 'tanh',
  // tfjs-layers' and Keras's `gelu` are the exact x·Φ(x), as grng's (`gelu_new` is the tanh form).
  gelu: 'gelu',
};

/** How a Keras topology maps onto grng's layers. */
export interface KerasMapping {
  readonly spec: ModelSpec;
  /**
   * For each layer of `spec`, the name of the Keras layer whose weights it takes (in the Keras
   * layer's own order, which is the grng layer's `params` order), or undefined for a layer
   * without weights.
   */
  readonly weightsFrom: readonly (string | undefined)[];
  /** For each layer of `spec`, the Keras layer it came from, `name (Class)`, for errors. */
  readonly origins: readonly string[];
  /** Keras layers left out because they do nothing at inference (Dropout), with why. */
  readonly dropped: readonly string[];
  /** The last layer ended in a softmax, which grng's loss applies itself (its logits come before it). */
  readonly softmaxOutput: boolean;
}

interface KerasLayer {
  readonly class_name: string;
  readonly config: Record<string, unknown>;
}

/**
 * Maps a Keras Sequential topology (the `modelTopology` of a model.json, or what
 * `LayersModel.toJSON(null, false)` returns) onto a grng {@link ModelSpec}. A softmax at the end
 * (the last Dense's activation or a final Activation layer) is left to grng's loss; Dropout
 * layers are left out (grng trains without dropout) and listed in `dropped`. Every layer or
 * setting grng cannot compute exactly is a one-line GrngError naming the file, the layer and what
 * is supported — never an approximation.
 *
 * @example
 * const { spec } = mapKerasTopology(JSON.parse(readFileSync('model.json', 'utf8')), 'model.json');
 */
export function mapKerasTopology(topology: unknown, source: string): KerasMapping {
  const failModel = (problem: string): never => {
    throw new GrngError('invalid-model', `model ${source}: ${problem}`, {
      option: 'model',
      path: source,
    });
  };
  const model = unwrap(topology);
  if (!isObject(model) || typeof model.class_name !== 'string')
    return failModel('no Keras model topology (expected { "class_name": "Sequential", ... })');
  if (model.class_name !== 'Sequential')
    failModel(
      `is a ${model.class_name} model; only Sequential models (tf.sequential(), keras.Sequential) map onto grng's layer stack`,
    );
  const config = model.config;
  const list = Array.isArray(config) ? config : isObject(config) ? config.layers : undefined;
  if (!Array.isArray(list) || list.length === 0) failModel('the Sequential model has no layers');
  const layers: LayerSpec[] = [];
  const weightsFrom: (string | undefined)[] = [];
  const origins: string[] = [];
  const dropped: string[] = [];
  let inputShape: number[] | undefined;
  let softmaxOutput = false;
  (list as unknown[]).forEach((raw, index) => {
    const kerasLayer = raw as KerasLayer;
    // tfjs writes a registered custom class as `Custom>GrngEmbedding` (package>name).
    const cls =
      isObject(raw) && typeof raw.class_name === 'string'
        ? raw.class_name.replace(/^[^>]*>/, '')
        : '?';
    const cfg = isObject(kerasLayer?.config) ? kerasLayer.config : {};
    const name = typeof cfg.name === 'string' ? cfg.name : `#${index}`;
    const origin = `${name} (${cls})`;
    const fail = (problem: string): never =>
      failModel(`layer ${index} ${origin} ${problem}`) as never;
    const unsupported = (setting: string, value: unknown, expected: string): never =>
      fail(`has ${setting} ${JSON.stringify(value)}; grng supports ${expected}`);
    if (softmaxOutput && cls !== 'Dropout')
      fail('comes after the softmax, which must be the last layer');
    if (cfg.dtype !== undefined && cfg.dtype !== null && cfg.dtype !== 'float32')
      unsupported('dtype', cfg.dtype, 'float32 only');
    if (cfg.trainable === false)
      fail('is frozen (trainable: false); grng trains every layer, so it cannot keep it fixed');
    const declared = shapeOf(cfg.batch_input_shape ?? cfg.batch_shape);
    if (declared !== undefined) {
      if (layers.length > 0 || inputShape !== undefined)
        fail('declares an input shape but is not the first layer');
      if (declared === null)
        fail(
          `has an input shape ${JSON.stringify(cfg.batch_input_shape ?? cfg.batch_shape)} with unknown sizes; every size but the batch must be fixed`,
        );
      inputShape = declared!;
    }
    const activation = (key = 'activation'): Activation | 'softmax' => {
      const value = cfg[key] ?? 'linear';
      const kerasName =
        typeof value === 'string' ? value : isObject(value) ? value.class_name : value;
      if (kerasName === 'softmax') return 'softmax';
      const mapped = typeof kerasName === 'string' ? KERAS_ACTIVATIONS[kerasName] : undefined;
      if (!mapped)
        unsupported(
          'activation',
          kerasName,
          `${Object.keys(KERAS_ACTIVATIONS).join(', ')}, and softmax on the last layer`,
        );
      return mapped!;
    };
    const finish = (value: Activation | 'softmax'): Activation => {
      if (value !== 'softmax') return value;
      if (index !== (list as unknown[]).length - 1 && !onlyDropoutAfter(list as unknown[], index))
        fail('has a softmax before the last layer; grng supports softmax only on the output');
      softmaxOutput = true;
      return 'identity';
    };
    const plainWeights = (): void => {
      if (cfg.use_bias === false)
        unsupported('use_bias', false, 'layers with a bias (use_bias: true)');
      for (const key of [
        'kernel_regularizer',
        'bias_regularizer',
        'activity_regularizer',
        'kernel_constraint',
        'bias_constraint',
      ])
        if (cfg[key] !== undefined && cfg[key] !== null)
          fail(`has a ${key}; grng trains without regularizers and constraints (remove it)`);
    };
    const channelsLast = (): void => {
      if (
        cfg.data_format !== undefined &&
        cfg.data_format !== null &&
        cfg.data_format !== 'channels_last'
      )
        unsupported('data_format', cfg.data_format, 'channels_last (NHWC)');
    };
    const pair = (key: string, fallback?: [number, number]): [number, number] => {
      const value = cfg[key] ?? fallback;
      const p = typeof value === 'number' ? [value, value] : value;
      if (!Array.isArray(p) || p.length !== 2 || !p.every((d) => Number.isInteger(d) && d >= 1))
        unsupported(key, value, 'a whole number ≥ 1 or a pair of them');
      return p as [number, number];
    };
    const padding = (): 'same' | 'valid' => {
      const value = cfg.padding ?? 'valid';
      if (value !== 'same' && value !== 'valid') unsupported('padding', value, '"same" or "valid"');
      return value as 'same' | 'valid';
    };
    const count = (key: string): number => {
      const value = cfg[key];
      if (!Number.isInteger(value) || (value as number) < 1)
        unsupported(key, value, 'a whole number ≥ 1');
      return value as number;
    };
    const add = (layer: LayerSpec, weights: boolean): void => {
      layers.push(layer);
      weightsFrom.push(weights ? name : undefined);
      origins.push(origin);
    };
    switch (cls) {
      case 'InputLayer':
        if (declared === undefined) fail('declares no input shape');
        break;
      case 'Dense':
        plainWeights();
        add({ type: 'dense', units: count('units'), activation: finish(activation()) }, true);
        break;
      case 'Conv2D': {
        plainWeights();
        channelsLast();
        const dilation = pair('dilation_rate', [1, 1]);
        if (dilation.some((d) => d !== 1)) unsupported('dilation_rate', cfg.dilation_rate, '1');
        if (cfg.groups !== undefined && cfg.groups !== 1) unsupported('groups', cfg.groups, '1');
        add(
          {
            type: 'conv2d',
            filters: count('filters'),
            kernelSize: pair('kernel_size'),
            strides: pair('strides', [1, 1]),
            padding: padding(),
            activation: finish(activation()),
          },
          true,
        );
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        channelsLast();
        const poolSize = pair('pool_size', [2, 2]);
        add(
          {
            type: cls === 'MaxPooling2D' ? 'maxPool' : 'avgPool',
            poolSize,
            strides: cfg.strides === null || cfg.strides === undefined ? poolSize : pair('strides'),
            padding: padding(),
          },
          false,
        );
        break;
      }
      case 'Flatten':
        channelsLast();
        add({ type: 'flatten' }, false);
        break;
      case 'Activation': {
        const value = activation();
        const before = layers.at(-1);
        if (value === 'identity') break;
        if (
          !before ||
          (before.type !== 'dense' && before.type !== 'conv2d') ||
          (before.activation ?? 'identity') !== 'identity'
        )
          fail(
            'must follow a Dense or Conv2D layer without an activation of its own (grng applies activations inside those layers)',
          );
        layers[layers.length - 1] = { ...before!, activation: finish(value) } as LayerSpec;
        break;
      }
      case 'Dropout':
        dropped.push(`${origin}, rate ${String(cfg.rate)}: grng trains without dropout`);
        break;
      case 'LayerNormalization': {
        const axis = Array.isArray(cfg.axis) && cfg.axis.length === 1 ? cfg.axis[0] : cfg.axis;
        if (axis !== -1 && axis !== undefined)
          if (!(Number.isInteger(axis) && lastAxis(inputShape, layers) === axis))
            unsupported('axis', cfg.axis, 'the last axis (-1)');
        const epsilon = cfg.epsilon ?? 1e-3;
        if (typeof epsilon !== 'number' || Math.abs(epsilon - LAYER_NORM_EPSILON) > 1e-12)
          unsupported(
            'epsilon',
            epsilon,
            `${LAYER_NORM_EPSILON} (PyTorch's, which grng's layer norm uses)`,
          );
        if (cfg.center === false || cfg.scale === false)
          fail('has no learned scale or shift (center/scale false); grng layer norms have both');
        add({ type: 'layerNorm' }, true);
        break;
      }
      case 'GrngEmbedding': {
        const positions = count('positions');
        if (layers.length > 0) fail('must be the first layer');
        if (inputShape !== undefined && inputShape.join() !== String(positions))
          fail(`declares input shape [${inputShape.join(', ')}] for ${positions} positions`);
        inputShape = [positions];
        add({ type: 'embedding', vocabulary: count('vocabulary'), width: count('width') }, true);
        break;
      }
      case 'GrngTransformerBlock':
        add({ type: 'transformerBlock', heads: count('heads'), hidden: count('hidden') }, true);
        break;
      default:
        fail(`is not supported; grng maps ${SUPPORTED_KERAS_LAYERS.join(', ')}`);
    }
  });
  if (inputShape === undefined)
    failModel(
      'declares no input shape (give the first layer an inputShape, or start with an InputLayer)',
    );
  if (layers.length === 0 || layers.at(-1)!.type !== 'dense')
    failModel(
      `must end in a Dense layer (the class logits), got ${origins.at(-1) ?? 'no layer with weights'}`,
    );
  return {
    spec: { inputShape: inputShape!, layers },
    weightsFrom,
    origins,
    dropped,
    softmaxOutput,
  };
}

/** The Keras model inside a model.json or a converted Keras file's topology. */
function unwrap(value: unknown): unknown {
  if (!isObject(value)) return value;
  if (isObject(value.modelTopology)) return unwrap(value.modelTopology);
  if (isObject(value.model_config)) return value.model_config;
  return value;
}

/** [null, 28, 28, 1] → [28, 28, 1]; undefined when absent, null when a size is unknown. */
function shapeOf(value: unknown): number[] | null | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value) || value.length < 2) return null;
  const dims = value.slice(1);
  return dims.every((d) => Number.isInteger(d) && d >= 1) ? (dims as number[]) : null;
}

/** The index (batch axis 0) of the last axis after `layers`: a positive LayerNormalization axis. */
function lastAxis(inputShape: readonly number[] | undefined, layers: readonly LayerSpec[]): number {
  const flat = layers.some((l) => l.type === 'flatten');
  const sequence = layers[0]?.type === 'embedding';
  if (sequence) return 2;
  if (flat) return 1;
  return inputShape?.length ?? 0;
}

function onlyDropoutAfter(list: readonly unknown[], index: number): boolean {
  return list.slice(index + 1).every((l) => isObject(l) && l.class_name === 'Dropout');
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
