import * as tf from '@tensorflow/tfjs';
import { sampledLabelPass } from '../nn/sampledLabels.js';
import { GrngError, invalidOption } from '../errors.js';
import { nativeSophiaUpdate } from '../runtime/nativeBlas.js';
import { Sequential } from '../nn/sequential.js';
import type { Params } from '../types.js';
import { checkKeys } from '../validate.js';
import { floorAt } from '../linalg/floorAt.js';
import { valueAt, type Hyper } from './schedules.js';
import { optionKeys, readOption, type OptionTable } from './optionSpec.js';
import { mapAllOrNone, mapParams } from '../linalg/tree.js';
import { sumAll } from '../linalg/reductions.js';
import type { GradientTransformation, TransformResult, UpdateContext } from './transform.js';

export interface SophiaOptions {
  /** The model being trained: the Hessian estimate needs a backward pass with sampled labels. */
  readonly model: Sequential;
  /**
   * η, constant or scheduled; default 1e-3 (small classifiers; the Sophia paper's GPT runs use
   * 1e-4).
   */
  readonly learningRate?: Hyper;
  /** β₁ of the gradient moving average, default 0.965. */
  readonly b1?: number;
  /** β₂ of the Hessian-diagonal moving average, default 0.99. */
  readonly b2?: number;
  /** γ, the scale of the Hessian in the denominator (the Sophia paper's ρ), default 0.04. */
  readonly gamma?: number;
  /** Decoupled weight decay λ, constant or scheduled; default 0.1. */
  readonly weightDecay?: Hyper;
  /** ε, floor of the denominator γ·h, default 1e-12. */
  readonly eps?: number;
  /** k: refresh the Hessian estimate at the first step and every k steps after; default 10. */
  readonly hessianEvery?: number;
  /**
   * Seed of the label sampling; each refresh uses {@link sophiaHessianSeed}(seed, step). Default 1.
   */
  readonly seed?: number;
}

/** Sophia's options besides the model. */
export const SOPHIA_OPTIONS = {
  learningRate: {
    kind: 'number',
    min: 0,
    schedule: true,
    default: 1e-3,
    flag: '--lr',
    help: 'learning rate η',
  },
  b1: {
    kind: 'number',
    min: 0,
    max: 1,
    maxExclusive: true,
    default: 0.965,
    flag: '--b1',
    help: 'β₁, decay of the gradient average',
  },
  b2: {
    kind: 'number',
    min: 0,
    max: 1,
    maxExclusive: true,
    default: 0.99,
    flag: '--b2',
    help: 'β₂, decay of the Hessian-diagonal estimate',
  },
  gamma: {
    kind: 'number',
    min: 0,
    minExclusive: true,
    default: 0.04,
    flag: '--gamma',
    help: 'γ, the scale of the Hessian in the denominator',
  },
  weightDecay: {
    kind: 'number',
    min: 0,
    schedule: true,
    default: 0.1,
    flag: '--weight-decay',
    help: 'weight decay',
  },
  eps: {
    kind: 'number',
    min: 0,
    minExclusive: true,
    default: 1e-12,
    flag: '--eps',
    help: 'ε, floor of the denominator γ·h',
  },
  hessianEvery: {
    kind: 'integer',
    min: 1,
    default: 10,
    flag: '--hessian-every',
    help: 'Hessian estimate every N steps',
  },
  seed: {
    kind: 'integer',
    min: 0,
    default: 1,
    listed: false,
    runFlag: true,
    flag: '--seed',
    help: 'seed of the label sampling',
  },
} as const satisfies OptionTable;

export interface SophiaState {
  /** Steps taken by this optimizer (drives the schedules and the refresh cadence). */
  readonly count: number;
  /** m, the moving average of the gradient. */
  readonly m: Params;
  /** h, the moving average of B·ĝ⊙ĝ, Sophia's estimate of the Hessian diagonal. */
  readonly h: Params;
}

/**
 * The seed of the sampled labels at optimizer step `count`: distinct for every step, so each
 * Hessian estimate uses fresh labels, yet the same for a given (seed, step), so runs repeat.
 */
export function sophiaHessianSeed(seed: number, count: number): number {
  // A prime stride keeps seeds of different runs apart for the first ~10⁶ steps.
  return seed * 1_000_003 + count;
}

/**
 * SophiaG [prior] (Liu et al. 2023, "Sophia: a scalable stochastic second-order optimizer"),
 * with the Gauss–Newton–Bartlett Hessian estimate. With g the batch gradient, B the batch size
 * and ĝ the gradient of the mean loss on labels sampled from the model's own softmax:
 *
 *   m ← β₁·m + (1−β₁)·g                              (every step)
 *   h ← β₂·h + (1−β₂)·B·ĝ⊙ĝ                          (at the first step and every k steps)
 *   θ ← θ·(1 − η·λ) − η·clip(m / max(γ·h, ε), −1, 1)
 *
 * so the update added to θ is −η·λ·θ − η·clip(·). The clip bounds every coordinate's step by η
 * where the curvature estimate is small or stale, which is what makes the diagonal Newton step
 * safe. Diagnostics: `learningRate` (η, host number) and `winRate` (device scalar: the share of
 * coordinates with |m / max(γ·h, ε)| < 1, i.e. not clipped).
 *
 * Needs `context.source` (the Step, for its batch): run it through the `update` operator.
 *
 * @example
 * const model = mlp({ inputs: 784, layers: [{ units: 256 }, { units: 10 }] });
 * steps$.pipe(update(model, sophia({ model, learningRate: 1e-3 })));
 */
