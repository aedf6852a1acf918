import { describe, expect, it } from 'vitest';
import { loadMnist } from '../src/data/mnist.js';
import { syntheticDataset } from '../src/data/synthetic.js';
import { validateDataset } from '../src/data/dataset.js';

describe('datasets', () => {
  it('MNIST has the documented split: last ⌈20%⌉ of each digit is test, 7,996 / 2,004', async () => {
    const data = await loadMnist();
    expect(data.train.n).toBe(7996);
    expect(data.test.n).toBe(2004);
    expect(data.features).toBe(784);
    const counts = (y: Int32Array) =>
      Array.from({ length: 10 }, (_, d) => y.filter((v) => v === d).length);
    const total = counts(data.train.y).map((c, d) => c + counts(data.test.y)[d]!);
    expect(total).toEqual([1001, 1127, 991, 1032, 980, 863, 1014, 1070, 944, 978]);
    expect(counts(data.test.y)).toEqual(total.map((n) => Math.ceil(n * 0.2)));
    expect(data.train.x.every((v) => v >= 0 && v <= 1)).toBe(true);
    // Deterministic: the same rows every time.
    const again = await loadMnist();
    expect(again.test.x.subarray(0, 2000)).toEqual(data.test.x.subarray(0, 2000));
  });

  it('synthetic teacher–student data is deterministic per seed and uses every class', () => {
    const a = syntheticDataset({ seed: 4 });
    const b = syntheticDataset({ seed: 4 });
    const c = syntheticDataset({ seed: 5 });
    expect(a.train.y).toEqual(b.train.y);
    expect(a.train.x).toEqual(b.train.x);
    expect(a.train.x).not.toEqual(c.train.x);
    const classes = new Set(a.train.y);
    expect(classes.size).toBe(4);
  });

  it('rejects bad data with the split, row and problem', () => {
    const base = syntheticDataset({ features: 2, classes: 2, train: 4, test: 2 });
    const badLabel = { ...base, train: { ...base.train, y: Int32Array.from([0, 1, 2, 0]) } };
    expect(() => validateDataset(badLabel)).toThrow(/train row 2 has label 2, outside \[0, 2\)/);
    const nan = { ...base, test: { ...base.test, x: Float32Array.from([0, 1, NaN, 0]) } };
    expect(() => validateDataset(nan)).toThrow(/test row 1 feature 0 is NaN/);
    const short = { ...base, train: { ...base.train, x: new Float32Array(7) } };
    expect(() => validateDataset(short)).toThrow(/has 7 feature values, expected 4×2 = 8/);
    const empty = { ...base, test: { x: new Float32Array(0), y: new Int32Array(0), n: 0 } };
    expect(() => validateDataset(empty)).toThrow(/test split is empty/);
  });
});
