import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import type { Layer, LayerApplyOptions } from './layer.js';
import { addBroadcast, matMulTransposeA } from './ops.js';

type CustomGradientFunc = Parameters<typeof tf.customGrad>[0];

/**
 * onehot·table with a gradient for the table only, onehotᵀ·dy. The one-hot matrix is made inside
 * the op and saved for the backward pass: one made outside it would be an intermediate of the
 * forward function, which tfjs disposes before the backward pass runs.
 */
function lookup(oneHotOf: () => tf.Tensor2D, table: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad(((t: tf.Tensor2D, save: tf.GradSaveFunc) => {
    const oneHot = oneHotOf();
    save([oneHot]);
    return {
      value: tf.matMul(oneHot, t),
      gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => [
        matMulTransposeA(saved[0] as tf.Tensor2D, dy),
      ],
    };
  }) as unknown as CustomGradientFunc) as unknown as (t: tf.Tensor2D) => tf.Tensor2D;
  return op(table);
}

/**
 * The largest vocabulary an embedding takes. Its lookup is a one-hot product (below), whose
 * [tokens, vocabulary] one-hot matrix grows with the vocabulary: 4,096 keeps it under 32 MiB for
 * the 2,048 tokens of a batch of 32 windows of 64, and byte-level text needs 256.
 */
export const MAX_VOCABULARY = 4096;

/** Token and learned positional embedding: ids [m, positions] → [m, positions, width]. */
export interface EmbeddingLayer extends Layer {
  readonly kind: 'embedding';
  readonly vocabulary: number;
  readonly positions: number;
  readonly width: number;
  /** Key of the vocabulary×width token table. */
  readonly tokens: string;
  /** Key of the positions×width table added at each position. */
  readonly positionTable: string;
}

/**
 * Describes an embedding layer; the model creates its tables. The input holds token ids as
 * float32 (what a batch carries; exact up to 2²⁴). The lookup is onehot(ids)·table, a product
 * rather than tf.gather: its gradient is a product too (tf.gather's is an unsorted segment sum,
 * which not every backend implements), the data need no gradient and it is
 * differentiable to any order. Embeddings have no signal point: their parameters go to the
 * first-order group (docs/algorithms.md, parameter groups).
 *
 * @example
 * const embed = embeddingLayer({ name: 'embed0', vocabulary: 256, positions: 64, width: 128 });
 */
export function embeddingLayer({
  name,
  vocabulary,
  positions,
  width,
}: {
  name: string;
  vocabulary: number;
  positions: number;
  width: number;
}): EmbeddingLayer {
  const tokens = `${name}/tokens`;
  const positionTable = `${name}/positions`;
  return {
    kind: 'embedding',
    name,
    vocabulary,
    positions,
    width,
    tokens,
    positionTable,
    inputShape: [positions],
    outputShape: [positions, width],
    params: [tokens, positionTable],
    apply(params: Params, x: tf.Tensor, options: LayerApplyOptions = {}): tf.Tensor {
      const m = x.shape[0]!;
      // int32 one-hot, then a cast: tfjs-wasm's OneHot asked for float32 writes the integer bits
      // of 1 (measured: 1.4e-45 in every hot entry), which zeroed every lookup.
      const oneHotOf = (): tf.Tensor2D =>
        tf.reshape(tf.cast(tf.oneHot(tf.cast(x, 'int32'), vocabulary), 'float32'), [
          m * positions,
          vocabulary,
        ]) as tf.Tensor2D;
      const table = params[tokens] as tf.Tensor2D;
      const looked = options.constantParams
        ? tf.matMul(oneHotOf(), table)
        : lookup(oneHotOf, table);
      return addBroadcast(tf.reshape(looked, [m, positions, width]), params[positionTable]!);
    },
  };
}
