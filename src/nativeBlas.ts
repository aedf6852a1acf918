import * as tf from '@tensorflow/tfjs';
import { setFastMatMul } from './fastMatMul.js';
import { createRequire } from 'node:module';
import { invalidOption } from './errors.js';

/**
 * Opt-in native matMul for the wasm backend (`GRNG_BLAS=1`): tfjs-backend-wasm's `BatchMatMul`
 * kernel is replaced by one that calls `cblas_sgemm` of a BLAS found at run time (OpenBLAS,
 * else libblas.so.3) through a small N-API addon (native/blas_matmul.c, built by
 * `node scripts/build-native.mjs`). Why: XNNPACK in wasm peaks near 29 GFLOP/s per core while
 * OpenBLAS does ~100 per core on the same CPU, and matMul is most of an MLP step.
 *
 * The addon reads and writes the wasm heap in place (no copies), and the transpose flags go to
 * sgemm, so transposed products cost nothing extra. The original kernel stays the fallback for
 * what the BLAS path does not cover (non-float32, batch dims that broadcast other than 1-vs-N,
 * and products too small for the native call to pay off).
 */

/** What `enableNativeBlas` found. */
export interface NativeBlasStatus {
  readonly enabled: boolean;
  /** The shared library cblas_sgemm came from, when enabled (e.g. libopenblas.so.0). */
  readonly library?: string;
  /** Why it is not enabled. */
  readonly reason?: string;
}

interface BlasAddon {
  load(): { library?: string; threads?: number; lapack?: boolean; gram?: boolean; error?: string };
  /** SophiaG's fused step (see native/blas_matmul.c); returns the count of unclipped coordinates. */
  sophiaUpdate(heap: Float32Array, n: number, g: number, m: number, h: number, p: number, mOut: number, uOut: number, b1: number, gamma: number, eps: number, minusEta: number, decay: number): number;
  /** Adam's moments and direction in one pass (see native/blas_matmul.c). */
  adamUpdate(heap: Float32Array, n: number, g: number, mu: number, nu: number, muOut: number, nuOut: number, uOut: number, b1: number, b2: number, c1: number, c2: number, eps: number): void;
  /** Σ x·y over n float32 elements, accumulated in float64. */
  dot(heap: Float32Array, n: number, xOffset: number, yOffset: number): number;
  /** OUT = alpha·XᵀX + beta·PREVIOUS (previousOffset −1: none), through ssyrk. */
  gramUpdate(heap: Float32Array, m: number, n: number, xOffset: number, previousOffset: number, outOffset: number, alpha: number, beta: number): void;
  setThreads(threads: number): boolean;
  /** X = M⁻¹ by float64 Cholesky; returns the estimated ‖I − M X‖_F/√d, or a negative number when M is not positive definite. */
  spdInverse(heap: Float32Array, n: number, mOffset: number, xOffset: number): number;
  sgemm(heap: Float32Array, transA: boolean, transB: boolean, m: number, n: number, k: number, aOffset: number, bOffset: number, cOffset: number, batch: number, aStride: number, bStride: number): void;
}

