import { readFileSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { DataType, tableFromIPC, type Table, type Vector } from 'apache-arrow';
import { GrngError } from '../errors.js';
import { parseShape, validateDataset, type Dataset, type Split } from './dataset.js';

/** Extensions `loadDatasetFile` reads, and the reader each one goes to. */
export const DATASET_FILE_EXTENSIONS = ['.csv', '.arrow', '.arrows', '.feather'] as const;

/** The datasets grng knows by name (a dataset is otherwise a folder of idx files or a file). */
export const DATASET_NAMES = ['mnist', 'mnist-full', 'fashion-mnist', 'synthetic'] as const;

/** What a dataset may be, for errors. */
const DATASET_CHOICES = `${DATASET_NAMES.join(', ')}, a folder of idx files or a path to a ${DATASET_FILE_EXTENSIONS.join(', ')} file`;

/**
 * Share of each class, taken from the end of the file in file order, that forms the test set
 * when the file has no `split` column — the same rule as the MNIST split.
 */
export const FILE_TEST_FRACTION = 0.2;

/** Labels are stored as Int32 and a model needs one output per class. */
const MAX_LABEL = 2 ** 31 - 2;

/**
 * A file being read, as its errors name it: every message starts with `role path`
 * ("dataset file runs/iris.csv"), and errors about the path itself carry `option`.
 */
export interface SourceFile {
  readonly path: string;
  /** What the file is to the caller: "dataset file", "input file". */
  readonly role: string;
  /** The option that named the file (`dataset`), for errors about the path. */
  readonly option: string;
}

/** The feature columns of a file: numeric columns by name, or one fixed-size list column. */
export type FeatureColumns =
  | { readonly kind: 'columns'; readonly names: readonly string[] }
  | { readonly kind: 'list'; readonly name: string; readonly size: number };

/** What a reader demands of a file beyond its features. */
export interface ReadRules {
  /** Training needs a `label` column; prediction reads one when the file has it. */
  readonly label: 'required' | 'optional';
  /** `read` checks `split` values (train/test); `ignore` only keeps the column out of the features. */
  readonly split: 'read' | 'ignore';
  /**
   * Sees the feature columns before any row is read, so a file that cannot fit fails before
   * the cost of parsing it; it throws to refuse.
   */
  readonly checkFeatures?: (columns: FeatureColumns) => void;
}

/** Rows as read from a file, before any train/test split. */
export interface TableRows {
  readonly features: number;
  readonly n: number;
  /** n×features, row-major. */
  readonly x: Float32Array;
  /** The `label` column; undefined when the file has none (allowed by `label: 'optional'`). */
  readonly labels: Int32Array | undefined;
  /** 1 for a test row, 0 for a train row; undefined without a `split` column or when ignored. */
  readonly isTest: Uint8Array | undefined;
  readonly columns: FeatureColumns;
  /** The example shape the file declares (Arrow schema metadata `grng.shape`). */
  readonly shape?: readonly number[];
}

/** How many values a row holds in these feature columns. */
export function featureCount(columns: FeatureColumns): number {
  return columns.kind === 'list' ? columns.size : columns.names.length;
}

const DATASET_FILE: Omit<SourceFile, 'path'> = { role: 'dataset file', option: 'dataset' };
const TRAINING_RULES: ReadRules = { label: 'required', split: 'read' };

/** Arrow schema metadata key that declares the shape of one example, e.g. `28x28x1`. */
export const ARROW_SHAPE_METADATA = 'grng.shape';

/**
 * Reads a classification dataset from a file the user made:
 *
 * - `.csv`: a header row, a `label` column of integers ≥ 0, every other column a numeric
 *   feature; optionally a `split` column of `train`/`test`. RFC 4180 quoting, CRLF or LF line
 *   ends, a UTF-8 byte-order mark and blank lines are accepted.
 * - `.arrow`, `.feather` (Arrow IPC file, Feather v2) or `.arrows` (Arrow IPC stream; either
 *   form is read whatever the extension): an integer `label` column and either numeric feature
 *   columns or one FixedSizeList<number> column named `features`; optionally a string `split`.
 *
 * Without a `split` column the last ⌈20%⌉ of each class in file order are the test set (at
 * least one row per class stays in training). Classes are `0 .. max label`. Every problem is a
 * GrngError naming the file and, where it applies, the line or row, the column and the byte.
 *
 * @example
 * const data = loadDatasetFile('iris.csv'); console.log(data.features, data.classes, data.train.n);
 */
export function loadDatasetFile(path: string): Dataset {
  if (typeof path !== 'string' || path.trim() === '') {
    throw new GrngError(
      'invalid-option',
      `invalid dataset: ${JSON.stringify(path)} (expected ${DATASET_CHOICES})`,
      { option: 'dataset', value: path },
    );
  }
  const extension = extname(path).toLowerCase();
  if (!(DATASET_FILE_EXTENSIONS as readonly string[]).includes(extension)) {
    const what =
      extension === ''
        ? `is none of ${DATASET_NAMES.join(', ')}, a folder or a file name with an extension`
        : `has the unknown extension "${extension}"`;
    throw new GrngError(
      'invalid-option',
      `invalid dataset: ${JSON.stringify(path)} ${what} (expected ${DATASET_CHOICES})`,
      { option: 'dataset', value: path },
    );
  }
  const file = { ...DATASET_FILE, path };
  const bytes = readFileBytes(
    file,
    ' (a folder of idx files is read by loadIdxDataset, and by train and --dataset)',
  );
  return splitRows(parseTableBytes(bytes, extension, file, TRAINING_RULES), path);
}

/**
 * Rows of a `.csv` (by `extension`) or Arrow IPC file (any other), by `rules`; the one parser of
 * both formats, for training datasets and prediction inputs alike.
 *
 * @example
 * const rows = parseTableBytes(readFileSync(p), '.csv', { path: p, role: 'input file', option: 'input' }, { label: 'optional', split: 'ignore' });
 */
export function parseTableBytes(
  bytes: Uint8Array,
  extension: string,
  file: SourceFile,
  rules: ReadRules,
): TableRows {
  return extension === '.csv'
    ? parseCsvRows(bytes, file, rules)
    : parseArrowRows(bytes, file, rules);
}

/**
 * The bytes of a file that must exist, be a file and hold something; `directoryHint` follows
 * the error for a folder (where a folder means something else to the caller).
 *
 * @example
 * const bytes = readFileBytes({ path: 'x.csv', role: 'input file', option: 'input' });
 */
export function readFileBytes(file: SourceFile, directoryHint = ''): Buffer {
  const { path, role, option } = file;
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'EACCES'
          ? 'cannot be read (permission denied)'
          : `cannot be read (${(error as Error).message})`;
    throw new GrngError(
      'invalid-option',
      `${role} ${path} ${why}`,
      { option, value: path, file: path },
      { cause: error },
    );
  }
  if (isDirectory)
    throw new GrngError(
      'invalid-option',
      `${role} ${path} is a directory, expected a file${directoryHint}`,
      { option, value: path, file: path },
    );
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw new GrngError(
      'invalid-data',
      `${role} ${path} cannot be read (${(error as Error).message})`,
      { file: path },
      { cause: error },
    );
  }
  if (bytes.length === 0)
    throw new GrngError('invalid-data', `${role} ${path} is empty (0 bytes)`, {
      file: path,
      offset: 0,
    });
  return bytes;
}

