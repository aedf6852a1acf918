import { GrngError } from '../errors.js';

/** Rows of a classification dataset held on the host: row-major features and int labels. */
export interface Split {
  /** n×features, row-major. */
  readonly x: Float32Array;
  /** n×targets labels in [0, classes), row-major: example r's are y[r·targets .. (r+1)·targets). */
  readonly y: Int32Array;
  readonly n: number;
  /**
   * Labels per example; default 1 (classification). A language-model window of `context` tokens
   * has `context` labels, the next token at each position, so that one split type serves both and
   * a model's logits hold one row per label ([m·targets, classes], in y's order).
   */
  readonly targets?: number;
  /**
   * Shape of one example (e.g. [28, 28, 1]) when it is not a flat row: batches are then
   * [m, ...shape]. Its product is the features per row. Default [features].
   */
  readonly shape?: readonly number[];
}

/**
 * Labels per example of a split: its `targets`, else 1.
 *
 * @example
 * labelsPerExample({ x, y, n: 4, targets: 64 }); // 64
 */
export function labelsPerExample(split: Split): number {
  return split.targets ?? 1;
}

/** The shape of one example of a split: its declared shape, else a flat row. */
export function exampleShape(split: Split): readonly number[] {
  return split.shape ?? [split.x.length / split.n];
}

/**
 * Reads an example shape written as `28x28x1` (rows × columns × channels; `×` and `,` also
 * separate), as the `--input-shape` flag and the Arrow schema metadata `grng.shape` give it.
 * Returns undefined when the text is not a shape; the caller's error names where it came from.
 *
 * @example
 * parseShape('28x28x1'); // [28, 28, 1]
 */
export function parseShape(text: string): number[] | undefined {
  const parts = text.trim().split(/\s*[x×,]\s*/i);
  if (!parts.every((part) => /^[1-9]\d*$/.test(part))) return undefined;
  const shape = parts.map(Number);
  return shape.every(Number.isSafeInteger) ? shape : undefined;
}

/**
 * The dataset with every example seen as `shape` (its product must be the feature count): a
 * file of flat pixel rows becomes images, batches [m, ...shape]. The rows are not copied. An
 * error names `option` (`inputShape`, which the CLI shows as `--input-shape`).
 *
 * @example
 * const images = withExampleShape(loadDatasetFile('digits.csv'), [28, 28, 1]);
 */
export function withExampleShape(
  data: Dataset,
  shape: readonly number[],
  option = 'inputShape',
): Dataset {
  const valid =
    Array.isArray(shape) &&
    shape.length > 0 &&
    shape.every((d) => Number.isSafeInteger(d) && d >= 1);
  const product = valid ? shape.reduce((n, d) => n * d, 1) : NaN;
  if (product !== data.features)
    throw new GrngError(
      'invalid-option',
      `invalid ${option}: ${valid ? `${shape.join('x')} holds ${product} values, but dataset ${data.name} has ${data.features} features per example` : `${JSON.stringify(shape)} (expected whole numbers ≥ 1, e.g. [28, 28, 1])`}`,
      { option, value: shape },
    );
  const reshaped = [...shape];
  return {
    ...data,
    train: { ...data.train, shape: reshaped },
    test: { ...data.test, shape: reshaped },
  };
}

export interface Dataset {
  readonly name: string;
  readonly features: number;
  readonly classes: number;
  readonly train: Split;
  readonly test: Split;
  /** How the data was made or split, for run metadata. */
  readonly description: string;
}

/**
 * Copies the rows `order[start .. start+size)` of a split into contiguous host arrays: x is
 * size×features, y size×targets (each example's labels kept together, in order).
 */
