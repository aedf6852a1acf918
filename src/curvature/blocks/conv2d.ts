import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../../errors.js';
import { extractPatches } from '../../linalg/patches.js';
import { nativeHomogeneousPatches } from '../../runtime/nativeWindowKernels.js';
import type { Conv2dLayer } from '../../nn/conv2d.js';
import type { Params } from '../../types.js';
import type { KroneckerBlock, StatisticsContext } from './block.js';

/** How a conv block turns its locations into factor statistics (docs/algorithms.md, KFC). */
export interface ConvBlockOptions {
  /**
   * `expand` (default): every (example, location) is a row, A = T·Ā, G = Ḡ [prior: KFC];
   * `reduce`: one row per example, the mean patch and the sum of δ over locations [prior:
   * Eschenhagen et al. 2023].
   */
  readonly convFactors?: 'expand' | 'reduce';
  /**
   * Most (example, location) rows `expand` uses per step, a seeded random subset; 0 = all [ours].
   */
  readonly convPatchRows?: number;
}

/**
 * The conv layer's KFC block [prior: Grosse & Martens 2016] (docs/algorithms.md). The patch ā of
 * an output location is [x at the kh×kw window in (i, j, c) order; 1]: the row-major flattening of
 * the HWIO kernel with the bias last, so the gradient matrix is V = [reshape(∇K, [kh·kw·C, F]);
 * ∇bᵀ] and the dense machinery applies unchanged. With T = H_out·W_out locations:
 * - expand: F ≈ T·Ā ⊗ Ḡ, Ā and Ḡ the means over all N·T rows of ā āᵀ and δ δᵀ; the A rows are
 *   scaled by √T so their mean second moment is T·Ā;
 * - reduce: F ≈ Ā_red ⊗ Ḡ_red from one row per example, the mean patch and Σ_t δ_t: exact when
 *   the output is pooled over locations before the loss, and T times fewer rows.
 *
 * @example
 * const block = conv2dBlock(conv, { convFactors: 'expand' });
 */
export function conv2dBlock(layer: Conv2dLayer, options: ConvBlockOptions = {}): KroneckerBlock {
  const { name, kernel, bias, filters, geometry } = layer;
  const { locations, patchSize } = geometry;
  const factors = options.convFactors ?? 'expand';
  const cap = options.convPatchRows ?? 0;
  const [kh, kw, c] = [...geometry.kernelSize, geometry.inputShape[2]];

  /**
   * [n, T, patchSize + 1]: every location's homogeneous patch times `scale`, [s·ā; s], for the
   * first n examples (one native pass on wasm with the addon).
   */
  const homogeneousPatches = (a: tf.Tensor, n: number, scale = 1): tf.Tensor3D =>
    tf.tidy(() => {
      const x = n === a.shape[0] ? a : tf.slice(a, 0, n);
      const native = nativeHomogeneousPatches(x, geometry, scale);
      if (native) return tf.reshape(native, [n, locations, patchSize + 1]) as tf.Tensor3D;
      const p = tf.reshape(extractPatches(x, geometry), [n, locations, patchSize]);
      const homogeneous = tf.concat([p, tf.ones([n, locations, 1])], 2);
      return (scale === 1 ? homogeneous : tf.mul(homogeneous, scale)) as tf.Tensor3D;
    });

  return {
    layer: name,
    kind: 'conv2d',
    params: [kernel, bias],
    aSize: patchSize + 1,
    gSize: filters,
    statisticRows(a: tf.Tensor, delta: tf.Tensor, context: StatisticsContext = {}) {
      checkSignals(layer, a, delta);
      const n = a.shape[0]!;
      return tf.tidy(() => {
        if (factors === 'reduce') {
          const patches = homogeneousPatches(a, n);
          return {
            a: tf.mean(patches, 1) as tf.Tensor2D,
            g: tf.sum(tf.reshape(delta, [n, locations, filters]), 1) as tf.Tensor2D,
          };
        }
        const rows = n * locations;
        // √T on every entry (the homogeneous 1 included): the rows' mean second moment is T·Ā.
        let p = tf.reshape(homogeneousPatches(a, n, Math.sqrt(locations)), [
          rows,
          patchSize + 1,
        ]) as tf.Tensor2D;
        let d = tf.reshape(delta, [rows, filters]) as tf.Tensor2D;
        if (cap > 0 && rows > cap) {
          const picked = tf.tensor1d(sampleRows(rows, cap, context.seed ?? 0), 'int32');
          p = tf.gather(p, picked);
          d = tf.gather(d, picked);
        }
        return { a: p, g: d };
      });
    },
    toMatrix: (tree: Params) =>
      tf.concat(
        [tf.reshape(tree[kernel]!, [patchSize, filters]), tf.reshape(tree[bias]!, [1, filters])],
        0,
      ) as tf.Tensor2D,
    fromMatrix: (u: tf.Tensor2D) => ({
      [kernel]: tf.reshape(tf.slice(u, [0, 0], [patchSize, filters]), [kh, kw, c, filters]),
      [bias]: tf.reshape(tf.slice(u, [patchSize, 0], [1, filters]), [filters]),
    }),
    exampleGradients(a: tf.Tensor, delta: tf.Tensor, k: number): tf.Tensor3D {
      checkSignals(layer, a, delta);
      return tf.tidy(() => {
        const patches = homogeneousPatches(a, k);
        const d = tf.reshape(k === delta.shape[0] ? delta : tf.slice(delta, 0, k), [
          k,
          locations,
          filters,
        ]) as tf.Tensor3D;
        // G_n = Σ_t ā_{n,t} δ_{n,t}ᵀ = P̄_nᵀ Δ_n, one batched product.
        return tf.matMul(tf.transpose(patches, [0, 2, 1]), d);
      });
    },
  };
}

/**
 * `count` distinct row indices out of `rows`, sorted, from a seeded generator (mulberry32 and a
 * partial Fisher–Yates shuffle): the same seed picks the same rows, so a run is reproducible.
 */
export function sampleRows(rows: number, count: number, seed: number): Int32Array {
  let state = (seed * 2654435761) >>> 0 || 1;
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const order = new Int32Array(rows);
  for (let i = 0; i < rows; i++) order[i] = i;
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(next() * (rows - i));
    const swap = order[i]!;
    order[i] = order[j]!;
    order[j] = swap;
  }
  return order.slice(0, count).sort();
}

function checkSignals(layer: Conv2dLayer, a: tf.Tensor, delta: tf.Tensor): void {
  const inputOk = a.rank === 4 && a.shape.slice(1).join() === layer.inputShape.join();
  const deltaOk =
    delta.rank === 4 &&
    delta.shape[0] === a.shape[0] &&
    delta.shape.slice(1).join() === layer.outputShape.join();
  if (!inputOk || !deltaOk || a.shape[0] === 0)
    throw new GrngError(
      'shape',
      `conv layer ${layer.name} ([${layer.inputShape.join(', ')}] → [${layer.outputShape.join(', ')}]) got signals a [${a.shape.join(', ')}] and delta [${delta.shape.join(', ')}]`,
      { layer: layer.name, a: a.shape, delta: delta.shape },
    );
}
