import * as tf from '@tensorflow/tfjs';
import type { OperatorFunction } from 'rxjs';
import { GrngError } from '../errors.js';
import { correctCount, softmaxCrossEntropy, softmaxCrossEntropyPerSample } from '../nn/losses.js';
import type { LayerTap } from '../nn/layer.js';
import type { Sequential } from '../nn/sequential.js';
import type { Batch, LayerSignals, Params, Step } from '../types.js';
import { ownedMap, type Owned } from './ownedMap.js';

export interface ForwardBackwardOptions {
  /**
   * Also return, for every signal layer (one with a curvature block: dense), its input `a` and
   * per-sample signal δ (the zero-tensor trick, one backward pass), and the per-sample losses.
   * K-FAC statistics and
   * R-Kalman need them; default false.
   */
  readonly signals?: boolean;
}

/**
 * Forward and backward pass of the model on each batch: mean softmax cross-entropy, its
 * gradient with respect to every parameter, the number of correct rows and, optionally, the
 * per-layer inputs and signals. The tensors it emits are disposed when downstream `next`
 * returns.
 *
 * @example
 * batches(data.train, { batchSize: 128 }).pipe(forwardBackward(model), update(model, sgd({ learningRate: 0.1 })));
 */
export function forwardBackward(
  model: Sequential,
  options: ForwardBackwardOptions = {},
): OperatorFunction<Batch, Step> {
  const withSignals = options.signals ?? false;
  return ownedMap<Batch, Step>(
    'forwardBackward',
    () => undefined,
    (batch) => computeStep(model, batch, withSignals),
  );
}

/** One forward/backward pass; exported for benchmarks and optimizers that need extra passes. */
export function computeStep(model: Sequential, batch: Batch, withSignals: boolean): Owned<Step> {
  if (
    batch.x.rank !== model.inputShape.length + 1 ||
    batch.x.shape.slice(1).join() !== model.inputShape.join()
  ) {
    const got = batch.x.shape.slice(1);
    const what =
      got.length === 1 && model.inputShape.length === 1
        ? `${got[0]} features`
        : `examples of shape [${got.join(', ')}]`;
    const expected =
      model.inputShape.length === 1 ? `${model.inputs}` : `[${model.inputShape.join(', ')}]`;
    throw new GrngError(
      'shape',
      `batch has ${what} but the model ${model.description} expects ${expected}`,
      { step: batch.step, got: batch.x.shape },
    );
  }
  const keys = Object.keys(model.params);
  const m = batch.size;
  const taps: LayerTap[] = [];
  let logits: tf.Tensor2D | undefined;
  let losses: tf.Tensor1D | undefined;
  const result = tf.tidy(() => {
    const oneHot = tf.cast(tf.oneHot(batch.y, model.outputs), 'float32') as tf.Tensor2D;
    const zeros = withSignals ? model.signalLayers.map((l) => tf.zeros([m, ...l.signalShape])) : [];
    const lossFn = (...args: tf.Tensor[]): tf.Scalar => {
      const params: Params = {};
      keys.forEach((k, i) => (params[k] = args[i]!));
      const out = model.apply(
        params,
        batch.x,
        withSignals ? { signals: args.slice(keys.length), taps } : {},
      );
      logits = tf.keep(out.logits);
      if (!withSignals) return softmaxCrossEntropy(out.logits, oneHot);
      for (const tap of taps) if (tap.a !== batch.x) tf.keep(tap.a);
      const perSample = softmaxCrossEntropyPerSample(out.logits, oneHot);
      losses = tf.keep(tf.clone(perSample));
      return tf.mean(perSample);
    };
    const { value, grads } = tf.valueAndGrads(lossFn)([
      ...keys.map((k) => model.params[k]!),
      ...zeros,
    ]);
    const gradTree: Params = {};
    keys.forEach((k, i) => (gradTree[k] = grads[i]!));
    // The gradient of the *mean* loss w.r.t. the zero tensor is δ/rows; δ is per loss row (an
    // example, or a token of a language model: m·labelsPerExample rows).
    const rows = m * model.labelsPerExample;
    const deltas = grads.slice(keys.length).map((g) => tf.mul(g, rows));
    return { loss: value, grads: gradTree, deltas };
  });
  const correct = tf.tidy(() => correctCount(logits!, batch.y));
  logits!.dispose();
  const signals: LayerSignals[] | undefined = withSignals
    ? taps.map((tap, i) => ({
        layer: model.signalLayers[i]!.name,
        a: tap.a,
        delta: result.deltas[i]!,
      }))
    : undefined;
  const owned: tf.Tensor[] = [
    result.loss,
    correct,
    ...Object.values(result.grads),
    ...result.deltas,
    ...taps.map((t) => t.a).filter((a) => a !== batch.x),
    ...(losses ? [losses] : []),
  ];
  const step: Step =
    signals && losses
      ? { batch, loss: result.loss, correct, grads: result.grads, signals, losses }
      : { batch, loss: result.loss, correct, grads: result.grads };
  return { value: step, owned };
}
