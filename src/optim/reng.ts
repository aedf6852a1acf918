import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import { softmaxCrossEntropy } from '../nn/losses.js';
import { modelFamily } from '../nn/modelFamily.js';
import type { Sequential } from '../nn/sequential.js';
import type { Params } from '../types.js';
import { checkKeys } from '../validate.js';
import {
  curvatureOptionsOf,
  FIXED_DAMPING_OPTION,
  kfacFamilyOptions,
  type CurvatureOptimizer,
  type KfacOptions,
} from './kfac.js';
import { naturalGradient, type NaturalGradientState } from './naturalGradient.js';
import { GRADIENT_REGULARIZATION_OPTION, optionKeys, readOption } from './optionSpec.js';
import { mapParams } from '../linalg/tree.js';
import { globalNorm, sumAll } from '../linalg/reductions.js';

export interface RengOptions extends KfacOptions {
  /** Gradient-regularisation strength ρ; default 0.1 ([ours]: tune). */
  readonly rho?: number;
  /** How Hg is computed: `double-backprop` (exact, default) or `finite-difference`. */
  readonly hvp?: 'double-backprop' | 'finite-difference';
  /** Step ε of the finite-difference Hg; default 1e-3. */
  readonly hvpEpsilon?: number;
}

export const RENG_OPTIONS = kfacFamilyOptions(
  {
    rho: { ...GRADIENT_REGULARIZATION_OPTION, conv: 0.01 },
    hvp: {
      kind: 'choice',
      choices: ['double-backprop', 'finite-difference'],
      default: 'double-backprop',
      // Conv nets: double backprop through the conv and pooling kernels costs ~2 SGD steps, the
      // finite difference ~1 (docs/algorithms.md, "Defaults for conv nets").
      conv: 'finite-difference',
      // Transformers: the same trade (docs/algorithms.md, "Defaults for transformers").
      transformer: 'finite-difference',
      flag: '--hvp',
      help: 'how RENG computes Hg: double-backprop (exact) or finite-difference (one extra forward and backward)',
    },
    hvpEpsilon: {
      kind: 'number',
      min: 0,
      minExclusive: true,
      default: 1e-3,
      listed: false,
      flag: '--hvp-epsilon',
      help: 'step ε of the finite-difference Hg',
    },
  },
  // λ is the whole of RENG's damping, as for K-FAC: the MLP comparison tuned it to 0.1 too.
  FIXED_DAMPING_OPTION,
);

/**
 * RENG — Regularized Explicit Natural Gradient [paper: double backprop; form ours].
 * V = ∇L_G = g + ρ·Hg with Hg = ∇_θ(½‖∇_θ L‖²) by double backpropagation on the step's batch
 * (or, with `hvp: 'finite-difference'`, Hg ≈ (∇L(θ + εĝ) − g)·‖g‖/ε, ĝ = g/‖g‖: one extra
 * forward and backward), then preconditioned as K-FAC with γ = λ. Factor statistics come from the
 * first-order pass only. ρ = 0 is exactly K-FAC. Reports ‖Hg‖ as `hgNorm`.
 */
export function reng(
  model: Sequential,
  options: RengOptions = {},
): CurvatureOptimizer<NaturalGradientState> {
  checkKeys('reng', options, optionKeys(RENG_OPTIONS));
  const family = modelFamily(model);
  const lambda = readOption(RENG_OPTIONS, options, 'damping', family);
  const rho = readOption(RENG_OPTIONS, options, 'rho', family);
  const hvp = readOption(RENG_OPTIONS, options, 'hvp', family);
  const epsilon = readOption(RENG_OPTIONS, options, 'hvpEpsilon');
  return {
    ...naturalGradient('reng', model, options, (grads, params, context) => {
      if (rho === 0) return { v: grads };
      const batch = context.source?.batch;
      if (!batch)
        throw new GrngError('step', 'reng needs the step (its batch) in the update context', {});
      const hg =
        hvp === 'double-backprop'
          ? hessianGradientProduct(model, params, batch.x, batch.y)
          : finiteDifferenceHg(model, params, grads, batch.x, batch.y, epsilon);
      return {
        v: mapParams(grads, (g, k) => tf.add(g, tf.mul(hg[k]!, rho))),
        diagnostics: { hgNorm: globalNorm(hg) },
      };
    }),
    curvature: { damping: { lambda, rho: 0, norm: 'mean' }, options: curvatureOptionsOf(options) },
  };
}

/**
 * The mean loss as a function of the parameters under `keys`; the model's other parameters (those
 * of another parameter group) enter as the constants they are.
 */
function lossOf(
  model: Sequential,
  keys: string[],
  x: tf.Tensor,
  y: tf.Tensor1D,
): (...ps: tf.Tensor[]) => tf.Scalar {
  const oneHot = tf.cast(tf.oneHot(y, model.outputs), 'float32') as tf.Tensor2D;
  return (...ps) =>
    softmaxCrossEntropy(
      model.apply(
        { ...(model.params as Params), ...Object.fromEntries(keys.map((k, i) => [k, ps[i]!])) },
        x,
      ).logits,
      oneHot,
    );
}

/**
 * Hg = ∇_θ(½‖∇_θ L‖²) by differentiating the gradient again (every op on the path is twice
 * differentiable).
 */
export function hessianGradientProduct(
  model: Sequential,
  params: Params,
  x: tf.Tensor,
  y: tf.Tensor1D,
): Params {
  const keys = Object.keys(params);
  const loss = lossOf(model, keys, x, y);
  const halfSquaredGradNorm = (...ps: tf.Tensor[]): tf.Scalar =>
    tf.mul(
      0.5,
      tf.addN(
        tf
          .grads(loss)(ps)
          .map((g) => sumAll(tf.square(g))),
      ),
    ) as tf.Scalar;
  const hg = tf.grads(halfSquaredGradNorm)(keys.map((k) => params[k]!));
  return Object.fromEntries(keys.map((k, i) => [k, hg[i]!]));
}

/** Hg ≈ (∇L(θ + εĝ) − g)·‖g‖/ε with ĝ = g/‖g‖. */
export function finiteDifferenceHg(
  model: Sequential,
  params: Params,
  grads: Params,
  x: tf.Tensor,
  y: tf.Tensor1D,
  epsilon: number,
): Params {
  const keys = Object.keys(params);
  const norm = globalNorm(grads);
  const safeNorm = tf.maximum(norm, 1e-12);
  const shifted = keys.map((k) => tf.add(params[k]!, tf.mul(grads[k]!, tf.div(epsilon, safeNorm))));
  const gShifted = tf.grads(lossOf(model, keys, x, y))(shifted);
  const scale = tf.div(norm, epsilon);
  return Object.fromEntries(
    keys.map((k, i) => [k, tf.mul(tf.sub(gShifted[i]!, grads[k]!), scale)]),
  );
}
