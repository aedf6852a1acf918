import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../../errors.js';
import type { KroneckerInverse, Params } from '../../types.js';
import { foldGram, type FactorAverages } from '../factors.js';

/**
 * One layer's Kronecker-factored curvature block, F ≈ A ⊗ G, in the spirit of kfac-jax's
 * curvature blocks: a layer kind supplies only the raw math — which rows give the factors, and
 * how its parameter gradient lines up with them — and everything else (moving averages, π
 * damping, inverses, the KL clip) is shared. Dense is the first kind (blocks/dense.ts).
 */
export interface KroneckerBlock {
  /** The layer's name (`dense0`): errors and signals name it. */
  readonly layer: string;
  /** The layer kind (`dense`). */
  readonly kind: string;
  /** The parameter keys the block preconditions. */
  readonly params: readonly string[];
  /** Sizes of the factors: A is d_A×d_A, G is d_G×d_G, the gradient matrix d_A×d_G. */
  readonly aSize: number;
  readonly gSize: number;
  /**
   * The rows whose second moments are this batch's factors, from the layer's input `a` and
   * per-sample signal `delta`: A = Σ rows_aᵀ rows_a / count, G likewise (count = the rows of
   * each). A row matrix may be `a` or `delta` itself (no copy); the caller disposes those that
   * are not. `a` and `delta` are not disposed. `context.seed` changes every step, for blocks that
   * sample rows (conv2d's row cap).
   */
  statisticRows(
    a: tf.Tensor,
    delta: tf.Tensor,
    context?: StatisticsContext,
  ): { readonly a: tf.Tensor2D; readonly g: tf.Tensor2D };
  /**
   * The parameters' entries of a tree (gradient, update) as the d_A×d_G matrix the factors act on:
   * U = A⁻¹ V G⁻¹.
   */
  toMatrix(tree: Params): tf.Tensor2D;
  /** Back from a d_A×d_G matrix to the parameters' entries. */
  fromMatrix(matrix: tf.Tensor2D): Params;
  /**
   * For R-Kalman: the layer's per-example gradients as outer products ā_i ⊗ δ_i over the first
   * k examples (ā = [a, 1]): a (k×in, no ones column), δ (k×out) and the keys of the kernel
   * (in×out) and bias. Undefined for a block whose per-example gradient is not one outer product.
   */
  outerProductRows?(a: tf.Tensor, delta: tf.Tensor, k: number): OuterProductRows;
  /**
   * For R-Kalman, where the per-example gradient is a sum of outer products (conv2d: Σ_t ā_t δ_tᵀ
   * over locations): the first k examples' gradients as [k, d_A, d_G] matrices laid out as
   * {@link toMatrix}. The caller owns the result.
   */
  exampleGradients?(a: tf.Tensor, delta: tf.Tensor, k: number): tf.Tensor3D;
}

/** What a block may use besides the signals when it makes its statistic rows. */
export interface StatisticsContext {
  /** Changes every statistics step (seeds a row subset). */
  readonly seed?: number;
  /**
   * Loss rows (labels) per example: 1 for a classifier, the positions of a language model. A
   * block that pools an example's rows (sequence-dense `reduce`) scales by it.
   */
  readonly rowsPerExample?: number;
}

/** The per-example outer-product rows of a block; see {@link KroneckerBlock.outerProductRows}. */
export interface OuterProductRows {
  readonly kernel: string;
  readonly bias: string;
  readonly a: tf.Tensor2D;
  readonly delta: tf.Tensor2D;
}

/**
 * One batch's statistics folded into a block's moving averages, A ← βA + (1−β)·Â and the same
 * for G (one ssyrk each where the native BLAS is loaded). Returns new averages; `previous` (not
 * disposed), `a` and `delta` stay the caller's.
 *
 * @example
 * const next = foldStatistics(block, state, signals.a, sampledDelta, 0.95);
 */
export function foldStatistics(
  block: KroneckerBlock,
  previous: FactorAverages | undefined,
  a: tf.Tensor,
  delta: tf.Tensor,
  beta: number,
  context: StatisticsContext = {},
): FactorAverages {
  const rows = block.statisticRows(a, delta, context);
  try {
    return foldGram(previous, rows.a, rows.g, beta);
  } finally {
    tf.dispose([rows.a, rows.g].filter((made) => made !== a && made !== delta));
  }
}

/**
 * U = A_γ⁻¹ V G_γ⁻¹ for each block, V the block's gradient matrix; parameters without a block
 * pass through unchanged. `inverses` align with `blocks`.
 *
 * @example
 * const u = precondition(curvatureBlocks(model), step.curvature, grads);
 */
export function precondition(
  blocks: readonly KroneckerBlock[],
  inverses: readonly KroneckerInverse[],
  v: Params,
): Params {
  const out: Params = { ...v };
  blocks.forEach((block, i) => {
    const inverse = inverses[i];
    if (!inverse)
      throw new GrngError(
        'shape',
        `curvature has no factors for layer ${block.layer} (block ${i})`,
        { layer: block.layer },
      );
    Object.assign(
      out,
      block.fromMatrix(tf.matMul(tf.matMul(inverse.aInverse, block.toMatrix(v)), inverse.gInverse)),
    );
  });
  return out;
}