export function sophia(options: SophiaOptions): GradientTransformation<SophiaState> {
  if (options === null || typeof options !== 'object')
    invalidOption('sophia options', options, 'an object with at least { model }');
  checkKeys('sophia', options, ['model', ...optionKeys(SOPHIA_OPTIONS)]);
  if (!(options.model instanceof Sequential))
    invalidOption(
      'model',
      options.model,
      'the Sequential model being trained (sophia samples labels from it)',
    );
  const model = options.model;
  const lr = readOption(SOPHIA_OPTIONS, options, 'learningRate');
  const b1 = readOption(SOPHIA_OPTIONS, options, 'b1');
  const b2 = readOption(SOPHIA_OPTIONS, options, 'b2');
  const gamma = readOption(SOPHIA_OPTIONS, options, 'gamma');
  const wd = readOption(SOPHIA_OPTIONS, options, 'weightDecay');
  const eps = readOption(SOPHIA_OPTIONS, options, 'eps');
  const every = readOption(SOPHIA_OPTIONS, options, 'hessianEvery');
  const seed = readOption(SOPHIA_OPTIONS, options, 'seed');

  return {
    init: (params: Params) => ({
      count: 0,
      m: mapParams(params, (p) => tf.zerosLike(p)),
      h: mapParams(params, (p) => tf.zerosLike(p)),
    }),

    update(
      grads: Params,
      state: SophiaState,
      params: Params,
      context: UpdateContext,
    ): TransformResult<SophiaState> {
      const count = state.count;
      const eta = valueAt(lr, count);
      const lambda = valueAt(wd, count);

      let h = state.h;
      if (count % every === 0) {
        const batch = context.source?.batch;
        if (!batch) {
          throw new GrngError(
            'step',
            'sophia needs the training step (context.source) for its Hessian estimate: run it through the update operator',
            { step: context.step },
          );
        }
        const hat = sampledLabelPass(model, batch.x, {
          grads: true,
          seed: sophiaHessianSeed(seed, count),
        }).grads!;
        // B·ĝ⊙ĝ: ĝ is the gradient of the *mean* sampled loss, so ĝ² is 1/B of the per-sample
        // Gauss–Newton diagonal on average; B restores that scale. B counts loss rows: a language
        // model's tokens (rows' sampled labels are independent, so the cross terms average out).
        const scale = (1 - b2) * batch.size * model.labelsPerExample;
        h = mapParams(grads, (_, k) => {
          const gk = hat[k];
          if (!gk)
            throw new GrngError(
              'internal',
              `sophia: the model has no parameter ${k}; pass the model being trained`,
              { key: k },
            );
          return tf.add(tf.mul(state.h[k]!, b2), tf.mul(tf.square(gk), scale));
        });
      }

      const coordinates = Object.values(grads).reduce((n, t) => n + t.size, 0);
      // One native pass per parameter where the native BLAS addon is loaded (wasm).
      const parts = mapAllOrNone(Object.keys(grads), (k) =>
        nativeSophiaUpdate(grads[k]!, state.m[k]!, h[k]!, params[k]!, {
          b1,
          gamma,
          eps,
          minusEta: -eta,
          decay: -eta * lambda,
        }),
      );
      if (parts) {
        const unclippedTotal = Object.values(parts).reduce((n, f) => n + f.unclipped, 0);
        return {
          updates: mapParams(grads, (_, k) => parts[k]!.update),
          state: { count: count + 1, m: mapParams(grads, (_, k) => parts[k]!.m), h },
          // A device scalar like the tfjs path gives, so readers see one type.
          diagnostics: { learningRate: eta, winRate: tf.scalar(unclippedTotal / coordinates) },
        };
      }
      const m = mapParams(grads, (g, k) => tf.add(tf.mul(state.m[k]!, b1), tf.mul(g, 1 - b1)));
      const minusEta = tf.scalar(-eta);
      const decay = tf.scalar(-eta * lambda);
      const unclipped: tf.Scalar[] = [];
      const updates = mapParams(m, (mk, k) => {
        const ratio = tf.div(mk, floorAt(tf.mul(h[k]!, gamma), eps));
        unclipped.push(sumAll(tf.cast(tf.less(tf.abs(ratio), 1), 'float32')));
        const step = tf.mul(tf.clipByValue(ratio, -1, 1), minusEta);
        return lambda === 0 ? step : tf.add(step, tf.mul(params[k]!, decay));
      });
      const winRate = tf.div(tf.addN(unclipped), coordinates) as tf.Scalar;
      return {
        updates,
        state: { count: count + 1, m, h },
        diagnostics: { learningRate: eta, winRate },
      };
    },
  };
}
