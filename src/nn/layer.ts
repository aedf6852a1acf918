import type * as tf from '@tensorflow/tfjs';
import type { Params } from '../types.js';

/** What a layer with a signal point recorded in a forward pass: its input and pre-activation. */
export interface LayerTap {
  /** The layer's input, [m, ...inputShape]. */
  readonly a: tf.Tensor;
  /**
   * The pre-activation s (before the activation, after the signal was added), [m, ...signalShape].
   */
  readonly s: tf.Tensor;
}

/** How a model runs one layer in a forward pass. */
export interface LayerApplyOptions {
  /**
   * Added to the pre-activation, so that differentiating the loss by it gives the back-propagated
   * δ.
   */
  readonly signal?: tf.Tensor;
  /**
   * A composite layer's signals, by sublayer name (a transformer block hands each projection its
   * own); leaf layers read `signal`.
   */
  readonly signals?: ReadonlyMap<string, tf.Tensor>;
  /** Receives the layer's input and pre-activation. */
  readonly taps?: LayerTap[];
  /**
   * Treat the parameters as constants: a backward pass then computes signals but no weight
   * gradients.
   */
  readonly constantParams?: boolean;
  /** The input is the data itself: no gradient with respect to it is needed (cheaper products). */
  readonly inputIsData?: boolean;
}

/**
 * One typed layer of a model. It knows its parameter keys and shapes, so optimizers, curvature
 * blocks and checkpoints never build key strings; the model owns the parameter values and
 * passes them in, so gradients can be taken with respect to any tensors.
 */
export interface Layer {
  /** The kind, a discriminant for curvature blocks and model files (`dense`). */
  readonly kind: string;
  /** Unique within the model (`dense0`); the prefix of its parameter keys. */
  readonly name: string;
  /** Shape of one example's input (no batch dimension). */
  readonly inputShape: readonly number[];
  /** Shape of one example's output. */
  readonly outputShape: readonly number[];
  /** Keys of its parameters in the model's parameter tree, in a fixed order. */
  readonly params: readonly string[];
  /**
   * Shape of one example's pre-activation where a zero signal can be added (the point whose δ
   * curvature blocks use), or undefined for a layer without one (flatten, pooling, norms).
   */
  readonly signalShape?: readonly number[];
  /**
   * The layers inside a composite layer (a transformer block's projections, norms), in the order
   * its forward pass runs them; their signal points are the model's, in that order.
   */
  readonly sublayers?: readonly Layer[];
  /** Forward pass of a batch [m, ...inputShape] with explicit parameters. */
  apply(params: Params, x: tf.Tensor, options?: LayerApplyOptions): tf.Tensor;
}

/** A layer with a signal point: its input and δ give the statistics of a curvature block. */
export interface SignalLayer extends Layer {
  readonly signalShape: readonly number[];
}

/** Whether a layer has a signal point. */
export function hasSignal(layer: Layer): layer is SignalLayer {
  return layer.signalShape !== undefined;
}

/**
 * The layers with a signal point among `layers` and inside their composites, in forward order:
 * what per-layer signals, taps and curvature blocks align with.
 */
export function signalLayersOf(layers: readonly Layer[]): SignalLayer[] {
  return layers.flatMap((layer) =>
    layer.sublayers ? signalLayersOf(layer.sublayers) : hasSignal(layer) ? [layer] : [],
  );
}
