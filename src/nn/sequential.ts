import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import { checkChoice, checkInteger, checkKeys } from '../validate.js';
import { ACTIVATIONS, activate, type Activation } from './activations.js';
import { INITIALIZERS, initDense, type Initializer } from './init.js';
import { matMulConstantB, layerMatMul, matMulInput } from './ops.js';
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
  /** Dense layers in order; the last one produces the logits. */
  readonly layers: readonly DenseSpec[];
  /** Weight initialisation, see {@link Initializer}; default `torch` (PyTorch's nn.Linear). */
  readonly init?: Initializer;
  /** Seed of the initial weights; default 1. */
  readonly seed?: number;
}

/** What one dense layer looked like in a forward pass: its input and (later) its signal. */
export interface DenseTap {
  /** Layer input a (m×in), without the homogeneous column. */
  readonly a: tf.Tensor2D;
  /** Pre-activation s (m×out). */
  readonly s: tf.Tensor2D;
}

export interface DenseLayerInfo {
  readonly index: number;
  readonly inputs: number;
  readonly units: number;
  readonly activation: Activation;
  /** Keys of its parameters in the parameter tree. */
  readonly kernel: string;
  readonly bias: string;
}

/**
 * A stack of dense layers with biases. Parameters live in tf.Variables owned by the model
 * (`params`, keyed `dense{i}/kernel` and `dense{i}/bias`, kernels stored in×out so the forward
 * product needs no transpose). `apply` takes the parameters explicitly so gradients can be
 * taken with respect to any tensors, including the zero "signal" tensors added to each
 * pre-activation that give the per-sample back-propagated δ in the same backward pass.
 *
 * @example
 * const model = mlp({ inputs: 784, layers: [{ units: 256 }, { units: 10 }], seed: 1 });
 * const logits = model.apply(model.params, x).logits;
 */
export class Sequential {
  readonly layers: readonly DenseLayerInfo[];
  readonly params: Readonly<Record<string, tf.Variable>>;
  readonly inputs: number;
  readonly outputs: number;
  readonly description: string;
  private disposed = false;

  constructor(options: MlpOptions) {
    checkKeys('model', options, ['inputs', 'layers', 'init', 'seed']);
    const inputs = checkInteger('model inputs', options.inputs, 1);
    const init = checkChoice('model init', options.init ?? 'torch', INITIALIZERS);
    const seed = checkInteger('model seed', options.seed ?? 1, 0);
    if (!Array.isArray(options.layers) || options.layers.length === 0) {
      throw new GrngError('invalid-model', 'invalid model layers: need at least one dense layer', { option: 'layers' });
    }
    const widths = [inputs, ...options.layers.map((spec, index) => checkInteger(`model layer ${index} units`, spec?.units, 1))];
    const parameters = parameterCount(widths);
    if (parameters > MAX_PARAMETERS) {
      throw new GrngError('invalid-model', `invalid model mlp:${widths.join('-')}: ${parameters.toExponential(2)} parameters, more than the ${MAX_PARAMETERS} (2^31 - 1) a model can have`, { option: 'model', parameters });
    }
    const layers: DenseLayerInfo[] = [];
    const params: Record<string, tf.Variable> = {};
    let width = inputs;
    options.layers.forEach((spec, index) => {
      const units = checkInteger(`model layer ${index} units`, spec.units, 1);
      const last = index === options.layers.length - 1;
      const activation = checkChoice(`model layer ${index} activation`, spec.activation ?? (last ? 'identity' : 'relu'), ACTIVATIONS);
      const { kernel, bias } = initDense(width, units, activation, init as Initializer, seed * 1009 + index * 2 + 1);
      const info = { index, inputs: width, units, activation, kernel: `dense${index}/kernel`, bias: `dense${index}/bias` };
      params[info.kernel] = tf.variable(kernel, true, `grng/${info.kernel}#${uid()}`);
      params[info.bias] = tf.variable(bias, true, `grng/${info.bias}#${uid()}`);
      tf.dispose([kernel, bias]);
      layers.push(info);
      width = units;
    });
    this.layers = layers;
    this.params = params;
    this.inputs = inputs;
    this.outputs = width;
    this.description = `mlp:${[inputs, ...layers.map((l) => l.units)].join('-')}`;
  }

