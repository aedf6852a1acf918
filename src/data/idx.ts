import { readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import { GrngError } from '../errors.js';
import { validateDataset, type Dataset, type Split } from './dataset.js';

/** The element types of the idx format (LeCun's MNIST files), by their type byte. */
const IDX_TYPES = {
  0x08: { name: 'ubyte', size: 1 },
  0x09: { name: 'byte', size: 1 },
  0x0b: { name: 'short', size: 2 },
  0x0c: { name: 'int', size: 4 },
  0x0d: { name: 'float', size: 4 },
  0x0e: { name: 'double', size: 8 },
} as const;

export type IdxType = (typeof IDX_TYPES)[keyof typeof IDX_TYPES]['name'];

/** One idx array: its dimensions and its values, decoded from big-endian. */
export interface IdxArray {
  readonly type: IdxType;
  readonly dims: readonly number[];
  readonly data: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
  /** Byte where the values start (after the header), so a bad value can be reported by byte. */
  readonly dataOffset: number;
  /** Bytes per value. */
  readonly size: number;
}

/** A gzip stream starts with these two bytes, whatever the file is called. */
const GZIP_MAGIC = [0x1f, 0x8b] as const;

/**
 * Decodes an idx file: bytes 0–1 zero, byte 2 the type (0x08 ubyte … 0x0E double), byte 3 the
 * number of dimensions, then each dimension as a big-endian uint32, then the values, big-endian.
 * `file` names the source in errors; `where` says what the byte offsets count (a gzipped file's
 * are offsets in the decompressed data). Every problem is a GrngError naming the file and the byte.
 *
 * @example
 * const labels = parseIdx(readFileSync('t10k-labels-idx1-ubyte'), 't10k-labels-idx1-ubyte');
 * console.log(labels.dims); // [10000]
 */
export function parseIdx(bytes: Uint8Array, file: string, where = ''): IdxArray {
  const fail = (byte: number, problem: string): never => {
    throw new GrngError('invalid-data', `idx file ${file}, byte ${byte}${where}: ${problem}`, {
      file,
      offset: byte,
    });
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 4)
    fail(
      bytes.length,
      `the file ends after ${bytes.length} byte${bytes.length === 1 ? '' : 's'}; an idx file starts with a 4-byte magic number`,
    );
  if (bytes[0] !== 0 || bytes[1] !== 0)
    fail(
      0,
      `magic number 0x${view.getUint32(0).toString(16).padStart(8, '0')} is not idx (expected 0x0000TTDD: two zero bytes, the type TT, the number of dimensions DD)`,
    );
  const typeByte = bytes[2]!;
  const type = IDX_TYPES[typeByte as keyof typeof IDX_TYPES];
  if (!type)
    fail(
      2,
      `type 0x${typeByte.toString(16).padStart(2, '0')} is not an idx type (0x08 ubyte, 0x09 byte, 0x0b short, 0x0c int, 0x0d float, 0x0e double)`,
    );
  const rank = bytes[3]!;
  if (rank === 0) fail(3, 'the number of dimensions is 0');
  const dataOffset = 4 + 4 * rank;
  if (bytes.length < dataOffset)
    fail(
      bytes.length,
      `the file ends inside the header: ${rank} dimensions need ${dataOffset} header bytes, the file has ${bytes.length}`,
    );
  const dims: number[] = [];
  let count = 1;
  for (let i = 0; i < rank; i++) {
    const dim = view.getUint32(4 + 4 * i);
    if (dim === 0) fail(4 + 4 * i, `dimension ${i} is 0`);
    dims.push(dim);
    count *= dim;
  }
  const { name, size } = type!;
  const expected = dataOffset + count * size;
  const shape = `${dims.join('×')} ${name}${size > 1 ? `s (${size} bytes each)` : 's'}`;
  if (bytes.length < expected)
    fail(
      bytes.length,
      `the data is truncated: the header declares ${shape}, ${count * size} bytes from byte ${dataOffset}, so the file should end at byte ${expected}, but it ends at byte ${bytes.length}`,
    );
  if (bytes.length > expected)
    fail(
      expected,
      `${bytes.length - expected} bytes follow the ${shape} the header declares (the data should end here)`,
    );
  return { type: name, dims, data: decode(view, dataOffset, count, typeByte), dataOffset, size };
}

function decode(view: DataView, offset: number, count: number, type: number): IdxArray['data'] {
  switch (type) {
    case 0x08:
      return new Uint8Array(view.buffer, view.byteOffset + offset, count).slice();
    case 0x09:
      return new Int8Array(view.buffer, view.byteOffset + offset, count).slice();
    case 0x0b:
      return Int16Array.from({ length: count }, (_, i) => view.getInt16(offset + 2 * i));
    case 0x0c:
      return Int32Array.from({ length: count }, (_, i) => view.getInt32(offset + 4 * i));
    case 0x0d:
      return Float32Array.from({ length: count }, (_, i) => view.getFloat32(offset + 4 * i));
    default:
      return Float64Array.from({ length: count }, (_, i) => view.getFloat64(offset + 8 * i));
  }
}

const gunzipAsync = promisify(gunzip);

/**
 * Reads an idx file, gunzipping it (node's zlib) when it starts with the gzip magic — so a `.gz`
 * name is not required and a misnamed file still reads.
 *
 * @example
 * const images = await readIdxFile('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz');
 * console.log(images.dims); // [10000, 28, 28]
 */
export async function readIdxFile(path: string): Promise<IdxArray> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new GrngError(
      'invalid-data',
      `idx file ${path} cannot be read (${(error as Error).message})`,
      { file: path },
      { cause: error },
    );
  }
  if (bytes[0] !== GZIP_MAGIC[0] || bytes[1] !== GZIP_MAGIC[1]) return parseIdx(bytes, path);
  let inflated: Uint8Array;
  try {
    inflated = await gunzipAsync(bytes);
  } catch (error) {
    throw new GrngError(
      'invalid-data',
      `idx file ${path} starts like gzip (bytes 0x1f 0x8b) but cannot be decompressed: ${(error as Error).message} (${bytes.length} compressed bytes)`,
      { file: path },
      { cause: error },
    );
  }
  return parseIdx(inflated, path, ' of the decompressed data');
}

