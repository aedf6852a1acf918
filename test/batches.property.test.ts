import * as tf from '@tensorflow/tfjs';
import fc from 'fast-check';
import { lastValueFrom, map, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { batches, batchesPerEpoch } from '../src/streams/batches.js';
import { useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

describe('batches (properties)', () => {
  it('every epoch visits each row at most once, all rows when partial batches are kept', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 40 }),
        fc.integer({ min: 1, max: 50 }),
        fc.integer({ min: 1, max: 3 }),
        fc.constantFrom('keep' as const, 'drop' as const),
        fc.nat(1000),
        async (n, batchSize, epochs, partial, seed) => {
          fc.pre(partial === 'keep' || batchSize <= n);
          // Feature value = row index, so the batch contents tell which rows were visited.
          const split = {
            x: Float32Array.from({ length: n }, (_, i) => i),
            y: new Int32Array(n),
            n,
          };
          const before = tf.memory().numTensors;
          const seen = await lastValueFrom(
            batches(split, { batchSize, epochs, seed, partial }).pipe(
              map((b) => ({ epoch: b.epoch, size: b.size, rows: Array.from(b.x.dataSync()) })),
              toArray(),
            ),
          );
          const perEpoch = batchesPerEpoch(n, batchSize, partial);
          expect(seen).toHaveLength(perEpoch * epochs);
          for (let e = 0; e < epochs; e++) {
            const rows = seen.filter((b) => b.epoch === e).flatMap((b) => b.rows);
            expect(new Set(rows).size).toBe(rows.length);
            expect(rows.length).toBe(partial === 'keep' ? n : perEpoch * batchSize);
          }
          expect(seen.every((b) => b.size === b.rows.length && b.size <= batchSize)).toBe(true);
          expect(tf.memory().numTensors).toBe(before);
        },
      ),
      { numRuns: 60 },
    );
  });
});