/** Where a CSV problem is: 1-based line and column, 0-based byte offset of the cell. */
interface CsvPlace {
  readonly line: number;
  readonly byte: number;
  readonly column?: { readonly index: number; readonly name: string };
}

function csvError(file: SourceFile, place: CsvPlace, problem: string): GrngError {
  const column = place.column
    ? `, column ${place.column.index + 1} (${JSON.stringify(place.column.name)})`
    : '';
  return new GrngError(
    'invalid-data',
    `${file.role} ${file.path} line ${place.line}${column}, byte ${place.byte}: ${problem}`,
    {
      file: file.path,
      line: place.line,
      offset: place.byte,
      ...(place.column ? { column: place.column.name } : {}),
    },
  );
}

interface CsvRecord {
  readonly line: number;
  readonly byte: number;
  /** Cell text and the byte offset where each cell starts. */
  readonly cells: string[];
  readonly offsets: number[];
}

const COMMA = 0x2c;
const QUOTE = 0x22;
const CR = 0x0d;
const LF = 0x0a;

/**
 * RFC 4180 records from raw bytes. Working on bytes rather than a decoded string keeps every
 * reported offset a true byte offset in the file (a multi-byte character before the problem
 * would otherwise shift it). Records that are entirely empty (blank lines) are skipped.
 */
