import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import type { Sequential } from '../nn/sequential.js';
import type { Curvature, Params } from '../types.js';
import { valueAt, type Hyper } from './schedules.js';
import { mapParams } from '../linalg/tree.js';
import { sumOfProducts } from '../linalg/reductions.js';
import type { GradientTransformation, UpdateContext } from './transform.js';
import { readOption, type OptionTable } from './optionSpec.js';

/** Options shared by K-FAC, RING and RENG (spec §4). */
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
  learningRate: { kind: 'number', min: 0, schedule: true, default: 0.05, flag: '--lr', help: 'learning rate η' },
  momentum: { kind: 'number', min: 0, max: 1, maxExclusive: true, default: 0.9, flag: '--momentum', help: 'momentum μ' },
  klClip: { kind: 'number', min: 0, default: 1e-3, flag: '--kl-clip', help: 'KL-clip bound κ, 0 = off' },
  weightDecay: { kind: 'number', min: 0, default: 0, flag: '--weight-decay', help: 'weight decay' },
} as const satisfies OptionTable;

export interface NaturalGradientState {
  readonly count: number;
  readonly velocity: Params;
}

/**
 * The update all three Kronecker-factored methods share [prior: K-FAC with KL clipping]:
 * U_l = A_γ⁻¹ V̄_l G_γ⁻¹ per dense layer (V̄_l = [∇kernel; ∇biasᵀ], (in+1)×out, the transpose of
 * the spec's G⁻¹VA⁻¹ in our in×out layout, so only plain products are needed),
 * ν = min(1, √(κ / (η² Σ_l ⟨U_l, V_l⟩))), M ← μM + νU, θ ← θ − ηM. `direction` supplies V
 * (g for K-FAC/RING, g + ρHg for RENG).
 */
export function naturalGradient(
  name: string,
  model: Pick<Sequential, 'layers'>,
  options: NaturalGradientOptions,
  direction: (grads: Params, params: Params, context: UpdateContext) => { v: Params; diagnostics?: Record<string, tf.Scalar | number> },
): GradientTransformation<NaturalGradientState> {
  const lr = readOption(NATURAL_GRADIENT_OPTIONS, options, 'learningRate');
  const momentum = readOption(NATURAL_GRADIENT_OPTIONS, options, 'momentum');
  const kappa = readOption(NATURAL_GRADIENT_OPTIONS, options, 'klClip');
  const weightDecay = readOption(NATURAL_GRADIENT_OPTIONS, options, 'weightDecay');
  return {
    init: (params: Params) => ({ count: 0, velocity: mapParams(params, (p) => tf.zerosLike(p)) }),
    update(grads: Params, state: NaturalGradientState, params: Params, context: UpdateContext) {
      const curvature = context.source?.curvature;
      if (!curvature) throw new GrngError('step', `${name} needs curvature: put fisherScan(model, ...) between forwardBackward(model, { signals: true }) and update`, {});
      const eta = valueAt(lr, state.count);
      const { v: raw, diagnostics = {} } = direction(grads, params, context);
      const v = weightDecay > 0 ? mapParams(raw, (g, k) => tf.add(g, tf.mul(params[k]!, weightDecay))) : raw;
      const u = precondition(model, curvature, v);
      let scale: tf.Scalar = tf.scalar(1);
      if (kappa > 0) {
        const inner = tf.addN(Object.keys(u).map((k) => sumOfProducts(u[k]!, v[k]!)));
        // ν = min(1, √(κ/(η²⟨U,V⟩))); a non-positive ⟨U,V⟩ (cannot happen for SPD inverses, but
        // float32 can) leaves the step unclipped.
        const bound = tf.sqrt(tf.div(kappa, tf.mul(eta * eta, tf.maximum(inner, 1e-30))));
        scale = tf.where(tf.greater(inner, 0), tf.minimum(1, bound), tf.scalar(1)) as tf.Scalar;
      }
      const velocity = mapParams(u, (ui, k) => tf.add(tf.mul(state.velocity[k]!, momentum), tf.mul(ui, scale)));
      const updates = mapParams(velocity, (m) => tf.mul(m, -eta));
      return {
        updates,
        state: { count: state.count + 1, velocity },
        diagnostics: { learningRate: eta, damping: curvature.damping, newtonIterations: curvature.newtonIterations, newtonResidual: curvature.newtonResidual, klClip: scale, ...diagnostics },
      };
    },
  };
}

/** U_l = A_γ⁻¹ [∇W; ∇bᵀ] G_γ⁻¹ for each dense layer; other parameters pass through. */
export function precondition(model: Pick<Sequential, 'layers'>, curvature: Curvature, v: Params): Params {
  const out: Params = { ...v };
  model.layers.forEach((layer, i) => {
    const inv = curvature.layers[i];
    if (!inv) throw new GrngError('shape', `curvature has no factors for dense layer ${i}`, { layer: i });
    const kernel = v[layer.kernel]!;
    const bias = v[layer.bias]!;
    const stacked = tf.concat([kernel, tf.reshape(bias, [1, layer.units])], 0) as tf.Tensor2D;
    const u = tf.matMul(tf.matMul(inv.aInverse, stacked), inv.gInverse);
    out[layer.kernel] = tf.slice(u, [0, 0], [layer.inputs, layer.units]);
    out[layer.bias] = tf.reshape(tf.slice(u, [layer.inputs, 0], [1, layer.units]), [layer.units]);
  });
  return out;
}
