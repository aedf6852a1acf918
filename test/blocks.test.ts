// The layer / curvature-block seam: the dense block through its interface, a layer kind without a
// block, and batches shaped [m, ...example shape] (an MLP with a flatten layer) giving exactly the
// trajectory of flat rows for every optimizer.
import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, toArray } from 'rxjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { curvatureBlocks, foldStatistics, precondition } from '../src/curvature/blocks/index.js';
import { batchFactors, denseBlock, foldFactors } from '../src/curvature/blocks/dense.js';
import { syntheticDataset } from '../src/data/synthetic.js';
import { isGrngError } from '../src/errors.js';
import type { Layer } from '../src/nn/layer.js';
import { mlp, Sequential } from '../src/nn/sequential.js';
import { fisherScan } from '../src/operators/fisherScan.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { createOptimizer, OPTIMIZERS } from '../src/optim/registry.js';
import { batches } from '../src/streams/batches.js';
import type { Params } from '../src/types.js';
import { useTestBackend } from './helpers.js';

beforeAll(async () => {
  await useTestBackend();
});

const errorOf = (f: () => unknown): Error => {
  try {
    f();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected an error');
};

describe('the dense block through the KroneckerBlock interface', () => {
  it('knows its layer, keys and factor sizes; toMatrix stacks [∇W; ∇bᵀ] and fromMatrix takes it apart exactly', () => {
    const model = mlp({ inputs: 3, layers: [{ units: 4 }, { units: 2 }], seed: 1 });
    const blocks = curvatureBlocks(model);
    expect(blocks.map((b) => [b.layer, b.kind, b.params, b.aSize, b.gSize])).toEqual([
      ['dense0', 'dense', ['dense0/kernel', 'dense0/bias'], 4, 4],
      ['dense1', 'dense', ['dense1/kernel', 'dense1/bias'], 5, 2],
    ]);
    const before = tf.memory().numTensors;
    tf.tidy(() => {
      const tree = model.params as Params;
      const matrix = blocks[1]!.toMatrix(tree);
      expect(matrix.shape).toEqual([5, 2]);
      expect(matrix.arraySync()).toEqual([
        ...(tree['dense1/kernel']!.arraySync() as number[][]),
        tree['dense1/bias']!.arraySync() as number[],
      ]);
      const back = blocks[1]!.fromMatrix(matrix);
      expect(Object.keys(back)).toEqual(['dense1/kernel', 'dense1/bias']);
      expect(back['dense1/kernel']!.arraySync()).toEqual(tree['dense1/kernel']!.arraySync());
      expect(back['dense1/bias']!.arraySync()).toEqual(tree['dense1/bias']!.arraySync());
    });
    expect(tf.memory().numTensors).toBe(before);
    model.dispose();
  });

  it('statistics through the block equal the dense factors, and what the block made is disposed', () => {
    const model = mlp({ inputs: 3, layers: [{ units: 2 }], seed: 1 });
    const block = denseBlock(model.layers[0]!);
    const a = tf.tensor2d([
      [1, 2, 3],
      [-1, 0.5, 2],
      [0, 1, -2],
      [3, 1, 1],
    ]);
    const delta = tf.tensor2d([
      [0.1, -0.2],
      [0.3, 0.4],
      [-0.5, 0.6],
      [0.7, 0.8],
    ]);
    const before = tf.memory().numTensors;
    const viaBlock = foldStatistics(block, undefined, a, delta, 0.9);
    const direct = foldFactors(undefined, a, delta, 0.9);
    const fresh = batchFactors(a, delta);
    expect(tf.memory().numTensors).toBe(before + 6);
    for (const [x, y] of [
      [viaBlock.a.sum, direct.a.sum],
      [viaBlock.g.sum, direct.g.sum],
    ] as const)
      expect(x.arraySync()).toEqual(y.arraySync());
    // sum/weight of a first fold is the batch factor itself.
    expect(
      tf.max(tf.abs(tf.sub(tf.div(viaBlock.a.sum, viaBlock.a.weight), fresh.a))).arraySync(),
    ).toBeLessThan(1e-6);
    tf.dispose([
      viaBlock.a.sum,
      viaBlock.g.sum,
      direct.a.sum,
      direct.g.sum,
      fresh.a,
      fresh.g,
      a,
      delta,
    ]);
    model.dispose();
  });

  it('precondition applies A⁻¹ V G⁻¹ per block and leaves parameters without a block alone', () => {
    const model = mlp({ inputs: 2, layers: [{ units: 2 }], seed: 1 });
    const blocks = curvatureBlocks(model);
    tf.tidy(() => {
      const aInverse = tf.tensor2d([
        [2, 0, 0],
        [0, 3, 0],
        [0, 0, 5],
      ]);
      const gInverse = tf.tensor2d([
        [1, 1],
        [0, 2],
      ]);
      const v: Params = {
        'dense0/kernel': tf.tensor2d([
          [1, 2],
          [3, 4],
        ]),
        'dense0/bias': tf.tensor1d([5, 6]),
        other: tf.tensor1d([7]),
      };
      const u = precondition(blocks, [{ aInverse, gInverse }], v);
      // [[1,2],[3,4],[5,6]] scaled by rows (2,3,5), then times [[1,1],[0,2]].
      expect(u['dense0/kernel']!.arraySync()).toEqual([
        [2, 10],
        [9, 33],
      ]);
      expect(u['dense0/bias']!.arraySync()).toEqual([25, 85]);
      expect(u.other).toBe(v.other);
      expect(errorOf(() => precondition(blocks, [], v)).message).toMatch(
        /no factors for layer dense0/,
      );
    });
    model.dispose();
  });
});

describe('a layer kind without a curvature block', () => {
  // A stand-in for a layer with a signal point that no block covers yet.
  const strange: Layer = {
    kind: 'strange',
    name: 'strange0',
    inputShape: [2],
    outputShape: [2],
    params: [],
    signalShape: [2],
    apply: (_p, x) => x,
  };

  it('is a clear error naming the layer, for the K-FAC family and R-Kalman alike, before any step', () => {
    const model = new Sequential([strange], {}, 'strange');
    for (const name of ['kfac', 'ring', 'reng', 'rkalman']) {
      const error = errorOf(() => createOptimizer(name, model));
      expect(isGrngError(error)).toBe(true);
      expect(error.message).toMatch(/layer strange0 \(strange\) has no curvature block/);
    }
    expect(
      errorOf(() => fisherScan(model, { lambda: 1e-3, rho: 0, norm: 'mean' })).message,
    ).toMatch(/strange0/);
    model.dispose();
  });

  it('a model whose layers do not fit together names the layer', () => {
    const dense = mlp({ inputs: 3, layers: [{ units: 2 }], seed: 1 });
    const error = errorOf(() => new Sequential([strange, dense.layers[0]!], {}, 'bad'));
    expect(error.message).toMatch(/layer dense0 takes \[3\] but the layer before it gives \[2\]/);
    dense.dispose();
  });
});

describe('batches shaped [m, ...example shape]', () => {
  const flat = syntheticDataset({ features: 8, classes: 3, train: 96, test: 32, seed: 4 });
  const shaped = {
    ...flat,
    train: { ...flat.train, shape: [2, 4] },
    test: { ...flat.test, shape: [2, 4] },
  };

  async function lossesOf(
    name: string,
    data: typeof flat,
    inputShape?: number[],
  ): Promise<number[]> {
    const model = mlp({
      inputs: 8,
      ...(inputShape ? { inputShape } : {}),
      layers: [{ units: 6, activation: 'tanh' }, { units: 3 }],
      seed: 2,
    });
    const optimizer = createOptimizer(name, model, { seed: 5 }, { lenient: true });
    const rows = await lastValueFrom(
      batches(data.train, { batchSize: 16, epochs: 2, steps: 8, seed: 3 }).pipe(
        forwardBackward(model, { signals: optimizer.needsSignals }),
        optimizer.curvature
          ? fisherScan(model, optimizer.curvature.damping, {
              ...optimizer.curvature.options,
              inverseEvery: 3,
            })
          : (s) => s,
        update(model, optimizer.transform),
        metrics(),
        toArray(),
      ),
    );
    model.dispose();
    return rows.map((r) => r.loss);
  }

  for (const name of OPTIMIZERS) {
    it(`${name}: an MLP with a flatten layer on [m, 2, 4] batches follows the flat trajectory exactly`, async () => {
      const before = tf.memory().numTensors;
      const expected = await lossesOf(name, flat);
      const got = await lossesOf(name, shaped, [2, 4]);
      expect(got).toHaveLength(8);
      expect(got).toEqual(expected);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('a batch of the wrong shape names both shapes', async () => {
    const model = mlp({ inputs: 8, inputShape: [4, 2], layers: [{ units: 3 }], seed: 1 });
    const error = await lastValueFrom(
      batches(shaped.train, { batchSize: 16, steps: 1 }).pipe(forwardBackward(model)),
    )
      .then(() => undefined)
      .catch((e: unknown) => e as Error);
    expect(error?.message).toMatch(
      /batch has examples of shape \[2, 4\] but the model mlp:8-3 expects \[4, 2\]/,
    );
    model.dispose();
  });
});

describe('parameter groups by default: parameters without a curvature block go to AdamW', () => {
  // A learned per-feature gain (as a norm's scale): parameters, but no signal point and no block.
  const gainLayer = (width: number): Layer => ({
    kind: 'gain',
    name: 'gain0',
    inputShape: [width],
    outputShape: [width],
    params: ['gain0/scale'],
    apply: (params, x) => tf.mul(x, params['gain0/scale']!),
  });
  const data = syntheticDataset({ features: 6, classes: 3, train: 128, test: 32, seed: 8 });

  function modelWithGain(): Sequential {
    const dense = mlp({
      inputs: 6,
      layers: [{ units: 5, activation: 'tanh' }, { units: 3 }],
      seed: 2,
    });
    const initial: Params = Object.fromEntries(
      Object.entries(dense.params).map(([k, v]) => [k, tf.clone(v)]),
    );
    initial['gain0/scale'] = tf.ones([5]);
    const model = new Sequential(
      [dense.layers[0]!, gainLayer(5), dense.layers[1]!],
      initial,
      'dense-gain-dense',
    );
    dense.dispose();
    return model;
  }

  for (const name of ['kfac', 'ring', 'reng', 'rkalman']) {
    it(`${name}: the blocks' parameters in its group, the gain in an adamw group; it trains and leaks nothing`, async () => {
      const model = modelWithGain();
      const before = tf.memory().numTensors;
      const optimizer = createOptimizer(name, model, { seed: 1 }, { lenient: true });
      expect(optimizer.groups).toEqual({
        [name]: ['dense0/kernel', 'dense0/bias', 'dense1/kernel', 'dense1/bias'],
        adamw: ['gain0/scale'],
      });
      const gainBefore = Array.from(await model.params['gain0/scale']!.data());
      const rows = await lastValueFrom(
        batches(data.train, { batchSize: 32, epochs: 3, steps: 12, seed: 1 }).pipe(
          forwardBackward(model, { signals: true }),
          optimizer.curvature
            ? fisherScan(model, optimizer.curvature.damping, optimizer.curvature.options)
            : (s) => s,
          update(model, optimizer.transform),
          metrics(),
          toArray(),
        ),
      );
      expect(rows).toHaveLength(12);
      for (const row of rows) expect(Number.isFinite(row.loss)).toBe(true);
      // The optimizer's own learning rate stays the row's; AdamW's is reported under its group.
      expect(rows[0]!.learningRate).toBe(optimizer.options.learningRate);
      expect(rows[0]!.diagnostics['adamw/learningRate']).toBeCloseTo(1e-3, 9);
      expect(Array.from(await model.params['gain0/scale']!.data())).not.toEqual(gainBefore);
      expect(tf.memory().numTensors).toBe(before);
      model.dispose();
    });
  }

  it('the K-FAC family given a parameter without a block, ungrouped, says to use partition()', () => {
    const model = modelWithGain();
    const transform = createOptimizer(
      'ring',
      mlp({ inputs: 6, layers: [{ units: 3 }], seed: 1 }),
    ).transform;
    const error = errorOf(() => transform.init(model.params as Params));
    expect(error.message).toMatch(
      /dense0\/kernel, dense0\/bias, dense1\/kernel, dense1\/bias, gain0\/scale have none|have none: give them another optimizer with partition\(\)/,
    );
    model.dispose();
  });
});