/** The four files of an idx dataset, by the role each plays. */
type Role = 'train images' | 'train labels' | 'test images' | 'test labels';
const ROLES: readonly Role[] = ['train images', 'train labels', 'test images', 'test labels'];

/**
 * The usual names: `train-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (LeCun's, which Debian's
 * dataset packages keep, gzipped), `train-images.idx3-ubyte` (as some mirrors spell it),
 * `test-…` for `t10k-…`, an optional `.gz`, and an optional prefix such as EMNIST's
 * `emnist-letters-`.
 */
const IDX_NAME = /^(?:.*[-_.])?(train|t10k|test)-(images|labels)[.-]idx\d-ubyte(\.gz)?$/i;

/** What {@link loadIdxDataset} may be told about the data beyond its files. */
export interface IdxDatasetOptions {
  /** Name in run metadata and errors; default the folder. */
  readonly name?: string;
  /**
   * Number of classes, when known (10 for MNIST): a label outside [0, classes) is then an error.
   * Default: the largest label + 1.
   */
  readonly classes?: number;
  /** Class names, for the description. */
  readonly classNames?: readonly string[];
  /** Where the data came from, for the description; default `idx folder DIR`. */
  readonly source?: string;
}

/**
 * Reads a folder holding an idx dataset: train and test images and labels, plain or gzipped, by
 * the names of {@link IDX_NAME} (`train-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`,
 * …). Images are [count, rows, columns] (or [count, ...shape]); one example keeps its shape, as
 * [rows, columns, 1] for the usual 3-dimensional image file, so batches are [m, rows, columns, 1].
 * ubyte pixels are scaled to [0, 1] (÷ 255, as the `mnist` dataset's are); other types are read as
 * they are. Labels are a 1-dimensional integer array. Every problem (a missing or extra file, a
 * bad header, truncated data, a count mismatch, a label out of range) is a GrngError naming the
 * file and, where there is one, the byte.
 *
 * @example
 * const data = await loadIdxDataset('/usr/share/datasets/fashion-mnist');
 * console.log(data.train.n, data.train.shape); // 60000 [28, 28, 1]
 */
