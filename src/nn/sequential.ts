import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import { checkChoice, checkInteger, checkKeys } from '../validate.js';
import { ACTIVATIONS, type Activation } from './activations.js';
import { denseLayer, type DenseLayer } from './dense.js';
import { flattenLayer } from './flatten.js';
import { signalLayersOf, type Layer, type LayerTap, type SignalLayer } from './layer.js';
import { INITIALIZERS, initDense, type Initializer } from './init.js';
import type { Params } from '../types.js';

export interface DenseSpec {
  /** Output width of the layer. */
  readonly units: number;
  /** Activation after the layer; default relu for hidden layers, identity for the last. */
  readonly activation?: Activation;
}

export interface MlpOptions {
  /** Input width (784 for MNIST). */
  readonly inputs: number;
  /**
   * Shape of one example when batches are not flat rows (e.g. [28, 28, 1]); its product must be
   * `inputs`. A flatten layer then comes first. Default [inputs].
   */
  readonly inputShape?: readonly number[];
  /** Dense layers in order; the last one produces the logits. */
  readonly layers: readonly DenseSpec[];
  /** Weight initialisation, see {@link Initializer}; default `torch` (PyTorch's nn.Linear). */
  readonly init?: Initializer;
  /** Seed of the initial weights; default 1. */
  readonly seed?: number;
}

/** A dense layer as the model lists it (kept under its former name for existing callers). */
export type DenseLayerInfo = DenseLayer;

/**
 * What a layer with a signal point looked like in a forward pass (its input and pre-activation).
 */
export type DenseTap = LayerTap;

/** How {@link Sequential.apply} runs a forward pass. */
export interface ApplyOptions {
  /**
   * One tensor per signal layer ({@link Sequential.signalLayers}, in order), shaped like its
   * pre-activation and zeros in practice: each is added there, so differentiating the loss by it
   * gives the layer's back-propagated δ.
   */
  readonly signals?: readonly tf.Tensor[];
  /** Receives each signal layer's input and pre-activation, in order. */
  readonly taps?: LayerTap[];
  /**
   * Treat the parameters as constants: a backward pass then computes signals but no weight
   * gradients.
   */
  readonly constantParams?: boolean;
}

/**
 * A stack of typed layers (see {@link Layer}). Parameters live in tf.Variables owned by the
 * model, keyed by the layers (`dense0/kernel`, `dense0/bias`, ...); `apply` takes the parameters
 * explicitly so gradients can be taken with respect to any tensors, including the zero "signal"
 * tensors added at each signal layer's pre-activation that give the per-sample back-propagated δ
 * in the same backward pass.
 *
 * @example
 * const model = mlp({ inputs: 784, layers: [{ units: 256 }, { units: 10 }], seed: 1 });
 * const logits = model.apply(model.params, x).logits;
 */
export class Sequential<L extends Layer = Layer> {
  /** Every layer, in order. */
  readonly layers: readonly L[];
  /**
   * The layers with a signal point, in order: what per-layer signals and curvature blocks align
   * with.
   */
  readonly signalLayers: readonly SignalLayer[];
  readonly params: Readonly<Record<string, tf.Variable>>;
  /** Shape of one example's input. */
  readonly inputShape: readonly number[];
  /** Values in one example's input (the product of inputShape). */
  readonly inputs: number;
  /** Classes (the width of a logits row): the vocabulary of a language model. */
  readonly outputs: number;
  /**
   * Logits rows (and labels) per example: 1 for a classifier, the positions of a language model,
   * whose loss is the mean over every predicted token. `apply` returns [m·labelsPerExample,
   * outputs], row-major by example, as the dataset lays out its labels.
   */
  readonly labelsPerExample: number;
  readonly description: string;
  private disposed = false;

  /** Takes over `initial` (one tensor per parameter key of the layers, disposed here). */
  constructor(layers: readonly L[], initial: Params, description: string) {
    if (layers.length === 0)
      throw new GrngError('invalid-model', 'invalid model layers: need at least one layer', {
        option: 'layers',
      });
    const params: Record<string, tf.Variable> = {};
    const names = new Set<string>();
    let shape = layers[0]!.inputShape;
    for (const layer of layers) {
      if (names.has(layer.name))
        throw new GrngError('invalid-model', `invalid model: two layers are named ${layer.name}`, {
          option: 'layers',
          layer: layer.name,
        });
      names.add(layer.name);
      if (layer.inputShape.join() !== shape.join()) {
        throw new GrngError(
          'invalid-model',
          `invalid model: layer ${layer.name} takes [${layer.inputShape.join(', ')}] but the layer before it gives [${shape.join(', ')}]`,
          { option: 'layers', layer: layer.name },
        );
      }
      shape = layer.outputShape;
      for (const key of layer.params) {
        const value = initial[key];
        if (!value)
          throw new GrngError(
            'invalid-model',
            `invalid model: no initial value for ${key} of layer ${layer.name}`,
            { option: 'layers', layer: layer.name, key },
          );
        params[key] = tf.variable(value, true, `grng/${key}#${uid()}`);
      }
    }
    tf.dispose(Object.values(initial));
    const tokenInput = layers[0]!.kind === 'embedding';
    if (shape.length !== 1 && !(tokenInput && shape.length === 2))
      throw new GrngError(
        'invalid-model',
        `invalid model: the last layer ${layers.at(-1)!.name} gives [${shape.join(', ')}], not class logits [classes]${tokenInput ? ' or per-token logits [positions, vocabulary]' : ''}`,
        { option: 'layers' },
      );
    this.layers = layers;
    this.signalLayers = signalLayersOf(layers);
    this.params = params;
    this.inputShape = layers[0]!.inputShape;
    this.inputs = this.inputShape.reduce((n, d) => n * d, 1);
    this.outputs = shape.at(-1)!;
    this.labelsPerExample = shape.length === 2 ? shape[0]! : 1;
    this.description = description;
  }

