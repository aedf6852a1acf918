/*
 * tfjs-layers twins of grng's GPT layers, so a trained `gpt:` model can be saved as a
 * TensorFlow.js LayersModel and run by anything that loads one (tf.loadLayersModel), with no grng
 * code at inference time beyond registering these two classes. A `gpt:` model is, as a
 * tf.sequential():
 *
 *   GrngEmbedding({ vocabulary, positions, width, inputShape: [positions] }),
 *   L × GrngTransformerBlock({ positions, width, heads, hidden }),
 *   tf.layers.layerNormalization({ axis: -1, epsilon: 1e-5 }),
 *   tf.layers.dense({ units: vocabulary }),
 *
 * and each layer's weights, in order, are the grng layer's `params` values in order. The built-in
 * layer norm computes grng's biased-variance norm (tf.moments) and the built-in dense applies its
 * kernel at every position of a rank-3 input, so only the embedding and the block need classes.
 * The forward passes repeat src/nn's arithmetic op for op (the same products, the same order of
 * additions), so predictions agree with grng's to float32 rounding (test/tfjsLayers.test.ts).
 */
import * as tf from '@tensorflow/tfjs';

/**
 * grng's layer-norm ε (nn/layerNorm.ts's LAYER_NORM_EPSILON, which a test holds this equal to),
 * written out so that this module imports nothing but tfjs: a browser bundle takes it alone
 * (`grng/tfjs-layers`) without grng's Node parts.
 */
export const GRNG_LAYER_NORM_EPSILON = 1e-5;

type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;
type LayerVariable = tf.LayerVariable;
type Shape = tf.Shape;

/** The value src/nn/transformerBlock.ts adds to future positions' scores (exp of it is 0). */
const MASKED = -1e9;

/** Sizes of a {@link GrngEmbedding}, with the usual layer arguments (name, inputShape, …). */
export interface GrngEmbeddingArgs extends LayerArgs {
  vocabulary: number;
  positions: number;
  width: number;
}

/** Sizes of a {@link GrngTransformerBlock}, with the usual layer arguments. */
export interface GrngTransformerBlockArgs extends LayerArgs {
  positions: number;
  width: number;
  heads: number;
  /** Hidden width of the MLP (grng's default is 4·width; here it must be given). */
  hidden: number;
}

function positiveInteger(layer: string, field: string, value: unknown): number {
  if (!Number.isInteger(value) || (value as number) < 1)
    throw new Error(`${layer}: ${field} must be a whole number ≥ 1, got ${String(value)}`);
  return value as number;
}

function oneTensor(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
  return Array.isArray(inputs) ? inputs[0]! : inputs;
}

function oneShape(inputShape: Shape | Shape[]): Shape {
  return Array.isArray(inputShape[0]) ? (inputShape as Shape[])[0]! : (inputShape as Shape);
}

/**
 * A mismatch is an error at build time: the position table and the causal mask have `positions`
 * rows, so any other sequence length would otherwise fail deep inside an add.
 */
function expectShape(layer: string, inputShape: Shape, expected: readonly number[]): void {
  const got = inputShape.slice(1);
  if (got.length !== expected.length || got.some((d, i) => d !== null && d !== expected[i]))
    throw new Error(
      `${layer}: expects input [batch, ${expected.join(', ')}], got [${inputShape.join(', ')}]`,
    );
}

/**
 * Token plus learned positional embedding, grng's `embedding` layer: token ids [batch, positions]
 * (float32 or int32) → tokens[id] + positions[p], [batch, positions, width]. Weights, in grng's
 * `params` order: `tokens` [vocabulary, width], `positions` [positions, width]. Inference only: the
 * lookup is tf.gather, whose result equals grng's one-hot product exactly (one nonzero term).
 *
 * @example
 * const embed = new GrngEmbedding({ vocabulary: 256, positions: 64, width: 128, inputShape: [64] });
 */
export class GrngEmbedding extends tf.layers.Layer {
  static className = 'GrngEmbedding';
  readonly vocabulary: number;
  readonly positions: number;
  readonly width: number;
  private tokens?: LayerVariable;
  private positionTable?: LayerVariable;

  constructor(args: GrngEmbeddingArgs) {
    super(args);
    this.vocabulary = positiveInteger('GrngEmbedding', 'vocabulary', args.vocabulary);
    this.positions = positiveInteger('GrngEmbedding', 'positions', args.positions);
    this.width = positiveInteger('GrngEmbedding', 'width', args.width);
  }

