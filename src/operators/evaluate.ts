import * as tf from '@tensorflow/tfjs';
import type { OperatorFunction } from 'rxjs';
import { exampleShape, labelsPerExample, type Split } from '../data/dataset.js';
import { correctCount, softmaxCrossEntropyPerSample } from '../nn/losses.js';
import type { Sequential } from '../nn/sequential.js';
import type { Params, Step } from '../types.js';
import { checkInteger, checkKeys } from '../validate.js';
import { ownedMap } from './ownedMap.js';

export interface EvaluateOptions {
  /** Evaluate every N steps (counting from 1); 0 = only at the end of each epoch. Default 0. */
  readonly every?: number;
  /** Also evaluate on the last batch of every epoch; default true. */
  readonly atEpochEnd?: boolean;
  /** Rows per evaluation forward pass; default 1024. */
  readonly batchSize?: number;
}

/**
 * Test-set loss and accuracy of the current model, every `every` steps and at epoch ends,
 * computed in batches on the device and attached to the step as `evaluation` = [loss, accuracy]
 * (read back with the step's other metrics, in one transfer). The test set is uploaded once per
 * subscription and disposed with it.
 *
 * @example
 * steps$.pipe(update(model, opt), evaluate(model, data.test, { every: 100 }), metrics());
 */
export function evaluate(
  model: Sequential,
  test: Split,
  options: EvaluateOptions = {},
): OperatorFunction<Step, Step> {
  checkKeys('evaluate', options, ['every', 'atEpochEnd', 'batchSize']);
  const every = checkInteger('evalEvery', options.every ?? 0, 0);
  const atEpochEnd = options.atEpochEnd ?? true;
  // About 8,192 logits rows a chunk: 1,024 examples of a classifier, 128 windows of 64 tokens
  // (1,024 windows of gpt:L2-d128-h4-ctx64 held gigabytes of activations and ran the wasm
  // backend out of memory).
  const batchSize = checkInteger(
    'evaluation batchSize',
    options.batchSize ?? Math.max(1, Math.min(1024, Math.floor(8192 / model.labelsPerExample))),
    1,
  );
  return ownedMap<Step, Step, { chunks: Array<{ x: tf.Tensor; y: tf.Tensor1D }> }>(
    'evaluate',
    () => {
      const features = test.x.length / test.n;
      const shape = exampleShape(test);
      const targets = labelsPerExample(test);
      const chunks = [];
      for (let start = 0; start < test.n; start += batchSize) {
        const end = Math.min(test.n, start + batchSize);
        chunks.push({
          x: tf.tensor(test.x.subarray(start * features, end * features), [end - start, ...shape]),
          y: tf.tensor1d(test.y.subarray(start * targets, end * targets), 'int32'),
        });
      }
      return { chunks };
    },
    (step, { chunks }) => {
      const due =
        (every > 0 && (step.batch.step + 1) % every === 0) ||
        (atEpochEnd && step.batch.lastOfEpoch);
      if (!due) return { value: step, owned: [] };
      const started = performance.now();
      // One tidy per chunk, carrying only the two running sums: a single tidy around the loop
      // kept every chunk's activations alive until the end (the benchmark CNN's 10 chunks of
      // 1,024 test images: a 3.5 GB peak, measured with bench/memory.ts --peak-steps).
      let sums: tf.Tensor[] = [tf.scalar(0), tf.scalar(0)];
      let evaluation: tf.Tensor1D;
      try {
        for (const chunk of chunks) {
          const next = tf.tidy(() => {
            const logits = model.apply(model.params as Params, chunk.x).logits;
            const oneHot = tf.cast(tf.oneHot(chunk.y, model.outputs), 'float32') as tf.Tensor2D;
            return [
              tf.add(sums[0]!, tf.sum(softmaxCrossEntropyPerSample(logits, oneHot))),
              tf.add(sums[1]!, correctCount(logits, chunk.y)),
            ];
          });
          tf.dispose(sums);
          sums = next;
        }
        // Both sums run over logits rows, one per label, so the means are per label (per token
        // for a language model), not per example.
        evaluation = tf.tidy(
          () => tf.div(tf.stack(sums), test.n * labelsPerExample(test)) as tf.Tensor1D,
        );
      } finally {
        tf.dispose(sums);
      }
      return {
        value: {
          ...step,
          evaluation,
          evaluationMs: (step.evaluationMs ?? 0) + performance.now() - started,
        },
        owned: [evaluation],
      };
    },
    ({ chunks }) => tf.dispose(chunks.flatMap((c) => [c.x, c.y])),
  );
}