  /** Number of trainable scalars. */
  get size(): number {
    return Object.values(this.params).reduce((n, p) => n + p.size, 0);
  }

  /**
   * Forward pass with explicit parameters on a batch [m, ...inputShape]; see {@link ApplyOptions}
   * for the signals, taps and constant parameters.
   */
  apply(params: Params, x: tf.Tensor, options: ApplyOptions = {}): { logits: tf.Tensor2D } {
    if (this.disposed) throw new GrngError('invalid-model', 'the model has been disposed');
    if (
      x.rank !== this.inputShape.length + 1 ||
      x.shape.slice(1).join() !== this.inputShape.join()
    ) {
      throw new GrngError(
        'shape',
        `model expects input of shape [batch, ${this.inputShape.join(', ')}], got [${x.shape.join(', ')}]`,
        { expected: [null, ...this.inputShape], got: x.shape },
      );
    }
    let a = x;
    const signals = options.signals
      ? new Map(this.signalLayers.map((layer, i) => [layer.name, options.signals![i]!]))
      : undefined;
    const tapsBefore = options.taps?.length ?? 0;
    this.layers.forEach((layer, index) => {
      const signal = layer.signalShape ? signals?.get(layer.name) : undefined;
      a = layer.apply(params, a, {
        ...(signal ? { signal } : {}),
        ...(layer.sublayers && signals ? { signals } : {}),
        ...(options.taps ? { taps: options.taps } : {}),
        ...(options.constantParams ? { constantParams: true } : {}),
        inputIsData: index === 0,
      });
    });
    // Taps align with signalLayers by position: a composite that ran its projections in another
    // order than it lists them would pair each block with another layer's statistics.
    if (options.taps && options.taps.length - tapsBefore !== this.signalLayers.length)
      throw new GrngError(
        'internal',
        `model ${this.description} recorded ${options.taps.length - tapsBefore} taps for ${this.signalLayers.length} signal layers`,
      );
    const logits = a.rank === 3 ? tf.reshape(a, [-1, this.outputs]) : a;
    return { logits: logits as tf.Tensor2D };
  }
  /** Copies of the current parameter values (the caller owns them). */
  snapshot(): Params {
    return Object.fromEntries(Object.entries(this.params).map(([k, v]) => [k, tf.clone(v)]));
  }

