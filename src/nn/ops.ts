import * as tf from '@tensorflow/tfjs';
import { nativeMatMulActive } from '../runtime/matMulMode.js';
import { nativeUnary } from '../runtime/nativeKernels.js';

type CustomGradientFunc = Parameters<typeof tf.customGrad>[0];

/*
 * Differentiable building blocks that tfjs lacks.
 *
 * 1. Transpose-free products. Why: tfjs's own matMul gradient calls matMul with
 * transposeA/transposeB, which the
 * wasm backend runs 13–70× slower than a plain product (and webgpu ~2× slower). These products
 * transpose explicitly instead, and their gradients are built from the same ops, so the whole
 * path stays fast at every order of differentiation (double backprop included).
 */

// With a native BLAS matMul (nativeMatMulActive()), transposes are flags to sgemm: the products
// below
// then use tfjs's own matMul and its gradient, correct at every order, instead of explicit
// transposes.

/**
 * aᵀb: the transpose as a flag where a BLAS runs the product (free there), an explicit copy on
 * the wasm kernel (where the flag costs 13–70×). Differentiable like tf.matMul.
 */
export function matMulTransposeA(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return nativeMatMulActive() ? tf.matMul(a, b, true, false) : tf.matMul(tf.transpose(a), b);
}

/** abᵀ, the same way as {@link matMulTransposeA}. */
export function matMulTransposeB(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return nativeMatMulActive() ? tf.matMul(a, b, false, true) : tf.matMul(a, tf.transpose(b));
}

/** a (m×k) · b (k×n), with a gradient for both inputs that avoids transposed products. */
export function layerMatMul(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return nativeMatMulActive() ? tf.matMul(a, b) : matMulExplicit(a, b);
}

const matMulExplicit: (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D = tf.customGrad(((
  a: tf.Tensor2D,
  b: tf.Tensor2D,
  save: tf.GradSaveFunc,
) => {
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [matMulExplicit(dy, tf.transpose(sb)), matMulExplicit(tf.transpose(sa), dy)];
    },
  };
}) as unknown as CustomGradientFunc) as unknown as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;

/**
 * x (m×k) · b (k×n) where x is data that needs no gradient (the network input): only b gets one,
 * which saves the m×k product a general layerMatMul would compute and throw away.
 */
export function matMulInput(x: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad(((w: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([w]);
    return {
      value: tf.matMul(x, w),
      gradFunc: (dy: tf.Tensor2D) => [
        nativeMatMulActive() ? matMulTransposeA(x, dy) : matMulExplicit(tf.transpose(x), dy),
      ],
    };
  }) as unknown as CustomGradientFunc) as unknown as (w: tf.Tensor2D) => tf.Tensor2D;
  return op(b);
}

/**
 * a (m×k) · w (k×n) where w is held constant: only a gets a gradient. For passes that need the
 * back-propagated signals but no weight gradients (the sampled-label Fisher pass).
 */
export function matMulConstantB(a: tf.Tensor2D, w: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad(((x: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([x]);
    return {
      value: tf.matMul(x, w),
      gradFunc: (dy: tf.Tensor2D) => [
        nativeMatMulActive() ? tf.matMul(dy, w, false, true) : matMulExplicit(dy, tf.transpose(w)),
      ],
    };
  }) as unknown as CustomGradientFunc) as unknown as (x: tf.Tensor2D) => tf.Tensor2D;
  return op(a);
}

/**
 * Row-wise maximum (m×c → m×1) that carries no gradient: the constant shift of a stable
 * log-sum-exp. Computing the max inside the custom op keeps tf.max's own gradient (built on
 * Equal, which has no gradient) off the tape, so the loss stays twice differentiable.
 */
export const rowMaxNoGradient: (x: tf.Tensor2D) => tf.Tensor2D = tf.customGrad(((
  x: tf.Tensor2D,
) => ({
  value: tf.max(x, 1, true),
  gradFunc: () => tf.zerosLike(x),
})) as unknown as CustomGradientFunc) as unknown as (x: tf.Tensor2D) => tf.Tensor2D;

/*
 * 2. Element-wise functions whose gradient is built from the *input*. tfjs's Exp, Tanh and
 * Sigmoid gradients reuse the saved forward *output*, and a second differentiation through that
 * saved output either throws ("Cannot compute gradient of y=f(x)") or is silently wrong
 * (log Σ exp: measured off by 2× and of the wrong sign). These versions recompute from x with
 * themselves, so they are differentiable to any order.
 */

/** eˣ, differentiable to any order. */
export const exp: <T extends tf.Tensor>(x: T) => T = tf.customGrad(((
  x: tf.Tensor,
  save: tf.GradSaveFunc,
) => {
  save([x]);
  return {
    value: nativeUnary(x, 'exp') ?? tf.exp(x),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.mul(dy, exp(saved[0]!)),
  };
}) as unknown as CustomGradientFunc) as unknown as <T extends tf.Tensor>(x: T) => T;

