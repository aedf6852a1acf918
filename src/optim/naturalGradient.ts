import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import {
  curvatureBlocks,
  precondition as preconditionBlocks,
  type KroneckerBlock,
} from '../curvature/blocks/index.js';
import type { Sequential } from '../nn/sequential.js';
import type { Curvature, Params } from '../types.js';
import { valueAt, type Hyper } from './schedules.js';
import { mapParams } from '../linalg/tree.js';
import { sumOfProducts } from '../linalg/reductions.js';
import type { GradientTransformation, UpdateContext } from './transform.js';
import { readOption, type OptionTable } from './optionSpec.js';

/**
 * Options shared by K-FAC, RING and RENG (docs/algorithms.md, Kronecker-factored Fisher: the
 * update).
 */
export interface NaturalGradientOptions {
  /** η, constant or scheduled; default 0.05. */
  readonly learningRate?: Hyper;
  /** Momentum on the clipped preconditioned direction; default 0.9. */
  readonly momentum?: number;
  /** KL-clip bound κ; default 1e-3; 0 turns clipping off. */
  readonly klClip?: number;
  /** L2 weight decay added to V; default 0. */
  readonly weightDecay?: number;
}

/** The option table of {@link NaturalGradientOptions}; K-FAC, RING and RENG build theirs on it. */
export const NATURAL_GRADIENT_OPTIONS = {
  learningRate: {
    kind: 'number',
    min: 0,
    schedule: true,
    default: 0.05,
    flag: '--lr',
    help: 'learning rate η',
  },
  momentum: {
    kind: 'number',
    min: 0,
    max: 1,
    maxExclusive: true,
    default: 0.9,
    flag: '--momentum',
    help: 'momentum μ',
  },
  klClip: {
    kind: 'number',
    min: 0,
    default: 1e-3,
    flag: '--kl-clip',
    help: 'KL-clip bound κ, 0 = off',
  },
  weightDecay: { kind: 'number', min: 0, default: 0, flag: '--weight-decay', help: 'weight decay' },
} as const satisfies OptionTable;

export interface NaturalGradientState {
  readonly count: number;
  readonly velocity: Params;
}

/**
 * The update all three Kronecker-factored methods share [prior: K-FAC with KL clipping]:
 * U_l = A_γ⁻¹ V̄_l G_γ⁻¹ per curvature block (curvature/blocks; dense: V̄_l = [∇kernel; ∇biasᵀ],
 * (in+1)×out, the transpose of the textbook G⁻¹VA⁻¹ in our in×out layout),
 * ν = min(1, √(κ / (η² Σ_l ⟨U_l, V_l⟩))), M ← μM + νU, θ ← θ − ηM. `direction` supplies V
 * (g for K-FAC/RING, g + ρHg for RENG).
 */
export function naturalGradient(
  name: string,
  model: Pick<Sequential, 'signalLayers'>,
  options: NaturalGradientOptions,
  direction: (
    grads: Params,
    params: Params,
    context: UpdateContext,
  ) => { v: Params; diagnostics?: Record<string, tf.Scalar | number> },
): GradientTransformation<NaturalGradientState> {
  const lr = readOption(NATURAL_GRADIENT_OPTIONS, options, 'learningRate');
  const momentum = readOption(NATURAL_GRADIENT_OPTIONS, options, 'momentum');
  const kappa = readOption(NATURAL_GRADIENT_OPTIONS, options, 'klClip');
  const weightDecay = readOption(NATURAL_GRADIENT_OPTIONS, options, 'weightDecay');
  const blocks = curvatureBlocks(model);
  return {
    init: (params: Params) => {
      checkCoverage(name, blocks, Object.keys(params));
      return { count: 0, velocity: mapParams(params, (p) => tf.zerosLike(p)) };
    },
    update(grads: Params, state: NaturalGradientState, params: Params, context: UpdateContext) {
      const curvature = context.source?.curvature;
      if (!curvature)
        throw new GrngError(
          'step',
          `${name} needs curvature: put fisherScan(model, ...) between forwardBackward(model, { signals: true }) and update`,
          {},
        );
      const eta = valueAt(lr, state.count);
      const { v: raw, diagnostics = {} } = direction(grads, params, context);
      const v =
        weightDecay > 0
          ? mapParams(raw, (g, k) => tf.add(g, tf.mul(params[k]!, weightDecay)))
          : raw;
      const u = preconditionBlocks(blocks, curvature.layers, v);
      let scale: tf.Scalar = tf.scalar(1);
      if (kappa > 0) {
        const inner = tf.addN(Object.keys(u).map((k) => sumOfProducts(u[k]!, v[k]!)));
        // ν = min(1, √(κ/(η²⟨U,V⟩))); a non-positive ⟨U,V⟩ (cannot happen for SPD inverses, but
        // float32 can) leaves the step unclipped.
        const bound = tf.sqrt(tf.div(kappa, tf.mul(eta * eta, tf.maximum(inner, 1e-30))));
        scale = tf.where(tf.greater(inner, 0), tf.minimum(1, bound), tf.scalar(1)) as tf.Scalar;
      }
      const velocity = mapParams(u, (ui, k) =>
        tf.add(tf.mul(state.velocity[k]!, momentum), tf.mul(ui, scale)),
      );
      const updates = mapParams(velocity, (m) => tf.mul(m, -eta));
      return {
        updates,
        state: { count: state.count + 1, velocity },
        diagnostics: {
          learningRate: eta,
          damping: curvature.damping,
          newtonIterations: curvature.newtonIterations,
          newtonResidual: curvature.newtonResidual,
          klClip: scale,
          ...diagnostics,
        },
      };
    },
  };
}

/**
 * U = A_γ⁻¹ V G_γ⁻¹ for each curvature block of the model (dense: V = [∇W; ∇bᵀ]); other
 * parameters pass through. See curvature/blocks.
 *
 * @example
 * const u = precondition(model, step.curvature, step.grads);
 */
export function precondition(
  model: Pick<Sequential, 'signalLayers'>,
  curvature: Curvature,
  v: Params,
): Params {
  return preconditionBlocks(curvatureBlocks(model), curvature.layers, v);
}

/**
 * The parameters a K-FAC-family transform updates must be exactly those of the model's curvature
 * blocks: a parameter without a block would get the preconditioned step's learning rate and
 * momentum without any curvature, and count in the KL clip, silently. Such parameters belong to
 * another group (see partition).
 */
function checkCoverage(
  name: string,
  blocks: readonly KroneckerBlock[],
  keys: readonly string[],
): void {
  const covered = new Set(blocks.flatMap((b) => b.params));
  const stray = keys.filter((k) => !covered.has(k));
  if (stray.length > 0) {
    throw new GrngError(
      'invalid-model',
      `${name} preconditions only parameters of layers with a curvature block (${blocks.map((b) => b.layer).join(', ') || 'none'}); ${stray.join(', ')} ${stray.length === 1 ? 'has' : 'have'} none: give ${stray.length === 1 ? 'it' : 'them'} another optimizer with partition()`,
      { keys: stray },
    );
  }
  const given = new Set(keys);
  const missing = [...covered].filter((k) => !given.has(k));
  if (missing.length > 0) {
    throw new GrngError(
      'invalid-model',
      `${name} preconditions whole layers: ${missing.join(', ')} of its blocks ${missing.length === 1 ? 'is' : 'are'} not among the parameters it was given`,
      { keys: missing },
    );
  }
}
