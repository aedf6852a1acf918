import * as tf from '@tensorflow/tfjs';
import { heapOffset, withOutputs, type BlasAddon, type WasmBackendLike } from './nativeAddon.js';

/**
 * Sliding-window kernels on the native addon for the wasm backend: convolution patches (im2col),
 * their adjoint (col2im), and max pooling with its routing. tfjs-backend-wasm builds the same
 * things from pad, slice, concat, argMax, oneHot and transpose, each a pass over memory and an
 * allocation; measured on the benchmark CNN (cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10, batch 128,
 * this 2-core VM): the first 2×2 max pool took 2.6 s, the second conv's patches 44 ms and their
 * fold 100–160 ms, where one native pass takes milliseconds.
 *
 * Every kernel has a registered gradient made of the others, so each is differentiable to any
 * order, as RENG's Hg needs: patches ↔ fold are each other's adjoint (both linear), max pooling's
 * gradient scatters dy to the saved maxima and the scatter's gradient gathers from them. The
 * wrappers return undefined where the kernels cannot run (another backend, native BLAS off, not
 * float32); linalg/patches.ts and nn/pool.ts then use their tfjs-op paths, which compute the same
 * values and are tested against these.
 */

/** Where a window slides over an [H, W, C] image: linalg's WindowGeometry fits this shape. */
export interface NativeWindow {
  readonly inputShape: readonly [number, number, number];
  readonly kernelSize: readonly [number, number];
  readonly strides: readonly [number, number];
  readonly rows: { readonly size: number; readonly padBefore: number };
  readonly cols: { readonly size: number; readonly padBefore: number };
}

/** The geometry as kernel attributes (plain numbers, so tfjs can keep them on the tape). */
interface WindowAttrs {
  h: number;
  w: number;
  c: number;
  kh: number;
  kw: number;
  sh: number;
  sw: number;
  padTop: number;
  padLeft: number;
  outH: number;
  outW: number;
  [key: string]: number;
}

const PATCHES = 'GrngPatches';
const FOLD_PATCHES = 'GrngFoldPatches';
const MAX_POOL = 'GrngMaxPool';
const GATHER_AT = 'GrngGatherAt';
const SCATTER_ADD = 'GrngScatterAdd';

let registered = false;
let gradientsRegistered = false;

const attrsOf = (window: NativeWindow): WindowAttrs => ({
  h: window.inputShape[0],
  w: window.inputShape[1],
  c: window.inputShape[2],
  kh: window.kernelSize[0],
  kw: window.kernelSize[1],
  sh: window.strides[0],
  sw: window.strides[1],
  padTop: window.rows.padBefore,
  padLeft: window.cols.padBefore,
  outH: window.rows.size,
  outW: window.cols.size,
});

/** The 12 geometry integers the addon takes, batch first. */
const windowArgs = (n: number, a: WindowAttrs): number[] => [
  n,
  a.h,
  a.w,
  a.c,
  a.kh,
  a.kw,
  a.sh,
  a.sw,
  a.padTop,
  a.padLeft,
  a.outH,
  a.outW,
];

interface KernelArgs<I> {
  inputs: I;
  backend: WasmBackendLike;
  attrs: WindowAttrs & { padValue?: number; scale?: number; homogeneous?: number };
}

/**
 * Registers the window kernels and their gradients on the wasm backend (with the native matMul,
 * by registerNativeKernels); returns what unregisters the kernels. Gradients stay registered: they
 * are only reached through a kernel that ran.
 */
