// Byte-level language-modelling datasets (src/data/textDataset.ts) and the multi-label splits
// they make: exact windows and the 90/10 split from a temp file, errors naming file, sizes and
// option, gatherRows / validateDataset / batches / evaluate with `targets` labels per example,
// and the fortunes of Debian package fortunes.
import * as tf from '@tensorflow/tfjs';
import {
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { firstValueFrom, map, of, take } from 'rxjs';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { gatherRows, labelsPerExample, validateDataset, type Split } from '../src/data/dataset.js';
import {
  FORTUNES_DIR,
  loadFortunes,
  loadTextDataset,
  textWindows,
} from '../src/data/textDataset.js';
import { GrngError } from '../src/errors.js';
import type { Sequential } from '../src/nn/sequential.js';
import { evaluate } from '../src/operators/evaluate.js';
import { batches } from '../src/streams/batches.js';
import type { Step } from '../src/types.js';
import { useTestBackend } from './helpers.js';
import { needsPackage } from './systemPackages.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-text-'));
beforeAll(async () => {
  await useTestBackend();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** 100 distinct bytes, half of them ≥ 128, so any text decoding would show. */
const BYTES = Uint8Array.from({ length: 100 }, (_, i) => (i * 37) % 256);
const textFile = join(dir, 'hundred.bin');
writeFileSync(textFile, BYTES);

const rowOf = (a: ArrayLike<number>, r: number, width: number): number[] =>
  Array.from(a).slice(r * width, (r + 1) * width);
const bytesAt = (start: number, length: number): number[] =>
  Array.from(BYTES.subarray(start, start + length));

/** The error a call throws, failing the test if it throws none. */
function thrown(call: () => unknown): GrngError {
  try {
    call();
  } catch (error) {
    expect(error).toBeInstanceOf(GrngError);
    return error as GrngError;
  }
  throw new Error('expected an error');
}

describe('loadTextDataset', () => {
  it('cuts the first 90% and the last 10% into windows of context + 1 bytes at stride context', () => {
    const data = loadTextDataset(textFile, { context: 8 });
    expect(data.name).toBe(`text:${textFile}`);
    expect([data.features, data.classes]).toEqual([8, 256]);
    // 90 training bytes: windows start at 0, 8, …, 80 (the one at 88 lacks its ninth byte).
    expect(data.train.n).toBe(11);
    expect(data.train.targets).toBe(8);
    expect(data.train.shape).toEqual([8]);
    expect(data.train.x).toBeInstanceOf(Float32Array);
    expect(data.train.y).toBeInstanceOf(Int32Array);
    expect([data.train.x.length, data.train.y.length]).toEqual([88, 88]);
    for (let r = 0; r < 11; r++) {
      expect(rowOf(data.train.x, r, 8)).toEqual(bytesAt(8 * r, 8));
      expect(rowOf(data.train.y, r, 8)).toEqual(bytesAt(8 * r + 1, 8));
    }
    // The last 10 bytes (90..99) are the test split: one window, byte 99 dropped with the
    // partial window; no window reaches back across byte 90.
    expect(data.test.n).toBe(1);
    expect(Array.from(data.test.x)).toEqual(bytesAt(90, 8));
    expect(Array.from(data.test.y)).toEqual(bytesAt(91, 8));
    expect(data.description).toMatch(/100 bytes/);
    expect(data.description).toMatch(/context 8/);
    expect(data.description).toMatch(/train 11 windows .*test 1 windows/);
    expect(validateDataset(data)).toBe(data);
  });

  it('textWindows with context 1 is every byte predicting the next', () => {
    const split = textWindows(Uint8Array.from([5, 6, 7, 8]), 1);
    expect(split.n).toBe(3);
    expect(Array.from(split.x)).toEqual([5, 6, 7]);
    expect(Array.from(split.y)).toEqual([6, 7, 8]);
    expect(labelsPerExample(split)).toBe(1);
  });

  it('a missing file is an error naming the path and the errno code', () => {
    const missing = join(dir, 'no-such.txt');
    const error = thrown(() => loadTextDataset(missing, { context: 4 }));
    expect(error.code).toBe('invalid-data');
    expect(error.message).toContain(missing);
    expect(error.message).toContain('ENOENT');
    expect(error.context).toMatchObject({ option: 'dataset', file: missing, code: 'ENOENT' });
  });

  it('a file too short for a window in either part is an error naming its size, the part and the context', () => {
    const short = join(dir, 'fifty.txt');
    writeFileSync(short, 'x'.repeat(50));
    expect(thrown(() => loadTextDataset(short, { context: 5 })).message).toBe(
      `text file ${short} has 50 bytes: its validation part (last 10%, 5 bytes) is shorter than one window of context 5 + 1`,
    );
    expect(thrown(() => loadTextDataset(short, { context: 64 })).message).toBe(
      `text file ${short} has 50 bytes: its training part (first 90%, 45 bytes) is shorter than one window of context 64 + 1`,
    );
    // Context 4 still fits: the 5 validation bytes make exactly one window.
    expect(loadTextDataset(short, { context: 4 }).test.n).toBe(1);
  });

  it('context must be a whole number ≥ 1', () => {
    for (const context of [0, -3, 2.5, NaN, '8' as unknown as number]) {
      const error = thrown(() => loadTextDataset(textFile, { context }));
      expect(error.code).toBe('invalid-option');
      expect(error.context.option).toBe('context');
      expect(error.message).toMatch(/^invalid context: /);
    }
  });
});

describe('splits with several labels per example', () => {
  const split = textWindows(BYTES.subarray(0, 13), 4); // 3 windows of 4 tokens

  it('gatherRows copies each example’s labels together, in the order asked', () => {
    const rows = gatherRows(split, [2, 0], 0, 2);
    expect(Array.from(rows.x)).toEqual([...bytesAt(8, 4), ...bytesAt(0, 4)]);
    expect(Array.from(rows.y)).toEqual([...bytesAt(9, 4), ...bytesAt(1, 4)]);
  });

  it('validateDataset names the split, example and position of a bad label, and checks the count', () => {
    const y = Int32Array.from(split.y);
    y[1 * 4 + 2] = 256;
    const bad = { ...split, y };
    const dataset = (train: Split) => ({
      name: 'lm',
      features: 4,
      classes: 256,
      train,
      test: split,
      description: '',
    });
    const error = thrown(() => validateDataset(dataset(bad)));
    expect(error.message).toBe(
      'dataset lm: train row 1 position 2 has label 256, outside [0, 256)',
    );
    expect(error.context).toMatchObject({ split: 'train', row: 1, position: 2, label: 256 });
    expect(
      thrown(() => validateDataset(dataset({ ...split, y: split.y.subarray(1) }))).message,
    ).toBe('dataset lm: the train split has 11 labels, expected 3 rows × 4 targets = 12');
    // One label per example is still the classification message.
    expect(
      thrown(() =>
        validateDataset(dataset({ x: split.x, y: Int32Array.of(1, 2), n: 3, shape: [4] })),
      ).message,
    ).toBe('dataset lm: the train split has 2 labels for 3 rows');
  });

  it('batches() gives x [m, context] and y of m×context labels, x shifted by one', async () => {
    const data = loadTextDataset(textFile, { context: 8 });
    const batch = await firstValueFrom(
      batches(data.train, { batchSize: 3, seed: 4 }).pipe(
        map((b) => ({ shape: b.x.shape, x: b.x.dataSync(), y: b.y.dataSync(), ys: b.y.shape })),
        take(1),
      ),
    );
    expect(batch.shape).toEqual([3, 8]);
    expect(batch.ys).toEqual([24]);
    for (let r = 0; r < 3; r++) {
      const x = rowOf(batch.x, r, 8);
      // Which window this row is: its first byte's place in the file.
      const start = BYTES.indexOf(x[0]!);
      expect(start % 8).toBe(0);
      expect(x).toEqual(bytesAt(start, 8));
      expect(rowOf(batch.y, r, 8)).toEqual(bytesAt(start + 1, 8));
    }
  });

  it('evaluate averages loss and accuracy per label, over chunks sliced by example', () => {
    // 5 test windows of 4 tokens, evaluated in chunks of 2 examples (8 labels).
    const bytes = Uint8Array.from([1, 1, 2, 2, 3, 3, 1, 2, 3, 1, 1, 1, 2, 3, 3, 2, 2, 1, 1, 3, 3]);
    const test = textWindows(bytes, 4);
    expect(test.n).toBe(5);
    // A fake model that predicts "the next byte repeats this one", with fixed confidence.
    const model = {
      outputs: 256,
      params: {},
      apply: (_: unknown, x: tf.Tensor) => ({
        logits: tf.mul(tf.oneHot(tf.cast(tf.reshape(x, [-1]), 'int32'), 256), 3),
      }),
    } as unknown as Sequential;
    let repeats = 0;
    for (let i = 0; i < test.y.length; i++) if (test.y[i] === test.x[i]) repeats += 1;
    // Softmax of one logit 3 among 255 zeros.
    const hit = Math.log(Math.exp(3) + 255) - 3;
    const miss = Math.log(Math.exp(3) + 255);
    const labels = test.y.length;
    const step = { batch: { step: 0, lastOfEpoch: true } } as unknown as Step;
    let evaluation: number[] = [];
    of(step)
      .pipe(evaluate(model, test, { batchSize: 2 }))
      .subscribe((s) => (evaluation = Array.from(s.evaluation!.dataSync())));
    expect(repeats).toBeGreaterThan(0);
    expect(repeats).toBeLessThan(labels);
    expect(evaluation[0]).toBeCloseTo((repeats * hit + (labels - repeats) * miss) / labels, 4);
    expect(evaluation[1]).toBeCloseTo(repeats / labels, 6);
  });
});

describe('loadFortunes from a folder', () => {
  it('concatenates the plain files in path order, recursing, skipping .dat indexes and links', () => {
    const root = join(dir, 'fortunes');
    mkdirSync(join(root, 'off'), { recursive: true });
    writeFileSync(join(root, 'b'), 'klmnopqrst');
    writeFileSync(join(root, 'a'), 'abcdefghij');
    writeFileSync(join(root, 'a.dat'), Uint8Array.of(0, 0, 0, 2));
    writeFileSync(join(root, 'off', 'c'), 'uvwxyz0123');
    symlinkSync('a', join(root, 'a.u8'));
    const data = loadFortunes({ context: 2, dir: root });
    expect(data.name).toBe('fortunes');
    // 30 bytes a…z0123 (a, b, off/c): the first 27 train, the last 3 ("123") test.
    const text = (a: ArrayLike<number>) => String.fromCharCode(...Array.from(a));
    expect(text(data.train.x)).toBe('abcdefghijklmnopqrstuvwxyz');
    expect(text(data.train.y)).toBe('bcdefghijklmnopqrstuvwxyz0');
    expect([text(data.test.x), text(data.test.y)]).toEqual(['12', '23']);
  });

  it('a missing folder names the Debian package', () => {
    const error = thrown(() => loadFortunes({ context: 8, dir: '/no/such/fortunes' }));
    expect(error.message).toBe(
      'dataset fortunes needs Debian package fortunes (apt-get install fortunes): /no/such/fortunes not found',
    );
    expect(error.context.option).toBe('dataset');
  });
});

describe('fortunes (Debian package fortunes)', () => {
  beforeEach((context) => needsPackage(context, 'fortunes'));

  it('holds over 2 MB of text from the plain files only, 10% held out', () => {
    const context = 128;
    const data = loadFortunes({ context });
    // The package's folder is flat: its plain files, less the .dat indexes (the .u8 are links).
    const files = readdirSync(FORTUNES_DIR)
      .filter((entry) => !entry.endsWith('.dat'))
      .map((entry) => join(FORTUNES_DIR, entry))
      .filter((path) => lstatSync(path).isFile())
      .sort();
    const total = files.reduce((sum, path) => sum + lstatSync(path).size, 0);
    expect(total).toBeGreaterThan(2_000_000);
    const testBytes = Math.floor(total / 10);
    expect(data.train.n).toBe(Math.floor((total - testBytes - 1) / context));
    expect(data.test.n).toBe(Math.floor((testBytes - 1) / context));
    expect(data.test.n / (data.train.n + data.test.n)).toBeCloseTo(0.1, 2);
    expect(data.description).toContain(`${total} bytes`);
    // The strfile indexes hold NUL bytes; the fortunes themselves none.
    expect(data.train.y.includes(0) || data.test.y.includes(0)).toBe(false);
    // The first file in path order starts the training split.
    const first = readFileSync(files[0]!).subarray(0, context);
    expect(Array.from(data.train.x.subarray(0, context))).toEqual(Array.from(first));
    expect(validateDataset(data)).toBe(data);
  });
});