  override build(inputShape: Shape | Shape[]): void {
    expectShape(this.name, oneShape(inputShape), [this.positions]);
    // GPT-2's N(0, 0.02), as grng initialises both tables; loading overwrites them anyway.
    const init = tf.initializers.randomNormal({ mean: 0, stddev: 0.02 });
    this.tokens = this.addWeight('tokens', [this.vocabulary, this.width], 'float32', init);
    this.positionTable = this.addWeight('positions', [this.positions, this.width], 'float32', init);
    this.built = true;
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    return [...oneShape(inputShape), this.width];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const ids = tf.cast(oneTensor(inputs), 'int32');
      return tf.add(tf.gather(this.tokens!.read(), ids), this.positionTable!.read());
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      vocabulary: this.vocabulary,
      positions: this.positions,
      width: this.width,
    };
  }
}

/** Names of a block's weights, in grng's transformerBlockLayer(...).params order. */
const BLOCK_WEIGHTS = [
  'ln1/gamma',
  'ln1/beta',
  'q/kernel',
  'q/bias',
  'k/kernel',
  'k/bias',
  'v/kernel',
  'v/bias',
  'o/kernel',
  'o/bias',
  'ln2/gamma',
  'ln2/beta',
  'fc1/kernel',
  'fc1/bias',
  'fc2/kernel',
  'fc2/bias',
] as const;

type BlockWeight = (typeof BLOCK_WEIGHTS)[number];

/**
 * A pre-norm transformer block, grng's `transformerBlock` layer: x + attention(ln1(x)), then
 * x + fc2(gelu(fc1(ln2(x)))), [batch, positions, width] → the same shape. Causal multi-head
 * attention with Q scaled by 1/√(width/heads); layer norms with biased variance and ε =
 * GRNG_LAYER_NORM_EPSILON; exact GELU. Weights, in grng's `params` order: `ln1/gamma`, `ln1/beta`,
 * `q/kernel`, `q/bias`, `k/kernel`, `k/bias`, `v/kernel`, `v/bias`, `o/kernel`, `o/bias`,
 * `ln2/gamma`, `ln2/beta`, `fc1/kernel` [width, hidden], `fc1/bias`, `fc2/kernel`
 * [hidden, width], `fc2/bias` (projections [width, width], biases and norms [units]).
 *
 * @example
 * const block = new GrngTransformerBlock({ positions: 64, width: 128, heads: 4, hidden: 512 });
 */
export class GrngTransformerBlock extends tf.layers.Layer {
  static className = 'GrngTransformerBlock';
  readonly positions: number;
  readonly width: number;
  readonly heads: number;
  readonly hidden: number;
  private weightsByName = new Map<BlockWeight, LayerVariable>();
  private readonly causalMask: Float32Array;

  constructor(args: GrngTransformerBlockArgs) {
    super(args);
    this.positions = positiveInteger('GrngTransformerBlock', 'positions', args.positions);
    this.width = positiveInteger('GrngTransformerBlock', 'width', args.width);
    this.heads = positiveInteger('GrngTransformerBlock', 'heads', args.heads);
    this.hidden = positiveInteger('GrngTransformerBlock', 'hidden', args.hidden);
    if (this.width % this.heads !== 0)
      throw new Error(
        `GrngTransformerBlock: the width ${this.width} is not a multiple of the ${this.heads} heads`,
      );
    // Host values, as grng builds its mask: a tensor held by the layer would outlive dispose().
    const n = this.positions;
    this.causalMask = new Float32Array(n * n);
    for (let query = 0; query < n; query++)
      for (let key = query + 1; key < n; key++) this.causalMask[query * n + key] = MASKED;
  }

