import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../../errors.js';
import type { SequenceDenseLayer } from '../../nn/sequenceDense.js';
import type { KroneckerBlock, OuterProductRows, StatisticsContext } from './block.js';
import { homogeneous, kernelBiasLayout } from './dense.js';

export interface SequenceBlockOptions {
  /** `expand` (default) or `reduce`; see {@link sequenceDenseBlock}. */
  readonly sequenceFactors?: 'expand' | 'reduce';
}

/**
 * The block of a dense layer applied at every position of a sequence [prior: Eschenhagen et al.
 * 2023, "Kronecker-factored approximate curvature for modern neural network architectures"],
 * docs/algorithms.md. Same gradient matrix V = [∇W; ∇bᵀ] as dense.
 * - `expand` (default): every token is a row, Ā = mean over the m·R tokens of ā āᵀ, Ḡ = mean of
 *   δ δᵀ with δ each token's own gradient — the dense block on [m·R, ·] rows, exact for a loss
 *   that is a mean over tokens (a language model) where dense K-FAC is exact.
 * - `reduce`: one row per sequence, Ā from the mean of ā over positions and Ḡ from the sum of δ,
 *   exact where the tokens are pooled before the loss; O(m·d²) instead of O(m·R·d²). For a loss
 *   with L rows per sequence (a language model: L = R), the per-sequence gradient Σ_t ā_t δ_tᵀ is
 *   one of L rows' worth, so Ḡ is divided by L to keep F on the same per-row scale as expand
 *   (context.rowsPerExample).
 *
 * @example
 * const block = sequenceDenseBlock(head, { sequenceFactors: 'expand' });
 */
export function sequenceDenseBlock(
  layer: SequenceDenseLayer,
  options: SequenceBlockOptions = {},
): KroneckerBlock {
  const { name, inputs, units, kernel, bias, positions } = layer;
  const factors = options.sequenceFactors ?? 'expand';
  const tokenRows = (t: tf.Tensor, width: number, what: string): tf.Tensor2D => {
    if (t.shape.at(-1) !== width || t.size % width !== 0)
      throw new GrngError(
        'shape',
        `sequence-dense layer ${name} (${inputs}→${units}) got ${what} [${t.shape.join(', ')}]`,
        { layer: name, [what]: t.shape },
      );
    return tf.reshape(t, [-1, width]);
  };
  return {
    layer: name,
    kind: 'sequenceDense',
    params: [kernel, bias],
    aSize: inputs + 1,
    gSize: units,
    statisticRows(a: tf.Tensor, delta: tf.Tensor, context: StatisticsContext = {}) {
      return tf.tidy(() => {
        const aRows = tokenRows(a, inputs, 'a');
        const dRows = tokenRows(delta, units, 'delta');
        if (factors === 'expand') return { a: homogeneous(aRows), g: dRows };
        const m = aRows.shape[0] / positions;
        // mean_t [a_t, 1] = [mean_t a_t, 1]; Σ_t δ_t scaled so that Ḡ carries 1/L.
        const meanA = tf.mean(tf.reshape(aRows, [m, positions, inputs]), 1) as tf.Tensor2D;
        const perRow = 1 / Math.sqrt(context.rowsPerExample ?? 1);
        const sumD = tf.mul(tf.sum(tf.reshape(dRows, [m, positions, units]), 1), perRow);
        return { a: homogeneous(meanA), g: sumD as tf.Tensor2D };
      });
    },
    ...kernelBiasLayout(kernel, bias, inputs, units),
    // R-Kalman observes tokens, as the loss does: the rows are token rows (rkalman picks which).
    outerProductRows(a: tf.Tensor, delta: tf.Tensor, k: number): OuterProductRows {
      const aRows = tokenRows(a, inputs, 'a');
      const dRows = tokenRows(delta, units, 'delta');
      const first = (t: tf.Tensor2D): tf.Tensor2D =>
        t.shape[0] === k ? t : tf.slice(t, [0, 0], [k, -1]);
      return { kernel, bias, a: first(aRows), delta: first(dRows) };
    },
  };
}
