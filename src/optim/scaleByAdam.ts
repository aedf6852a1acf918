import * as tf from '@tensorflow/tfjs';
import { nativeAdamUpdate } from '../runtime/nativeBlas.js';
import type { Params } from '../types.js';
import { checkNumber, checkUnitInterval } from '../validate.js';
import { mapAllOrNone, mapParams } from '../linalg/tree.js';
import type { GradientTransformation } from './transform.js';

export interface AdamState {
  readonly count: number;
  readonly mu: Params;
  readonly nu: Params;
}

export interface AdamOptions {
  /** β₁, default 0.9. */
  readonly b1?: number;
  /** β₂, default 0.999. */
  readonly b2?: number;
  /** ε added to √v̂, default 1e-8. */
  readonly eps?: number;
}

/**
 * Adam's direction m̂/(√v̂ + ε) with bias-corrected moments m ← β₁m + (1−β₁)g,
 * v ← β₂v + (1−β₂)g² (Kingma & Ba) [prior].
 */
export function scaleByAdam({
  b1 = 0.9,
  b2 = 0.999,
  eps = 1e-8,
}: AdamOptions = {}): GradientTransformation<AdamState> {
  checkUnitInterval('b1', b1);
  checkUnitInterval('b2', b2);
  checkNumber('eps', eps, { min: 0 });
  return {
    init: (params: Params) => ({
      count: 0,
      mu: mapParams(params, (p) => tf.zerosLike(p)),
      nu: mapParams(params, (p) => tf.zerosLike(p)),
    }),
    update(updates: Params, state: AdamState) {
      const count = state.count + 1;
      // One native pass per parameter where the BLAS addon is loaded (wasm).
      const hyper = { b1, b2, c1: 1 / (1 - b1 ** count), c2: 1 / (1 - b2 ** count), eps };
      const parts = mapAllOrNone(Object.keys(updates), (k) =>
        nativeAdamUpdate(updates[k]!, state.mu[k]!, state.nu[k]!, hyper),
      );
      if (parts) {
        return {
          updates: mapParams(updates, (_, k) => parts[k]!.update),
          state: {
            count,
            mu: mapParams(updates, (_, k) => parts[k]!.mu),
            nu: mapParams(updates, (_, k) => parts[k]!.nu),
          },
        };
      }
      const [sb1, sb1c, sb2, sb2c] = [
        tf.scalar(b1),
        tf.scalar(1 - b1),
        tf.scalar(b2),
        tf.scalar(1 - b2),
      ];
      const mu = mapParams(updates, (g, k) => tf.add(tf.mul(state.mu[k]!, sb1), tf.mul(g, sb1c)));
      const nu = mapParams(updates, (g, k) =>
        tf.add(tf.mul(state.nu[k]!, sb2), tf.mul(tf.square(g), sb2c)),
      );
      // Fold both bias corrections into one step size: m̂/(√v̂+ε) = (m/c1)/(√(v/c2)+ε).
      const c1 = tf.scalar(hyper.c1);
      const c2 = tf.scalar(hyper.c2);
      const e = tf.scalar(eps);
      const out = mapParams(mu, (m, k) =>
        tf.div(tf.mul(m, c1), tf.add(tf.sqrt(tf.mul(nu[k]!, c2)), e)),
      );
      return { updates: out, state: { count, mu, nu } };
    },
  };
}