export async function loadIdxDataset(
  dir: string,
  options: IdxDatasetOptions = {},
): Promise<Dataset> {
  const files = findIdxFiles(dir);
  const [trainImages, trainLabels, testImages, testLabels] = await Promise.all(
    ROLES.map((role) => readIdxFile(files[role])),
  );
  const train = imagesOf(trainImages!, files['train images']);
  const test = imagesOf(testImages!, files['test images']);
  if (test.shape.join() !== train.shape.join())
    throw new GrngError(
      'invalid-data',
      `idx file ${files['test images']}: its images are ${test.shape.join('×')}, the training images of ${files['train images']} are ${train.shape.join('×')}`,
      { file: files['test images'] },
    );
  const trainY = labelsOf(trainLabels!, files['train labels'], train, files['train images']);
  const testY = labelsOf(testLabels!, files['test labels'], test, files['test images']);
  let classes = options.classes;
  if (classes === undefined) {
    let largest = 0;
    for (const y of [trainY, testY]) for (const label of y) largest = Math.max(largest, label);
    classes = largest + 1;
  } else {
    checkLabelRange(trainY, trainLabels!, files['train labels'], classes);
    checkLabelRange(testY, testLabels!, files['test labels'], classes);
  }
  const shape = train.shape;
  const features = shape.reduce((n, d) => n * d, 1);
  const split = (images: { x: Float32Array; n: number }, y: Int32Array): Split => ({
    x: images.x,
    y,
    n: images.n,
    shape,
  });
  const classNames = options.classNames
    ? `; classes ${options.classNames.map((name, i) => `${i} ${name}`).join(', ')}`
    : '';
  const pixels =
    trainImages!.type === 'ubyte' ? 'ubyte pixels ÷ 255 in [0, 1]' : `${trainImages!.type} values`;
  return validateDataset({
    name: options.name ?? dir,
    features,
    classes,
    train: split(train, trainY),
    test: split(test, testY),
    description: `${options.source ?? `idx folder ${dir}`} (${ROLES.map((role) => basename(files[role])).join(', ')}): ${shape.join('×')} images, ${pixels}, ${classes} classes${classNames}; ${train.n} train / ${test.n} test as the files split them`,
  });
}

/**
 * The file of each role in the folder, or an error saying which are missing or ambiguous. A
 * problem with the folder itself is the `dataset` option's, as a missing file is for
 * loadDatasetFile (the CLI names `--dataset`); a problem inside a file is the data's.
 */
