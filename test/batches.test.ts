import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, map, take, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Split } from '../src/data/dataset.js';
import { isGrngError } from '../src/errors.js';
import { batches, batchesPerEpoch, type BatchOptions } from '../src/streams/batches.js';
import type { Batch } from '../src/types.js';
import { useTestBackend } from './helpers.js';

const ROWS = 10;
const FEATURES = 3;

/** Row r is [r, 100 + r, 200 + r] with label r mod 3, so every batch row can be traced back. */
function makeSplit(n = ROWS): Split {
  const x = new Float32Array(n * FEATURES);
  const y = new Int32Array(n);
  for (let r = 0; r < n; r++) {
    x.set([r, 100 + r, 200 + r], r * FEATURES);
    y[r] = r % 3;
  }
  return { x, y, n };
}

const data = makeSplit();

interface Seen {
  readonly step: number;
  readonly epoch: number;
  readonly index: number;
  readonly batchesPerEpoch: number;
  readonly size: number;
  readonly lastOfEpoch: boolean;
  readonly last: boolean;
  readonly rows: number[];
}

/** Plain data of a batch, checking on the way that its rows are intact and labelled. */
function read(b: Batch): Seen {
  const x = b.x.arraySync();
  const y = Array.from(b.y.dataSync());
  expect(b.x.shape).toEqual([b.size, FEATURES]);
  expect(b.y.shape).toEqual([b.size]);
  const rows = (x as number[][]).map((row, i) => {
    const r = row[0]!;
    expect(row).toEqual([r, 100 + r, 200 + r]);
    expect(y[i]).toBe(r % 3);
    return r;
  });
  return {
    step: b.step,
    epoch: b.epoch,
    index: b.index,
    batchesPerEpoch: b.batchesPerEpoch,
    size: b.size,
    lastOfEpoch: b.lastOfEpoch,
    last: b.last,
    rows,
  };
}

const collect = (options: BatchOptions, split: Split = data): Promise<Seen[]> =>
  lastValueFrom(batches(split, options).pipe(map(read), toArray()));

const tick = (ms = 10): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

const byEpoch = (seen: readonly Seen[]): number[][] => {
  const epochs: number[][] = [];
  for (const s of seen) (epochs[s.epoch] ??= []).push(...s.rows);
  return epochs;
};

beforeAll(async () => {
  await useTestBackend();
});

describe('batches: sizes, epochs, flags', () => {
  it("partial 'keep' (default): ceil(n / batchSize) batches, the last one smaller", async () => {
    const seen = await collect({ batchSize: 3 });
    expect(seen.map((s) => s.size)).toEqual([3, 3, 3, 1]);
    expect(seen.map((s) => s.step)).toEqual([0, 1, 2, 3]);
    expect(seen.map((s) => s.index)).toEqual([0, 1, 2, 3]);
    expect(seen.every((s) => s.batchesPerEpoch === 4 && s.epoch === 0)).toBe(true);
    expect(batchesPerEpoch(10, 3)).toBe(4);
  });

  it("partial 'drop': floor(n / batchSize) full batches", async () => {
    const seen = await collect({ batchSize: 3, partial: 'drop', epochs: 2 });
    expect(seen.map((s) => s.size)).toEqual([3, 3, 3, 3, 3, 3]);
    expect(seen.every((s) => s.batchesPerEpoch === 3)).toBe(true);
    expect(batchesPerEpoch(10, 3, 'drop')).toBe(3);
    // Each epoch sees 9 distinct rows.
    for (const rows of byEpoch(seen)) expect(new Set(rows).size).toBe(9);
  });

  it('batchSize larger than n with partial keep: one batch of all rows', async () => {
    const seen = await collect({ batchSize: 25, epochs: 2 });
    expect(seen.map((s) => [s.size, s.epoch, s.lastOfEpoch, s.last])).toEqual([
      [10, 0, true, false],
      [10, 1, true, true],
    ]);
  });

  it('epochs: steps, epoch and index counters, lastOfEpoch and last flags', async () => {
    const seen = await collect({ batchSize: 4, epochs: 3 });
    expect(seen.map((s) => s.step)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(seen.map((s) => s.epoch)).toEqual([0, 0, 0, 1, 1, 1, 2, 2, 2]);
    expect(seen.map((s) => s.index)).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2]);
    expect(seen.map((s) => s.size)).toEqual([4, 4, 2, 4, 4, 2, 4, 4, 2]);
    expect(seen.map((s) => s.lastOfEpoch)).toEqual([
      false,
      false,
      true,
      false,
      false,
      true,
      false,
      false,
      true,
    ]);
    expect(seen.map((s) => s.last)).toEqual([
      false,
      false,
      false,
      false,
      false,
      false,
      false,
      false,
      true,
    ]);
  });

  it('steps limits the run across epochs; the final batch is last and lastOfEpoch', async () => {
    const seen = await collect({ batchSize: 4, epochs: 5, steps: 5 });
    expect(seen.map((s) => [s.step, s.epoch, s.index])).toEqual([
      [0, 0, 0],
      [1, 0, 1],
      [2, 0, 2],
      [3, 1, 0],
      [4, 1, 1],
    ]);
    expect(seen.map((s) => s.lastOfEpoch)).toEqual([false, false, true, false, true]);
    expect(seen.map((s) => s.last)).toEqual([false, false, false, false, true]);
  });

  it('steps beyond epochs × batchesPerEpoch stops at the end of the epochs', async () => {
    const seen = await collect({ batchSize: 5, epochs: 2, steps: 100 });
    expect(seen.map((s) => s.step)).toEqual([0, 1, 2, 3]);
    expect(seen.at(-1)!.last).toBe(true);
  });
});