/**
 * erf x, differentiable to any order: d erf = (2/√π)·e^(−x²) through {@link exp}. The value comes
 * from libm where the native kernels run (tfjs-wasm's Erf: 6.4 ms for 1M values).
 */
export const erf: <T extends tf.Tensor>(x: T) => T = tf.customGrad(((
  x: tf.Tensor,
  save: tf.GradSaveFunc,
) => {
  save([x]);
  return {
    value: nativeUnary(x, 'erf') ?? tf.erf(x),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.mul(dy, tf.mul(exp(tf.neg(tf.square(saved[0]!))), 2 / Math.sqrt(Math.PI))),
  };
}) as unknown as CustomGradientFunc) as unknown as <T extends tf.Tensor>(x: T) => T;

/** tanh x, differentiable to any order: d tanh = 1 − tanh². */
export const tanh: <T extends tf.Tensor>(x: T) => T = tf.customGrad(((
  x: tf.Tensor,
  save: tf.GradSaveFunc,
) => {
  save([x]);
  return {
    value: tf.tanh(x),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
      tf.mul(dy, tf.sub(1, tf.square(tanh(saved[0]!)))),
  };
}) as unknown as CustomGradientFunc) as unknown as <T extends tf.Tensor>(x: T) => T;

/**
 * Maximum over the last axis, kept as a size-1 axis, carrying no gradient: the constant shift of
 * a stable softmax over any rank (see {@link rowMaxNoGradient} for why inside a custom op).
 */
export const lastAxisMaxNoGradient: <T extends tf.Tensor>(x: T) => T = tf.customGrad(((
  x: tf.Tensor,
) => ({
  value: tf.max(x, -1, true),
  gradFunc: () => tf.zerosLike(x),
})) as unknown as CustomGradientFunc) as unknown as <T extends tf.Tensor>(x: T) => T;

/**
 * softmax over the last axis, differentiable to any order. tfjs's tf.softmax has a fused
 * gradient that reuses its saved output and cannot be differentiated again (RENG's Hg runs
 * through attention's softmax), so this one is e^(x − max) / Σ e^(x − max) from {@link exp}.
 */
export function softmaxLastAxis<T extends tf.Tensor>(x: T): T {
  const e = exp(tf.sub(x, lastAxisMaxNoGradient(x)));
  return tf.div(e, tf.sum(e, -1, true)) as T;
}

/*
 * 3. Broadcast adds and products whose gradient for the broadcast operand is a product with a
 * ones row instead of a reduction. Why: tfjs-backend-wasm's Sum over the leading axis of a
 * [2048, 512] gradient (a bias gradient in the GPT benchmark) took 9.4 ms, 9 ns a value, and a
 * transformer step has dozens of them (biases, layer-norm scales and shifts, the positional
 * table); 1ᵀ·dy is one small product on the BLAS. The gradients are built from these same ops,
 * so they stay differentiable to any order.
 */

/**
 * The column sums of a [rows, width] matrix as [width]: 1ᵀ·rows on the BLAS, tf.sum without it
 * (where the product would be the slow wasm kernel anyway). tfjs's own matMul, not layerMatMul:
 * a custom-gradient op inside this gradient made tfjs-wasm's BatchMatMul read freed memory
 * further down the backward pass (measured: "Aborted()" in the embedding's gradient).
 */
function columnSums(rows: tf.Tensor2D): tf.Tensor1D {
  return nativeMatMulActive()
    ? tf.reshape(tf.matMul(tf.ones([1, rows.shape[0]]), rows), [rows.shape[1]])
    : tf.sum(rows, 0);
}

/**
 * x + b with b broadcast over x's leading axes (b's shape is x's trailing shape); b's gradient is
 * a product with ones (see above).
 */
export const addBroadcast: <T extends tf.Tensor>(x: T, b: tf.Tensor) => T = tf.customGrad(((
  x: tf.Tensor,
  b: tf.Tensor,
) => ({
  value: tf.add(x, b),
  gradFunc: (dy: tf.Tensor) => [
    dy,
    tf.reshape(columnSums(tf.reshape(dy, [-1, b.size]) as tf.Tensor2D), b.shape),
  ],
})) as unknown as CustomGradientFunc) as unknown as <T extends tf.Tensor>(x: T, b: tf.Tensor) => T;

/** x ⊙ g with g broadcast over x's leading axes, g's gradient a product with ones. */
export const mulBroadcast: <T extends tf.Tensor>(x: T, g: tf.Tensor) => T = tf.customGrad(((
  x: tf.Tensor,
  g: tf.Tensor,
  save: tf.GradSaveFunc,
) => {
  save([x, g]);
  return {
    value: tf.mul(x, g),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sx, sg] = saved as [tf.Tensor, tf.Tensor];
      return [
        mulBroadcast(dy, sg),
        tf.reshape(columnSums(tf.reshape(tf.mul(dy, sx), [-1, sg.size]) as tf.Tensor2D), sg.shape),
      ];
    },
  };
}) as unknown as CustomGradientFunc) as unknown as <T extends tf.Tensor>(x: T, g: tf.Tensor) => T;
