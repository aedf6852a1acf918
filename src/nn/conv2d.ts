import * as tf from '@tensorflow/tfjs';
import {
  extractPatches,
  foldPatches,
  windowGeometry,
  type Padding,
  type WindowGeometry,
} from '../linalg/patches.js';
import { nativeMatMulActive } from '../runtime/matMulMode.js';
import type { Params } from '../types.js';
import { activate, type Activation } from './activations.js';
import type { LayerApplyOptions, SignalLayer } from './layer.js';
import { layerMatMul, matMulTransposeB } from './ops.js';

type CustomGradientFunc = Parameters<typeof tf.customGrad>[0];

/**
 * A 2-D convolution s = patches(x)·K + b followed by an activation, NHWC images and an HWIO kernel
 * [kh, kw, C, filters] (tfjs's layout), its signal point at s [H_out, W_out, filters]. Parameter
 * keys `{name}/kernel`, `{name}/bias`.
 */
export interface Conv2dLayer extends SignalLayer {
  readonly kind: 'conv2d';
  /** Position among the model's layers with parameters (it seeds the initial weights). */
  readonly index: number;
  readonly filters: number;
  readonly kernelSize: readonly [number, number];
  readonly strides: readonly [number, number];
  readonly padding: Padding;
  readonly activation: Activation;
  /** Where the kernel reads the input, and T = H_out·W_out. */
  readonly geometry: WindowGeometry;
  /** Key of the HWIO kernel. */
  readonly kernel: string;
  /** Key of the bias [filters]. */
  readonly bias: string;
}

/**
 * Patch values per chunk of the batch: 2²³ floats (32 MiB). The patches of a batch are kh·kw
 * times its input: the benchmark CNN's second conv (14×14×32, 3×3 same) has 56,448 patch values
 * an example, 29 MB at batch 128, which fits one chunk; batch 256 runs as two. A chunk's patches
 * are freed before the next is made (in the backward pass too: they are recomputed, not kept on
 * the tape). At 2²² the batch of 128 split in two, and the slices and concatenation cost ~10 ms a
 * step (wasm, native kernels) for nothing.
 */
export const PATCH_CHUNK_ELEMENTS = 2 ** 23;

/**
 * Describes a 2-D convolution layer; the model creates its parameters (see initConv2d).
 *
 * @example
 * const conv = conv2dLayer({ name: 'conv0', index: 0, inputShape: [28, 28, 1], filters: 32, kernelSize: [3, 3], strides: [1, 1], padding: 'same', activation: 'relu' });
 */
export function conv2dLayer({
  name,
  index,
  inputShape,
  filters,
  kernelSize,
  strides,
  padding,
  activation,
  patchChunkElements = PATCH_CHUNK_ELEMENTS,
}: {
  name: string;
  index: number;
  inputShape: readonly [number, number, number] | readonly number[];
  filters: number;
  kernelSize: readonly [number, number] | readonly number[];
  strides: readonly [number, number] | readonly number[];
  padding: Padding;
  activation: Activation;
  /** Patch values per chunk of the batch; default {@link PATCH_CHUNK_ELEMENTS}. */
  patchChunkElements?: number;
}): Conv2dLayer {
  const geometry = windowGeometry(inputShape, kernelSize, strides, padding);
  const kernel = `${name}/kernel`;
  const bias = `${name}/bias`;
  const outputShape = [geometry.rows.size, geometry.cols.size, filters];
  const products = patchProducts(geometry, patchChunkElements);
  return {
    kind: 'conv2d',
    name,
    index,
    filters,
    kernelSize: geometry.kernelSize,
    strides: geometry.strides,
    padding,
    activation,
    geometry,
    kernel,
    bias,
    inputShape: [...geometry.inputShape],
    outputShape,
    signalShape: outputShape,
    params: [kernel, bias],
    apply(params: Params, x: tf.Tensor, options: LayerApplyOptions = {}): tf.Tensor {
      const k = tf.reshape(params[kernel]!, [geometry.patchSize, filters]) as tf.Tensor2D;
      // As dense: the input layer needs no gradient with respect to the data, a constant-parameter
      // pass none with respect to the kernel; each form computes only what is asked.
      const b = params[bias]!;
      const product = options.constantParams
        ? options.inputIsData
          ? products.value(x, k, b)
          : products.inputOnly(x, k, b)
        : options.inputIsData
          ? products.kernelOnly(x, k, b)
          : products.both(x, k, b);
      let s: tf.Tensor = product;
      if (options.signal) s = tf.add(s, options.signal);
      options.taps?.push({ a: x, s });
      return activate(activation, s);
    },
  };
}

/** patches(x)·K + b of a patch-based convolution, by which inputs need a gradient. */
type PatchProduct = (x: tf.Tensor, k: tf.Tensor2D, b: tf.Tensor) => tf.Tensor4D;
interface PatchProducts {
  value: PatchProduct;
  both: PatchProduct;
  /** Gradients for the kernel and the bias only. */
  kernelOnly: PatchProduct;
  /** A gradient for the input only. */
  inputOnly: PatchProduct;
}