  /** Sets the parameters from tensors of the same shapes (e.g. a snapshot). */
  load(values: Params): void {
    for (const [key, variable] of Object.entries(this.params)) {
      const value = values[key];
      if (!value || value.shape.join() !== variable.shape.join()) {
        throw new GrngError(
          'shape',
          `cannot load parameter ${key}: expected shape [${variable.shape.join(', ')}], got ${value ? `[${value.shape.join(', ')}]` : 'nothing'}`,
          { key },
        );
      }
      variable.assign(value);
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    tf.dispose(Object.values(this.params));
  }
}

let counter = 0;
function uid(): number {
  counter += 1;
  return counter;
}

/**
 * Builds a multi-layer perceptron, dense layers `dense0`, `dense1`, ... (after a flatten layer when
 * `inputShape` has more than one dimension); see {@link MlpOptions}.
 *
 * @example
 * const model = mlp({ inputs: 784, layers: [{ units: 256 }, { units: 10 }], seed: 1 });
 */
export function mlp(
  options: MlpOptions & { readonly inputShape?: undefined },
): Sequential<DenseLayer>;
export function mlp(options: MlpOptions): Sequential;
export function mlp(options: MlpOptions): Sequential {
  checkKeys('model', options, ['inputs', 'inputShape', 'layers', 'init', 'seed']);
  const inputs = checkInteger('model inputs', options.inputs, 1);
  const inputShape = options.inputShape ?? [inputs];
  if (
    !Array.isArray(inputShape) ||
    inputShape.length === 0 ||
    !inputShape.every((d) => Number.isInteger(d) && d >= 1) ||
    inputShape.reduce((n, d) => n * d, 1) !== inputs
  ) {
    throw new GrngError(
      'invalid-model',
      `invalid model inputShape [${String(inputShape)}]: need whole numbers ≥ 1 whose product is the ${inputs} inputs`,
      { option: 'inputShape', value: inputShape },
    );
  }
  const init = checkChoice('model init', options.init ?? 'torch', INITIALIZERS);
  const seed = checkInteger('model seed', options.seed ?? 1, 0);
  if (!Array.isArray(options.layers) || options.layers.length === 0) {
    throw new GrngError('invalid-model', 'invalid model layers: need at least one dense layer', {
      option: 'layers',
    });
  }
  const widths = [
    inputs,
    ...options.layers.map((spec, index) =>
      checkInteger(`model layer ${index} units`, spec?.units, 1),
    ),
  ];
  const parameters = parameterCount(widths);
  if (parameters > MAX_PARAMETERS) {
    throw new GrngError(
      'invalid-model',
      `invalid model mlp:${widths.join('-')}: ${parameters.toExponential(2)} parameters, more than the ${MAX_PARAMETERS} (2^31 - 1) a model can have`,
      { option: 'model', parameters },
    );
  }
  const layers: Layer[] = inputShape.length > 1 ? [flattenLayer('flatten', inputShape)] : [];
  const initial: Params = {};
  options.layers.forEach((spec, index) => {
    const last = index === options.layers.length - 1;
    const activation = checkChoice(
      `model layer ${index} activation`,
      spec.activation ?? (last ? 'identity' : 'relu'),
      ACTIVATIONS,
    );
    const layer = denseLayer({
      name: `dense${index}`,
      index,
      inputs: widths[index]!,
      units: widths[index + 1]!,
      activation,
    });
    const { kernel, bias } = initDense(
      layer.inputs,
      layer.units,
      activation,
      init as Initializer,
      seed * 1009 + index * 2 + 1,
    );
    initial[layer.kernel] = kernel;
    initial[layer.bias] = bias;
    layers.push(layer);
  });
  return new Sequential(layers, initial, `mlp:${widths.join('-')}`);
}

/**
 * Most trainable scalars a model may have. tfjs addresses tensor elements with 32-bit integers
 * and the wasm backend's heap is a 32-bit address space, so a larger model cannot even be
 * allocated; saying so up front beats an out-of-memory crash deep inside a backend.
 */
export const MAX_PARAMETERS = 2 ** 31 - 1;

/**
 * Parses the CLI model spec `mlp:784-256-10` (relu between layers) or
 * `mlp:784-256-10:tanh` (another hidden activation) into {@link MlpOptions}. Each malformed
 * spec is a GrngError saying which part is wrong.
 *
 * @example
 * parseModelSpec('mlp:784-256-10:tanh'); // { inputs: 784, layers: [{ units: 256, activation: 'tanh' }, { units: 10, activation: 'identity' }] }
 */
export function parseModelSpec(
  spec: string,
  extra: { seed?: number; init?: Initializer } = {},
): MlpOptions & { readonly inputShape?: undefined } {
  const fail = (problem: string): never => {
    throw new GrngError(
      'invalid-model',
      `invalid model spec ${JSON.stringify(spec)}: ${problem} (expected e.g. mlp:784-256-10 or mlp:784-256-10:tanh)`,
      { option: 'model', value: spec },
    );
  };
  if (typeof spec !== 'string') fail('not a string');
  const parts = spec.trim().split(':');
  if (parts[0] !== 'mlp')
    fail(`unknown model kind ${JSON.stringify(parts[0])} (mlp:, cnn: or a .json model file)`);
  if (parts.length > 3) fail(`${parts.length - 1} ":" separators, at most 2`);
  const widthsText = parts[1] ?? '';
  if (widthsText === '') fail('no layer widths after "mlp:"');
  const pieces = widthsText.split('-');
  const widths = pieces.map((piece, index) => {
    const which = index === 0 ? 'the input width' : `width ${index + 1}`;
    if (piece === '') fail(`${which} is empty (two "-" in a row, or one at an end)`);
    if (!/^\d+$/.test(piece)) fail(`${which} ${JSON.stringify(piece)} is not a whole number`);
    const width = Number(piece);
    if (width < 1) fail(`${which} is ${piece}; every width must be ≥ 1`);
    if (width > MAX_PARAMETERS) fail(`${which} ${piece} is larger than ${MAX_PARAMETERS}`);
    return width;
  });
  if (widths.length < 2) fail('needs an input width and at least one layer width');
  if (parts.length === 3 && !(ACTIVATIONS as readonly string[]).includes(parts[2]!))
    fail(`unknown activation ${JSON.stringify(parts[2])} (one of ${ACTIVATIONS.join(', ')})`);
  const hidden = (parts[2] ?? 'relu') as Activation;
  const parameters = parameterCount(widths);
  if (parameters > MAX_PARAMETERS)
    fail(
      `${parameters.toExponential(2)} parameters, more than the ${MAX_PARAMETERS} (2^31 - 1) a model can have`,
    );
  const layers = widths.slice(1).map((units, i, all) => ({
    units,
    activation: i === all.length - 1 ? ('identity' as const) : hidden,
  }));
  return { inputs: widths[0]!, layers, ...extra };
}

/** Weights plus biases of dense layers of these widths (input first). */
function parameterCount(widths: readonly number[]): number {
  let total = 0;
  for (let i = 1; i < widths.length; i++) total += (widths[i - 1]! + 1) * widths[i]!;
  return total;
}