export function registerWindowKernels(addon: BlasAddon): () => void {
  const kernels: Array<[string, tf.KernelFunc]> = [
    [
      PATCHES,
      (args) => {
        const { inputs, backend, attrs: a } = args as unknown as KernelArgs<{ x: tf.TensorInfo }>;
        const n = inputs.x.shape[0]!;
        const width = a.kh * a.kw * a.c + (a.homogeneous ? 1 : 0);
        return withOutputs(backend, [[n, a.outH, a.outW, width]], ([out]) =>
          addon.patches(
            backend.wasm.HEAPF32,
            ...windowArgs(n, a),
            a.padValue ?? 0,
            heapOffset(backend, inputs.x),
            heapOffset(backend, out!),
            a.scale ?? 1,
            a.homogeneous === 1,
          ),
        )[0]!;
      },
    ],
    [
      FOLD_PATCHES,
      (args) => {
        const { inputs, backend, attrs: a } = args as unknown as KernelArgs<{ p: tf.TensorInfo }>;
        const n = inputs.p.shape[0]!;
        return withOutputs(backend, [[n, a.h, a.w, a.c]], ([out]) =>
          addon.foldPatches(
            backend.wasm.HEAPF32,
            ...windowArgs(n, a),
            heapOffset(backend, inputs.p),
            heapOffset(backend, out!),
          ),
        )[0]!;
      },
    ],
    [
      MAX_POOL,
      (args) => {
        const { inputs, backend, attrs: a } = args as unknown as KernelArgs<{ x: tf.TensorInfo }>;
        const n = inputs.x.shape[0]!;
        const shape = [n, a.outH, a.outW, a.c];
        return withOutputs(
          backend,
          [shape, shape],
          ([out, index]) =>
            addon.maxPool(
              backend.wasm.HEAPF32,
              ...windowArgs(n, a),
              heapOffset(backend, inputs.x),
              heapOffset(backend, out!),
              heapOffset(backend, index!),
            ),
          ['float32', 'int32'],
        );
      },
    ],
    [
      GATHER_AT,
      (args) => {
        const { inputs, backend } = args as unknown as KernelArgs<{
          source: tf.TensorInfo;
          index: tf.TensorInfo;
        }>;
        const count = tf.util.sizeFromShape(inputs.index.shape);
        return withOutputs(backend, [[...inputs.index.shape]], ([out]) =>
          addon.gatherAt(
            backend.wasm.HEAPF32,
            count,
            heapOffset(backend, inputs.source),
            tf.util.sizeFromShape(inputs.source.shape),
            heapOffset(backend, inputs.index),
            heapOffset(backend, out!),
          ),
        )[0]!;
      },
    ],
    [
      SCATTER_ADD,
      (args) => {
        const { inputs, backend, attrs } = args as unknown as KernelArgs<{
          source: tf.TensorInfo;
          index: tf.TensorInfo;
        }> & { attrs: { shape: number[] } };
        const shape = attrs.shape as unknown as number[];
        return withOutputs(backend, [[...shape]], ([out]) =>
          addon.scatterAdd(
            backend.wasm.HEAPF32,
            tf.util.sizeFromShape(inputs.source.shape),
            tf.util.sizeFromShape(shape),
            heapOffset(backend, inputs.source),
            heapOffset(backend, inputs.index),
            heapOffset(backend, out!),
          ),
        )[0]!;
      },
    ],
  ];
  for (const [kernelName, kernelFunc] of kernels)
    if (!tf.getKernel(kernelName, 'wasm'))
      tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc });
  registerGradients();
  registered = true;
  return () => {
    for (const [kernelName] of kernels)
      if (tf.getKernel(kernelName, 'wasm')) tf.unregisterKernel(kernelName, 'wasm');
    registered = false;
  };
}

function registerGradients(): void {
  if (gradientsRegistered) return;
  gradientsRegistered = true;
  tf.registerGradient({
    kernelName: PATCHES,
    gradFunc: (dy, _saved, attrs) => ({
      x: () => {
        const a = attrs as unknown as KernelArgs<never>['attrs'];
        const scale = a.scale ?? 1;
        // The homogeneous column is a constant: its gradient goes nowhere.
        const d = a.homogeneous
          ? tf.slice(dy as tf.Tensor4D, [0, 0, 0, 0], [-1, -1, -1, a.kh * a.kw * a.c])
          : (dy as tf.Tensor4D);
        const folded = runFold(d, a);
        return scale === 1 ? folded : tf.mul(folded, scale);
      },
    }),
  });
  tf.registerGradient({
    kernelName: FOLD_PATCHES,
    gradFunc: (dy, _saved, attrs) => ({
      p: () => runPatches(dy as tf.Tensor4D, attrs as unknown as WindowAttrs, 0),
    }),
  });
  tf.registerGradient({
    kernelName: MAX_POOL,
    outputsToSave: [false, true],
    gradFunc: (dys, saved, attrs) => {
      const dy = (Array.isArray(dys) ? dys[0] : dys) as tf.Tensor;
      const { h, w, c } = attrs as unknown as WindowAttrs;
      return { x: () => runScatterAdd(dy, saved[0]!, [dy.shape[0]!, h, w, c]) };
    },
  });
  tf.registerGradient({
    kernelName: SCATTER_ADD,
    inputsToSave: ['index'],
    gradFunc: (dy, saved) => ({
      source: () => runGatherAt(dy as tf.Tensor, saved[0]!),
      index: () => tf.zeros(saved[0]!.shape),
    }),
  });
  tf.registerGradient({
    kernelName: GATHER_AT,
    inputsToSave: ['source', 'index'],
    gradFunc: (dy, saved) => ({
      source: () => runScatterAdd(dy as tf.Tensor, saved[1]!, saved[0]!.shape),
      index: () => tf.zeros(saved[1]!.shape),
    }),
  });
}

