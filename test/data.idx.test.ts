// The idx reader (src/data/idx.ts) on small files written here: every element type, gzip, the
// folder layouts it accepts, and every malformed file as one error naming the file and the byte.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as tf from '@tensorflow/tfjs';
import { firstValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { loadIdxDataset, parseIdx, readIdxFile } from '../src/data/idx.js';
import { GrngError, isGrngError } from '../src/errors.js';
import { batches } from '../src/streams/batches.js';
import { useTestBackend, errorOf } from './helpers.js';

const root = mkdtempSync(join(tmpdir(), 'grng-idx-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
beforeAll(async () => {
  await useTestBackend();
});

const TYPE = { ubyte: 0x08, byte: 0x09, short: 0x0b, int: 0x0c, float: 0x0d, double: 0x0e };
const SIZE = { ubyte: 1, byte: 1, short: 2, int: 4, float: 4, double: 8 };

/** An idx file's bytes, values written big-endian as the format says. */
function idx(type: keyof typeof TYPE, dims: number[], values: ArrayLike<number>): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = TYPE[type];
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  const body = Buffer.alloc(values.length * SIZE[type]);
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (type === 'ubyte') body.writeUInt8(v, i);
    else if (type === 'byte') body.writeInt8(v, i);
    else if (type === 'short') body.writeInt16BE(v, 2 * i);
    else if (type === 'int') body.writeInt32BE(v, 4 * i);
    else if (type === 'float') body.writeFloatBE(v, 4 * i);
    else body.writeDoubleBE(v, 8 * i);
  }
  return Buffer.concat([header, body]);
}

async function rejectionOf(promise: Promise<unknown>): Promise<GrngError> {
  const error = await promise.then(
    () => new Error('expected a GrngError, the promise resolved'),
    (e: unknown) => e,
  );
  expect(isGrngError(error), String(error)).toBe(true);
  return error as GrngError;
}

/** Pixels 0..255 spread over the images, labels cycling through `classes`. */
function images(n: number, rows = 4, columns = 3): number[] {
  return Array.from({ length: n * rows * columns }, (_, i) => (i * 37) % 256);
}
function labels(n: number, classes = 3): number[] {
  return Array.from({ length: n }, (_, i) => i % classes);
}

let folders = 0;
/** A folder with the given files; a Buffer value is written as is. */
function folder(files: Record<string, Buffer>): string {
  const dir = join(root, `set${folders++}`);
  mkdirSync(dir);
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  return dir;
}

/** A good dataset of 4×3 images: 6 train, 3 test, 3 classes, under the usual names. */
function goodFiles(gz = false): Record<string, Buffer> {
  const pack = (b: Buffer) => (gz ? gzipSync(b) : b);
  const ext = gz ? '.gz' : '';
  return {
    [`train-images-idx3-ubyte${ext}`]: pack(idx('ubyte', [6, 4, 3], images(6))),
    [`train-labels-idx1-ubyte${ext}`]: pack(idx('ubyte', [6], labels(6))),
    [`t10k-images-idx3-ubyte${ext}`]: pack(idx('ubyte', [3, 4, 3], images(3))),
    [`t10k-labels-idx1-ubyte${ext}`]: pack(idx('ubyte', [3], labels(3))),
  };
}

describe('parseIdx', () => {
  it('decodes every element type, big-endian, with its dimensions and where the data starts', () => {
    const cases: Array<[keyof typeof TYPE, number[]]> = [
      ['ubyte', [0, 1, 128, 255]],
      ['byte', [-128, -1, 0, 127]],
      ['short', [-32768, -2, 300, 32767]],
      ['int', [-(2 ** 31), -5, 70000, 2 ** 31 - 1]],
      ['float', [-1.5, 0, 0.25, 3e38]],
      ['double', [-1e300, 0, Math.PI, 1e-300]],
    ];
    for (const [type, values] of cases) {
      const array = parseIdx(idx(type, [2, 2], values), `${type}.idx`);
      expect(array.type).toBe(type);
      expect(array.dims).toEqual([2, 2]);
      expect(array.dataOffset).toBe(12);
      expect(Array.from(array.data)).toEqual(
        values.map((v) => (type === 'float' ? Math.fround(v) : v)),
      );
    }
  });

  it('reads a view into a larger buffer (offset ≠ 0) correctly', () => {
    const bytes = idx('short', [3], [1, -2, 3]);
    const padded = Buffer.concat([Buffer.alloc(5), bytes]).subarray(5);
    expect(Array.from(parseIdx(padded, 'view.idx').data)).toEqual([1, -2, 3]);
  });

  const good = idx('ubyte', [2, 3], [1, 2, 3, 4, 5, 6]);
  const withByte = (at: number, value: number): Buffer => {
    const copy = Buffer.from(good);
    copy[at] = value;
    return copy;
  };
  const bad: Array<[string, Buffer, number, RegExp]> = [
    ['empty', Buffer.alloc(0), 0, /ends after 0 bytes; an idx file starts with a 4-byte magic/],
    ['3 bytes', Buffer.from([0, 0, 8]), 3, /ends after 3 bytes/],
    ['text', Buffer.from('label,a\n0,1\n'), 0, /magic number 0x6c616265 is not idx/],
    ['magic byte 1', withByte(1, 1), 0, /magic number 0x00010802 is not idx/],
    ['type', withByte(2, 0x0a), 2, /type 0x0a is not an idx type \(0x08 ubyte/],
    ['no dimensions', withByte(3, 0), 3, /the number of dimensions is 0/],
    [
      'header cut',
      good.subarray(0, 9),
      9,
      /ends inside the header: 2 dimensions need 12 header bytes, the file has 9/,
    ],
    [
      'zero dimension',
      Buffer.concat([good.subarray(0, 8), Buffer.alloc(4)]),
      8,
      /dimension 1 is 0/,
    ],
    [
      'data cut',
      good.subarray(0, 16),
      16,
      /data is truncated: the header declares 2×3 ubytes, 6 bytes from byte 12, so the file should end at byte 18, but it ends at byte 16/,
    ],
    [
      'wide type cut',
      idx('int', [2], [1, 2]).subarray(0, 14),
      14,
      /declares 2 ints \(4 bytes each\), 8 bytes from byte 8, so the file should end at byte 16/,
    ],
    [
      'extra bytes',
      Buffer.concat([good, Buffer.from([9, 9, 9])]),
      18,
      /3 bytes follow the 2×3 ubytes the header declares/,
    ],
  ];
  it.each(bad)('%s: one error naming the file and the byte', (_, bytes, byte, message) => {
    const error = errorOf(() => parseIdx(bytes, 'some/file-idx3-ubyte'));
    expect(error.code).toBe('invalid-data');
    expect(error.message).toMatch(new RegExp(`^idx file some/file-idx3-ubyte, byte ${byte}: `));
    expect(error.message).toMatch(message);
    expect(error.context).toMatchObject({ file: 'some/file-idx3-ubyte', offset: byte });
  });
});

describe('readIdxFile', () => {
  it('reads gzip by its magic bytes, whatever the name, and counts bytes in the decompressed data', async () => {
    const bytes = idx('ubyte', [2, 2], [1, 2, 3, 4]);
    const dir = folder({
      plain: bytes,
      'zipped.gz': gzipSync(bytes),
      'misnamed-no-gz': gzipSync(bytes),
      'bad.gz': gzipSync(bytes.subarray(0, 9)),
    });
    for (const name of ['plain', 'zipped.gz', 'misnamed-no-gz']) {
      const array = await readIdxFile(join(dir, name));
      expect(Array.from(array.data)).toEqual([1, 2, 3, 4]);
    }
    const inside = await rejectionOf(readIdxFile(join(dir, 'bad.gz')));
    expect(inside.message).toMatch(
      /bad\.gz, byte 9 of the decompressed data: the file ends inside the header/,
    );
  });

  it('a cut or corrupt gzip stream, or a missing file, is one error naming the file', async () => {
    const zipped = gzipSync(idx('ubyte', [50], labels(50)));
    const corrupt = Buffer.from(zipped);
    corrupt.fill(0xff, 12, 20);
    const dir = folder({ 'cut.gz': zipped.subarray(0, zipped.length - 10), 'corrupt.gz': corrupt });
    expect((await rejectionOf(readIdxFile(join(dir, 'cut.gz')))).message).toMatch(
      /idx file .*cut\.gz starts like gzip \(bytes 0x1f 0x8b\) but cannot be decompressed: unexpected end of file \(\d+ compressed bytes\)/,
    );
    expect((await rejectionOf(readIdxFile(join(dir, 'corrupt.gz')))).message).toMatch(
      /corrupt\.gz starts like gzip .* cannot be decompressed: /,
    );
    expect((await rejectionOf(readIdxFile(join(dir, 'nope')))).message).toMatch(
      /idx file .*nope cannot be read \(ENOENT/,
    );
  });
});

describe('loadIdxDataset', () => {
  it('reads a folder: examples keep their shape [rows, columns, 1], ubyte pixels ÷ 255, the files split train/test', async () => {
    for (const gz of [false, true]) {
      const dir = folder(goodFiles(gz));
      const data = await loadIdxDataset(dir);
      expect(data.name).toBe(dir);
      expect(data.features).toBe(12);
      expect(data.classes).toBe(3);
      expect([data.train.n, data.test.n]).toEqual([6, 3]);
      expect(data.train.shape).toEqual([4, 3, 1]);
      expect(data.test.shape).toEqual([4, 3, 1]);
      expect(Array.from(data.train.x)).toEqual(images(6).map((v) => Math.fround(v / 255)));
      expect(Array.from(data.test.y)).toEqual(labels(3));
      expect(data.description).toMatch(/4×3×1 images, ubyte pixels ÷ 255 in \[0, 1\], 3 classes/);
      expect(data.description).toMatch(/6 train \/ 3 test/);
    }
  });

  it('accepts the other usual names: dots, test- for t10k-, a prefix (EMNIST), plain beside .gz', async () => {
    const files = goodFiles();
    const dir = folder({
      'emnist-digits-train-images.idx3-ubyte': files['train-images-idx3-ubyte']!,
      'emnist-digits-train-labels.idx1-ubyte.gz': gzipSync(files['train-labels-idx1-ubyte']!),
      'emnist-digits-test-images-idx3-ubyte': files['t10k-images-idx3-ubyte']!,
      // Unpacked beside its .gz (gunzip -k): one file, not two; the .gz here is broken, so
      // reading it would fail.
      'emnist-digits-test-labels-idx1-ubyte': files['t10k-labels-idx1-ubyte']!,
      'emnist-digits-test-labels-idx1-ubyte.gz': Buffer.from([0x1f, 0x8b, 0]),
      'README.txt': Buffer.from('not data'),
    });
    const data = await loadIdxDataset(dir, { name: 'digits' });
    expect(data.name).toBe('digits');
    expect([data.train.n, data.test.n]).toEqual([6, 3]);
  });

  it('non-ubyte images are read as they are; a 4-dimensional file keeps its channels', async () => {
    const pixels = Array.from({ length: 2 * 2 * 2 * 3 }, (_, i) => i / 10 - 1);
    const dir = folder({
      'train-images-idx4-ubyte': idx('float', [2, 2, 2, 3], pixels),
      'train-labels-idx1-ubyte': idx('ubyte', [2], [0, 1]),
      't10k-images-idx4-ubyte': idx('float', [2, 2, 2, 3], pixels),
      't10k-labels-idx1-ubyte': idx('ubyte', [2], [1, 0]),
    });
    const data = await loadIdxDataset(dir);
    expect(data.train.shape).toEqual([2, 2, 3]);
    expect(Array.from(data.train.x)).toEqual(pixels.map(Math.fround));
    expect(data.description).toMatch(/float values/);
  });

  it('batches of an idx folder are [m, rows, columns, 1]', async () => {
    const data = await loadIdxDataset(folder(goodFiles()));
    const before = tf.memory().numTensors;
    const shapes = await firstValueFrom(
      batches(data.train, { batchSize: 4, epochs: 1, seed: 1 }).pipe(toArray()),
    ).then((all) =>
      all.map((batch) => {
        const shape = batch.x.shape;
        batch.hold()();
        return shape;
      }),
    );
    expect(shapes).toEqual([
      [4, 4, 3, 1],
      [2, 4, 3, 1],
    ]);
    expect(tf.memory().numTensors).toBe(before);
  });

  describe('a bad folder is one error naming the file and, inside a file, the byte', () => {
    const files = goodFiles();
    const cases: Array<[string, () => string, RegExp, number | undefined]> = [
      [
        'missing files',
        () =>
          folder({
            'train-images-idx3-ubyte': files['train-images-idx3-ubyte']!,
            'notes.txt': Buffer.from(''),
          }),
        /idx folder .*set\d+ lacks train labels: train-labels-idx1-ubyte\[\.gz\]; test images: t10k-images-idx3-ubyte\[\.gz\]; test labels: t10k-labels-idx1-ubyte\[\.gz\] \(it holds notes\.txt, train-images-idx3-ubyte\)/,
        undefined,
      ],
      ['empty folder', () => folder({}), /lacks train images: .*\(it is empty\)/, undefined],
      [
        'two sets',
        () =>
          folder({
            ...files,
            'fashion-train-images-idx3-ubyte.gz': gzipSync(files['train-images-idx3-ubyte']!),
          }),
        /has 2 train images files \(fashion-train-images-idx3-ubyte\.gz, train-images-idx3-ubyte\); keep one dataset per folder/,
        undefined,
      ],
      [
        'count mismatch',
        () => folder({ ...files, 'train-labels-idx1-ubyte': idx('ubyte', [5], labels(5)) }),
        /train-labels-idx1-ubyte, byte 4: 5 labels, but .*train-images-idx3-ubyte has 6 images/,
        4,
      ],
      [
        'negative label',
        () => folder({ ...files, 't10k-labels-idx1-ubyte': idx('byte', [3], [0, -1, 2]) }),
        /t10k-labels-idx1-ubyte, byte 9: label -1 of example 1 is negative/,
        9,
      ],
      [
        'labels of an images file',
        () => folder({ ...files, 'train-labels-idx1-ubyte': files['train-images-idx3-ubyte']! }),
        /train-labels-idx1-ubyte, byte 3: labels must be 1-dimensional, it holds \[6, 4, 3\] \(is it an images file\?\)/,
        3,
      ],
      [
        'images of a labels file',
        () => folder({ ...files, 't10k-images-idx3-ubyte': files['t10k-labels-idx1-ubyte']! }),
        /t10k-images-idx3-ubyte, byte 3: it holds a 1-dimensional array \[3\], images need at least 2 dimensions/,
        3,
      ],
      [
        'float labels',
        () => folder({ ...files, 'train-labels-idx1-ubyte': idx('float', [6], labels(6)) }),
        /train-labels-idx1-ubyte, byte 2: labels must be integers, its type is float/,
        2,
      ],
      [
        'non-finite pixel',
        () =>
          folder({
            ...files,
            'train-images-idx3-ubyte': idx('float', [6, 4, 3], [...images(6).slice(0, -1), NaN]),
          }),
        /train-images-idx3-ubyte, byte 300: value NaN is not a finite 32-bit float/,
        300,
      ],
      [
        'test images of another size',
        () => folder({ ...files, 't10k-images-idx3-ubyte': idx('ubyte', [3, 3, 4], images(3)) }),
        /t10k-images-idx3-ubyte: its images are 3×4×1, the training images of .*train-images-idx3-ubyte are 4×3×1/,
        undefined,
      ],
      [
        'truncated file inside the folder',
        () =>
          folder({
            ...files,
            'train-images-idx3-ubyte.gz': gzipSync(
              files['train-images-idx3-ubyte']!.subarray(0, 50),
            ),
            'train-images-idx3-ubyte': Buffer.alloc(0),
          }),
        /train-images-idx3-ubyte, byte 0: the file ends after 0 bytes/,
        0,
      ],
    ];
    it.each(cases)('%s', async (_, make, message, byte) => {
      const error = await rejectionOf(loadIdxDataset(make()));
      // A file is the data's problem; which files the folder holds is the --dataset option's.
      const folder = /^idx folder/.test(error.message);
      expect(error.code).toBe(folder ? 'invalid-option' : 'invalid-data');
      if (folder) expect(error.context).toMatchObject({ option: 'dataset' });
      expect(error.message).toMatch(message);
      if (byte !== undefined) expect(error.context.offset).toBe(byte);
    });

    it('a label outside the classes the dataset has', async () => {
      const dir = folder({
        ...files,
        'train-labels-idx1-ubyte': idx('ubyte', [6], [0, 1, 2, 10, 1, 0]),
      });
      const error = await rejectionOf(loadIdxDataset(dir, { classes: 10 }));
      expect(error.message).toMatch(
        /train-labels-idx1-ubyte, byte 11: label 10 of example 3 is outside \[0, 10\)/,
      );
      expect(error.context.offset).toBe(11);
      // Without a declared count, classes are 0 .. the largest label.
      expect((await loadIdxDataset(dir)).classes).toBe(11);
    });

    it('a folder that is not there, or a file', async () => {
      expect((await rejectionOf(loadIdxDataset(join(root, 'none')))).message).toMatch(
        /idx folder .*none does not exist/,
      );
      const dir = folder(files);
      expect(
        (await rejectionOf(loadIdxDataset(join(dir, 'train-images-idx3-ubyte')))).message,
      ).toMatch(/idx folder .*train-images-idx3-ubyte is not a folder/);
    });
  });

  it('--dataset DIR trains on a folder; a bad folder is one line with exit status 2', async () => {
    const run = async (argv: string[]) => {
      let out = '';
      let err = '';
      const code = await main(argv, {
        out: (t) => void (out += t),
        err: (t) => void (err += t),
        isTTY: false,
      });
      return { code, out, err };
    };
    const dir = folder(goodFiles(true));
    const good = await run([
      'train',
      '--dataset',
      dir,
      '--steps',
      '2',
      '--batch-size',
      '3',
      '--json',
    ]);
    expect(good.code, good.err).toBe(0);
    expect(good.err).toMatch(/mlp:12-256-3 \(\d+ parameters\) on .*set\d+/);
    const summary = JSON.parse(good.out.trim().split('\n').pop()!) as Record<string, unknown>;
    expect(summary).toMatchObject({ dataset: dir, steps: 2 });
    const bad = await run(['train', '--dataset', folder({ 'x.txt': Buffer.from('') })]);
    expect(bad.code).toBe(2);
    expect(bad.err.trim().split('\n')).toHaveLength(1);
    expect(bad.err).toMatch(/^grng: --dataset: idx folder .* lacks train images/);
  });
});
