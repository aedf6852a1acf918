import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../../errors.js';
import type { DenseLayer } from '../../nn/dense.js';
import type { Params } from '../../types.js';
import { foldGram, secondMoments, type BatchFactors, type FactorAverages } from '../factors.js';
import type { KroneckerBlock, OuterProductRows } from './block.js';

/**
 * The dense layer's block [prior: K-FAC, Martens & Grosse 2015] (docs/algorithms.md §2):
 * A = ĀᵀĀ/m with the homogeneous input Ā = [a, 1], G = ΔᵀΔ/m. The ones column goes *last*
 * because grng stores a dense kernel as in×out with the bias separate: stacking the bias under
 * the kernel gives the (in+1)×out gradient matrix V = [∇W; ∇bᵀ] whose Fisher is A ⊗ G, so the
 * bias owns A's last row and column, and U = A⁻¹ V G⁻¹ needs only plain products (the
 * transpose of the textbook G⁻¹VA⁻¹ in our layout).
 *
 * @example
 * const block = denseBlock(model.layers[0]);
 */
export function denseBlock(layer: DenseLayer): KroneckerBlock {
  const { name, inputs, units, kernel, bias } = layer;
  return {
    layer: name,
    kind: 'dense',
    params: [kernel, bias],
    aSize: inputs + 1,
    gSize: units,
    statisticRows(a: tf.Tensor, delta: tf.Tensor) {
      checkSignals(name, a, delta, inputs, units);
      return { a: homogeneous(a as tf.Tensor2D), g: delta as tf.Tensor2D };
    },
    ...kernelBiasLayout(kernel, bias, inputs, units),
    outerProductRows(a: tf.Tensor, delta: tf.Tensor, k: number): OuterProductRows {
      checkSignals(name, a, delta, inputs, units);
      const rowsOf = (t: tf.Tensor2D): tf.Tensor2D =>
        t.shape[0] === k ? t : tf.slice(t, [0, 0], [k, -1]);
      return { kernel, bias, a: rowsOf(a as tf.Tensor2D), delta: rowsOf(delta as tf.Tensor2D) };
    },
  };
}

/**
 * The K-FAC statistics of one dense layer for one batch: Â = ĀᵀĀ/m with Ā = [a, 1], Ĝ = ΔᵀΔ/m.
 * The caller owns both results; `a` and `delta` are not disposed.
 *
 * @param a layer input, m×in (no homogeneous column).
 * @param delta per-sample back-propagated signal δ_i = ∂l_i/∂s_i, m×out.
 * @example
 * const { a: A, g: G } = batchFactors(signals.a, signals.delta);
 */
export function batchFactors(a: tf.Tensor2D, delta: tf.Tensor2D): BatchFactors {
  checkPair(a, delta);
  const rows = homogeneous(a);
  try {
    return secondMoments(rows, delta);
  } finally {
    rows.dispose();
  }
}

/**
 * One batch of a dense layer folded into its factor averages (see foldGram: one ssyrk per factor
 * where the native BLAS is loaded). Returns new averages; `previous` (not disposed), `a` and
 * `delta` stay the caller's.
 *
 * @example
 * const next = foldFactors(layer, signals.a, sampledDelta, 0.95);
 */
export function foldFactors(
  previous: FactorAverages | undefined,
  a: tf.Tensor2D,
  delta: tf.Tensor2D,
  beta: number,
): FactorAverages {
  checkPair(a, delta);
  const rows = homogeneous(a);
  try {
    return foldGram(previous, rows, delta, beta);
  } finally {
    rows.dispose();
  }
}

/** [a, 1]: the input with the homogeneous column last. */
export function homogeneous(a: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => tf.concat([a, tf.ones([a.shape[0], 1])], 1) as tf.Tensor2D);
}

function checkPair(a: tf.Tensor, delta: tf.Tensor): void {
  if (a.rank !== 2 || delta.rank !== 2 || a.shape[0] !== delta.shape[0] || a.shape[0] === 0) {
    throw new GrngError(
      'shape',
      `batchFactors needs a (m×in) and delta (m×out) with the same m > 0, got [${a.shape.join(', ')}] and [${delta.shape.join(', ')}]`,
      { a: a.shape, delta: delta.shape },
    );
  }
}

function checkSignals(
  layer: string,
  a: tf.Tensor,
  delta: tf.Tensor,
  inputs: number,
  units: number,
): void {
  checkPair(a, delta);
  if (a.shape[1] !== inputs || delta.shape[1] !== units) {
    throw new GrngError(
      'shape',
      `dense layer ${layer} (${inputs}→${units}) got signals a [${a.shape.join(', ')}] and delta [${delta.shape.join(', ')}]`,
      { layer, a: a.shape, delta: delta.shape },
    );
  }
}

/**
 * The gradient matrix of a kernel (in×out) and bias: V = [∇W; ∇bᵀ], (in+1)×out with the bias as
 * the last row (the homogeneous column of A), and back. Shared by every block over a dense kernel
 * (dense, sequence dense).
 */
export function kernelBiasLayout(
  kernel: string,
  bias: string,
  inputs: number,
  units: number,
): Pick<KroneckerBlock, 'toMatrix' | 'fromMatrix'> {
  return {
    toMatrix: (tree: Params) =>
      tf.concat([tree[kernel]!, tf.reshape(tree[bias]!, [1, units])], 0) as tf.Tensor2D,
    fromMatrix: (u: tf.Tensor2D) => ({
      [kernel]: tf.slice(u, [0, 0], [inputs, units]),
      [bias]: tf.reshape(tf.slice(u, [inputs, 0], [1, units]), [units]),
    }),
  };
}
