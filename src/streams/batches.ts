import * as tf from '@tensorflow/tfjs';
import { Observable } from 'rxjs';
import seedrandom from 'seedrandom';
import { asGrngError, invalidOption } from '../errors.js';
import { checkBoolean, checkChoice, checkInteger, checkKeys } from '../validate.js';
import { exampleShape, gatherRows, type Split } from '../data/dataset.js';
import type { Batch } from '../types.js';
import { yieldToEventLoop } from '../runtime/eventLoop.js';

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
  /** Resume and checkpoint hooks (see {@link SourceControl}). */
  readonly control?: SourceControl;
}

/** Where a batch source stands between two steps: enough to continue the same data order. */
export interface SourcePosition {
  /** The next step to make. */
  readonly step: number;
  readonly epoch: number;
  /**
   * Index in the epoch of the next batch; equal to the batches per epoch when a new epoch (and
   * shuffle) is due.
   */
  readonly index: number;
  /** This epoch's row order. */
  readonly order: Int32Array;
  /** The shuffle generator's state after this epoch's shuffle (seedrandom's state object). */
  readonly rngState: object;
}

/** How a run steers its source: where to start, and what to do between steps. */
export interface SourceControl {
  /** Continue from here instead of step 0 (a resumed run). */
  readonly start?: SourcePosition;
  /**
   * Called after every step, once everything downstream has released it and before the next
   * batch is made (so nothing is in flight: a checkpoint sees the state after `step - 1`).
   * `position()` describes where the source stands; resolve `true` to complete the source now.
   */
  between?(at: {
    readonly step: number;
    readonly last: boolean;
    position(): SourcePosition;
  }): boolean | Promise<boolean>;
}

/** Number of batches per epoch for a split size under a partial-batch policy. */
export function batchesPerEpoch(
  n: number,
  batchSize: number,
  partial: 'keep' | 'drop' = 'keep',
): number {
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
  checkKeys('batch', options, [
    'batchSize',
    'epochs',
    'steps',
    'seed',
    'shuffle',
    'partial',
    'control',
  ]);
  const batchSize = checkInteger('batchSize', options.batchSize, 1);
  const epochs = checkInteger('epochs', options.epochs ?? 1, 1);
  const maxSteps = options.steps === undefined ? Infinity : checkInteger('steps', options.steps, 1);
  const seed = checkInteger('seed', options.seed ?? 1, 0);
  const shuffle = checkBoolean('shuffle', options.shuffle ?? true);
  const partial = checkChoice('partial', options.partial ?? 'keep', ['keep', 'drop'] as const);
  const shape = exampleShape(split);
  const perEpoch = batchesPerEpoch(split.n, batchSize, partial);
  if (perEpoch === 0)
    invalidOption(
      'batchSize',
      batchSize,
      `at most ${split.n} (the number of rows) when partial batches are dropped`,
    );
  const totalSteps = Math.min(maxSteps, perEpoch * epochs);
  const control = options.control;
  const start = control?.start;
  if (start && (start.order.length !== split.n || start.index > perEpoch || start.step < 0)) {
    invalidOption(
      'resume position',
      { step: start.step, index: start.index, rows: start.order.length },
      `a position in this data: ${split.n} rows, ${perEpoch} batches per epoch`,
    );
  }

  return new Observable<Batch>((subscriber) => {
    // The generator's state is kept so a checkpoint can save it and a resumed run continue it.
    const rng = start
      ? seedrandom('', { state: start.rngState as seedrandom.State.Arc4 })
      : seedrandom(`grng-batches-${seed}`, { state: true });
    const order = start
      ? Int32Array.from(start.order)
      : Int32Array.from({ length: split.n }, (_, i) => i);
    let current: tf.Tensor[] = [];
    let wake: (() => void) | undefined;
    const release = (): void => {
      tf.dispose(current);
      current = [];
    };

    const run = async (): Promise<void> => {
      let step = start?.step ?? 0;
      let epoch = start?.epoch ?? 0;
      let index = start?.index ?? 0;
      // A resumed position is already shuffled for its epoch, unless it stands at the epoch's end.
      let shuffled = start !== undefined;
      while (step < totalSteps) {
        if (subscriber.closed) return;
        if (index >= perEpoch) {
          epoch += 1;
          index = 0;
          shuffled = false;
        }
        if (!shuffled) {
          if (shuffle) fisherYates(order, rng);
          shuffled = true;
        }
        const start = index * batchSize;
        const size = Math.min(batchSize, split.n - start);
        const rows = gatherRows(split, order, start, size);
        const x = tf.tensor(rows.x, [size, ...shape], 'float32');
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
        step += 1;
        index += 1;
        if (control?.between && !subscriber.closed) {
          const at = { step, epoch, index };
          const stop = await control.between({
            step,
            last: step >= totalSteps,
            position: () => ({ ...at, order: order.slice(), rngState: rng.state() }),
          });
          if (stop) break;
        }
        await yieldToEventLoop();
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

function fisherYates(order: Int32Array, rng: () => number): void {
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
}