  /** Number of trainable scalars. */
  get size(): number {
    return Object.values(this.params).reduce((n, p) => n + p.size, 0);
  }

  /**
   * Forward pass with explicit parameters. With `signals` (one m×out tensor per layer, zeros in
   * practice), each is added to its layer's pre-activation, so differentiating the loss with
   * respect to them yields the back-propagated signal; `taps` returns each layer's input.
   * `constantParams` treats the parameters as constants: a backward pass then computes signals
   * but no weight gradients.
   */
  apply(params: Params, x: tf.Tensor2D, options: { signals?: readonly tf.Tensor2D[]; taps?: DenseTap[]; constantParams?: boolean } = {}): { logits: tf.Tensor2D } {
    if (this.disposed) throw new GrngError('invalid-model', 'the model has been disposed');
    if (x.rank !== 2 || x.shape[1] !== this.inputs) {
      throw new GrngError('shape', `model expects input of shape [batch, ${this.inputs}], got [${x.shape.join(', ')}]`, { expected: [null, this.inputs], got: x.shape });
    }
    let a = x;
    for (const layer of this.layers) {
      const kernel = params[layer.kernel] as tf.Tensor2D;
      const bias = params[layer.bias] as tf.Tensor1D;
      const product = options.constantParams
        ? layer.index === 0
          ? tf.matMul(a, kernel)
          : matMulConstantB(a, kernel)
        : layer.index === 0
          ? matMulInput(a, kernel)
          : layerMatMul(a, kernel);
      let s = tf.add(product, bias) as tf.Tensor2D;
      const signal = options.signals?.[layer.index];
      if (signal) s = tf.add(s, signal);
      options.taps?.push({ a, s });
      a = activate(layer.activation, s) as tf.Tensor2D;
    }
    return { logits: a };
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
        throw new GrngError('shape', `cannot load parameter ${key}: expected shape [${variable.shape.join(', ')}], got ${value ? `[${value.shape.join(', ')}]` : 'nothing'}`, { key });
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

/** Builds a multi-layer perceptron; see {@link MlpOptions}. */
export function mlp(options: MlpOptions): Sequential {
  return new Sequential(options);
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
export function parseModelSpec(spec: string, extra: { seed?: number; init?: Initializer } = {}): MlpOptions {
  const fail = (problem: string): never => {
    throw new GrngError('invalid-model', `invalid model spec ${JSON.stringify(spec)}: ${problem} (expected e.g. mlp:784-256-10 or mlp:784-256-10:tanh)`, { option: 'model', value: spec });
  };
  if (typeof spec !== 'string') fail('not a string');
  const parts = spec.trim().split(':');
  if (parts[0] !== 'mlp') fail(`unknown model kind ${JSON.stringify(parts[0])} (only mlp)`);
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
  if (parts.length === 3 && !(ACTIVATIONS as readonly string[]).includes(parts[2]!)) fail(`unknown activation ${JSON.stringify(parts[2])} (one of ${ACTIVATIONS.join(', ')})`);
  const hidden = (parts[2] ?? 'relu') as Activation;
  const parameters = parameterCount(widths);
  if (parameters > MAX_PARAMETERS) fail(`${parameters.toExponential(2)} parameters, more than the ${MAX_PARAMETERS} (2^31 - 1) a model can have`);
  const layers = widths.slice(1).map((units, i, all) => ({ units, activation: i === all.length - 1 ? ('identity' as const) : hidden }));
  return { inputs: widths[0]!, layers, ...extra };
}

/** Weights plus biases of dense layers of these widths (input first). */
function parameterCount(widths: readonly number[]): number {
  let total = 0;
  for (let i = 1; i < widths.length; i++) total += (widths[i - 1]! + 1) * widths[i]!;
  return total;
}
