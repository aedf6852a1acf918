import type * as tf from '@tensorflow/tfjs';

/*
 * The native addon's N-API surface (native/grng_native.c) and the part of tfjs-backend-wasm's
 * backend its kernels touch. Their own module because both nativeBlas.ts (loads the addon, swaps
 * the matMul) and nativeKernels.ts (grng's other kernels, registered by nativeBlas.ts) need
 * them: declared in either, the two files would import each other.
 */

export interface BlasAddon {
  load(): { library?: string; threads?: number; lapack?: boolean; gram?: boolean; error?: string };
  /**
   * SophiaG's fused step (see native/grng_native.c); returns the count of unclipped coordinates.
   */
  sophiaUpdate(
    heap: Float32Array,
    n: number,
    g: number,
    m: number,
    h: number,
    p: number,
    mOut: number,
    uOut: number,
    b1: number,
    gamma: number,
    eps: number,
    minusEta: number,
    decay: number,
  ): number;
  /** Adam's moments and direction in one pass (see native/grng_native.c). */
  adamUpdate(
    heap: Float32Array,
    n: number,
    g: number,
    mu: number,
    nu: number,
    muOut: number,
    nuOut: number,
    uOut: number,
    b1: number,
    b2: number,
    c1: number,
    c2: number,
    eps: number,
  ): void;
  /** R-Kalman's prior covariance in one pass (see native/grng_native.c). */
  kalmanPrior(
    heap: Float32Array,
    n: number,
    p: number,
    out: number,
    rhoG2: number,
    fading: number,
    q: number,
  ): void;
  /** R-Kalman's posterior and update in one pass; returns Σ of the new P. */
  kalmanPosterior(
    heap: Float32Array,
    n: number,
    prior: number,
    reduced: number,
    gain: number,
    pOut: number,
    uOut: number,
    pMin: number,
  ): number;
  /** Whether none of n float32 values is NaN or ±Inf. */
  allFinite(heap: Float32Array, n: number, offset: number): boolean;
  /** Σ x·y over n float32 elements, accumulated in float64. */
  dot(heap: Float32Array, n: number, xOffset: number, yOffset: number): number;
  /** out = exp(x) (op 0) or erf(x) (op 1), elementwise over n floats. */
  unary(heap: Float32Array, n: number, xOffset: number, outOffset: number, op: 0 | 1): void;
  /** OUT = alpha·XᵀX + beta·PREVIOUS (previousOffset −1: none), through ssyrk. */
  gramUpdate(
    heap: Float32Array,
    m: number,
    n: number,
    xOffset: number,
    previousOffset: number,
    outOffset: number,
    alpha: number,
    beta: number,
  ): void;
  /** im2col of NHWC images (see native/grng_native.c); `window` is the 12 geometry integers. */
  patches(heap: Float32Array, ...args: Array<number | boolean>): void;
  /** col2im, the adjoint of patches. */
  foldPatches(heap: Float32Array, ...args: number[]): void;
  /** Window maxima and the flat int32 position each came from. */
  maxPool(heap: Float32Array, ...args: number[]): void;
  /** out[o] = src[index[o]] (index −1: 0). */
  gatherAt(
    heap: Float32Array,
    count: number,
    srcOffset: number,
    srcLength: number,
    indexOffset: number,
    outOffset: number,
  ): void;
  /** out = 0; out[index[o]] += src[o] (index −1: skipped). */
  scatterAdd(
    heap: Float32Array,
    count: number,
    outLength: number,
    srcOffset: number,
    indexOffset: number,
    outOffset: number,
  ): void;
  setThreads(threads: number): boolean;
  /**
   * X = M⁻¹ by float64 Cholesky; returns the estimated ‖I − M X‖_F/√d, or a negative number when M
   * is not positive definite.
   */
  spdInverse(heap: Float32Array, n: number, mOffset: number, xOffset: number): number;
  sgemm(
    heap: Float32Array,
    transA: boolean,
    transB: boolean,
    m: number,
    n: number,
    k: number,
    aOffset: number,
    bOffset: number,
    cOffset: number,
    batch: number,
    aStride: number,
    bStride: number,
  ): void;
}

export interface WasmBackendLike {
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(dataId: object): boolean;
  wasm: { HEAPF32: Float32Array };
}

/** Where a tensor's values start in the wasm heap, in 4-byte elements (float32 and int32 alike). */
export const heapOffset = (backend: WasmBackendLike, t: tf.TensorInfo): number =>
  backend.dataIdMap.get(t.dataId).memoryOffset / 4;

/**
 * Allocates outputs of these shapes (float32 unless a dtype is given), then runs `fill` on them;
 * frees them if it throws. Offsets and the heap view must be taken inside `fill`: each makeOutput
 * may grow the wasm heap, which detaches earlier views of it.
 */
export function withOutputs(
  backend: WasmBackendLike,
  shapes: readonly number[][],
  fill: (outs: tf.TensorInfo[]) => void,
  dtypes: readonly tf.DataType[] = [],
): tf.TensorInfo[] {
  const outs = shapes.map((shape, i) => backend.makeOutput(shape, dtypes[i] ?? 'float32'));
  try {
    fill(outs);
  } catch (error) {
    for (const out of outs) backend.disposeData(out.dataId);
    throw error;
  }
  return outs;
}
