import { mkdirSync, statSync } from 'node:fs';
import { dirname, extname } from 'node:path';
import { makeVector, Table, tableToIPC, type Vector } from 'apache-arrow';
import { GrngError } from '../errors.js';
import { writeFileAtomically } from './writeFileAtomically.js';

/** A model's predictions for n examples of `classes` classes, in input row order. */
export interface Predictions {
  readonly n: number;
  readonly classes: number;
  /** n×classes, row-major: example r's class probabilities are [r·classes, (r+1)·classes). */
  readonly probabilities: Float32Array;
  /** The predicted class of each example. */
  readonly predicted: Int32Array;
  /** The true class of each example, when the input had labels. */
  readonly labels?: Int32Array;
}

/** Extensions `writePredictions` writes: CSV, Arrow IPC file, Arrow IPC stream. */
export const PREDICTION_FILE_EXTENSIONS = ['.csv', '.arrow', '.arrows'] as const;

type PredictionFormat = (typeof PREDICTION_FILE_EXTENSIONS)[number];

/**
 * Writes predictions to `path` by its extension: `.csv` (a header, then one line per example),
 * `.arrow` (Arrow IPC file) or `.arrows` (Arrow IPC stream). Columns in order: `row` (0-based
 * input row), `label` (only when given), `predicted`, `p0` … `p{classes−1}`; in Arrow the first
 * three are Int32 and the probabilities Float32, and in CSV each probability has the fewest
 * digits that read back as the same float32. The file is replaced atomically (temporary file
 * beside it, then rename), so a failed write never leaves half a file; a missing folder is
 * created. A bad extension, a folder or an unwritable place is a GrngError naming `out` and
 * the path.
 *
 * @example
 * writePredictions('runs/predictions.csv', { n: 1, classes: 2, probabilities: Float32Array.of(0.25, 0.75), predicted: Int32Array.of(1) });
 */
export function writePredictions(path: string, p: Predictions): void {
  const format = checkOut(path);
  checkPredictions(p);
  const bytes =
    format === '.csv'
      ? Buffer.from(predictionsCsv(p), 'utf8')
      : tableToIPC(predictionsTable(p), format === '.arrow' ? 'file' : 'stream');
  writeOut(path, bytes);
}

/**
 * The predictions as CSV text (header and one line per example, each ending in `\n`), columns as
 * `writePredictions` writes them.
 *
 * @example
 * predictionsCsv({ n: 1, classes: 2, probabilities: Float32Array.of(0.25, 0.75), predicted: Int32Array.of(1) });
 * // 'row,predicted,p0,p1\n0,1,0.25,0.75\n'
 */
export function predictionsCsv(p: Predictions): string {
  checkPredictions(p);
  const { n, classes, probabilities, predicted, labels } = p;
  const header = ['row', ...(labels ? ['label'] : []), 'predicted', ...classNames(classes)];
  const lines = [header.join(',')];
  for (let row = 0; row < n; row++) {
    const cells = [String(row), ...(labels ? [String(labels[row])] : []), String(predicted[row])];
    for (let c = 0; c < classes; c++) cells.push(float32Text(probabilities[row * classes + c]!));
    lines.push(cells.join(','));
  }
  return `${lines.join('\n')}\n`;
}

function classNames(classes: number): string[] {
  return Array.from({ length: classes }, (_, c) => `p${c}`);
}

/**
 * The shortest decimal that parses back to the same float32: String() of the widened double
 * would print 0.10000000149011612 for 0.1f, and toPrecision(9) pads 0.5 to 0.500000000. Nine
 * significant digits always suffice, and more digits never land farther away, so a binary
 * search over 1..9 finds the fewest in four tries instead of up to nine.
 */
function float32Text(value: number): string {
  if (!Number.isFinite(value)) return String(value);
  const roundTrips = (digits: number): boolean =>
    Math.fround(Number(value.toPrecision(digits))) === value;
  let low = 1;
  let high = 9;
  while (low < high) {
    const middle = (low + high) >> 1;
    if (roundTrips(middle)) high = middle;
    else low = middle + 1;
  }
  // Number() then String() drops toPrecision's exponent padding ("1.0e-7") and trailing zeros.
  return String(Number(value.toPrecision(high)));
}

