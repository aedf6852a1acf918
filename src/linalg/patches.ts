import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import { nativeFoldPatches, nativePatches } from '../runtime/nativeWindowKernels.js';

/** How a 2-D window (convolution or pooling) slides over an NHWC image. */
export type Padding = 'same' | 'valid';

/** The output size of one spatial axis and the zero padding before and after it. */
export interface AxisGeometry {
  readonly size: number;
  readonly padBefore: number;
  readonly padAfter: number;
}

/**
 * One spatial axis of a window sliding over `inSize` values, as tfjs (and TensorFlow) do it:
 * `valid` keeps whole windows, ceil((in − k + 1)/stride) of them; `same` gives ceil(in/stride)
 * outputs and pads max((out − 1)·stride + k − in, 0) zeros, the odd one after (bottom/right).
 *
 * @example
 * convOutputSize(28, 3, 2, 'same'); // { size: 14, padBefore: 0, padAfter: 1 }
 */
export function convOutputSize(
  inSize: number,
  kernel: number,
  stride: number,
  padding: Padding,
): AxisGeometry {
  if (padding === 'valid') {
    if (inSize < kernel)
      throw new GrngError(
        'invalid-model',
        `a window of ${kernel} does not fit an input of ${inSize} with valid padding`,
        { kernel, input: inSize },
      );
    return { size: Math.ceil((inSize - kernel + 1) / stride), padBefore: 0, padAfter: 0 };
  }
  const size = Math.ceil(inSize / stride);
  const total = Math.max((size - 1) * stride + kernel - inSize, 0);
  const padBefore = Math.floor(total / 2);
  return { size, padBefore, padAfter: total - padBefore };
}

/** Where a kh×kw window with strides and padding reads an H×W×C image, and what it gives. */
export interface WindowGeometry {
  readonly inputShape: readonly [number, number, number];
  readonly kernelSize: readonly [number, number];
  readonly strides: readonly [number, number];
  readonly padding: Padding;
  readonly rows: AxisGeometry;
  readonly cols: AxisGeometry;
  /** Output locations per example, T = H_out·W_out. */
  readonly locations: number;
  /** Values in one patch, kh·kw·C. */
  readonly patchSize: number;
}

/**
 * The geometry of a window over an image, checked (whole numbers ≥ 1).
 *
 * @example
 * windowGeometry([28, 28, 1], [3, 3], [1, 1], 'same').locations; // 784
 */
export function windowGeometry(
  inputShape: readonly number[],
  kernelSize: readonly number[],
  strides: readonly number[],
  padding: Padding,
): WindowGeometry {
  const whole = (values: readonly number[], length: number): boolean =>
    values.length === length && values.every((v) => Number.isInteger(v) && v >= 1);
  if (!whole(inputShape, 3) || !whole(kernelSize, 2) || !whole(strides, 2))
    throw new GrngError(
      'invalid-model',
      `invalid window: input [${inputShape.join(', ')}] (H, W, C), kernel [${kernelSize.join(', ')}], strides [${strides.join(', ')}] must be whole numbers ≥ 1`,
      { inputShape, kernelSize, strides },
    );
  if (padding !== 'same' && padding !== 'valid')
    throw new GrngError(
      'invalid-model',
      `invalid padding ${JSON.stringify(padding)}: same or valid`,
      { padding },
    );
  const [h, w, c] = inputShape as [number, number, number];
  const [kh, kw] = kernelSize as [number, number];
  const [sh, sw] = strides as [number, number];
  const rows = convOutputSize(h, kh, sh, padding);
  const cols = convOutputSize(w, kw, sw, padding);
  return {
    inputShape: [h, w, c],
    kernelSize: [kh, kw],
    strides: [sh, sw],
    padding,
    rows,
    cols,
    locations: rows.size * cols.size,
    patchSize: kh * kw * c,
  };
}

/** A window without the image size (taken from the batch). */
export interface PatchOptions {
  readonly kernelSize: readonly [number, number];
  readonly strides: readonly [number, number];
  readonly padding: Padding;
}

/**
 * The extra rows (columns) padded after the image so that every offset's strided read of
 * stride·out values fits; they are never read into a patch (at most stride − 1 of them).
 */
function slack(axis: AxisGeometry, inSize: number, kernel: number, stride: number): number {
  return Math.max(0, kernel - 1 + stride * axis.size - (inSize + axis.padBefore + axis.padAfter));
}

/**
 * The patches of a batch x [N, H, W, C]: [N, H_out, W_out, kh·kw·C], each patch flattened in
 * (i over kh, j over kw, c over C) order — the row-major flattening of an HWIO kernel, so
 * `reshape(kernel, [kh·kw·C, filters])` lines up with it. Built from pad, slice and reshape only
 * (no backend-specific kernel): it runs on cpu, wasm and webgpu, and its gradient (the adjoint,
 * {@link foldPatches}) and every higher one exist. `padValue` fills the padding (−∞ for max
 * pooling). On wasm with the native addon one native pass does it (runtime/nativeWindowKernels.ts),
 * with the same values and the same gradients to every order.
 *
 * @example
 * const p = extractPatches(x, { kernelSize: [3, 3], strides: [1, 1], padding: 'same' }); // [N, 28, 28, 9]
 */
export function extractPatches(
  x: tf.Tensor,
  window: WindowGeometry | PatchOptions,
  padValue = 0,
): tf.Tensor4D {
  const geometry =
    'rows' in window
      ? window
      : windowGeometry(x.shape.slice(1), window.kernelSize, window.strides, window.padding);
  checkInput(x, geometry);
  const n = x.shape[0]!;
  const [h, w, c] = geometry.inputShape;
  const [kh, kw] = geometry.kernelSize;
  const [sh, sw] = geometry.strides;
  const { rows, cols } = geometry;
  if (kh === 1 && kw === 1 && sh === 1 && sw === 1 && rows.size === h && cols.size === w)
    return tf.clone(x) as tf.Tensor4D;
  return nativePatches(x, geometry, padValue) ?? patchesFromOps(x, geometry, padValue);
}

