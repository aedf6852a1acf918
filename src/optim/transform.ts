import type * as tf from '@tensorflow/tfjs';
import type { Params, Step } from '../types.js';

/** What an optimizer sees besides the gradients: the whole step (batch, layer signals, ...). */
export interface UpdateContext {
  /** Global step index (from 0). */
  readonly step: number;
  /** The step being optimised; curvature-based optimizers read `signals` from it. */
  readonly source?: Step;
}

export interface TransformResult<S> {
  /** Updates to *add* to the parameters (already scaled and signed). */
  readonly updates: Params;
  /** The new state; tensors of the old state not in it are disposed by the caller. */
  readonly state: S;
  /**
   * Monitoring values for this step (docs/algorithms.md, Metrics), e.g. `learningRate`, `damping`.
   */
  readonly diagnostics?: Readonly<Record<string, tf.Scalar | number>>;
}

/**
 * An optimizer as a pure pair of functions over the parameter tree, in the style of optax:
 * `init` makes the state, `update` maps gradients (or upstream updates) and state to updates and
 * a new state, creating new tensors and never mutating its inputs. Run `update` inside
 * `tf.tidy`; the `update` operator does this and owns the state.
 *
 * @example
 * const opt = chain(scaleByAdam(), addDecayedWeights(1e-2), scaleByLearningRate(1e-3));
 */
export interface GradientTransformation<S = unknown> {
  init(params: Params): S;
  update(updates: Params, state: S, params: Params, context: UpdateContext): TransformResult<S>;
}