  override build(inputShape: Shape | Shape[]): void {
    expectShape(this.name, oneShape(inputShape), [this.positions, this.width]);
    const { width, hidden } = this;
    const shapes: Record<BlockWeight, number[]> = {
      'ln1/gamma': [width],
      'ln1/beta': [width],
      'q/kernel': [width, width],
      'q/bias': [width],
      'k/kernel': [width, width],
      'k/bias': [width],
      'v/kernel': [width, width],
      'v/bias': [width],
      'o/kernel': [width, width],
      'o/bias': [width],
      'ln2/gamma': [width],
      'ln2/beta': [width],
      'fc1/kernel': [width, hidden],
      'fc1/bias': [hidden],
      'fc2/kernel': [hidden, width],
      'fc2/bias': [width],
    };
    for (const name of BLOCK_WEIGHTS) {
      const init = name.endsWith('/gamma')
        ? tf.initializers.ones()
        : name.endsWith('/kernel')
          ? tf.initializers.glorotUniform({})
          : tf.initializers.zeros();
      this.weightsByName.set(name, this.addWeight(name, shapes[name], 'float32', init));
    }
    this.built = true;
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    return [...oneShape(inputShape)];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = oneTensor(inputs);
      const m = x.shape[0]!;
      const { positions, width, heads } = this;
      const headWidth = width / heads;
      const w = (name: BlockWeight): tf.Tensor => this.weightsByName.get(name)!.read();
      const layerNorm = (t: tf.Tensor, part: 'ln1' | 'ln2'): tf.Tensor => {
        const centered = tf.sub(t, tf.mean(t, -1, true));
        const variance = tf.mean(tf.square(centered), -1, true);
        const normalised = tf.mul(centered, tf.rsqrt(tf.add(variance, GRNG_LAYER_NORM_EPSILON)));
        return tf.add(tf.mul(normalised, w(`${part}/gamma`)), w(`${part}/beta`));
      };
      // One 2-D product over all token rows, as grng's sequence-dense layer: a batched or
      // broadcast product could sum in another order and differ in the last bits.
      const dense = (t: tf.Tensor, part: 'q' | 'k' | 'v' | 'o' | 'fc1' | 'fc2'): tf.Tensor => {
        const [inputs, units] = w(`${part}/kernel`).shape as [number, number];
        const rows = tf.reshape(t, [m * positions, inputs]) as tf.Tensor2D;
        const s = tf.add(tf.matMul(rows, w(`${part}/kernel`) as tf.Tensor2D), w(`${part}/bias`));
        return tf.reshape(s, [m, positions, units]);
      };
      const splitHeads = (t: tf.Tensor): tf.Tensor3D =>
        tf.reshape(tf.transpose(tf.reshape(t, [m, positions, heads, headWidth]), [0, 2, 1, 3]), [
          m * heads,
          positions,
          headWidth,
        ]);
      const h = layerNorm(x, 'ln1');
      const queries = splitHeads(tf.mul(dense(h, 'q'), 1 / Math.sqrt(headWidth)));
      const keys = splitHeads(dense(h, 'k'));
      const values = splitHeads(dense(h, 'v'));
      const mask = tf.tensor2d(this.causalMask, [positions, positions]);
      const scores = tf.add(tf.matMul(queries, keys, false, true), mask);
      // exp(x − max) / Σ, grng's softmaxLastAxis, rather than tf.softmax (whose kernel may
      // round differently).
      const e = tf.exp(tf.sub(scores, tf.max(scores, -1, true)));
      const attention = tf.div(e, tf.sum(e, -1, true));
      const attended = tf.reshape(
        tf.transpose(
          tf.reshape(tf.matMul(attention, values), [m, heads, positions, headWidth]),
          [0, 2, 1, 3],
        ),
        [m, positions, width],
      );
      const afterAttention = tf.add(x, dense(attended, 'o'));
      const s = dense(layerNorm(afterAttention, 'ln2'), 'fc1');
      // Exact GELU, x·Φ(x), as grng's activations.ts writes it.
      const gelu = tf.mul(tf.mul(s, 0.5), tf.add(1, tf.erf(tf.mul(s, Math.SQRT1_2))));
      return tf.add(afterAttention, dense(gelu, 'fc2'));
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      positions: this.positions,
      width: this.width,
      heads: this.heads,
      hidden: this.hidden,
    };
  }
}

let registered = false;

/**
 * Registers {@link GrngEmbedding} and {@link GrngTransformerBlock} with tfjs's serialization, so
 * tf.loadLayersModel and tf.models.modelFromJSON can rebuild a saved grng model. Importing this
 * module already does it; calling it again does nothing.
 *
 * @example
 * registerGrngLayers();
 * const model = await tf.loadLayersModel('file://model/model.json');
 */
export function registerGrngLayers(): void {
  if (registered) return;
  tf.serialization.registerClass(GrngEmbedding);
  tf.serialization.registerClass(GrngTransformerBlock);
  registered = true;
}

registerGrngLayers();