export function gatherRows(
  split: Split,
  order: ArrayLike<number>,
  start: number,
  size: number,
): { x: Float32Array; y: Int32Array } {
  const features = split.x.length / split.n;
  const targets = labelsPerExample(split);
  const x = new Float32Array(size * features);
  const y = new Int32Array(size * targets);
  for (let r = 0; r < size; r++) {
    const row = order[start + r]!;
    x.set(split.x.subarray(row * features, (row + 1) * features), r * features);
    if (targets === 1) y[r] = split.y[row]!;
    else y.set(split.y.subarray(row * targets, (row + 1) * targets), r * targets);
  }
  return { x, y };
}

/**
 * Checks a dataset before training: sizes agree, labels are integers in range, features are
 * finite. Each problem is one error naming the split, the row and what is wrong.
 */
export function validateDataset(data: Dataset): Dataset {
  if (typeof data !== 'object' || data === null)
    throw new GrngError(
      'invalid-data',
      `invalid dataset: ${String(data)} (expected { name, features, classes, train, test })`,
      { option: 'dataset' },
    );
  const fail = (message: string, context: Record<string, unknown>): never => {
    throw new GrngError('invalid-data', `dataset ${data.name}: ${message}`, {
      dataset: data.name,
      ...context,
    });
  };
  if (!Number.isInteger(data.features) || data.features < 1)
    fail(`features must be a positive integer, got ${data.features}`, {});
  if (!Number.isInteger(data.classes) || data.classes < 2)
    fail(`classes must be an integer ≥ 2, got ${data.classes}`, {});
  for (const [name, split] of [
    ['train', data.train],
    ['test', data.test],
  ] as const) {
    if (
      typeof split !== 'object' ||
      split === null ||
      !(split.x instanceof Float32Array) ||
      !(split.y instanceof Int32Array) ||
      !Number.isInteger(split.n)
    ) {
      fail(`the ${name} split must be { x: Float32Array, y: Int32Array, n: integer }`, {
        split: name,
      });
    }
    if (split.n < 1) fail(`the ${name} split is empty`, { split: name });
    if (split.x.length !== split.n * data.features) {
      fail(
        `the ${name} split has ${split.x.length} feature values, expected ${split.n}×${data.features} = ${split.n * data.features}`,
        { split: name },
      );
    }
    const targets = split.targets ?? 1;
    if (!Number.isInteger(targets) || targets < 1)
      fail(`the ${name} split's targets must be an integer ≥ 1, got ${String(targets)}`, {
        split: name,
      });
    if (split.y.length !== split.n * targets)
      fail(
        targets === 1
          ? `the ${name} split has ${split.y.length} labels for ${split.n} rows`
          : `the ${name} split has ${split.y.length} labels, expected ${split.n} rows × ${targets} targets = ${split.n * targets}`,
        { split: name },
      );
    if (
      split.shape !== undefined &&
      (!Array.isArray(split.shape) ||
        !split.shape.every((d) => Number.isInteger(d) && d >= 1) ||
        split.shape.reduce((n, d) => n * d, 1) !== data.features)
    ) {
      fail(
        `the ${name} split's example shape [${String(split.shape)}] does not hold ${data.features} features`,
        { split: name },
      );
    }
    for (let i = 0; i < split.y.length; i++) {
      const label = split.y[i]!;
      if (label < 0 || label >= data.classes) {
        if (targets === 1)
          fail(`${name} row ${i} has label ${label}, outside [0, ${data.classes})`, {
            split: name,
            row: i,
            label,
          });
        const row = Math.floor(i / targets);
        const position = i % targets;
        fail(
          `${name} row ${row} position ${position} has label ${label}, outside [0, ${data.classes})`,
          { split: name, row, position, label },
        );
      }
    }
    for (let i = 0; i < split.x.length; i++) {
      if (!Number.isFinite(split.x[i]!)) {
        const row = Math.floor(i / data.features);
        fail(
          `${name} row ${row} feature ${i % data.features} is ${split.x[i]} (features must be finite)`,
          { split: name, row, feature: i % data.features },
        );
      }
    }
  }
  return data;
}