/**
 * The convolution as patches × kernel, so the OpenBLAS matMul does the work, with hand-written
 * gradients: ∇K = Σ_chunks Pᵀ·dy and ∇x = fold(dy·Kᵀ) (col2im). The patches are recomputed in
 * the backward pass instead of being saved, chunk by chunk (see PATCH_CHUNK_ELEMENTS). Every
 * gradient is built from differentiable ops (patches, fold, matMul), so a second differentiation
 * (RENG's Hg) works and gives exact results; tfjs's own conv2d cannot train on wasm (no
 * Conv2DBackpropFilter kernel).
 */
function patchProducts(geometry: WindowGeometry, chunkElements: number): PatchProducts {
  const { rows, cols, patchSize, locations } = geometry;
  const chunkSize = Math.max(1, Math.floor(chunkElements / (locations * patchSize)));
  const patchRows = (x: tf.Tensor): tf.Tensor2D =>
    tf.reshape(extractPatches(x, geometry), [x.shape[0]! * locations, patchSize]);

  /** f on each chunk of examples of the given tensors, results concatenated on the batch axis. */
  const overChunks = (
    inputs: readonly tf.Tensor[],
    f: (...chunk: tf.Tensor[]) => tf.Tensor,
  ): tf.Tensor => {
    const n = inputs[0]!.shape[0]!;
    if (n <= chunkSize) return f(...inputs);
    const parts: tf.Tensor[] = [];
    for (let start = 0; start < n; start += chunkSize) {
      const size = Math.min(chunkSize, n - start);
      parts.push(tf.tidy(() => f(...inputs.map((t) => tf.slice(t, start, size)))));
    }
    return tf.concat(parts, 0);
  };
  /** Σ over chunks of f: the kernel gradient accumulates instead of concatenating. */
  const sumOverChunks = (
    inputs: readonly tf.Tensor[],
    f: (...chunk: tf.Tensor[]) => tf.Tensor,
  ): tf.Tensor => {
    const n = inputs[0]!.shape[0]!;
    if (n <= chunkSize) return f(...inputs);
    let total: tf.Tensor | undefined;
    for (let start = 0; start < n; start += chunkSize) {
      const size = Math.min(chunkSize, n - start);
      const part = tf.tidy(() => f(...inputs.map((t) => tf.slice(t, start, size))));
      if (total) {
        const next = tf.add(total, part);
        tf.dispose([total, part]);
        total = next;
      } else total = part;
    }
    return total!;
  };

  const forward = (x: tf.Tensor, k: tf.Tensor2D, b: tf.Tensor): tf.Tensor4D =>
    overChunks([x], (chunk) =>
      tf.reshape(tf.add(layerMatMul(patchRows(chunk), k), b), [
        chunk.shape[0]!,
        rows.size,
        cols.size,
        k.shape[1],
      ]),
    ) as tf.Tensor4D;
  // Pᵀ·dy: the transpose is a flag to sgemm where the native BLAS runs the product, an explicit
  // copy otherwise (layerMatMul keeps the gradient of the product fast on wasm).
  const kernelGradient = (x: tf.Tensor, dy: tf.Tensor): tf.Tensor2D =>
    sumOverChunks([x, dy], (xc, dyc) => {
      const p = patchRows(xc);
      const d = tf.reshape(dyc, [p.shape[0], -1]) as tf.Tensor2D;
      return nativeMatMulActive() ? tf.matMul(p, d, true, false) : layerMatMul(tf.transpose(p), d);
    }) as tf.Tensor2D;
  const inputGradient = (dy: tf.Tensor, k: tf.Tensor2D): tf.Tensor =>
    overChunks([dy], (dyc) => {
      const n = dyc.shape[0]!;
      const d = tf.reshape(dyc, [n * locations, -1]) as tf.Tensor2D;
      return foldPatches(
        tf.reshape(matMulTransposeB(d, k), [n, rows.size, cols.size, patchSize]),
        geometry,
      );
    });

  // ∇b = 1ᵀ·dy as a product: tfjs-wasm's Sum over the batch and location axes transposes first
  // (13 ms for the benchmark's first conv at batch 128, against 1.5 ms for the product).
  const biasGradient = (dy: tf.Tensor): tf.Tensor1D => {
    const d = tf.reshape(dy, [-1, dy.shape[3]!]) as tf.Tensor2D;
    return tf.reshape(layerMatMul(tf.ones([1, d.shape[0]]), d), [d.shape[1]]);
  };

  // Every tensor goes through the custom op and is saved even where it needs no gradient: a
  // tensor made inside a differentiated function (a reshaped kernel, a slice of the data) is
  // disposed before the backward pass runs, so the gradient may only use what was saved. The
  // unneeded gradient is zeros (a fill), never the product.
  const product = (wantInput: boolean, wantKernel: boolean) =>
    tf.customGrad(((x: tf.Tensor, k: tf.Tensor2D, b: tf.Tensor, save: tf.GradSaveFunc) => {
      save([x, k, b]);
      return {
        value: forward(x, k, b),
        gradFunc: (dy: tf.Tensor, [sx, sk, sb]: tf.Tensor[]) => [
          wantInput ? inputGradient(dy, sk as tf.Tensor2D) : tf.zerosLike(sx!),
          wantKernel ? kernelGradient(sx!, dy) : tf.zerosLike(sk!),
          wantKernel ? biasGradient(dy) : tf.zerosLike(sb!),
        ],
      };
    }) as unknown as CustomGradientFunc) as unknown as PatchProduct;

  return {
    value: forward,
    both: product(true, true),
    kernelOnly: product(false, true),
    inputOnly: product(true, false),
  };
}