describe('batches: order', () => {
  it('every row appears exactly once per epoch', async () => {
    const seen = await collect({ batchSize: 3, epochs: 3, seed: 7 });
    const epochs = byEpoch(seen);
    expect(epochs.length).toBe(3);
    for (const rows of epochs)
      expect([...rows].sort((a, b) => a - b)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('same seed gives the same order; another seed another order; epochs are reshuffled', async () => {
    const a = byEpoch(await collect({ batchSize: 4, epochs: 2, seed: 3 }));
    const b = byEpoch(await collect({ batchSize: 4, epochs: 2, seed: 3 }));
    const c = byEpoch(await collect({ batchSize: 4, epochs: 2, seed: 4 }));
    expect(b).toEqual(a);
    expect(c[0]).not.toEqual(a[0]);
    expect(a[1]).not.toEqual(a[0]);
    // Shuffled at all: not the identity order.
    expect(a[0]).not.toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('each subscription replays the same seeded order', async () => {
    const source = batches(data, { batchSize: 5, epochs: 2, seed: 11 }).pipe(map(read), toArray());
    const first = await lastValueFrom(source);
    const second = await lastValueFrom(source);
    expect(second).toEqual(first);
  });

  it('shuffle: false keeps the rows in order every epoch', async () => {
    const seen = await collect({ batchSize: 4, epochs: 2, shuffle: false });
    expect(byEpoch(seen)).toEqual([
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    ]);
  });
});

describe('batches: pacing and ownership', () => {
  it('a holding consumer: never more than one batch ahead, the next only after release, tensors freed on release', async () => {
    const baseline = tf.memory().numTensors;
    const events: string[] = [];
    let emitted = 0;
    let released = 0;
    let maxAhead = 0;
    let previous: Batch | undefined;
    const problems: string[] = [];
    await new Promise<void>((resolve, reject) => {
      batches(data, { batchSize: 3, epochs: 2 }).subscribe({
        next: (b) => {
          emitted += 1;
          maxAhead = Math.max(maxAhead, emitted - released);
          events.push(`emit ${b.step}`);
          if (previous && !(previous.x.isDisposed && previous.y.isDisposed))
            problems.push(`batch ${previous.step} alive when ${b.step} arrived`);
          if (tf.memory().numTensors !== baseline + 2)
            problems.push(`${tf.memory().numTensors - baseline} tensors live at step ${b.step}`);
          previous = b;
          const release = b.hold();
          setTimeout(() => {
            if (b.x.isDisposed) problems.push(`batch ${b.step} disposed while held`);
            events.push(`release ${b.step}`);
            released += 1;
            maxAhead = Math.max(maxAhead, emitted - released);
            release();
          }, 3);
        },
        error: reject,
        complete: resolve,
      });
      // The first batch is emitted synchronously on subscribe, and nothing more.
      expect(events).toEqual(['emit 0']);
    });
    expect(problems).toEqual([]);
    expect(maxAhead).toBe(1);
    expect(events).toEqual(
      Array.from({ length: 8 }, (_, i) => [`emit ${i}`, `release ${i}`]).flat(),
    );
    expect(previous!.x.isDisposed).toBe(true);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('a batch held twice waits for both releases; calling a release twice counts once', async () => {
    const events: string[] = [];
    await new Promise<void>((resolve, reject) => {
      batches(data, { batchSize: 5 }).subscribe({
        next: (b) => {
          events.push(`emit ${b.step}`);
          if (b.step !== 0) return;
          const first = b.hold();
          const second = b.hold();
          setTimeout(() => {
            events.push('release first (twice)');
            first();
            first();
          }, 3);
          setTimeout(() => {
            events.push('release second');
            second();
          }, 15);
        },
        error: reject,
        complete: resolve,
      });
    });
    expect(events).toEqual(['emit 0', 'release first (twice)', 'release second', 'emit 1']);
  });

  it('a synchronous consumer: one batch alive at a time, and the source yields to the event loop', async () => {
    const baseline = tf.memory().numTensors;
    let emitted = 0;
    let seenByTimer = -1;
    const live: number[] = [];
    let previous: Batch | undefined;
    const stale: number[] = [];
    await new Promise<void>((resolve, reject) => {
      batches(data, { batchSize: 1, epochs: 3 }).subscribe({
        next: (b) => {
          if (emitted === 0) setImmediate(() => (seenByTimer = emitted));
          emitted += 1;
          // A 5 ms synchronous step: the source lets the event loop run at least every 20 ms.
          const until = performance.now() + 5;
          while (performance.now() < until);
          if (previous && !previous.x.isDisposed) stale.push(previous.step);
          previous = b;
          live.push(tf.memory().numTensors - baseline);
        },
        error: reject,
        complete: resolve,
      });
    });
    expect(emitted).toBe(30);
    expect(stale).toEqual([]);
    expect(new Set(live)).toEqual(new Set([2]));
    // A timer queued at the first batch ran within ~20 ms of steps, long before the 30th.
    expect(seenByTimer).toBeGreaterThan(0);
    expect(seenByTimer).toBeLessThanOrEqual(6);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('unsubscribing while a batch is held disposes it and stops the source', async () => {
    const baseline = tf.memory().numTensors;
    const steps: number[] = [];
    let held: Batch | undefined;
    let release: (() => void) | undefined;
    const subscription = batches(data, { batchSize: 2, epochs: 2 }).subscribe((b) => {
      steps.push(b.step);
      if (b.step === 2) {
        held = b;
        release = b.hold();
      }
    });
    while (!held) await tick(1);
    expect(tf.memory().numTensors).toBe(baseline + 2);
    subscription.unsubscribe();
    await tick();
    expect(held.x.isDisposed && held.y.isDisposed).toBe(true);
    expect(tf.memory().numTensors).toBe(baseline);
    // A late release is harmless and does not restart the source.
    release!();
    await tick();
    expect(steps).toEqual([0, 1, 2]);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('take(n) downstream stops a synchronous run; nothing is left', async () => {
    const baseline = tf.memory().numTensors;
    const seen = await lastValueFrom(
      batches(data, { batchSize: 2, epochs: 4 }).pipe(
        take(3),
        map((b) => b.step),
        toArray(),
      ),
    );
    expect(seen).toEqual([0, 1, 2]);
    await tick();
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('the number of tensors is back to the baseline after completion', async () => {
    const baseline = tf.memory().numTensors;
    const seen = await collect({ batchSize: 3, epochs: 2 });
    expect(seen.length).toBe(8);
    expect(tf.memory().numTensors).toBe(baseline);
  });
});

describe('batches: options', () => {
  const invalid = (options: Record<string, unknown>, option: string | RegExp): void => {
    let thrown: unknown;
    try {
      batches(data, options as unknown as BatchOptions);
    } catch (error) {
      thrown = error;
    }
    expect(isGrngError(thrown)).toBe(true);
    if (!isGrngError(thrown)) return;
    expect(thrown.code).toBe('invalid-option');
    if (typeof option === 'string') expect(thrown.context.option).toBe(option);
    else expect(String(thrown.context.option)).toMatch(option);
    expect(thrown.message).toContain(String(thrown.context.option));
  };

  it('batchSize 0', () => invalid({ batchSize: 0 }, 'batchSize'));
  it('batchSize 2.5', () => invalid({ batchSize: 2.5 }, 'batchSize'));
  it('epochs 1.5', () => invalid({ batchSize: 2, epochs: 1.5 }, 'epochs'));
  it('epochs 0', () => invalid({ batchSize: 2, epochs: 0 }, 'epochs'));
  it('steps 0', () => invalid({ batchSize: 2, steps: 0 }, 'steps'));
  it("partial 'x'", () => invalid({ batchSize: 2, partial: 'x' }, 'partial'));
  it('shuffle "yes"', () => invalid({ batchSize: 2, shuffle: 'yes' }, 'shuffle'));
  it('seed -1', () => invalid({ batchSize: 2, seed: -1 }, 'seed'));
  it('an unknown key', () => invalid({ batchSize: 2, batchsize: 4 }, /"batchsize"/));
  it("batchSize larger than n with partial 'drop'", () =>
    invalid({ batchSize: ROWS + 1, partial: 'drop' }, 'batchSize'));

  it('batchSize equal to n with partial drop is fine', async () => {
    const seen = await collect({ batchSize: ROWS, partial: 'drop' });
    expect(seen.map((s) => s.size)).toEqual([ROWS]);
  });
});