function predictionsTable(p: Predictions): Table {
  const { n, classes, probabilities, predicted, labels } = p;
  const columns: Record<string, Vector> = {
    row: makeVector(Int32Array.from({ length: n }, (_, row) => row)),
    ...(labels ? { label: makeVector(labels) } : {}),
    predicted: makeVector(predicted),
  };
  classNames(classes).forEach((name, c) => {
    const column = new Float32Array(n);
    for (let row = 0; row < n; row++) column[row] = probabilities[row * classes + c]!;
    columns[name] = makeVector(column);
  });
  return new Table(columns);
}

function checkOut(path: string): PredictionFormat {
  const extension = typeof path === 'string' ? extname(path).toLowerCase() : '';
  const known = PREDICTION_FILE_EXTENSIONS as readonly string[];
  if (known.includes(extension)) return extension as PredictionFormat;
  const what =
    typeof path !== 'string' || path.trim() === ''
      ? 'is not a file name'
      : extension === ''
        ? 'has no extension'
        : `has the extension "${extension}"`;
  throw new GrngError(
    'invalid-option',
    `invalid out: ${JSON.stringify(path)} ${what} (expected a file name ending in ${known.join(', ')})`,
    { option: 'out', value: path },
  );
}

/** Catches a caller's mismatched arrays here, not as NaN or undefined cells in the file. */
function checkPredictions(p: Predictions): void {
  const fail = (problem: string): never => {
    throw new GrngError('invalid-data', `predictions: ${problem}`, {
      n: p?.n,
      classes: p?.classes,
    });
  };
  if (!Number.isSafeInteger(p?.n) || p.n < 0) fail(`n must be an integer ≥ 0, got ${p?.n}`);
  if (!Number.isSafeInteger(p.classes) || p.classes < 1)
    fail(`classes must be an integer ≥ 1, got ${p.classes}`);
  if (!(p.probabilities instanceof Float32Array) || p.probabilities.length !== p.n * p.classes)
    fail(
      `probabilities must be a Float32Array of n×classes = ${p.n}×${p.classes} = ${p.n * p.classes} values, got ${describe(p.probabilities)}`,
    );
  if (!(p.predicted instanceof Int32Array) || p.predicted.length !== p.n)
    fail(`predicted must be an Int32Array of n = ${p.n} values, got ${describe(p.predicted)}`);
  if (p.labels !== undefined && (!(p.labels instanceof Int32Array) || p.labels.length !== p.n))
    fail(`labels must be an Int32Array of n = ${p.n} values, got ${describe(p.labels)}`);
}

function describe(value: unknown): string {
  if (ArrayBuffer.isView(value) && 'length' in value)
    return `a ${value.constructor.name} of ${String(value.length)}`;
  return value === undefined ? 'nothing' : typeof value;
}

function writeOut(path: string, bytes: Uint8Array): void {
  const fail = (why: string, cause?: unknown): never => {
    throw new GrngError(
      'invalid-option',
      `cannot write predictions to ${path}: ${why}`,
      { option: 'out', value: path, path },
      cause === undefined ? undefined : { cause },
    );
  };
  // A folder named like a file would otherwise fail only at the rename, with a bare EISDIR.
  if (isDirectory(path)) fail('it is a folder (give a file name, e.g. predictions.csv)');
  try {
    mkdirSync(dirname(path), { recursive: true });
    writeFileAtomically(path, [bytes]);
  } catch (error) {
    fail(reason(error, path), error);
  }
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function reason(error: unknown, path: string): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  // mkdir says EEXIST or ENOTDIR, naming different parts of the path, for the same mistake.
  if (code === 'ENOTDIR' || code === 'EEXIST')
    return `its folder ${dirname(path)} is a file, or lies under one`;
  if (code === 'ENOSPC') return 'no space left on the device';
  return (error as Error).message;
}