function* csvRecords(bytes: Uint8Array, file: SourceFile): Generator<CsvRecord> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  // Latin-1 maps each byte to one character, so this string is indexed by byte offset: an ASCII
  // cell (every number) is a slice of it. A TextDecoder call per cell cost ~1 µs, 10 s for
  // 10,000 MNIST rows (measured with bench/savedModels.ts); cells with other bytes still go
  // through the strict UTF-8 decoder.
  const latin1 = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
  const text = (start: number, end: number, place: CsvPlace): string => {
    let ascii = true;
    for (let k = start; k < end; k++)
      if (bytes[k]! >= 0x80) {
        ascii = false;
        break;
      }
    if (ascii) return latin1.slice(start, end);
    try {
      return decoder.decode(bytes.subarray(start, end));
    } catch {
      throw csvError(file, place, 'the cell is not valid UTF-8');
    }
  };
  let i = bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf ? 3 : 0;
  let line = 1;
  while (i < bytes.length) {
    const record: CsvRecord = { line, byte: i, cells: [], offsets: [] };
    let endOfRecord = false;
    while (!endOfRecord) {
      const start = i;
      let cell: string;
      if (bytes[i] === QUOTE) {
        const openLine = line;
        let pieceStart = i + 1;
        let value = '';
        i += 1;
        for (;;) {
          if (i >= bytes.length)
            throw csvError(
              file,
              { line: openLine, byte: start },
              'a quoted cell opened here is never closed',
            );
          if (bytes[i] === QUOTE) {
            value += text(pieceStart, i, { line, byte: start });
            if (bytes[i + 1] === QUOTE) {
              value += '"';
              i += 2;
              pieceStart = i;
              continue;
            }
            i += 1;
            break;
          }
          if (bytes[i] === LF) line += 1;
          i += 1;
        }
        const next = bytes[i];
        if (i < bytes.length && next !== COMMA && next !== CR && next !== LF) {
          throw csvError(
            file,
            { line, byte: i },
            `unexpected ${JSON.stringify(String.fromCharCode(next!))} after the closing quote of a cell (a quote inside a quoted cell is written "")`,
          );
        }
        cell = value;
      } else {
        while (i < bytes.length && bytes[i] !== COMMA && bytes[i] !== CR && bytes[i] !== LF) i += 1;
        cell = text(start, i, { line, byte: start });
      }
      record.cells.push(cell);
      record.offsets.push(start);
      if (i >= bytes.length) {
        endOfRecord = true;
      } else if (bytes[i] === COMMA) {
        i += 1;
      } else {
        // CRLF, LF, or a lone CR (old Mac files) all end a record.
        i += bytes[i] === CR && bytes[i + 1] === LF ? 2 : 1;
        line += 1;
        endOfRecord = true;
      }
    }
    if (!(record.cells.length === 1 && record.cells[0]!.trim() === '')) yield record;
  }
}

/** A decimal number as people and spreadsheets write it; hex, binary and `1_000` are not data. */
const DECIMAL = /^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$/;
const NOT_FINITE = /^[+-]?(?:nan|inf|infinity)$/i;

/** Where each kind of column sits in a CSV header (0-based cell indexes). */
interface CsvLayout {
  readonly header: CsvRecord;
  readonly names: readonly string[];
  readonly labelIndex: number | undefined;
  /** The `split` column's index when its values are read (`split: 'read'`). */
  readonly splitIndex: number | undefined;
  readonly featureIndexes: readonly number[];
}

function parseCsvRows(bytes: Uint8Array, file: SourceFile, rules: ReadRules): TableRows {
  const records = csvRecords(bytes, file);
  const layout = csvLayout(records, file, rules);
  const { header, names, labelIndex, splitIndex, featureIndexes } = layout;
  const columns: FeatureColumns = { kind: 'columns', names: featureIndexes.map((i) => names[i]!) };
  rules.checkFeatures?.(columns);
  const x = new GrowableFloat32();
  const y: number[] = [];
  const isTest: number[] = [];
  let n = 0;
  for (const record of records) {
    checkCellCount(record, names.length, file);
    const placeOf = (index: number): CsvPlace => ({
      line: record.line,
      byte: record.offsets[index]!,
      column: { index, name: names[index]! },
    });
    if (labelIndex !== undefined) {
      const labelCell = record.cells[labelIndex]!.trim();
      y.push(checkLabel(labelCell, (problem) => csvError(file, placeOf(labelIndex), problem)));
    }
    if (splitIndex !== undefined) {
      const split = record.cells[splitIndex]!.trim().toLowerCase();
      if (split !== 'train' && split !== 'test')
        throw csvError(
          file,
          placeOf(splitIndex),
          `split ${JSON.stringify(record.cells[splitIndex])} is neither train nor test`,
        );
      isTest.push(split === 'test' ? 1 : 0);
    }
    for (const index of featureIndexes)
      x.push(csvFeature(record.cells[index]!.trim(), () => placeOf(index), file));
    n += 1;
  }
  if (n === 0)
    throw csvError(
      file,
      { line: header.line, byte: header.byte },
      'the file has a header but no data rows',
    );
  return {
    features: featureIndexes.length,
    n,
    x: x.toArray(),
    labels: labelIndex === undefined ? undefined : Int32Array.from(y),
    isTest: splitIndex === undefined ? undefined : Uint8Array.from(isTest),
    columns,
  };
}