interface WasmBackendLike {
  dataIdMap: { get(dataId: object): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  disposeData(dataId: object): boolean;
  wasm: { HEAPF32: Float32Array };
}

const ADDON_PATH = '../native/build/Release/blas_matmul.node';
const require = createRequire(import.meta.url);
let status: NativeBlasStatus | undefined;

/**
 * Whether `GRNG_BLAS` asks for the native matMul: `1`/`true` yes; unset, empty, `0`/`false` no;
 * anything else throws a GrngError naming the variable.
 *
 * @example
 * nativeBlasRequested({ GRNG_BLAS: '1' }); // true
 */
export function nativeBlasRequested(env: NodeJS.ProcessEnv = process.env): boolean | 'auto' {
  const value = (env.GRNG_BLAS ?? '').trim().toLowerCase();
  // Unset: use it when the addon and a BLAS are there (2.5× faster steps), quietly otherwise.
  if (value === '') return 'auto';
  if (value === '0' || value === 'false') return false;
  if (value === '1' || value === 'true') return true;
  return invalidOption('GRNG_BLAS', env.GRNG_BLAS, '1 to use the native BLAS matMul on the wasm backend, or 0');
}

/**
 * Loads the addon and its BLAS without touching any kernel: `{ enabled: true, library }` when
 * both are there, else `{ enabled: false, reason }`.
 *
 * @example
 * if (!nativeBlasAvailable().enabled) console.log(nativeBlasAvailable().reason);
 */
export function nativeBlasAvailable(): NativeBlasStatus {
  const addon = loadAddon();
  if ('reason' in addon) return { enabled: false, reason: addon.reason };
  const loaded = addon.addon.load();
  return loaded.library ? { enabled: true, library: loaded.library } : { enabled: false, reason: `no BLAS with cblas_sgemm could be loaded: ${loaded.error ?? 'unknown reason'}` };
}

/**
 * Replaces the wasm backend's BatchMatMul kernel with the BLAS one (idempotent). Call after the
 * wasm backend has started (initBackend does when `GRNG_BLAS=1`). Never throws for a missing
 * addon or BLAS: the wasm kernel stays and `reason` says why.
 *
 * @example
 * await tf.setBackend('wasm'); const { enabled, reason } = enableNativeBlas();
 */
export function enableNativeBlas(): NativeBlasStatus {
  if (status?.enabled) {
    setFastMatMul(true);
    return status;
  }
  const available = nativeBlasAvailable();
  if (!available.enabled) return (status = available);
  const original = tf.getKernel(tf.BatchMatMul, 'wasm');
  if (!original) return (status = { enabled: false, reason: 'the wasm backend has no BatchMatMul kernel registered (is @tensorflow/tfjs-backend-wasm loaded?)' });
  const addon = (loadAddon() as { addon: BlasAddon }).addon;
  tf.unregisterKernel(tf.BatchMatMul, 'wasm');
  tf.registerKernel({
    ...original,
    kernelFunc: (args) => {
      const product = blasBatchMatMul(addon, args as unknown as KernelArgs);
      if (product) {
        counts.native += 1;
        return product;
      }
      counts.fallback += 1;
      return original.kernelFunc(args);
    },
  });
  const lapack = addon.load().lapack === true;
  if (lapack && !tf.getKernel(SPD_INVERSE, 'wasm')) {
    tf.registerKernel({ kernelName: SPD_INVERSE, backendName: 'wasm', kernelFunc: (args) => spdInverseKernel(addon, args as unknown as SpdInverseArgs) });
  }
  spdInverseReady = lapack;
  const gram = addon.load().gram === true;
  if (gram && !tf.getKernel(GRAM_UPDATE, 'wasm')) {
    tf.registerKernel({ kernelName: GRAM_UPDATE, backendName: 'wasm', kernelFunc: (args) => gramUpdateKernel(addon, args as unknown as GramUpdateArgs) });
  }
  gramReady = gram;
  if (!tf.getKernel(ADAM_UPDATE, 'wasm')) {
    tf.registerKernel({ kernelName: ADAM_UPDATE, backendName: 'wasm', kernelFunc: (args) => adamUpdateKernel(addon, args as unknown as AdamUpdateArgs) });
  }
  if (!tf.getKernel(DOT, 'wasm')) {
    tf.registerKernel({ kernelName: DOT, backendName: 'wasm', kernelFunc: (args) => dotKernel(addon, args as unknown as DotArgs) });
  }
  if (!tf.getKernel(SOPHIA_UPDATE, 'wasm')) {
    tf.registerKernel({ kernelName: SOPHIA_UPDATE, backendName: 'wasm', kernelFunc: (args) => sophiaUpdateKernel(addon, args as unknown as SophiaUpdateArgs) });
  }
  restore = () => {
    tf.unregisterKernel(tf.BatchMatMul, 'wasm');
    tf.registerKernel(original);
    if (tf.getKernel(SPD_INVERSE, 'wasm')) tf.unregisterKernel(SPD_INVERSE, 'wasm');
    if (tf.getKernel(GRAM_UPDATE, 'wasm')) tf.unregisterKernel(GRAM_UPDATE, 'wasm');
    if (tf.getKernel(SOPHIA_UPDATE, 'wasm')) tf.unregisterKernel(SOPHIA_UPDATE, 'wasm');
    if (tf.getKernel(DOT, 'wasm')) tf.unregisterKernel(DOT, 'wasm');
    if (tf.getKernel(ADAM_UPDATE, 'wasm')) tf.unregisterKernel(ADAM_UPDATE, 'wasm');
    spdInverseReady = false;
    gramReady = false;
    setFastMatMul(false);
  };
  // Dense layers and reductions switch to the formulations a BLAS makes fast.
  setFastMatMul(true);
  return (status = available);
}

let restore: (() => void) | undefined;
/** Whether the SPD inverse kernel is registered (the BLAS came with LAPACK). */
let spdInverseReady = false;
/** Whether the Gram update kernel is registered (the BLAS has cblas_ssyrk). */
let gramReady = false;
const counts = { native: 0, fallback: 0 };

/**
 * How many BatchMatMul calls the BLAS kernel took (`native`) and handed to the wasm kernel
 * (`fallback`) since the process started: shows whether a model's products really go native.
 *
 * @example
 * const { native, fallback } = nativeBlasCounts();
 */
export function nativeBlasCounts(): { readonly native: number; readonly fallback: number } {
  return { ...counts };
}

/**
 * Puts tfjs's own wasm BatchMatMul kernel back (for comparisons and tests).
 *
 * @example
 * disableNativeBlas();
 */
export function disableNativeBlas(): void {
  restore?.();
  restore = undefined;
  status = undefined;
}

/** The state of the native matMul: undefined until enableNativeBlas has been called. */
export function nativeBlasStatus(): NativeBlasStatus | undefined {
  return status;
}

/**
 * How the backend detail names the BLAS: OpenBLAS by name, any other by its file.
 *
 * @example
 * nativeBlasLabel('libopenblas.so.0'); // 'OpenBLAS matMul'
 */
export function nativeBlasLabel(library: string): string {
  return /openblas/i.test(library) ? 'OpenBLAS matMul' : `BLAS matMul (${library})`;
}

let addonResult: { addon: BlasAddon } | { reason: string } | undefined;
function loadAddon(): { addon: BlasAddon } | { reason: string } {
  if (addonResult) return addonResult;
  try {
    addonResult = { addon: require(ADDON_PATH) as BlasAddon };
  } catch (error) {
    const message = (error instanceof Error ? error.message : String(error)).split('\n')[0];
    addonResult = { reason: `the native addon is not built (node scripts/build-native.mjs): ${message}` };
  }
  return addonResult;
}

interface KernelArgs {
  inputs: { a: tf.TensorInfo; b: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { transposeA: boolean; transposeB: boolean };
}

/** The BLAS product, or undefined where the original kernel should run instead. */
function blasBatchMatMul(addon: BlasAddon, { inputs: { a, b }, backend, attrs: { transposeA, transposeB } }: KernelArgs): tf.TensorInfo | undefined {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return undefined;
  const aRank = a.shape.length;
  const bRank = b.shape.length;
  const m = transposeA ? a.shape[aRank - 1]! : a.shape[aRank - 2]!;
  const k = transposeA ? a.shape[aRank - 2]! : a.shape[aRank - 1]!;
  const kB = transposeB ? b.shape[bRank - 1]! : b.shape[bRank - 2]!;
  const n = transposeB ? b.shape[bRank - 2]! : b.shape[bRank - 1]!;
  // A mismatch is the original kernel's to report, in tfjs's words. There is no size threshold:
  // on the 2-core VM the BLAS path beat the wasm kernel at every size down to 8×8×8 (3.6 µs vs
  // 4.3 µs), because the wasm kernel pays for two reshapes and a cwrap call of its own.
  if (k !== kB || m * n * k === 0) return undefined;
  const aBatchDims = a.shape.slice(0, -2);
  const bBatchDims = b.shape.slice(0, -2);
  const aBatch = tf.util.sizeFromShape(aBatchDims);
  const bBatch = tf.util.sizeFromShape(bBatchDims);
  // Only "same batch" or "one matrix against many" map onto a stride (0 repeats the matrix).
  if (aBatch !== bBatch && aBatch !== 1 && bBatch !== 1) return undefined;
  let outBatchDims: number[];
  try {
    outBatchDims = tf.broadcast_util.assertAndGetBroadcastShape(aBatchDims, bBatchDims);
  } catch {
    return undefined;
  }
  const batch = Math.max(aBatch, bBatch);
  if (tf.util.sizeFromShape(outBatchDims) !== batch) return undefined;
  const out = backend.makeOutput([...outBatchDims, m, n], 'float32');
  // Offsets and the heap view are read after makeOutput: its malloc can grow wasm memory,
  // which detaches earlier views of the heap.
  const aOffset = backend.dataIdMap.get(a.dataId).memoryOffset / 4;
  const bOffset = backend.dataIdMap.get(b.dataId).memoryOffset / 4;
  const outOffset = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
  try {
    addon.sgemm(backend.wasm.HEAPF32, transposeA, transposeB, m, n, k, aOffset, bOffset, outOffset, batch, aBatch === 1 ? 0 : m * k, bBatch === 1 ? 0 : k * n);
  } catch (error) {
    backend.disposeData(out.dataId);
    throw error;
  }
  return out;
}

const SPD_INVERSE = 'GrngSpdInverse';
/** What the last SpdInverse kernel call estimated (a kernel returns tensors only). */
let lastResidual = Number.NaN;

interface SpdInverseArgs {
  inputs: { x: tf.TensorInfo };
  backend: WasmBackendLike;
}

function spdInverseKernel(addon: BlasAddon, { inputs: { x }, backend }: SpdInverseArgs): tf.TensorInfo {
  const n = x.shape[0]!;
  const out = backend.makeOutput([n, n], 'float32');
  // Offsets and the heap view after makeOutput, which may grow (and detach) the heap.
  const mOffset = backend.dataIdMap.get(x.dataId).memoryOffset / 4;
  const xOffset = backend.dataIdMap.get(out.dataId).memoryOffset / 4;
  try {
    lastResidual = addon.spdInverse(backend.wasm.HEAPF32, n, mOffset, xOffset);
  } catch (error) {
    backend.disposeData(out.dataId);
    throw error;
  }
  return out;
}

/**
 * M⁻¹ of a symmetric positive definite float32 matrix by Cholesky in float64 (LAPACK's dpotrf +
 * dpotri, from the BLAS library the native matMul loaded), with ‖I − M X‖_F/√d estimated for the
 * float32 X returned (4 random sign probes). About d³ flops, against ~4d³ for every Newton–Schulz
 * iteration: a 785×785 factor takes ~17 ms here instead of ~200 ms.
 *
 * Returns undefined where it cannot run — not the wasm backend, native BLAS off, no LAPACK in the
 * library — and where M is not positive definite; callers then use Newton–Schulz. `m` is not
 * disposed; the caller owns the result.
 *
 * @example
 * const exact = nativeSpdInverse(damped) ?? (await newtonSchulzInverse(damped));
 */
export function nativeSpdInverse(m: tf.Tensor2D): { inverse: tf.Tensor2D; residual: number } | undefined {
  if (!nativeSpdInverseAvailable() || m.dtype !== 'float32' || m.rank !== 2 || m.shape[0] !== m.shape[1] || m.size === 0) return undefined;
  lastResidual = Number.NaN;
  const inverse = tf.engine().runKernel(SPD_INVERSE, { x: m }) as tf.Tensor2D;
  const residual = lastResidual;
  if (!(residual >= 0)) {
    inverse.dispose();
    return undefined;
  }
  return { inverse, residual };
}

/**
 * Whether the addon loads and its BLAS library brings LAPACK's dpotrf/dpotri (OpenBLAS does, the
 * reference libblas needs liblapack.so.3 beside it): what {@link nativeSpdInverse} needs besides
 * the wasm backend with the native matMul enabled.
 */
export function nativeLapackAvailable(): boolean {
  const addon = loadAddon();
  return 'addon' in addon && addon.addon.load().lapack === true;
}

/** Whether {@link nativeSpdInverse} can run now (wasm backend with the native BLAS and its LAPACK). */
export function nativeSpdInverseAvailable(): boolean {
  return spdInverseReady && tf.getBackend() === 'wasm';
}

const GRAM_UPDATE = 'GrngGramUpdate';

interface GramUpdateArgs {
  inputs: { x: tf.TensorInfo; previous?: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { alpha: number; beta: number };
}

function gramUpdateKernel(addon: BlasAddon, { inputs: { x, previous }, backend, attrs: { alpha, beta } }: GramUpdateArgs): tf.TensorInfo {
  const [m, n] = x.shape as [number, number];
  const out = backend.makeOutput([n, n], 'float32');
  const offset = (t: tf.TensorInfo): number => backend.dataIdMap.get(t.dataId).memoryOffset / 4;
  try {
    addon.gramUpdate(backend.wasm.HEAPF32, m, n, offset(x), previous ? offset(previous) : -1, offset(out), alpha, beta);
  } catch (error) {
    backend.disposeData(out.dataId);
    throw error;
  }
  return out;
}

/**
 * alpha·XᵀX + beta·previous for a float32 m×n X in one native call (ssyrk: the symmetric
 * product at half a general product's flops, no transposed copy), exactly symmetric. K-FAC's
 * factor statistic ĀᵀĀ/m folded into its moving average. Undefined where it cannot run (not the
 * wasm backend, native BLAS off, no ssyrk): compute it with tfjs ops then. Nothing is disposed.
 *
 * @example
 * const sum = nativeGramUpdate(homogeneous, old.sum, (1 - beta) / m, beta) ?? slowPath();
 */
export function nativeGramUpdate(x: tf.Tensor2D, previous: tf.Tensor2D | undefined, alpha: number, beta: number): tf.Tensor2D | undefined {
  if (!gramReady || tf.getBackend() !== 'wasm' || x.dtype !== 'float32' || x.rank !== 2 || x.shape[1] === 0) return undefined;
  const n = x.shape[1];
  if (previous && (previous.dtype !== 'float32' || previous.shape[0] !== n || previous.shape[1] !== n)) return undefined;
  const inputs: tf.NamedTensorMap = previous ? { x, previous } : { x };
  return tf.engine().runKernel(GRAM_UPDATE, inputs, { alpha, beta } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
}

const SOPHIA_UPDATE = 'GrngSophiaUpdate';
/** What the last SophiaUpdate kernel call counted. */
let lastUnclipped = Number.NaN;

/** SophiaG's hyperparameters for one step, as the fused kernel takes them. */
export interface SophiaStepHyper {
  readonly b1: number;
  readonly gamma: number;
  readonly eps: number;
  /** −η. */
  readonly minusEta: number;
  /** −η·λ (0: no weight decay). */
  readonly decay: number;
}

interface SophiaUpdateArgs {
  inputs: { g: tf.TensorInfo; m: tf.TensorInfo; h: tf.TensorInfo; p: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: SophiaStepHyper;
}

function sophiaUpdateKernel(addon: BlasAddon, { inputs: { g, m, h, p }, backend, attrs }: SophiaUpdateArgs): tf.TensorInfo[] {
  const mOut = backend.makeOutput([...g.shape], 'float32');
  const uOut = backend.makeOutput([...g.shape], 'float32');
  const offset = (t: tf.TensorInfo): number => backend.dataIdMap.get(t.dataId).memoryOffset / 4;
  try {
    lastUnclipped = addon.sophiaUpdate(backend.wasm.HEAPF32, tf.util.sizeFromShape(g.shape), offset(g), offset(m), offset(h), offset(p), offset(mOut), offset(uOut), attrs.b1, attrs.gamma, attrs.eps, attrs.minusEta, attrs.decay);
  } catch (error) {
    backend.disposeData(mOut.dataId);
    backend.disposeData(uOut.dataId);
    throw error;
  }
  return [mOut, uOut];
}

/**
 * One parameter's SophiaG step in a single native pass: m' = β₁m + (1−β₁)g and
 * u = −η·clip(m'/max(γh, ε), −1, 1) − ηλ·p, with the count of coordinates that were not clipped.
 * Replaces ~14 tfjs kernels (each a pass over memory and an allocation); NaN propagates as
 * there. Undefined where it cannot run (not wasm, native BLAS off, not float32, shapes differ).
 *
 * @example
 * const fused = nativeSophiaUpdate(g, state.m[k], h[k], params[k], { b1, gamma, eps, minusEta: -eta, decay: -eta * lambda });
 */
export function nativeSophiaUpdate(g: tf.Tensor, m: tf.Tensor, h: tf.Tensor, p: tf.Tensor, hyper: SophiaStepHyper): { m: tf.Tensor; update: tf.Tensor; unclipped: number } | undefined {
  if (!status?.enabled || tf.getBackend() !== 'wasm') return undefined;
  const same = (t: tf.Tensor): boolean => t.dtype === 'float32' && t.size === g.size && t.shape.join() === g.shape.join();
  if (![g, m, h, p].every(same)) return undefined;
  lastUnclipped = Number.NaN;
  const [mOut, update] = tf.engine().runKernel(SOPHIA_UPDATE, { g, m, h, p }, { ...hyper } as unknown as tf.NamedAttrMap) as tf.Tensor[];
  return { m: mOut!, update: update!, unclipped: lastUnclipped };
}

const DOT = 'GrngDot';

interface DotArgs {
  inputs: { x: tf.TensorInfo; y: tf.TensorInfo };
  backend: WasmBackendLike;
}

function dotKernel(addon: BlasAddon, { inputs: { x, y }, backend }: DotArgs): tf.TensorInfo {
  const out = backend.makeOutput([], 'float32');
  const offset = (t: tf.TensorInfo): number => backend.dataIdMap.get(t.dataId).memoryOffset / 4;
  let value: number;
  try {
    value = addon.dot(backend.wasm.HEAPF32, tf.util.sizeFromShape(x.shape), offset(x), offset(y));
  } catch (error) {
    backend.disposeData(out.dataId);
    throw error;
  }
  // The heap view is read after the call: makeOutput may have grown (and replaced) it.
  backend.wasm.HEAPF32[offset(out)] = value;
  return out;
}

/**
 * Σ x·y as a device scalar, in one native pass (float64 accumulation through `cblas_dsdot`):
 * what `sum(mul(x, y))` gives, without writing and re-reading a temporary the size of x. Squared
 * norms of gradients and updates (metrics, RING's damping, R-Kalman) are the users. Undefined
 * where it cannot run (not wasm, native BLAS off, not float32 of the same size).
 *
 * @example
 * const squaredNorm = nativeDot(g, g) ?? tf.sum(tf.square(g));
 */
export function nativeDot(x: tf.Tensor, y: tf.Tensor): tf.Scalar | undefined {
  if (!status?.enabled || tf.getBackend() !== 'wasm' || x.dtype !== 'float32' || y.dtype !== 'float32' || x.size !== y.size) return undefined;
  return tf.engine().runKernel(DOT, { x, y }) as tf.Scalar;
}

const ADAM_UPDATE = 'GrngAdamUpdate';

/** Adam's hyperparameters for one step, bias corrections included. */
export interface AdamStepHyper {
  readonly b1: number;
  readonly b2: number;
  /** 1/(1 − β₁ᵗ). */
  readonly c1: number;
  /** 1/(1 − β₂ᵗ). */
  readonly c2: number;
  readonly eps: number;
}

interface AdamUpdateArgs {
  inputs: { g: tf.TensorInfo; mu: tf.TensorInfo; nu: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: AdamStepHyper;
}

function adamUpdateKernel(addon: BlasAddon, { inputs: { g, mu, nu }, backend, attrs }: AdamUpdateArgs): tf.TensorInfo[] {
  const outs = [0, 1, 2].map(() => backend.makeOutput([...g.shape], 'float32'));
  const offset = (t: tf.TensorInfo): number => backend.dataIdMap.get(t.dataId).memoryOffset / 4;
  try {
    addon.adamUpdate(backend.wasm.HEAPF32, tf.util.sizeFromShape(g.shape), offset(g), offset(mu), offset(nu), offset(outs[0]!), offset(outs[1]!), offset(outs[2]!), attrs.b1, attrs.b2, attrs.c1, attrs.c2, attrs.eps);
  } catch (error) {
    for (const out of outs) backend.disposeData(out.dataId);
    throw error;
  }
  return outs;
}

/**
 * One parameter's Adam step in a single native pass: the new moments μ, ν and the bias-corrected
 * direction μ̂/(√ν̂ + ε) that scaleByAdam computes with ~11 tfjs kernels. Undefined where it
 * cannot run (not wasm, native BLAS off, not float32 of one shape).
 *
 * @example
 * const fused = nativeAdamUpdate(g, mu, nu, { b1, b2, c1: 1 / (1 - b1 ** t), c2: 1 / (1 - b2 ** t), eps });
 */
export function nativeAdamUpdate(g: tf.Tensor, mu: tf.Tensor, nu: tf.Tensor, hyper: AdamStepHyper): { mu: tf.Tensor; nu: tf.Tensor; update: tf.Tensor } | undefined {
  if (!status?.enabled || tf.getBackend() !== 'wasm') return undefined;
  const same = (t: tf.Tensor): boolean => t.dtype === 'float32' && t.shape.join() === g.shape.join();
  if (![g, mu, nu].every(same)) return undefined;
  const [m, v, update] = tf.engine().runKernel(ADAM_UPDATE, { g, mu, nu }, { ...hyper } as unknown as tf.NamedAttrMap) as tf.Tensor[];
  return { mu: m!, nu: v!, update: update! };
}
