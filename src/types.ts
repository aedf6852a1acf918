import type * as tf from '@tensorflow/tfjs';

/**
 * A parameter tree: flat, keyed by path (`dense0/kernel`). Gradients and updates share its keys.
 */
export type Params = Record<string, tf.Tensor>;

/**
 * One mini-batch, as the batch source emits it. The source owns `x` and `y` and disposes them
 * once every holder has released the batch; the next batch is made only after that (pull pacing).
 */
export interface Batch {
  /** Global step index, from 0. */
  readonly step: number;
  /** Epoch index, from 0. */
  readonly epoch: number;
  /** Index of the batch within its epoch. */
  readonly index: number;
  /** Number of batches in an epoch under the current partial-batch policy. */
  readonly batchesPerEpoch: number;
  /** True for the final batch of an epoch (evaluation points). */
  readonly lastOfEpoch: boolean;
  /** True for the final batch of the run. */
  readonly last: boolean;
  /** Rows in this batch (the final batch of an epoch may be smaller). */
  readonly size: number;
  /** Inputs [size, ...example shape] (e.g. [size, features]), float32. */
  readonly x: tf.Tensor;
  /** Class labels, int32: size×targets of them, each example's together (one for classification). */
  readonly y: tf.Tensor1D;
  /**
   * Asks the source to keep this batch (and hold back the next one) until the returned
   * function is called. Operators that finish their work asynchronously hold the batch.
   */
  hold(): () => void;
}

/**
 * Per signal layer (a layer with a curvature block, e.g. dense): its input and its per-sample
 * back-propagated signal δ = ∂l_i/∂s_i at the pre-activation s.
 */
export interface LayerSignals {
  /** Name of the layer (`dense0`), in the model's order of signal layers. */
  readonly layer: string;
  /** Layer input a [m, ...input shape], homogeneous column not included. */
  readonly a: tf.Tensor;
  /**
   * Per-sample signal [m, ...pre-activation shape]: the gradient of the *summed* loss with respect
   * to s.
   */
  readonly delta: tf.Tensor;
}

/** What a training step carries after forwardBackward. */
export interface Step {
  readonly batch: Batch;
  /** Mean loss of the batch. */
  readonly loss: tf.Scalar;
  /** Number of correctly classified rows in the batch (float scalar). */
  readonly correct: tf.Scalar;
  /** Gradient of the mean loss, keyed like the parameters. */
  readonly grads: Params;
  /**
   * Per signal layer input and signal, in the model's order, when forwardBackward was asked for
   * them.
   */
  readonly signals?: readonly LayerSignals[];
  /** Per-sample losses l_i (m), when forwardBackward was asked for signals. */
  readonly losses?: tf.Tensor1D;
  /** Kronecker-factored curvature in force at this step, after fisherScan. */
  readonly curvature?: Curvature;
  /** What the optimizer did, after `update`. */
  readonly update?: UpdateInfo;
  /** Test-set loss and accuracy packed as [loss, accuracy], at evaluation points. */
  readonly evaluation?: tf.Tensor1D;
  /** Milliseconds spent in evaluation during this step (host time). */
  readonly evaluationMs?: number;
  /** Set when the step was skipped because something in it was not finite (see guardFinite). */
  readonly skipped?: SkippedStep;
}

/** Why a step was skipped: what was not finite, and where first. */
export interface SkippedStep {
  /** The quantity that was NaN or ±Inf. */
  readonly what: 'loss' | 'gradient' | 'update';
  /** The first offending parameter (`dense1/kernel`), or `loss`. */
  readonly where: string;
}

/**
 * Shared by guardFinite, fisherScan, update and metrics in one run: the count of skipped
 * non-finite steps and the damping boost the K-FAC family applies after one. Host numbers.
 */
export interface StepHealth {
  /** Consecutive skipped steps up to now (reset by a finite step). */
  consecutive: number;
  /** Skipped steps in the whole run (the `skippedSteps` metric). */
  total: number;
  /**
   * Factor on the K-FAC family's damping γ: ×10 per skipped step, back ÷10 per scheduled refresh a
   * full period after the last skip.
   */
  dampingBoost: number;
  /** The last skipped step (−1 when none). */
  lastBadStep: number;
  /** Set by a skipped step; fisherScan refreshes its inverses with the raised damping at once. */
  refreshDue: boolean;
  /** Consecutive skipped steps that end the run with an error. */
  readonly maxBadSteps: number;
}

/** Damped inverse Kronecker factors of one curvature block: F_l⁻¹ ≈ A_γ⁻¹ ⊗ G_γ⁻¹. */
export interface KroneckerInverse {
  /** (A + π√γ I)⁻¹, d_A×d_A (dense: (in+1)×(in+1), the last row/column for the bias). */
  readonly aInverse: tf.Tensor2D;
  /** (G + (√γ/π) I)⁻¹, d_G×d_G (dense: out×out). */
  readonly gInverse: tf.Tensor2D;
}

/** What fisherScan attaches to a step. Tensors are owned by fisherScan (valid during `next`). */
export interface Curvature {
  /** Per curvature block, in the model's order of signal layers. */
  readonly layers: readonly KroneckerInverse[];
  /** Total damping γ used at the last inverse refresh. */
  readonly damping: number;
  /** Newton–Schulz iterations of the last refresh (summed over factors) and its worst residual. */
  readonly newtonIterations: number;
  readonly newtonResidual: number;
  /** True on the step whose inverses were just refreshed. */
  readonly refreshed: boolean;
}

/** The optimizer's output for one step. */
export interface UpdateInfo {
  /** The update added to the parameters, keyed like them. */
  readonly updates: Params;
  /** Learning rate in force at this step (host number). */
  readonly learningRate: number;
  /** Optimizer diagnostics (docs/algorithms.md, Metrics), scalars on the device or host numbers. */
  readonly diagnostics: Readonly<Record<string, tf.Scalar | number>>;
}

/** One row of metrics: plain numbers only, the only thing that crosses into sinks. */
export interface MetricsRow {
  readonly step: number;
  readonly epoch: number;
  /** Milliseconds since the run started, when this step's metrics were read. */
  readonly wallMs: number;
  /** Milliseconds this step took (from the previous row), evaluation included. */
  readonly stepMs: number;
  /** Milliseconds of this step spent evaluating on the test set (0 when none). */
  readonly evaluationMs: number;
  /** Rows in the batch. */
  readonly samples: number;
  readonly loss: number;
  /** Batch accuracy in [0, 1]. */
  readonly accuracy: number;
  readonly learningRate: number;
  /** ‖g‖ over all parameters. */
  readonly gradNorm: number;
  /** ‖update‖ over all parameters. */
  readonly updateNorm: number;
  /**
   * Pearson correlation between the update and −g over all coordinates ([ours], docs/algorithms.md,
   * Metrics).
   */
  readonly updateGradCorrelation: number;
  /** Test loss and accuracy at evaluation points, null elsewhere. */
  readonly testLoss: number | null;
  readonly testAccuracy: number | null;
  /** Optimizer diagnostics by name (damping, newtonIterations, klClip, winRate, ...). */
  readonly diagnostics: Readonly<Record<string, number>>;
}
