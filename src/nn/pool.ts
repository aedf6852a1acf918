import * as tf from '@tensorflow/tfjs';
import {
  extractPatches,
  foldPatches,
  windowGeometry,
  type Padding,
  type WindowGeometry,
} from '../linalg/patches.js';
import { nativeMaxPool } from '../runtime/nativeWindowKernels.js';
import type { Layer } from './layer.js';

type CustomGradientFunc = Parameters<typeof tf.customGrad>[0];

export const POOL_KINDS = ['maxPool', 'avgPool'] as const;
export type PoolKind = (typeof POOL_KINDS)[number];

/** Max or average pooling over ph×pw windows: no parameters, no signal point. */
export interface PoolLayer extends Layer {
  readonly kind: PoolKind;
  readonly poolSize: readonly [number, number];
  readonly strides: readonly [number, number];
  readonly padding: Padding;
  readonly geometry: WindowGeometry;
}

/**
 * Describes a pooling layer over NHWC images, with tfjs's (TensorFlow's) semantics: `same`
 * padding pads after the image as convolution does, and a window's padded positions take no part
 * (max ignores them; the average divides by the values actually in the window). Both are built
 * from patches (linalg/patches.ts), so they run on every backend and are differentiable twice:
 * tfjs's own maxPool gradient is the MaxPoolGrad kernel, which has no gradient, so RENG's Hg
 * could not pass it.
 *
 * @example
 * const pool = poolLayer({ name: 'pool0', kind: 'maxPool', inputShape: [28, 28, 32], poolSize: [2, 2], strides: [2, 2], padding: 'valid' });
 */
export function poolLayer({
  name,
  kind,
  inputShape,
  poolSize,
  strides,
  padding,
}: {
  name: string;
  kind: PoolKind;
  inputShape: readonly [number, number, number] | readonly number[];
  poolSize: readonly [number, number] | readonly number[];
  strides: readonly [number, number] | readonly number[];
  padding: Padding;
}): PoolLayer {
  const geometry = windowGeometry(inputShape, poolSize, strides, padding);
  const [, , c] = geometry.inputShape;
  const outputShape = [geometry.rows.size, geometry.cols.size, c];
  return {
    kind,
    name,
    poolSize: geometry.kernelSize,
    strides: geometry.strides,
    padding,
    geometry,
    inputShape: [...geometry.inputShape],
    outputShape,
    params: [],
    apply: kind === 'maxPool' ? maxPool(geometry) : avgPool(geometry),
  };
}

/** [N, H_out, W_out, ph·pw, C]: each window's values, window position before channel. */
function windows(x: tf.Tensor, geometry: WindowGeometry, padValue: number): tf.Tensor5D {
  const [kh, kw] = geometry.kernelSize;
  return tf.reshape(extractPatches(x, geometry, padValue), [
    x.shape[0]!,
    geometry.rows.size,
    geometry.cols.size,
    kh * kw,
    geometry.inputShape[2],
  ]);
}

/**
 * Max pooling as a custom gradient: the value is the window maximum (padding −∞), the gradient
 * routes dy to the first maximum of each window through a 0/1 mask computed in the forward pass
 * and saved as a constant. The backward pass is then linear in dy (fold of mask ⊙ dy), so its own
 * gradient exists and is exact: max pooling is piecewise linear, its second derivative is zero.
 */
function maxPool(geometry: WindowGeometry): Layer['apply'] {
  const [kh, kw] = geometry.kernelSize;
  const window = kh * kw;
  const pool = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const values = windows(x, geometry, -Infinity);
    const mask =
      window === 1
        ? tf.onesLike(values)
        : // oneHot's own float32 output is all zeros on tfjs-wasm (measured): cast the int32 one.
          tf.transpose(
            tf.cast(tf.oneHot(tf.argMax(values, 3), window), 'float32'),
            [0, 1, 2, 4, 3],
          );
    save([mask]);
    return {
      value: window === 1 ? tf.squeeze(values, [3]) : tf.max(values, 3),
      gradFunc: (dy: tf.Tensor, [savedMask]: tf.Tensor[]) => {
        const routed = tf.mul(savedMask!, tf.expandDims(dy, 3));
        return foldPatches(
          tf.reshape(routed, [dy.shape[0]!, dy.shape[1]!, dy.shape[2]!, geometry.patchSize]),
          geometry,
        );
      },
    };
  }) as unknown as CustomGradientFunc) as unknown as (x: tf.Tensor) => tf.Tensor;
  // On wasm with the native addon: one pass with the same routing (first maximum), 2.6 s → ms on
  // the benchmark CNN's first pool (runtime/nativeWindowKernels.ts).
  return (_params, x) => nativeMaxPool(x, geometry) ?? pool(x);
}

/**
 * Average pooling: the window sum times 1/(values in the window), a constant per output location
 * (fewer than ph·pw at a `same` border). Plain autograd ops, all linear, so every order of
 * gradient exists.
 */
function avgPool(geometry: WindowGeometry): Layer['apply'] {
  const { rows, cols } = geometry;
  const [h, w] = geometry.inputShape;
  const [kh, kw] = geometry.kernelSize;
  const [sh, sw] = geometry.strides;
  const inside = (out: number, stride: number, padBefore: number, k: number, size: number) => {
    const start = out * stride - padBefore;
    return Math.min(start + k, size) - Math.max(start, 0);
  };
  const reciprocal = new Float32Array(rows.size * cols.size);
  for (let i = 0; i < rows.size; i++)
    for (let j = 0; j < cols.size; j++)
      reciprocal[i * cols.size + j] =
        1 / (inside(i, sh, rows.padBefore, kh, h) * inside(j, sw, cols.padBefore, kw, w));
  return (_params, x) =>
    tf.tidy(() =>
      tf.mul(
        tf.sum(windows(x, geometry, 0), 3),
        tf.tensor3d(reciprocal, [rows.size, cols.size, 1]),
      ),
    );
}