const runPatches = (
  x: tf.Tensor4D,
  attrs: WindowAttrs,
  padValue: number,
  scale = 1,
  homogeneous = false,
): tf.Tensor4D =>
  tf.engine().runKernel(PATCHES, { x }, {
    ...attrs,
    padValue,
    scale,
    homogeneous: homogeneous ? 1 : 0,
  } as never) as tf.Tensor4D;
const runFold = (p: tf.Tensor4D, attrs: WindowAttrs): tf.Tensor4D =>
  tf.engine().runKernel(FOLD_PATCHES, { p }, attrs as never) as tf.Tensor4D;
const runGatherAt = (source: tf.Tensor, index: tf.Tensor): tf.Tensor =>
  tf.engine().runKernel(GATHER_AT, { source, index }) as tf.Tensor;
const runScatterAdd = (source: tf.Tensor, index: tf.Tensor, shape: readonly number[]): tf.Tensor =>
  tf
    .engine()
    .runKernel(SCATTER_ADD, { source, index }, { shape: [...shape] } as never) as tf.Tensor;

/** Whether the window kernels can run on this tensor now. */
const canRun = (t: tf.Tensor): boolean =>
  registered && tf.getBackend() === 'wasm' && t.dtype === 'float32' && t.rank === 4;

/**
 * The patches of a batch [N, H, W, C] as [N, H_out, W_out, kh·kw·C] in one native pass, with
 * `padValue` where the window leaves the image; undefined where it cannot run. Its gradient is
 * {@link nativeFoldPatches} (and that one's is this), so it differentiates to any order.
 *
 * @example
 * const p = nativePatches(x, geometry) ?? slowPatches(x, geometry);
 */
export function nativePatches(
  x: tf.Tensor,
  window: NativeWindow,
  padValue = 0,
): tf.Tensor4D | undefined {
  return canRun(x) ? runPatches(x as tf.Tensor4D, attrsOf(window), padValue) : undefined;
}

/**
 * KFC's factor rows for a conv layer, [N, H_out, W_out, kh·kw·C + 1]: each patch times `scale`
 * with `scale` appended (the homogeneous 1, scaled), in one native pass where the tfjs way
 * (patches, multiply, concatenate a column of ones) makes three; undefined where it cannot run.
 *
 * @example
 * const rows = nativeHomogeneousPatches(a, geometry, Math.sqrt(locations)); // √T·[ā; 1]
 */
export function nativeHomogeneousPatches(
  x: tf.Tensor,
  window: NativeWindow,
  scale = 1,
): tf.Tensor4D | undefined {
  return canRun(x) ? runPatches(x as tf.Tensor4D, attrsOf(window), 0, scale, true) : undefined;
}

/**
 * col2im: patch-shaped values [N, H_out, W_out, kh·kw·C] summed back onto [N, H, W, C] in one
 * native pass; undefined where it cannot run.
 */
export function nativeFoldPatches(p: tf.Tensor, window: NativeWindow): tf.Tensor4D | undefined {
  return canRun(p) ? runFold(p as tf.Tensor4D, attrsOf(window)) : undefined;
}

/**
 * Max pooling [N, H, W, C] → [N, H_out, W_out, C] over the window positions inside the image,
 * the first maximum of a window taking its gradient (as tfjs's argMax picks it); undefined where
 * it cannot run. The gradient scatters dy to the positions of the maxima, and its gradient
 * gathers from them: piecewise linear, so second derivatives are exact (zero curvature of their
 * own).
 */
export function nativeMaxPool(x: tf.Tensor, window: NativeWindow): tf.Tensor4D | undefined {
  if (!canRun(x)) return undefined;
  const [values, index] = tf.engine().runKernel(MAX_POOL, { x }, attrsOf(window) as never) as [
    tf.Tensor4D,
    tf.Tensor,
  ];
  // The index stays alive on the tape (saved for the gradient) while the caller owns `values`.
  index.dispose();
  return values;
}
