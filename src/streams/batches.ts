import * as tf from '@tensorflow/tfjs';
import { Observable } from 'rxjs';
import seedrandom from 'seedrandom';
import { asGrngError, invalidOption } from '../errors.js';
import { checkBoolean, checkChoice, checkInteger, checkKeys } from '../validate.js';
import { gatherRows, type Split } from '../data/dataset.js';
import type { Batch } from '../types.js';

export interface BatchOptions {
  /** Rows per batch. */
  readonly batchSize: number;
  /** Passes over the data; default 1. Ignored once `steps` is reached. */
  readonly epochs?: number;
  /** Stop after this many steps (across epochs) even if epochs remain. */
  readonly steps?: number;
  /** Seed of the shuffle; default 1. */
  readonly seed?: number;
  /** Reshuffle every epoch; default true. */
  readonly shuffle?: boolean;
  /** What to do with the last, smaller batch of an epoch: `keep` it (default) or `drop` it. */
  readonly partial?: 'keep' | 'drop';
}

/** Number of batches per epoch for a split size under a partial-batch policy. */
export function batchesPerEpoch(n: number, batchSize: number, partial: 'keep' | 'drop' = 'keep'): number {
  return partial === 'drop' ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

/**
 * A pull-paced source of mini-batches from a host-side split. Each epoch visits the rows in a
 * seeded random order. The next batch is built only when everything downstream is done with
 * the current one: synchronous operators are done when `next` returns; asynchronous ones
 * (metrics read-back) call `batch.hold()` and release later. So at most one batch is ever in
 * flight, whatever the pipeline, and memory stays bounded.
 *
 * The source owns the batch tensors and disposes them after release, on completion, on error
 * and on unsubscribe.
 *
 * @example
 * batches(data.train, { batchSize: 128, epochs: 2, seed: 1 }).subscribe((b) => console.log(b.step));
 */
export function batches(split: Split, options: BatchOptions): Observable<Batch> {
  checkKeys('batch', options, ['batchSize', 'epochs', 'steps', 'seed', 'shuffle', 'partial']);
  const batchSize = checkInteger('batchSize', options.batchSize, 1);
  const epochs = checkInteger('epochs', options.epochs ?? 1, 1);
  const maxSteps = options.steps === undefined ? Infinity : checkInteger('steps', options.steps, 1);
  const seed = checkInteger('seed', options.seed ?? 1, 0);
  const shuffle = checkBoolean('shuffle', options.shuffle ?? true);
  const partial = checkChoice('partial', options.partial ?? 'keep', ['keep', 'drop'] as const);
  const features = split.x.length / split.n;
  const perEpoch = batchesPerEpoch(split.n, batchSize, partial);
  if (perEpoch === 0) invalidOption('batchSize', batchSize, `at most ${split.n} (the number of rows) when partial batches are dropped`);
  const totalSteps = Math.min(maxSteps, perEpoch * epochs);

  return new Observable<Batch>((subscriber) => {
    const rng = seedrandom(`grng-batches-${seed}`);
    const order = Int32Array.from({ length: split.n }, (_, i) => i);
    let current: tf.Tensor[] = [];
    let wake: (() => void) | undefined;
    const release = (): void => {
      tf.dispose(current);
      current = [];
    };

    const run = async (): Promise<void> => {
      let step = 0;
      let lastYield = performance.now();
      for (let epoch = 0; step < totalSteps; epoch++) {
        if (shuffle) fisherYates(order, rng);
        for (let index = 0; index < perEpoch && step < totalSteps; index++, step++) {
          if (subscriber.closed) return;
          const start = index * batchSize;
          const size = Math.min(batchSize, split.n - start);
          const rows = gatherRows(split, order, start, size);
          const x = tf.tensor2d(rows.x, [size, features], 'float32');
          const y = tf.tensor1d(rows.y, 'int32');
          current = [x, y];
          let holds = 0;
          const batch: Batch = {
            step,
            epoch,
            index,
            batchesPerEpoch: perEpoch,
            lastOfEpoch: index === perEpoch - 1 || step === totalSteps - 1,
            last: step === totalSteps - 1,
            size,
            x,
            y,
            hold: () => {
              holds += 1;
              let released = false;
              return () => {
                if (released) return;
                released = true;
                holds -= 1;
                if (holds === 0) wake?.();
              };
            },
          };
          subscriber.next(batch);
          if (holds > 0) {
            await new Promise<void>((resolve) => (wake = resolve));
            wake = undefined;
          }
          release();
          // Yield to the event loop every few milliseconds: a read-back on the cpu and wasm
          // backends resolves as a microtask, so without this timers, signals and sockets (the
          // dashboard server, the recorder's time-based flush) would wait for the whole run.
          // Not every step: a macrotask hop per step measurably slows small steps.
          if (performance.now() - lastYield > YIELD_EVERY_MS) {
            await new Promise<void>((resolve) => setImmediate(resolve));
            lastYield = performance.now();
          }
        }
      }
      if (!subscriber.closed) subscriber.complete();
    };

    run().catch((error: unknown) => {
      release();
      subscriber.error(asGrngError(error, { operator: 'batches' }));
    });
    return () => {
      release();
      wake?.();
    };
  });
}

/** Longest stretch of training without letting the event loop run (ms). */
const YIELD_EVERY_MS = 20;

function fisherYates(order: Int32Array, rng: () => number): void {
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
}