function findIdxFiles(dir: string): Record<Role, string> {
  const folderError = (message: string, cause?: unknown): GrngError =>
    new GrngError(
      'invalid-option',
      `idx folder ${dir} ${message}`,
      { option: 'dataset', value: dir, file: dir },
      cause === undefined ? {} : { cause },
    );
  let entries: string[];
  try {
    if (!statSync(dir).isDirectory()) throw folderError('is not a folder');
    entries = readdirSync(dir).sort();
  } catch (error) {
    if (error instanceof GrngError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw folderError(
      code === 'ENOENT' ? 'does not exist' : `cannot be read (${(error as Error).message})`,
      error,
    );
  }
  const found = new Map<Role, string[]>(ROLES.map((role) => [role, []]));
  for (const entry of entries) {
    const match = IDX_NAME.exec(entry);
    if (!match) continue;
    const split = match[1]!.toLowerCase() === 'train' ? 'train' : 'test';
    found.get(`${split} ${match[2]!.toLowerCase()}` as Role)!.push(entry);
  }
  const files = {} as Record<Role, string>;
  const missing: Role[] = [];
  for (const role of ROLES) {
    let names = found.get(role)!;
    // The same file plain and gzipped (a folder where someone ran gunzip -k) is one file: the
    // plain one reads faster.
    names = names.filter((name) => !(/\.gz$/i.test(name) && names.includes(name.slice(0, -3))));
    if (names.length === 0) missing.push(role);
    else if (names.length > 1)
      throw folderError(
        `has ${names.length} ${role} files (${names.join(', ')}); keep one dataset per folder`,
      );
    else files[role] = join(dir, names[0]!);
  }
  if (missing.length > 0) {
    const expected = missing
      .map((role) => {
        const [split, kind] = role.split(' ');
        return `${role}: ${split === 'train' ? 'train' : 't10k'}-${kind}-idx${kind === 'images' ? 3 : 1}-ubyte[.gz]`;
      })
      .join('; ');
    const holds =
      entries.length === 0
        ? 'it is empty'
        : `it holds ${entries.slice(0, 8).join(', ')}${entries.length > 8 ? `, … (${entries.length} entries)` : ''}`;
    throw folderError(`lacks ${expected} (${holds})`);
  }
  return files;
}

/** Images as float rows, with the shape of one example. */
function imagesOf(
  array: IdxArray,
  file: string,
): { x: Float32Array; n: number; shape: readonly number[] } {
  if (array.dims.length < 2)
    throw new GrngError(
      'invalid-data',
      `idx file ${file}, byte 3: it holds a ${array.dims.length}-dimensional array [${array.dims.join(', ')}], images need at least 2 dimensions [count, rows, columns] (is it a labels file?)`,
      { file, offset: 3 },
    );
  const [n, ...rest] = array.dims as [number, ...number[]];
  // One grey channel last, as a conv layer (HWC) expects; a file that already has channels
  // (4 dimensions) keeps its own.
  const shape = rest.length === 2 ? [...rest, 1] : rest;
  const x = new Float32Array(array.data.length);
  if (array.type === 'ubyte') {
    const data = array.data;
    for (let i = 0; i < data.length; i++) x[i] = data[i]! / 255;
  } else {
    for (let i = 0; i < array.data.length; i++) {
      const value = Math.fround(array.data[i]!);
      if (!Number.isFinite(value))
        throw new GrngError(
          'invalid-data',
          `idx file ${file}, byte ${array.dataOffset + i * array.size}: value ${array.data[i]} is not a finite 32-bit float (features must be finite)`,
          { file, offset: array.dataOffset + i * array.size },
        );
      x[i] = value;
    }
  }
  return { x, n, shape };
}

/** Labels as Int32, checked against the images they label. */
function labelsOf(
  array: IdxArray,
  file: string,
  images: { n: number },
  imagesFile: string,
): Int32Array {
  if (array.dims.length !== 1)
    throw new GrngError(
      'invalid-data',
      `idx file ${file}, byte 3: labels must be 1-dimensional, it holds [${array.dims.join(', ')}] (is it an images file?)`,
      { file, offset: 3 },
    );
  if (array.type === 'float' || array.type === 'double')
    throw new GrngError(
      'invalid-data',
      `idx file ${file}, byte 2: labels must be integers, its type is ${array.type}`,
      { file, offset: 2 },
    );
  if (array.dims[0] !== images.n)
    throw new GrngError(
      'invalid-data',
      `idx file ${file}, byte 4: ${array.dims[0]} labels, but ${imagesFile} has ${images.n} images`,
      { file, offset: 4 },
    );
  const y = Int32Array.from(array.data as ArrayLike<number>);
  const negative = y.findIndex((label) => label < 0);
  if (negative >= 0)
    throw new GrngError(
      'invalid-data',
      `idx file ${file}, byte ${array.dataOffset + negative * array.size}: label ${y[negative]} of example ${negative} is negative (labels are class indices 0, 1, 2, …)`,
      { file, offset: array.dataOffset + negative * array.size, row: negative },
    );
  return y;
}

function checkLabelRange(y: Int32Array, array: IdxArray, file: string, classes: number): void {
  const bad = y.findIndex((label) => label >= classes);
  if (bad >= 0)
    throw new GrngError(
      'invalid-data',
      `idx file ${file}, byte ${array.dataOffset + bad * array.size}: label ${y[bad]} of example ${bad} is outside [0, ${classes})`,
      { file, offset: array.dataOffset + bad * array.size, row: bad },
    );
}
