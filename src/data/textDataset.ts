import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GrngError, invalidOption } from '../errors.js';
import type { Dataset, Split } from './dataset.js';

// Byte-level language modelling: the vocabulary is the 256 byte values. Any UTF-8 (or other)
// text works with no tokenizer to ship or fit, the output head is a fixed 256 classes, and on
// ASCII text bits per byte equals bits per character, the number char-level results quote.

/** Where Debian's `fortunes` package installs its fortune-cookie files. */
export const FORTUNES_DIR = '/usr/share/games/fortunes';

/** Share of the bytes (the last ones) held out as the test split. */
export const TEXT_TEST_FRACTION = 0.1;

const VOCABULARY = 256;

export interface TextDatasetOptions {
  /** Tokens (bytes) per example; each example has as many labels, the next byte at each. */
  readonly context: number;
}

/**
 * Cuts bytes into language-model examples: non-overlapping windows of `context + 1` bytes at
 * stride `context`, x the first `context` bytes (as float32 token ids) and y the last `context`
 * (the next byte at each position); a trailing partial window is dropped. The split has
 * `targets = context` and shape [context]; n is 0 when not even one window fits.
 *
 * @example
 * const split = textWindows(new TextEncoder().encode('abcdefg'), 3);
 * // split.n 2; x rows 'abc', 'def'; y rows 'bcd', 'efg'
 */
export function textWindows(bytes: Uint8Array, context: number): Split {
  checkContext(context);
  // Stride `context` with one byte of look-ahead: consecutive windows share one byte, so every
  // byte but the first is a label exactly once.
  const n = bytes.length > context ? Math.floor((bytes.length - 1) / context) : 0;
  const x = new Float32Array(n * context);
  const y = new Int32Array(n * context);
  for (let r = 0; r < n; r++) {
    const start = r * context;
    // Float32Array.set and Int32Array.set convert the bytes element by element.
    x.set(bytes.subarray(start, start + context), r * context);
    y.set(bytes.subarray(start + 1, start + context + 1), r * context);
  }
  return { x, y, n, targets: context, shape: [context] };
}

/**
 * A byte-level language-modelling dataset from any file: 256 classes, examples of `context`
 * bytes each with `context` next-byte labels (see {@link textWindows}). The last 10% of the bytes
 * (rounded down) are the test split, the first 90% the training split, each windowed on its own
 * so no window crosses the boundary. Errors name the file, its size and the context.
 *
 * @example
 * const data = loadTextDataset('README.md', { context: 64 }); console.log(data.train.targets); // 64
 */
export function loadTextDataset(path: string, options: TextDatasetOptions): Dataset {
  const context = checkContext(options?.context);
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw unreadable(`text file ${path}`, path, error);
  }
  return textDataset(bytes, context, {
    name: `text:${path}`,
    what: `text file ${path}`,
    file: path,
  });
}

/**
 * Byte-level language modelling on the fortune cookies of Debian's `fortunes` package (about
 * 2.5 MB of English quips, poems and definitions): every plain file under `dir`, in path order,
 * concatenated, then split and windowed as {@link loadTextDataset} does. The strfile indexes
 * (`.dat`) are binary and the `.u8` files are links to the text ones, so both are skipped.
 *
 * @example
 * const data = loadFortunes({ context: 128 }); console.log(data.classes); // 256
 */
export function loadFortunes(options: TextDatasetOptions & { readonly dir?: string }): Dataset {
  const context = checkContext(options?.context);
  const dir = options.dir ?? FORTUNES_DIR;
  const files: string[] = [];
  try {
    collectFiles(dir, files);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      throw new GrngError(
        'invalid-data',
        `dataset fortunes needs Debian package fortunes (apt-get install fortunes): ${dir} not found`,
        { option: 'dataset', dataset: 'fortunes', file: dir },
      );
    throw unreadable(`fortunes folder ${dir}`, dir, error);
  }
  // Code-unit order, not locale order, so every machine concatenates the same bytes.
  files.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const parts: Buffer[] = [];
  for (const file of files) {
    try {
      parts.push(readFileSync(file));
    } catch (error) {
      throw unreadable(`fortunes file ${file}`, file, error);
    }
  }
  return textDataset(Buffer.concat(parts), context, {
    name: 'fortunes',
    what: `the fortunes in ${dir} (${files.length} files)`,
    file: dir,
  });
}

/** Adds every regular file under `dir` to `files`, recursing into folders; links are skipped. */
function collectFiles(dir: string, files: string[]): void {
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    const stat = lstatSync(path);
    if (stat.isDirectory()) collectFiles(path, files);
    else if (stat.isFile() && !entry.endsWith('.dat')) files.push(path);
  }
}

function textDataset(
  bytes: Uint8Array,
  context: number,
  source: { name: string; what: string; file: string },
): Dataset {
  const testBytes = Math.floor(bytes.length * TEXT_TEST_FRACTION);
  const trainBytes = bytes.length - testBytes;
  const parts = [
    ['training', 'first 90%', bytes.subarray(0, trainBytes)],
    ['validation', 'last 10%', bytes.subarray(trainBytes)],
  ] as const;
  const [train, test] = parts.map(([part, share, slice]) => {
    const split = textWindows(slice, context);
    if (split.n === 0)
      throw new GrngError(
        'invalid-data',
        `${source.what} has ${bytes.length} bytes: its ${part} part (${share}, ${slice.length} bytes) is shorter than one window of context ${context} + 1`,
        {
          option: 'dataset',
          dataset: source.name,
          file: source.file,
          bytes: bytes.length,
          context,
        },
      );
    return split;
  }) as [Split, Split];
  return {
    name: source.name,
    features: context,
    classes: VOCABULARY,
    train,
    test,
    description:
      `byte-level language modelling on ${source.what}: ${bytes.length} bytes, 256 classes; ` +
      `windows of context ${context} at stride ${context}, each with ${context} next-byte labels; ` +
      `train ${train.n} windows (first ${trainBytes} bytes), test ${test.n} windows (last ${testBytes} bytes, 10%)`,
  };
}

function checkContext(context: unknown): number {
  if (typeof context !== 'number' || !Number.isSafeInteger(context) || context < 1)
    invalidOption('context', context, 'a whole number of bytes ≥ 1, e.g. 128');
  return context;
}

/** The error for a file or folder that cannot be read, with the errno code (ENOENT, EACCES…). */
function unreadable(what: string, path: string, error: unknown): GrngError {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  // Node's errno messages already start with the code ("ENOENT: no such file or directory, …").
  const reason = code === undefined || message.startsWith(code) ? message : `${code}: ${message}`;
  return new GrngError(
    'invalid-data',
    `cannot read ${what}: ${reason}`,
    { option: 'dataset', file: path, ...(code === undefined ? {} : { code }) },
    { cause: error },
  );
}