/** Reads the header record and sorts its columns into label, split and features. */
function csvLayout(records: Iterator<CsvRecord>, file: SourceFile, rules: ReadRules): CsvLayout {
  const first = records.next();
  if (first.done)
    throw new GrngError(
      'invalid-data',
      `${file.role} ${file.path} has no header row (only blank lines)`,
      { file: file.path, offset: 0 },
    );
  const header = first.value;
  const names = header.cells.map((c) => c.trim());
  const seen = new Map<string, number>();
  names.forEach((name, index) => {
    const place = { line: header.line, byte: header.offsets[index]!, column: { index, name } };
    if (name === '') throw csvError(file, place, 'the header has an empty column name');
    const earlier = seen.get(name);
    if (earlier !== undefined)
      throw csvError(
        file,
        place,
        `the header names column ${JSON.stringify(name)} twice (also column ${earlier + 1})`,
      );
    seen.set(name, index);
  });
  const headerPlace = { line: header.line, byte: header.byte };
  const labelIndex = seen.get('label');
  if (labelIndex === undefined && rules.label === 'required') {
    throw csvError(
      file,
      headerPlace,
      `the header has no "label" column (columns: ${quoteAll(names)})`,
    );
  }
  const splitColumn = seen.get('split');
  const featureIndexes = names
    .map((_, i) => i)
    .filter((i) => i !== labelIndex && i !== splitColumn);
  if (featureIndexes.length === 0)
    throw csvError(file, headerPlace, `the header has no feature columns ${besides(rules, names)}`);
  const splitIndex = rules.split === 'read' ? splitColumn : undefined;
  return { header, names, labelIndex, splitIndex, featureIndexes };
}

/** How a file with only label/split columns is told it lacks features. */
function besides(rules: ReadRules, names: readonly string[]): string {
  return rules.label === 'required' ? 'besides "label"' : `(columns: ${quoteAll(names)})`;
}

function quoteAll(names: readonly string[]): string {
  return names.map((n) => JSON.stringify(n)).join(', ');
}

function checkCellCount(record: CsvRecord, columns: number, file: SourceFile): void {
  if (record.cells.length === columns) return;
  throw csvError(
    file,
    { line: record.line, byte: record.byte },
    `${record.cells.length} cell${record.cells.length === 1 ? '' : 's'}, but the header has ${columns} columns`,
  );
}

/** A feature cell's float32 value; `place` is built only for an error, off the hot path. */
function csvFeature(cell: string, place: () => CsvPlace, file: SourceFile): number {
  const fail = (problem: string): never => {
    throw csvError(file, place(), problem);
  };
  // The usual cell is a decimal: one regex for it, the others only to say what is wrong.
  if (!DECIMAL.test(cell)) {
    if (cell === '') fail('the cell is empty (features must be numbers)');
    if (NOT_FINITE.test(cell)) fail(`${cell} is not a finite number (features must be finite)`);
    fail(`${JSON.stringify(cell)} is not a number`);
  }
  const value = Math.fround(Number(cell));
  if (!Number.isFinite(value)) fail(`${cell} does not fit in a 32-bit float (|x| < 3.4e38)`);
  return value;
}

/** An integer label ≥ 0 from its text, or the problem `fail` turns into an error. */
function checkLabel(cell: string, fail: (problem: string) => GrngError): number {
  if (cell === '') throw fail('the label is empty');
  if (!DECIMAL.test(cell))
    throw fail(
      `label ${JSON.stringify(cell)} is not a number (labels are class indices 0, 1, 2, …)`,
    );
  const value = Number(cell);
  return checkLabelValue(value, fail);
}

