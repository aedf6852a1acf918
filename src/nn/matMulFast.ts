import * as tf from '@tensorflow/tfjs';

type CustomGradientFunc = Parameters<typeof tf.customGrad>[0];

/*
 * Why these exist: tfjs's own matMul gradient calls matMul with transposeA/transposeB, which the
 * wasm backend runs 13–70× slower than a plain product (and webgpu ~2× slower). These products
 * transpose explicitly instead, and their gradients are built from the same ops, so the whole
 * path stays fast at every order of differentiation (double backprop included).
 */

/** a (m×k) · b (k×n), with a gradient for both inputs that avoids transposed products. */
export const matMulFast: (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D = tf.customGrad(((a: tf.Tensor2D, b: tf.Tensor2D, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor2D, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as [tf.Tensor2D, tf.Tensor2D];
      return [matMulFast(dy, tf.transpose(sb)), matMulFast(tf.transpose(sa), dy)];
    },
  };
}) as unknown as CustomGradientFunc) as unknown as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;

/**
 * x (m×k) · b (k×n) where x is data that needs no gradient (the network input): only b gets one,
 * which saves the m×k product a general matMulFast would compute and throw away.
 */
export function matMulInput(x: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  const op = tf.customGrad(((w: tf.Tensor2D, save: tf.GradSaveFunc) => {
    save([w]);
    return {
      value: tf.matMul(x, w),
      gradFunc: (dy: tf.Tensor2D) => [matMulFast(tf.transpose(x), dy)],
    };
  }) as unknown as CustomGradientFunc) as unknown as (w: tf.Tensor2D) => tf.Tensor2D;
  return op(b);
}

/** Identity in the forward pass, zero gradient: a constant shift that must not be differentiated. */
export const stopGradient: <T extends tf.Tensor>(x: T) => T = tf.customGrad(((x: tf.Tensor) => ({
  value: tf.clone(x),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as unknown as CustomGradientFunc) as unknown as <T extends tf.Tensor>(x: T) => T;
