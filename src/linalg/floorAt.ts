import * as tf from '@tensorflow/tfjs';

/** The largest finite float32. */
const FLOAT32_MAX = 3.4028234663852886e38;

/**
 * max(x, floor) elementwise, as a clip to [floor, FLOAT32_MAX]. Why not tf.maximum: its
 * broadcast against a scalar is ~3× slower than ClipByValue on tfjs-wasm. Why not an infinite
 * upper bound: WGSL lets implementations assume that no infinities occur, so webgpu could
 * miscompile a clamp to +∞.
 */
export function floorAt<T extends tf.Tensor>(x: T, floor: number): T {
  return tf.clipByValue(x, floor, FLOAT32_MAX);
}