function checkLabelValue(value: number, fail: (problem: string) => GrngError): number {
  if (!Number.isInteger(value))
    throw fail(`label ${value} is not an integer (labels are class indices 0, 1, 2, …)`);
  if (value < 0) throw fail(`label ${value} is negative (labels are class indices 0, 1, 2, …)`);
  if (value > MAX_LABEL) throw fail(`label ${value} is too large (at most ${MAX_LABEL})`);
  return value;
}

/** A Float32Array that doubles as it fills, so a large CSV needs no boxed number per cell. */
class GrowableFloat32 {
  private data = new Float32Array(1024);
  private length = 0;

  push(value: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float32Array(this.data.length * 2);
      bigger.set(this.data);
      this.data = bigger;
    }
    this.data[this.length++] = value;
  }

  toArray(): Float32Array {
    return this.data.slice(0, this.length);
  }
}

const ARROW_FILE_MAGIC = 'ARROW1';
const FEATHER_V1_MAGIC = 'FEA1';

/** Throws an invalid-data error naming the file and, in `context`, the row or column. */
type Fail = (problem: string, context?: Record<string, unknown>) => never;

function arrowFail(file: SourceFile): Fail {
  return (problem, context = {}) => {
    throw new GrngError('invalid-data', `${file.role} ${file.path}: ${problem}`, {
      file: file.path,
      ...context,
    });
  };
}

function parseArrowRows(bytes: Uint8Array, file: SourceFile, rules: ReadRules): TableRows {
  const fail = arrowFail(file);
  const table = decodeArrow(bytes, fail);
  const names = table.schema.fields.map((f) => f.name);
  const label = names.includes('label') ? table.getChild('label')! : undefined;
  if (!label && rules.label === 'required')
    fail(`has no "label" column (columns: ${quoteAll(names)})`);
  if (label && !DataType.isInt(label.type))
    fail(
      `column "label" is ${String(label.type)}, expected an integer type (class indices 0, 1, 2, …)`,
      { column: 'label' },
    );
  if (table.numRows === 0) fail(`has no rows (columns: ${names.join(', ')})`);
  const labels = label ? arrowLabels(label, table.numRows, file) : undefined;
  const isTest =
    rules.split === 'read' && names.includes('split')
      ? arrowSplit(table.getChild('split')!, table.numRows, fail)
      : undefined;
  const featureNames = names.filter((name) => name !== 'label' && name !== 'split');
  if (featureNames.length === 0) fail(`has no feature columns ${besides(rules, names)}`);
  const features = arrowFeatures(table, featureNames, fail, rules);
  return {
    ...features,
    n: table.numRows,
    labels,
    isTest,
    ...declaredShape(table, features.features, file),
  };
}

/** The table of an Arrow IPC file or stream, with what is wrong said in terms of its bytes. */
function decodeArrow(bytes: Uint8Array, fail: Fail): Table {
  const head = Buffer.from(bytes.subarray(0, 8));
  const isFile = head.subarray(0, 6).toString('latin1') === ARROW_FILE_MAGIC;
  const isStream = head.length >= 4 && head.readUInt32LE(0) === 0xffffffff;
  if (head.subarray(0, 4).toString('latin1') === FEATHER_V1_MAGIC)
    fail(
      'is Feather v1 (magic "FEA1" at byte 0), which grng does not read; save it as Feather v2 / Arrow IPC (e.g. pyarrow.feather.write_feather(..., version=2))',
      { offset: 0 },
    );
  if (!isFile && !isStream)
    fail(
      `is not Arrow IPC: expected the file magic "ARROW1" or a stream's continuation marker 0xFFFFFFFF at byte 0, found 0x${head.subarray(0, 4).toString('hex')}`,
      { offset: 0 },
    );
  if (
    isFile &&
    Buffer.from(bytes.subarray(bytes.length - 6)).toString('latin1') !== ARROW_FILE_MAGIC
  ) {
    fail(
      `is truncated: an Arrow IPC file ends with "ARROW1", not found at byte ${Math.max(0, bytes.length - 6)} (file size ${bytes.length})`,
      { offset: Math.max(0, bytes.length - 6) },
    );
  }
  let table: Table;
  try {
    table = tableFromIPC(bytes);
  } catch (error) {
    return fail(
      `cannot be read as Arrow IPC ${isFile ? 'file' : 'stream'} (${(error as Error).message}; file size ${bytes.length} bytes)`,
    );
  }
  if (table.schema.fields.length === 0)
    fail('has no schema (an Arrow stream with no messages)', { offset: 0 });
  return table;
}

