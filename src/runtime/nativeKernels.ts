import * as tf from '@tensorflow/tfjs';
import { heapOffset, withOutputs, type BlasAddon, type WasmBackendLike } from './nativeAddon.js';
import { registerWindowKernels } from './nativeWindowKernels.js';

/**
 * grng's own wasm kernels on the native BLAS addon (native/grng_native.c), besides the matMul
 * that src/runtime/nativeBlas.ts swaps in: each runs one native pass over tensors that live in the
 * wasm
 * heap, where the tfjs ops it replaces make several passes and allocations. They are registered
 * with the matMul (enableNativeBlas) and gone with it; every wrapper returns undefined where its
 * kernel cannot run, and its caller then uses the tfjs ops.
 */

/** Which kernels are registered now. */
const ready = { any: false, spdInverse: false, gram: false, unary: false };

const offsetOf = heapOffset;

/** Whether the kernels are registered and the wasm backend is the one running. */
const canRun = (): boolean => ready.any && tf.getBackend() === 'wasm';

/** Whether every tensor is float32 with the shape of the first. */
const sameFloat32 = (first: tf.Tensor, ...rest: tf.Tensor[]): boolean =>
  [first, ...rest].every((t) => t.dtype === 'float32' && t.shape.join() === first.shape.join());

/**
 * A number a kernel computes besides its tensors (a kernel returns tensors only): set by the call,
 * read right after it.
 */
let hostResult = Number.NaN;

/**
 * Registers every kernel the addon's library supports on the wasm backend; returns what
 * unregisters them. Called by enableNativeBlas.
 */
export function registerNativeKernels(addon: BlasAddon): () => void {
  const loaded = addon.load();
  const kernels: Array<[string, tf.KernelFunc]> = [
    [ADAM_UPDATE, (args) => adamUpdateKernel(addon, args as unknown as AdamUpdateArgs)],
    [DOT, (args) => dotKernel(addon, args as unknown as DotArgs)],
    [UNARY, (args) => unaryKernel(addon, args as unknown as UnaryArgs)],
    [FINITE_FLAGS, (args) => finiteFlagsKernel(addon, args as unknown as FiniteFlagsArgs)],
    [SOPHIA_UPDATE, (args) => sophiaUpdateKernel(addon, args as unknown as SophiaUpdateArgs)],
    [KALMAN_PRIOR, (args) => kalmanPriorKernel(addon, args as unknown as KalmanPriorArgs)],
    [
      KALMAN_POSTERIOR,
      (args) => kalmanPosteriorKernel(addon, args as unknown as KalmanPosteriorArgs),
    ],
    ...(loaded.lapack
      ? [
          [SPD_INVERSE, (args: unknown) => spdInverseKernel(addon, args as SpdInverseArgs)] as [
            string,
            tf.KernelFunc,
          ],
        ]
      : []),
    ...(loaded.gram
      ? [
          [GRAM_UPDATE, (args: unknown) => gramUpdateKernel(addon, args as GramUpdateArgs)] as [
            string,
            tf.KernelFunc,
          ],
        ]
      : []),
  ];
  for (const [kernelName, kernelFunc] of kernels)
    if (!tf.getKernel(kernelName, 'wasm'))
      tf.registerKernel({ kernelName, backendName: 'wasm', kernelFunc });
  const unregisterWindows = registerWindowKernels(addon);
  Object.assign(ready, {
    any: true,
    // An addon built before `unary` existed (a stale build/) lacks it: tfjs's kernels then run.
    unary: typeof (addon as Partial<BlasAddon>).unary === 'function',
    spdInverse: loaded.lapack === true,
    gram: loaded.gram === true,
  });
  return () => {
    unregisterWindows();
    for (const [kernelName] of kernels)
      if (tf.getKernel(kernelName, 'wasm')) tf.unregisterKernel(kernelName, 'wasm');
    Object.assign(ready, { any: false, spdInverse: false, gram: false, unary: false });
  };
}

const SPD_INVERSE = 'GrngSpdInverse';

interface SpdInverseArgs {
  inputs: { x: tf.TensorInfo };
  backend: WasmBackendLike;
}

