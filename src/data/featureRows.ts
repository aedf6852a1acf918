import { extname } from 'node:path';
import { GrngError } from '../errors.js';
import {
  DATASET_FILE_EXTENSIONS,
  describeColumns,
  featureCount,
  parseTableBytes,
  readFileBytes,
  type FeatureColumns,
  type ReadRules,
  type SourceFile,
} from './fileDataset.js';

/** Examples to run a model on, as read from a file: features, and labels where the file has them. */
export interface FeatureRows {
  /** n×features, row-major. */
  readonly x: Float32Array;
  readonly n: number;
  readonly features: number;
  /**
   * The feature columns' names in file order; a FixedSizeList column is one name (`features`)
   * for all its values.
   */
  readonly columns: readonly string[];
  /** The `label` column, when the file has one (to score the predictions). */
  readonly labels?: Int32Array;
  /** One line for people: the file, its rows, its feature columns, whether it has labels. */
  readonly description: string;
}

/** What the model takes: values per example, and its example shape for messages. */
export interface FeatureExpectation {
  readonly features: number;
  readonly shape?: readonly number[];
}

/** The option a predict command names the input file by; errors about the path carry it. */
const INPUT_OPTION = 'input';
const INPUT_ROLE = 'input file';

/**
 * Reads the examples a trained model is to classify:
 *
 * - `.csv`: a header row; every column is a numeric feature except an optional `label` column
 *   (integers ≥ 0, kept as `labels`) and an optional `split` column (ignored).
 * - `.arrow`, `.feather` (Arrow IPC file) or `.arrows` (Arrow IPC stream): numeric feature
 *   columns or one FixedSizeList<number> column named `features`; optional integer `label` and
 *   `split` as above.
 *
 * The same parser as training datasets (loadDatasetFile), so a file grng trains on is a file it
 * predicts on. The file must have exactly `expect.features` feature values per row, and at
 * least one row. Every problem is a GrngError naming the file and, where it applies, the line
 * or row, the column and the byte.
 *
 * @example
 * const rows = readFeatureRows('digits.csv', { features: 784, shape: [28, 28, 1] });
 * console.log(rows.n, rows.labels !== undefined);
 */
export function readFeatureRows(path: string, expect: FeatureExpectation): FeatureRows {
  checkExpectation(expect);
  const extension = checkExtension(path);
  const file: SourceFile = { path, role: INPUT_ROLE, option: INPUT_OPTION };
  const rules: ReadRules = {
    label: 'optional',
    split: 'ignore',
    checkFeatures: (columns) => checkFeatureCount(columns, expect, file),
  };
  const rows = parseTableBytes(readFileBytes(file), extension, file, rules);
  const columns = rows.columns.kind === 'list' ? [rows.columns.name] : [...rows.columns.names];
  const labelled = rows.labels ? ', with labels' : ', no labels';
  return {
    x: rows.x,
    n: rows.n,
    features: rows.features,
    columns,
    ...(rows.labels ? { labels: rows.labels } : {}),
    description: `file ${path}: ${rows.n} rows of ${rows.features} features (${describeColumns(rows.columns)})${labelled}`,
  };
}

function checkExpectation(expect: FeatureExpectation): void {
  const features = expect?.features;
  if (!Number.isSafeInteger(features) || features < 1)
    throw new GrngError(
      'invalid-option',
      `invalid features: ${JSON.stringify(features)} (expected an integer ≥ 1, the values per example the model takes)`,
      { option: 'features', value: features },
    );
  const shape = expect.shape;
  if (shape === undefined) return;
  const valid = Array.isArray(shape) && shape.every((d) => Number.isSafeInteger(d) && d >= 1);
  if (!valid || shape.reduce((n, d) => n * d, 1) !== features)
    throw new GrngError(
      'invalid-option',
      `invalid shape: ${JSON.stringify(shape)} (expected whole numbers ≥ 1 whose product is features = ${features})`,
      { option: 'shape', value: shape },
    );
}

function checkExtension(path: string): string {
  const extension = typeof path === 'string' ? extname(path).toLowerCase() : '';
  if (
    typeof path === 'string' &&
    (DATASET_FILE_EXTENSIONS as readonly string[]).includes(extension)
  )
    return extension;
  const what =
    typeof path !== 'string' || path.trim() === ''
      ? 'is not a file name'
      : extension === ''
        ? 'has no extension'
        : `has the unknown extension "${extension}"`;
  throw new GrngError(
    'invalid-option',
    `invalid ${INPUT_OPTION}: ${JSON.stringify(path)} ${what} (expected a ${DATASET_FILE_EXTENSIONS.join(', ')} file)`,
    { option: INPUT_OPTION, value: path },
  );
}

/**
 * Refuses a file whose rows do not hold what the model takes, naming both sides before a single
 * row is parsed: the common mistake is a file made for another model.
 */
function checkFeatureCount(
  columns: FeatureColumns,
  expect: FeatureExpectation,
  file: SourceFile,
): void {
  const has = featureCount(columns);
  if (has === expect.features) return;
  const shape = expect.shape ? ` (shape [${expect.shape.join(', ')}])` : '';
  const takes = `the model takes ${expect.features} values per example${shape}`;
  if (columns.kind === 'list')
    throw new GrngError(
      'invalid-data',
      `${file.role} ${file.path}: column ${JSON.stringify(columns.name)} is a fixed-size list of ${has} values, but ${takes}`,
      { file: file.path, column: columns.name, listSize: has, expected: expect.features },
    );
  throw new GrngError(
    'invalid-data',
    `${file.role} ${file.path} has ${has} feature column${has === 1 ? '' : 's'} (${nameRange(columns.names)}), but ${takes}`,
    { file: file.path, features: has, expected: expect.features },
  );
}

/** The first and last names of a column list: `"a"`, `"a", "b"` or `"a" … "z"`. */
function nameRange(names: readonly string[]): string {
  const quoted = (name: string): string => JSON.stringify(name);
  if (names.length <= 2) return names.map(quoted).join(', ');
  return `${quoted(names[0]!)} … ${quoted(names.at(-1)!)}`;
}