function arrowLabels(label: Vector, n: number, file: SourceFile): Int32Array {
  const y = new Int32Array(n);
  for (let row = 0; row < n; row++) {
    const raw = label.get(row) as number | bigint | null;
    const rowFail = (problem: string): GrngError =>
      new GrngError(
        'invalid-data',
        `${file.role} ${file.path} row ${row}, column "label": ${problem}`,
        { file: file.path, row, column: 'label' },
      );
    if (raw === null || raw === undefined) throw rowFail('the label is null');
    y[row] = checkLabelValue(Number(raw), rowFail);
  }
  return y;
}

function arrowSplit(split: Vector, n: number, fail: Fail): Uint8Array {
  if (
    !DataType.isUtf8(split.type) &&
    !DataType.isLargeUtf8(split.type) &&
    !(
      DataType.isDictionary(split.type) &&
      (DataType.isUtf8(split.type.dictionary) || DataType.isLargeUtf8(split.type.dictionary))
    )
  ) {
    fail(`column "split" is ${String(split.type)}, expected strings train/test`, {
      column: 'split',
    });
  }
  const isTest = new Uint8Array(n);
  for (let row = 0; row < n; row++) {
    const value = String(split.get(row) ?? '')
      .trim()
      .toLowerCase();
    if (value !== 'train' && value !== 'test')
      fail(
        `row ${row}, column "split": ${JSON.stringify(split.get(row))} is neither train nor test`,
        { row, column: 'split' },
      );
    isTest[row] = value === 'test' ? 1 : 0;
  }
  return isTest;
}

type ArrowFeatures = Pick<TableRows, 'features' | 'x' | 'columns'>;

/** Feature values from numeric columns, or from one FixedSizeList<number> column. */
function arrowFeatures(
  table: Table,
  featureNames: readonly string[],
  fail: Fail,
  rules: ReadRules,
): ArrowFeatures {
  const first = table.getChild(featureNames[0]!)!;
  if (featureNames.length === 1 && DataType.isFixedSizeList(first.type))
    return arrowListFeatures(first, featureNames[0]!, table.numRows, fail, rules);
  const columns = featureNames.map((name) => {
    const column = table.getChild(name)!;
    if (!DataType.isFloat(column.type) && !DataType.isInt(column.type)) {
      fail(
        `column ${JSON.stringify(name)} is ${String(column.type)}; feature columns must be numeric (or one FixedSizeList<number> column named "features")`,
        { column: name },
      );
    }
    return column;
  });
  const described: FeatureColumns = { kind: 'columns', names: featureNames };
  rules.checkFeatures?.(described);
  const n = table.numRows;
  const features = columns.length;
  const x = new Float32Array(n * features);
  columns.forEach((column, j) => {
    for (let row = 0; row < n; row++)
      x[row * features + j] = arrowFeature(column.get(row), row, featureNames[j]!, fail);
  });
  return { features, x, columns: described };
}

function arrowListFeatures(
  listColumn: Vector,
  name: string,
  n: number,
  fail: Fail,
  rules: ReadRules,
): ArrowFeatures {
  const type = listColumn.type as DataType & { listSize: number; children: { type: DataType }[] };
  const inner = type.children[0]!.type;
  if (!DataType.isFloat(inner) && !DataType.isInt(inner))
    fail(
      `column ${JSON.stringify(name)} is ${String(type)}, expected a fixed-size list of numbers`,
      { column: name },
    );
  const features = type.listSize;
  if (features < 1)
    fail(
      `column ${JSON.stringify(name)} is a fixed-size list of ${features} values, expected at least 1`,
      { column: name },
    );
  const described: FeatureColumns = { kind: 'list', name, size: features };
  rules.checkFeatures?.(described);
  const x = new Float32Array(n * features);
  for (let row = 0; row < n; row++) {
    const list = listColumn.get(row) as Vector | null;
    if (list === null)
      fail(`row ${row}, column ${JSON.stringify(name)}: the list is null`, { row, column: name });
    for (let j = 0; j < features; j++)
      x[row * features + j] = arrowFeature(list!.get(j), row, `${name}[${j}]`, fail);
  }
  return { features, x, columns: described };
}