function spdInverseKernel(
  addon: BlasAddon,
  { inputs: { x }, backend }: SpdInverseArgs,
): tf.TensorInfo {
  const n = x.shape[0]!;
  return withOutputs(backend, [[n, n]], ([out]) => {
    hostResult = addon.spdInverse(
      backend.wasm.HEAPF32,
      n,
      offsetOf(backend, x),
      offsetOf(backend, out!),
    );
  })[0]!;
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
export function nativeSpdInverse(
  m: tf.Tensor2D,
): { inverse: tf.Tensor2D; residual: number } | undefined {
  if (
    !nativeSpdInverseAvailable() ||
    m.dtype !== 'float32' ||
    m.rank !== 2 ||
    m.shape[0] !== m.shape[1] ||
    m.size === 0
  )
    return undefined;
  hostResult = Number.NaN;
  const inverse = tf.engine().runKernel(SPD_INVERSE, { x: m }) as tf.Tensor2D;
  const residual = hostResult;
  if (!(residual >= 0)) {
    inverse.dispose();
    return undefined;
  }
  return { inverse, residual };
}

/**
 * Whether {@link nativeSpdInverse} can run now (wasm backend with the native BLAS and its LAPACK).
 */
export function nativeSpdInverseAvailable(): boolean {
  return ready.spdInverse && tf.getBackend() === 'wasm';
}

const GRAM_UPDATE = 'GrngGramUpdate';

interface GramUpdateArgs {
  inputs: { x: tf.TensorInfo; previous?: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { alpha: number; beta: number };
}

function gramUpdateKernel(
  addon: BlasAddon,
  { inputs: { x, previous }, backend, attrs: { alpha, beta } }: GramUpdateArgs,
): tf.TensorInfo {
  const [m, n] = x.shape as [number, number];
  return withOutputs(backend, [[n, n]], ([out]) => {
    addon.gramUpdate(
      backend.wasm.HEAPF32,
      m,
      n,
      offsetOf(backend, x),
      previous ? offsetOf(backend, previous) : -1,
      offsetOf(backend, out!),
      alpha,
      beta,
    );
  })[0]!;
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
export function nativeGramUpdate(
  x: tf.Tensor2D,
  previous: tf.Tensor2D | undefined,
  alpha: number,
  beta: number,
): tf.Tensor2D | undefined {
  if (
    !ready.gram ||
    tf.getBackend() !== 'wasm' ||
    x.dtype !== 'float32' ||
    x.rank !== 2 ||
    x.shape[1] === 0
  )
    return undefined;
  const n = x.shape[1];
  if (
    previous &&
    (previous.dtype !== 'float32' || previous.shape[0] !== n || previous.shape[1] !== n)
  )
    return undefined;
  const inputs: tf.NamedTensorMap = previous ? { x, previous } : { x };
  return tf
    .engine()
    .runKernel(GRAM_UPDATE, inputs, { alpha, beta } as unknown as tf.NamedAttrMap) as tf.Tensor2D;
}

const SOPHIA_UPDATE = 'GrngSophiaUpdate';

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

function sophiaUpdateKernel(
  addon: BlasAddon,
  { inputs: { g, m, h, p }, backend, attrs }: SophiaUpdateArgs,
): tf.TensorInfo[] {
  return withOutputs(backend, [[...g.shape], [...g.shape]], ([mOut, uOut]) => {
    const at = (t: tf.TensorInfo): number => offsetOf(backend, t);
    hostResult = addon.sophiaUpdate(
      backend.wasm.HEAPF32,
      tf.util.sizeFromShape(g.shape),
      at(g),
      at(m),
      at(h),
      at(p),
      at(mOut!),
      at(uOut!),
      attrs.b1,
      attrs.gamma,
      attrs.eps,
      attrs.minusEta,
      attrs.decay,
    );
  });
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
export function nativeSophiaUpdate(
  g: tf.Tensor,
  m: tf.Tensor,
  h: tf.Tensor,
  p: tf.Tensor,
  hyper: SophiaStepHyper,
): { m: tf.Tensor; update: tf.Tensor; unclipped: number } | undefined {
  if (!canRun() || !sameFloat32(g, m, h, p)) return undefined;
  hostResult = Number.NaN;
  const [mOut, update] = tf.engine().runKernel(SOPHIA_UPDATE, { g, m, h, p }, {
    ...hyper,
  } as unknown as tf.NamedAttrMap) as tf.Tensor[];
  return { m: mOut!, update: update!, unclipped: hostResult };
}

const UNARY = 'GrngUnary';

interface UnaryArgs {
  inputs: { x: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { op: 0 | 1 };
}

function unaryKernel(
  addon: BlasAddon,
  { inputs: { x }, backend, attrs }: UnaryArgs,
): tf.TensorInfo {
  return withOutputs(backend, [x.shape], ([out]) =>
    addon.unary(
      backend.wasm.HEAPF32,
      tf.util.sizeFromShape(x.shape),
      offsetOf(backend, x),
      offsetOf(backend, out!),
      attrs.op,
    ),
  )[0]!;
}

/**
 * exp(x) or erf(x) in one native libm pass (see native/grng_native.c, `unary`, for the measured
 * why); undefined where it cannot run (not wasm, native kernels off, not float32), and the caller
 * uses tf.exp / tf.erf. No gradient of its own: callers wrap it in an op that has one.
 *
 * @example
 * const e = nativeUnary(x, 'exp') ?? tf.exp(x);
 */
export function nativeUnary(x: tf.Tensor, op: 'exp' | 'erf'): tf.Tensor | undefined {
  if (!canRun() || x.dtype !== 'float32' || !ready.unary) return undefined;
  return tf.engine().runKernel(UNARY, { x }, { op: op === 'exp' ? 0 : 1 }) as tf.Tensor;
}

const DOT = 'GrngDot';

interface DotArgs {
  inputs: { x: tf.TensorInfo; y: tf.TensorInfo };
  backend: WasmBackendLike;
}

function dotKernel(addon: BlasAddon, { inputs: { x, y }, backend }: DotArgs): tf.TensorInfo {
  return withOutputs(backend, [[]], ([out]) => {
    const value = addon.dot(
      backend.wasm.HEAPF32,
      tf.util.sizeFromShape(x.shape),
      offsetOf(backend, x),
      offsetOf(backend, y),
    );
    backend.wasm.HEAPF32[offsetOf(backend, out!)] = value;
  })[0]!;
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
  if (!canRun() || x.dtype !== 'float32' || y.dtype !== 'float32' || x.size !== y.size)
    return undefined;
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

function adamUpdateKernel(
  addon: BlasAddon,
  { inputs: { g, mu, nu }, backend, attrs }: AdamUpdateArgs,
): tf.TensorInfo[] {
  return withOutputs(
    backend,
    [[...g.shape], [...g.shape], [...g.shape]],
    ([muOut, nuOut, uOut]) => {
      const at = (t: tf.TensorInfo): number => offsetOf(backend, t);
      addon.adamUpdate(
        backend.wasm.HEAPF32,
        tf.util.sizeFromShape(g.shape),
        at(g),
        at(mu),
        at(nu),
        at(muOut!),
        at(nuOut!),
        at(uOut!),
        attrs.b1,
        attrs.b2,
        attrs.c1,
        attrs.c2,
        attrs.eps,
      );
    },
  );
}

/**
 * One parameter's Adam step in a single native pass: the new moments μ, ν and the bias-corrected
 * direction μ̂/(√ν̂ + ε) that scaleByAdam computes with ~11 tfjs kernels. Undefined where it
 * cannot run (not wasm, native BLAS off, not float32 of one shape).
 *
 * @example
 * const fused = nativeAdamUpdate(g, mu, nu, { b1, b2, c1: 1 / (1 - b1 ** t), c2: 1 / (1 - b2 ** t), eps });
 */
export function nativeAdamUpdate(
  g: tf.Tensor,
  mu: tf.Tensor,
  nu: tf.Tensor,
  hyper: AdamStepHyper,
): { mu: tf.Tensor; nu: tf.Tensor; update: tf.Tensor } | undefined {
  if (!canRun() || !sameFloat32(g, mu, nu)) return undefined;
  const [m, v, update] = tf.engine().runKernel(ADAM_UPDATE, { g, mu, nu }, {
    ...hyper,
  } as unknown as tf.NamedAttrMap) as tf.Tensor[];
  return { mu: m!, nu: v!, update: update! };
}

const KALMAN_PRIOR = 'GrngKalmanPrior';
const KALMAN_POSTERIOR = 'GrngKalmanPosterior';

interface KalmanPriorArgs {
  inputs: { p: tf.TensorInfo; rhoG2: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { fading: number; q: number };
}

function kalmanPriorKernel(
  addon: BlasAddon,
  { inputs: { p, rhoG2 }, backend, attrs }: KalmanPriorArgs,
): tf.TensorInfo {
  return withOutputs(backend, [[...p.shape]], ([out]) => {
    addon.kalmanPrior(
      backend.wasm.HEAPF32,
      tf.util.sizeFromShape(p.shape),
      offsetOf(backend, p),
      offsetOf(backend, out!),
      offsetOf(backend, rhoG2),
      attrs.fading,
      attrs.q,
    );
  })[0]!;
}

interface KalmanPosteriorArgs {
  inputs: { prior: tf.TensorInfo; reduced: tf.TensorInfo; gain: tf.TensorInfo };
  backend: WasmBackendLike;
  attrs: { pMin: number };
}

function kalmanPosteriorKernel(
  addon: BlasAddon,
  { inputs: { prior, reduced, gain }, backend, attrs }: KalmanPosteriorArgs,
): tf.TensorInfo[] {
  return withOutputs(backend, [[...prior.shape], [...prior.shape]], ([pOut, uOut]) => {
    const at = (t: tf.TensorInfo): number => offsetOf(backend, t);
    hostResult = addon.kalmanPosterior(
      backend.wasm.HEAPF32,
      tf.util.sizeFromShape(prior.shape),
      at(prior),
      at(reduced),
      at(gain),
      at(pOut!),
      at(uOut!),
      attrs.pMin,
    );
  });
}

/**
 * R-Kalman's prior covariance for one parameter in one native pass: P / (s·P + φ) with q = 0,
 * else F/(s·F + 1) with F = P/φ + q, where s = ρ‖g‖² is a device scalar (read in the kernel: no
 * read-back). Undefined where it cannot run.
 *
 * @example
 * const prior = nativeKalmanPrior(p, rhoG2, fading, q) ?? tfjsPrior(p);
 */
export function nativeKalmanPrior(
  p: tf.Tensor,
  rhoG2: tf.Scalar,
  fading: number,
  q: number,
): tf.Tensor | undefined {
  if (!canRun() || p.dtype !== 'float32' || rhoG2.dtype !== 'float32' || rhoG2.size !== 1)
    return undefined;
  return tf.engine().runKernel(KALMAN_PRIOR, { p, rhoG2 }, {
    fading,
    q,
  } as unknown as tf.NamedAttrMap) as tf.Tensor;
}

/**
 * R-Kalman's posterior covariance max(P⁻ − P⁻²⊙R, pMin) and update P⁻⊙G for one parameter in one
 * native pass, with Σ of the new P (for tr(P)/n). Undefined where it cannot run.
 *
 * @example
 * const post = nativeKalmanPosterior(prior, reduced, gain, pMin);
 */
export function nativeKalmanPosterior(
  prior: tf.Tensor,
  reduced: tf.Tensor,
  gain: tf.Tensor,
  pMin: number,
): { p: tf.Tensor; update: tf.Tensor; sum: number } | undefined {
  if (!canRun() || !sameFloat32(prior, reduced, gain)) return undefined;
  hostResult = Number.NaN;
  const [p, update] = tf.engine().runKernel(KALMAN_POSTERIOR, { prior, reduced, gain }, {
    pMin,
  } as unknown as tf.NamedAttrMap) as tf.Tensor[];
  return { p: p!, update: update!, sum: hostResult };
}

const FINITE_FLAGS = 'GrngFiniteFlags';

interface FiniteFlagsArgs {
  inputs: Record<string, tf.TensorInfo>;
  backend: WasmBackendLike;
}

function finiteFlagsKernel(addon: BlasAddon, { inputs, backend }: FiniteFlagsArgs): tf.TensorInfo {
  const tensors = Object.keys(inputs)
    .sort((a, b) => Number(a.slice(1)) - Number(b.slice(1)))
    .map((k) => inputs[k]!);
  return withOutputs(backend, [[tensors.length]], ([out]) => {
    const flags = tensors.map((t) =>
      addon.allFinite(backend.wasm.HEAPF32, tf.util.sizeFromShape(t.shape), offsetOf(backend, t))
        ? 1
        : 0,
    );
    backend.wasm.HEAPF32.set(flags, offsetOf(backend, out!));
  })[0]!;
}

/**
 * 1 for each tensor with no NaN or ±Inf element, 0 otherwise, in order, as one float32 tensor to
 * read back: one native pass over the exponent bits of each (the tfjs way is a reduction, an
 * isFinite and a cast per tensor, then a stack). Undefined where it cannot run.
 *
 * @example
 * const flags = nativeFiniteFlags(Object.values(grads));
 */
export function nativeFiniteFlags(tensors: readonly tf.Tensor[]): tf.Tensor1D | undefined {
  if (!canRun() || tensors.length === 0 || tensors.some((t) => t.dtype !== 'float32'))
    return undefined;
  const inputs = Object.fromEntries(tensors.map((t, i) => [`t${i}`, t]));
  return tf.engine().runKernel(FINITE_FLAGS, inputs) as tf.Tensor1D;
}
