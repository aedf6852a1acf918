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
 * Patch values per chunk of the batch: 2²² floats (16 MiB). The patches of a batch are kh·kw
 * times its input: the benchmark CNN's second conv (14×14×32, 3×3 same) has 56,448 patch values an
 * example, 29 MB at batch 128, so its products run over chunks of 74 examples, and a chunk's
 * patches are freed before the next is made (in the backward pass too: they are recomputed, not
 * kept on the tape). Measured on that layer, batch 128, plain wasm (no native BLAS): forward +
 * backward ≈ 2.5 s, of which the patches ≈ 0.38 s, the fold (col2im) ≈ 0.74 s and each
 * 25,088×288×64 product ≈ 0.25 s; tfjs-wasm's Slice and Pad of 4-D tensors dominate the first
 * two, so a native im2col/col2im kernel is where the time is.
 */
export const PATCH_CHUNK_ELEMENTS = 2 ** 22;

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
      const product = options.constantParams
        ? options.inputIsData
          ? products.value(x, k)
          : products.inputOnly(x, k)
        : options.inputIsData
          ? products.kernelOnly(x, k)
          : products.both(x, k);
      let s = tf.add(product, params[bias]!);
      if (options.signal) s = tf.add(s, options.signal);
      options.taps?.push({ a: x, s });
      return activate(activation, s);
    },
  };
}

/** Products of a patch-based convolution, by which inputs need a gradient. */
interface PatchProducts {
  value(x: tf.Tensor, k: tf.Tensor2D): tf.Tensor4D;
  both(x: tf.Tensor, k: tf.Tensor2D): tf.Tensor4D;
  kernelOnly(x: tf.Tensor, k: tf.Tensor2D): tf.Tensor4D;
  inputOnly(x: tf.Tensor, k: tf.Tensor2D): tf.Tensor4D;
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

  const forward = (x: tf.Tensor, k: tf.Tensor2D): tf.Tensor4D =>
    overChunks([x], (chunk) =>
      tf.reshape(layerMatMul(patchRows(chunk), k), [
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

  // Both tensors go through the custom op and are saved even where one needs no gradient: a
  // tensor made inside a differentiated function (a reshaped kernel, a slice of the data) is
  // disposed before the backward pass runs, so the gradient may only use what was saved. The
  // unneeded gradient is zeros (a fill), never the product.
  const product = (wantInput: boolean, wantKernel: boolean) =>
    tf.customGrad(((x: tf.Tensor, k: tf.Tensor2D, save: tf.GradSaveFunc) => {
      save([x, k]);
      return {
        value: forward(x, k),
        gradFunc: (dy: tf.Tensor, [sx, sk]: tf.Tensor[]) => [
          wantInput ? inputGradient(dy, sk as tf.Tensor2D) : tf.zerosLike(sx!),
          wantKernel ? kernelGradient(sx!, dy) : tf.zerosLike(sk!),
        ],
      };
    }) as unknown as CustomGradientFunc) as unknown as PatchProducts['both'];

  return {
    value: (x, k) => forward(x, k),
    both: product(true, true),
    kernelOnly: product(false, true),
    inputOnly: product(true, false),
  };
}
