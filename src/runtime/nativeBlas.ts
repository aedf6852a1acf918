import * as tf from '@tensorflow/tfjs';
import { setNativeMatMulActive } from './matMulMode.js';
import { createRequire } from 'node:module';
import { invalidOption } from '../errors.js';
import type { BlasAddon, WasmBackendLike } from './nativeAddon.js';
import { registerNativeKernels } from './nativeKernels.js';

/**
 * Native matMul for the wasm backend, used whenever the addon and a BLAS load (`GRNG_BLAS=0`
 * turns it off, `GRNG_BLAS=1` insists): tfjs-backend-wasm's `BatchMatMul` kernel is replaced by one
 * that calls `cblas_sgemm` of a BLAS found at run time (OpenBLAS,
 * else libblas.so.3) through a small N-API addon (native/grng_native.c, built by
 * `node scripts/build-native.mjs`). Why: XNNPACK in wasm peaks near 29 GFLOP/s per core while
 * OpenBLAS does ~100 per core on the same CPU, and matMul is most of an MLP step.
 *
 * The addon reads and writes the wasm heap in place (no copies), and the transpose flags go to
 * sgemm, so transposed products cost nothing extra. The original kernel stays the fallback for
 * what the BLAS path does not cover (non-float32, batch dims that broadcast other than 1-vs-N,
 * and products too small for the native call to pay off). grng's other native kernels
 * (src/runtime/nativeKernels.ts) are registered and removed with it.
 */

/** What `enableNativeBlas` found. */
export interface NativeBlasStatus {
  readonly enabled: boolean;
  /** The shared library cblas_sgemm came from, when enabled (e.g. libopenblas.so.0). */
  readonly library?: string;
  /** Why it is not enabled. */
  readonly reason?: string;
}

const ADDON_PATH = '../../native/build/Release/grng_native.node';
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
  return invalidOption(
    'GRNG_BLAS',
    env.GRNG_BLAS,
    '1 to use the native BLAS matMul on the wasm backend, or 0',
  );
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
  return loaded.library
    ? { enabled: true, library: loaded.library }
    : {
        enabled: false,
        reason: `no BLAS with cblas_sgemm could be loaded: ${loaded.error ?? 'unknown reason'}`,
      };
}

/**
 * Replaces the wasm backend's BatchMatMul kernel with the BLAS one (idempotent). Call after the
 * wasm backend has started (initBackend does unless `GRNG_BLAS=0`). Never throws for a missing
 * addon or BLAS: the wasm kernel stays and `reason` says why.
 *
 * @example
 * await tf.setBackend('wasm'); const { enabled, reason } = enableNativeBlas();
 */
export function enableNativeBlas(): NativeBlasStatus {
  if (status?.enabled) {
    setNativeMatMulActive(true);
    return status;
  }
  const available = nativeBlasAvailable();
  if (!available.enabled) return (status = available);
  const original = tf.getKernel(tf.BatchMatMul, 'wasm');
  if (!original)
    return (status = {
      enabled: false,
      reason:
        'the wasm backend has no BatchMatMul kernel registered (is @tensorflow/tfjs-backend-wasm loaded?)',
    });
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
  const unregisterKernels = registerNativeKernels(addon);
  const restoreIdentity = shareIdentity();
  restore = () => {
    tf.unregisterKernel(tf.BatchMatMul, 'wasm');
    tf.registerKernel(original);
    unregisterKernels();
    restoreIdentity();
    setNativeMatMulActive(false);
  };
  // Dense layers and reductions switch to the formulations a BLAS makes fast.
  setNativeMatMulActive(true);
  return (status = available);
}

let restore: (() => void) | undefined;
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
    addonResult = {
      reason: `the native addon is not built (node scripts/build-native.mjs): ${message}`,
    };
  }
  return addonResult;
}

interface KernelArgs {
  inputs: { a: tf.TensorInfo; b: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { transposeA: boolean; transposeB: boolean };
}

/** The BLAS product, or undefined where the original kernel should run instead. */
function blasBatchMatMul(
  addon: BlasAddon,
  { inputs: { a, b }, backend, attrs: { transposeA, transposeB } }: KernelArgs,
): tf.TensorInfo | undefined {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2)
    return undefined;
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
    addon.sgemm(
      backend.wasm.HEAPF32,
      transposeA,
      transposeB,
      m,
      n,
      k,
      aOffset,
      bOffset,
      outOffset,
      batch,
      aBatch === 1 ? 0 : m * k,
      bBatch === 1 ? 0 : k * n,
    );
  } catch (error) {
    backend.disposeData(out.dataId);
    throw error;
  }
  return out;
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

export {
  nativeAdamUpdate,
  nativeDot,
  nativeFiniteFlags,
  nativeKalmanPosterior,
  nativeKalmanPrior,
  nativeGramUpdate,
  nativeSophiaUpdate,
  nativeSpdInverse,
  nativeSpdInverseAvailable,
  type AdamStepHyper,
  type SophiaStepHyper,
} from './nativeKernels.js';

/**
 * Makes the wasm backend's Identity kernel share its input's buffer (one more reference, as its
 * Reshape and the cpu backend's Identity do) instead of copying it. Why: tfjs's engine clones
 * every tensor a kernel saves for its gradient, and the wasm Identity copies each one — 206
 * copies in a gpt:L2-d128-h4-ctx64 training step, 23 ms of a ~215 ms step (measured with
 * tf.profile). Sharing is safe because tensors are immutable: no kernel writes into its inputs,
 * and a variable's assign takes a new buffer. Returns what puts the copying kernel back.
 */
function shareIdentity(): () => void {
  const original = tf.getKernel(tf.Identity, 'wasm');
  if (!original) return () => undefined;
  tf.unregisterKernel(tf.Identity, 'wasm');
  tf.registerKernel({
    ...original,
    kernelFunc: (args) => {
      const { x } = args.inputs as { x: tf.TensorInfo };
      if (x.dtype === 'string') return original.kernelFunc(args);
      (args.backend as { incRef(dataId: unknown): void }).incRef(x.dataId);
      return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
    },
  });
  return () => {
    tf.unregisterKernel(tf.Identity, 'wasm');
    tf.registerKernel(original);
  };
}
