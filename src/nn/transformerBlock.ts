import * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';
import type { Layer, LayerApplyOptions } from './layer.js';
import { layerNormLayer, type LayerNormLayer } from './layerNorm.js';
import { softmaxLastAxis } from './ops.js';
import { sequenceDenseLayer, type SequenceDenseLayer } from './sequenceDense.js';

/**
 * Added to the scores of future positions before the softmax: e^(−1e9 − max) is exactly 0 in
 * float32, so a position never attends to a later one, and it is finite, so a row is never
 * all −∞ (which would make the softmax NaN).
 */
const MASKED = -1e9;

/** A pre-norm transformer block (GPT-2's layout), [m, positions, width] → the same shape. */
export interface TransformerBlockLayer extends Layer {
  readonly kind: 'transformerBlock';
  readonly positions: number;
  readonly width: number;
  readonly heads: number;
  /** Hidden width of the MLP. */
  readonly hidden: number;
  readonly sublayers: readonly [
    LayerNormLayer,
    SequenceDenseLayer,
    SequenceDenseLayer,
    SequenceDenseLayer,
    SequenceDenseLayer,
    LayerNormLayer,
    SequenceDenseLayer,
    SequenceDenseLayer,
  ];
}

/**
 * Describes one block: x + attention(ln1(x)), then x + mlp(ln2(x)). Attention is causal and
 * multi-head with separate Q, K, V and output projections (each a sequence-dense layer with its
 * own Kronecker block, as layers.md §3 asks); the MLP is width → hidden (GELU) → width. Sublayer
 * names are `{name}/ln1`, `{name}/q`, `{name}/k`, `{name}/v`, `{name}/o`, `{name}/ln2`,
 * `{name}/fc1`, `{name}/fc2`, listed in the order the forward pass runs them, which is the order
 * of the model's signal layers.
 *
 * @example
 * const block = transformerBlockLayer({ name: 'block0', positions: 64, width: 128, heads: 4, hidden: 512 });
 */
export function transformerBlockLayer({
  name,
  positions,
  width,
  heads,
  hidden,
}: {
  name: string;
  positions: number;
  width: number;
  heads: number;
  hidden: number;
}): TransformerBlockLayer {
  const shape = [positions, width];
  const projection = (part: string, inputs: number, units: number, gelu = false) =>
    sequenceDenseLayer({
      name: `${name}/${part}`,
      positions,
      inputs,
      units,
      activation: gelu ? 'gelu' : 'identity',
    });
  const ln1 = layerNormLayer(`${name}/ln1`, shape);
  const q = projection('q', width, width);
  const k = projection('k', width, width);
  const v = projection('v', width, width);
  const o = projection('o', width, width);
  const ln2 = layerNormLayer(`${name}/ln2`, shape);
  const fc1 = projection('fc1', width, hidden, true);
  const fc2 = projection('fc2', hidden, width);
  const sublayers = [ln1, q, k, v, o, ln2, fc1, fc2] as const;
  const headWidth = width / heads;
  const causalMask = new Float32Array(positions * positions);
  for (let query = 0; query < positions; query++)
    for (let key = query + 1; key < positions; key++) causalMask[query * positions + key] = MASKED;
  return {
    kind: 'transformerBlock',
    name,
    positions,
    width,
    heads,
    hidden,
    sublayers,
    inputShape: shape,
    outputShape: shape,
    params: sublayers.flatMap((layer) => layer.params),
    apply(params: Params, x: tf.Tensor, options: LayerApplyOptions = {}): tf.Tensor {
      const m = x.shape[0]!;
      const run = (layer: Layer, input: tf.Tensor): tf.Tensor => {
        const signal = options.signals?.get(layer.name);
        return layer.apply(params, input, {
          ...(signal ? { signal } : {}),
          ...(options.taps ? { taps: options.taps } : {}),
          ...(options.constantParams ? { constantParams: true } : {}),
        });
      };
      // [m, positions, width] → [m·heads, positions, headWidth]: one batched product per step.
      const splitHeads = (t: tf.Tensor): tf.Tensor3D =>
        tf.reshape(tf.transpose(tf.reshape(t, [m, positions, heads, headWidth]), [0, 2, 1, 3]), [
          m * heads,
          positions,
          headWidth,
        ]);
      const h = run(ln1, x);
      // Q scaled before the product: the same scores as dividing them, on d/h fewer values.
      const queries = splitHeads(tf.mul(run(q, h), 1 / Math.sqrt(headWidth)));
      const keys = splitHeads(run(k, h));
      const values = splitHeads(run(v, h));
      // From host values: tf.linalg.bandPart unstacks and re-stacks its input (14 ms a step).
      const mask = tf.tensor2d(causalMask, [positions, positions]);
      const weights = softmaxLastAxis(tf.add(tf.matMul(queries, keys, false, true), mask));
      const attended = tf.reshape(
        tf.transpose(
          tf.reshape(tf.matMul(weights, values), [m, heads, positions, headWidth]),
          [0, 2, 1, 3],
        ),
        [m, positions, width],
      );
      const afterAttention = tf.add(x, run(o, attended));
      return tf.add(afterAttention, run(fc2, run(fc1, run(ln2, afterAttention))));
    },
  };
}