/** {@link extractPatches} from pad, slice and reshape: every backend, every order of gradient. */
export function patchesFromOps(x: tf.Tensor, geometry: WindowGeometry, padValue = 0): tf.Tensor4D {
  const n = x.shape[0]!;
  const [h, w, c] = geometry.inputShape;
  const [kh, kw] = geometry.kernelSize;
  const [sh, sw] = geometry.strides;
  const { rows, cols } = geometry;
  return tf.tidy(() => {
    const extraRows = slack(rows, h, kh, sh);
    const extraCols = slack(cols, w, kw, sw);
    const padded =
      rows.padBefore + rows.padAfter + extraRows + cols.padBefore + cols.padAfter + extraCols > 0
        ? tf.pad(
            x,
            [
              [0, 0],
              [rows.padBefore, rows.padAfter + extraRows],
              [cols.padBefore, cols.padAfter + extraCols],
              [0, 0],
            ],
            padValue,
          )
        : x;
    const pieces: tf.Tensor[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const window = tf.slice(padded, [0, i, j, 0], [n, sh * rows.size, sw * cols.size, c]);
        // A strided read as slice + reshape: pick phase 0 of each stride-sized group.
        pieces.push(
          sh === 1 && sw === 1
            ? window
            : tf.reshape(
                tf.slice(
                  tf.reshape(window, [n, rows.size, sh, cols.size, sw, c]),
                  [0, 0, 0, 0, 0, 0],
                  [n, rows.size, 1, cols.size, 1, c],
                ),
                [n, rows.size, cols.size, c],
              ),
        );
      }
    }
    return (pieces.length === 1 ? pieces[0]! : tf.concat(pieces, 3)) as tf.Tensor4D;
  });
}

/**
 * The adjoint of {@link extractPatches}: patch-shaped values [N, H_out, W_out, kh·kw·C] summed
 * back onto the image positions they were read from, [N, H, W, C] (col2im). Linear and built from
 * slice, pad and reshape, so it is differentiable to any order (its own adjoint is
 * extractPatches). Native on wasm with the addon, as extractPatches.
 *
 * @example
 * const dx = foldPatches(dPatches, geometry); // the input gradient of a patch-based conv
 */
export function foldPatches(patches: tf.Tensor, geometry: WindowGeometry): tf.Tensor4D {
  const n = patches.shape[0]!;
  const [h, w, c] = geometry.inputShape;
  const [kh, kw] = geometry.kernelSize;
  const [sh, sw] = geometry.strides;
  const { rows, cols } = geometry;
  const expected = [n, rows.size, cols.size, geometry.patchSize];
  if (patches.shape.join() !== expected.join())
    throw new GrngError(
      'shape',
      `foldPatches expects [${expected.join(', ')}], got [${patches.shape.join(', ')}]`,
      { expected, got: patches.shape },
    );
  if (kh === 1 && kw === 1 && sh === 1 && sw === 1 && rows.size === h && cols.size === w)
    return tf.clone(patches) as tf.Tensor4D;
  return nativeFoldPatches(patches, geometry) ?? foldFromOps(patches, geometry);
}

/** {@link foldPatches} from slice, pad and addN: every backend, every order of gradient. */
export function foldFromOps(patches: tf.Tensor, geometry: WindowGeometry): tf.Tensor4D {
  const n = patches.shape[0]!;
  const [h, w, c] = geometry.inputShape;
  const [kh, kw] = geometry.kernelSize;
  const [sh, sw] = geometry.strides;
  const { rows, cols } = geometry;
  return tf.tidy(() => {
    const paddedRows = h + rows.padBefore + rows.padAfter + slack(rows, h, kh, sh);
    const paddedCols = w + cols.padBefore + cols.padAfter + slack(cols, w, kw, sw);
    const parts: tf.Tensor[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        let piece: tf.Tensor = tf.slice(
          patches,
          [0, 0, 0, (i * kw + j) * c],
          [n, rows.size, cols.size, c],
        );
        if (sh > 1 || sw > 1) {
          // Zeros between the strided reads: the transpose of picking phase 0.
          piece = tf.reshape(
            tf.pad(tf.reshape(piece, [n, rows.size, 1, cols.size, 1, c]), [
              [0, 0],
              [0, 0],
              [0, sh - 1],
              [0, 0],
              [0, sw - 1],
              [0, 0],
            ]),
            [n, rows.size * sh, cols.size * sw, c],
          );
        }
        parts.push(
          tf.pad(piece, [
            [0, 0],
            [i, paddedRows - i - sh * rows.size],
            [j, paddedCols - j - sw * cols.size],
            [0, 0],
          ]),
        );
      }
    }
    const summed = parts.length === 1 ? parts[0]! : tf.addN(parts);
    return tf.slice(summed, [0, rows.padBefore, cols.padBefore, 0], [n, h, w, c]) as tf.Tensor4D;
  });
}

function checkInput(x: tf.Tensor, geometry: WindowGeometry): void {
  if (x.rank !== 4 || x.shape.slice(1).join() !== geometry.inputShape.join())
    throw new GrngError(
      'shape',
      `patches of [batch, ${geometry.inputShape.join(', ')}] images, got [${x.shape.join(', ')}]`,
      { expected: [null, ...geometry.inputShape], got: x.shape },
    );
}