function arrowFeature(value: unknown, row: number, column: string, fail: Fail): number {
  if (value === null || value === undefined)
    fail(
      `row ${row}, column ${JSON.stringify(column)}: the value is null (features must be numbers)`,
      { row, column },
    );
  const number = Math.fround(Number(value));
  if (!Number.isFinite(number))
    fail(
      `row ${row}, column ${JSON.stringify(column)}: ${String(value)} is not a finite 32-bit float (features must be finite)`,
      { row, column },
    );
  return number;
}

/** The `grng.shape` schema metadata, checked against the features the file has. */
function declaredShape(
  table: Table,
  features: number,
  file: SourceFile,
): { shape?: readonly number[] } {
  const text = table.schema.metadata.get(ARROW_SHAPE_METADATA);
  if (text === undefined) return {};
  const shape = parseShape(text);
  const fail = (problem: string): never => {
    throw new GrngError(
      'invalid-data',
      `${file.role} ${file.path}: schema metadata ${ARROW_SHAPE_METADATA} ${JSON.stringify(text)} ${problem}`,
      { file: file.path, metadata: ARROW_SHAPE_METADATA },
    );
  };
  if (!shape)
    return fail('is not a shape (expected e.g. "28x28x1": whole numbers ≥ 1 joined by x)');
  const product = shape.reduce((n, d) => n * d, 1);
  if (product !== features)
    fail(`holds ${product} values, but the file has ${features} features per row`);
  return { shape };
}

/** The train/test split: the `split` column, else the last ⌈20%⌉ of each class in file order. */
function splitRows(rows: TableRows, path: string): Dataset {
  // TRAINING_RULES demand a label column, so the reader has made labels.
  const labels = rows.labels!;
  let classes = 0;
  for (const label of labels) classes = Math.max(classes, label + 1);
  const distinct = new Set(labels).size;
  if (distinct < 2) {
    throw new GrngError(
      'invalid-data',
      `dataset file ${path}: every one of its ${rows.n} rows has label ${labels[0]}; a classifier needs at least 2 classes`,
      { file: path },
    );
  }
  let isTest = rows.isTest;
  let rule: string;
  if (isTest) {
    rule = 'split column';
  } else {
    const perClass = new Map<number, number>();
    for (const label of labels) perClass.set(label, (perClass.get(label) ?? 0) + 1);
    const testLeft = new Map(
      [...perClass].map(([label, count]) => [
        label,
        Math.min(Math.ceil(count * FILE_TEST_FRACTION), count - 1),
      ]),
    );
    isTest = new Uint8Array(rows.n);
    for (let row = rows.n - 1; row >= 0; row--) {
      const label = labels[row]!;
      const left = testLeft.get(label)!;
      if (left > 0) {
        isTest[row] = 1;
        testLeft.set(label, left - 1);
      }
    }
    rule = `per class the last ceil(${FILE_TEST_FRACTION * 100}%) in file order are test`;
  }
  const take = (test: number): Split => {
    let n = 0;
    for (const flag of isTest!) if (flag === test) n += 1;
    const x = new Float32Array(n * rows.features);
    const y = new Int32Array(n);
    let out = 0;
    for (let row = 0; row < rows.n; row++) {
      if (isTest![row] !== test) continue;
      x.set(rows.x.subarray(row * rows.features, (row + 1) * rows.features), out * rows.features);
      y[out] = labels[row]!;
      out += 1;
    }
    return { x, y, n, ...(rows.shape ? { shape: rows.shape } : {}) };
  };
  const train = take(0);
  const test = take(1);
  return validateDataset({
    name: path,
    features: rows.features,
    classes,
    train,
    test,
    description: `file ${path}: ${rows.features} features (${describeColumns(rows.columns)}${rows.shape ? `, examples ${rows.shape.join('x')} by ${ARROW_SHAPE_METADATA}` : ''}), ${classes} classes, ${rule}: ${train.n} train / ${test.n} test`,
  });
}

/**
 * The feature columns for a description, cut to 80 characters: `a,b,c` or `features[784]`.
 *
 * @example
 * describeColumns({ kind: 'list', name: 'features', size: 784 }); // 'features[784]'
 */
export function describeColumns(columns: FeatureColumns): string {
  const text =
    columns.kind === 'list' ? `${columns.name}[${columns.size}]` : columns.names.join(',');
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
