// The convolutional model spec grammar (`cnn:`) and JSON model files: what they describe, and one
// clear error naming the wrong part for each malformed input.
import { describe, expect, it } from 'vitest';
import { isGrngError } from '../src/errors.js';
import { parseCnnSpec, parseModelJson } from '../src/nn/modelSpec.js';

const errorOf = (f: () => unknown): Error => {
  try {
    f();
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected an error');
};

describe('cnn: model specs', () => {
  it('the benchmark CNN: conv 32 3×3 same, max pool 2, conv 64 3×3, pool 2, flatten, dense 128, 10 outputs', () => {
    expect(parseCnnSpec('cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10')).toEqual({
      inputShape: [28, 28, 1],
      layers: [
        {
          type: 'conv2d',
          filters: 32,
          kernelSize: [3, 3],
          strides: [1, 1],
          padding: 'same',
          activation: 'relu',
        },
        { type: 'maxPool', poolSize: [2, 2], strides: [2, 2], padding: 'valid' },
        {
          type: 'conv2d',
          filters: 64,
          kernelSize: [3, 3],
          strides: [1, 1],
          padding: 'same',
          activation: 'relu',
        },
        { type: 'maxPool', poolSize: [2, 2], strides: [2, 2], padding: 'valid' },
        { type: 'flatten' },
        { type: 'dense', units: 128, activation: 'relu' },
        { type: 'dense', units: 10, activation: 'identity' },
      ],
    });
  });

  it('strides, valid padding, rectangular kernels, average pooling, another activation, no dense layer', () => {
    expect(parseCnnSpec('cnn:8x6x3-c4k3x2s2v-a2s1-5:tanh')).toEqual({
      inputShape: [8, 6, 3],
      layers: [
        {
          type: 'conv2d',
          filters: 4,
          kernelSize: [3, 2],
          strides: [2, 2],
          padding: 'valid',
          activation: 'tanh',
        },
        { type: 'avgPool', poolSize: [2, 2], strides: [1, 1], padding: 'valid' },
        { type: 'flatten' },
        { type: 'dense', units: 5, activation: 'identity' },
      ],
    });
  });

  for (const [spec, message] of [
    ['cnn:', /needs an input shape/],
    ['cnn:28x28-10', /input shape "28x28" is not HxWxC/],
    ['cnn:28x0x1-10', /zero dimension/],
    ['cnn:28x28x1-c32k3--10', /part 3 "" is empty/],
    ['cnn:28x28x1-c32-10', /part 2 "c32" is not a layer/],
    ['cnn:28x28x1-c0k3-10', /part 2 "c0k3": the number of filters must be a whole number ≥ 1/],
    ['cnn:28x28x1-d128-c32k3-10', /part 3 "c32k3": a convolution after a dense layer/],
    ['cnn:28x28x1-c32k3-p2-d10', /the last part "d10" must be the number of outputs/],
    ['cnn:28x28x1-c32k3-10:sigmoid', /unknown activation "sigmoid"/],
    ['cnn:28x28x1-10:relu:x', /3 ":" separators/],
  ] as const) {
    it(`${spec}: ${String(message)}`, () => {
      const error = errorOf(() => parseCnnSpec(spec));
      expect(isGrngError(error)).toBe(true);
      expect(error.message).toMatch(message);
      expect(error.message).toMatch(/expected cnn:HxWxC/);
    });
  }
});

describe('JSON model files', () => {
  it('sizes as numbers or pairs, defaults left out', () => {
    const text = JSON.stringify({
      inputShape: [28, 28, 1],
      layers: [
        { type: 'conv2d', filters: 8, kernelSize: 5, strides: [2, 1], activation: 'gelu' },
        { type: 'avgPool', poolSize: [2, 3] },
        { type: 'flatten' },
        { type: 'dense', units: 10 },
      ],
    });
    expect(parseModelJson(text, 'm.json')).toEqual({
      inputShape: [28, 28, 1],
      layers: [
        { type: 'conv2d', filters: 8, kernelSize: [5, 5], strides: [2, 1], activation: 'gelu' },
        { type: 'avgPool', poolSize: [2, 3] },
        { type: 'flatten' },
        { type: 'dense', units: 10 },
      ],
    });
  });

  const layers = (...list: unknown[]): string =>
    JSON.stringify({ inputShape: [4, 4, 1], layers: list });
  for (const [name, text, message] of [
    ['not JSON', '{', /invalid model file m.json: not JSON/],
    ['a list', '[]', /expected an object/],
    [
      'an unknown key',
      JSON.stringify({ inputShape: [1], layers: [], extra: 1 }),
      /unknown key "extra"/,
    ],
    [
      'a bad input shape',
      JSON.stringify({ inputShape: [4, 0], layers: [{ type: 'dense', units: 2 }] }),
      /inputShape must be a list of whole numbers/,
    ],
    ['no layers', JSON.stringify({ inputShape: [4] }), /layers must be a non-empty list/],
    [
      'an unknown type',
      layers({ type: 'lstm' }),
      /layer 0 \(lstm\): type must be "dense", "conv2d"/,
    ],
    [
      'a bad kernel',
      layers({ type: 'conv2d', filters: 2, kernelSize: [3] }, { type: 'dense', units: 2 }),
      /layer 0 \(conv2d\): kernelSize must be a whole number ≥ 1 or a pair/,
    ],
    [
      'a bad padding',
      layers({ type: 'maxPool', poolSize: 2, padding: 'full' }, { type: 'dense', units: 2 }),
      /layer 0 \(maxPool\): padding must be "same" or "valid"/,
    ],
    [
      'a stray field',
      layers({ type: 'flatten', units: 3 }, { type: 'dense', units: 2 }),
      /layer 0 \(flatten\): units must be absent/,
    ],
    [
      'a bad activation',
      layers({ type: 'dense', units: 2, activation: 'softplus' }),
      /layer 0 \(dense\): activation must be one of/,
    ],
    ['no dense layer last', layers({ type: 'flatten' }), /the last layer must be dense/],
  ] as const) {
    it(`${name} is one error naming the file and the layer`, () => {
      const error = errorOf(() => parseModelJson(text, 'm.json'));
      expect(isGrngError(error)).toBe(true);
      expect(error.message).toMatch(/^invalid model file m\.json: /);
      expect(error.message).toMatch(message);
    });
  }
});

describe('models built from specs', () => {
  it('the benchmark CNN has PyTorch’s layers, shapes and parameter count, and runs a batch', async () => {
    const { buildModel } = await import('../src/nn/buildModel.js');
    const tf = await import('@tensorflow/tfjs');
    const spec = 'cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10';
    const model = buildModel(parseCnnSpec(spec), { seed: 1, description: spec });
    expect(model.layers.map((l) => [l.name, l.outputShape])).toEqual([
      ['conv0', [28, 28, 32]],
      ['pool0', [14, 14, 32]],
      ['conv1', [14, 14, 64]],
      ['pool1', [7, 7, 64]],
      ['flatten0', [3136]],
      ['dense0', [128]],
      ['dense1', [10]],
    ]);
    // torch: 320 + 18,496 + 401,536 + 1,290
    expect(model.size).toBe(421_642);
    expect(model.signalLayers.map((l) => l.name)).toEqual(['conv0', 'conv1', 'dense0', 'dense1']);
    const logits = tf.tidy(() => model.apply(model.params, tf.zeros([2, 28, 28, 1])).logits.shape);
    expect(logits).toEqual([2, 10]);
    model.dispose();
  });

  it('a layer that cannot take the shape before it is one error naming the layer, and nothing leaks', async () => {
    const { buildModel } = await import('../src/nn/buildModel.js');
    const tf = await import('@tensorflow/tfjs');
    const before = tf.memory().numTensors;
    const spec = { inputShape: [4, 4, 1], layers: [{ type: 'dense' as const, units: 3 }] };
    expect(errorOf(() => buildModel(spec, { description: 'm.json' })).message).toMatch(
      /invalid model m\.json: layer 0 \(dense\) needs flat input, got \[4, 4, 1\] \(put a flatten layer before it\)/,
    );
    const afterDense = {
      inputShape: [4],
      layers: [
        { type: 'maxPool' as const, poolSize: [2, 2] as const },
        { type: 'dense' as const, units: 2 },
      ],
    };
    expect(errorOf(() => buildModel(afterDense)).message).toMatch(
      /layer 0 \(maxPool\) needs image-shaped input/,
    );
    expect(tf.memory().numTensors).toBe(before);
  });

  it('train() takes a cnn: spec and a JSON model file on image-shaped data, and refuses a shape mismatch', async () => {
    const { train } = await import('../src/run/train.js');
    const { syntheticDataset } = await import('../src/data/synthetic.js');
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const flat = syntheticDataset({ features: 16, classes: 3, train: 64, test: 16, seed: 1 });
    const data = {
      ...flat,
      train: { ...flat.train, shape: [4, 4, 1] },
      test: { ...flat.test, shape: [4, 4, 1] },
    };
    const viaSpec = await train({
      dataset: data,
      model: 'cnn:4x4x1-c2k3-p2-3',
      optimizer: 'kfac',
      steps: 3,
      batchSize: 16,
    });
    expect(viaSpec.steps).toBe(3);
    expect(viaSpec.meta.model).toBe('cnn:4x4x1-c2k3-p2-3');
    const file = join(mkdtempSync(join(tmpdir(), 'grng-model-')), 'model.json');
    writeFileSync(
      file,
      JSON.stringify({
        inputShape: [4, 4, 1],
        layers: [
          { type: 'conv2d', filters: 2, kernelSize: 3 },
          { type: 'avgPool', poolSize: 2 },
          { type: 'flatten' },
          { type: 'dense', units: 3 },
        ],
      }),
    );
    const viaFile = await train({
      dataset: data,
      model: file,
      optimizer: 'ring',
      steps: 3,
      batchSize: 16,
    });
    expect(viaFile.steps).toBe(3);
    await expect(train({ dataset: data, model: 'cnn:8x8x1-c2k3-3', steps: 1 })).rejects.toThrow(
      /takes examples of shape \[8, 8, 1\] but dataset synthetic has \[4, 4, 1\]/,
    );
    await expect(train({ dataset: flat, model: 'cnn:4x4x1-c2k3-3', steps: 1 })).rejects.toThrow(
      /--input-shape 4x4x1/,
    );
    await expect(
      train({ dataset: data, model: join(tmpdir(), 'missing-model.json'), steps: 1 }),
    ).rejects.toThrow(/invalid model file .*missing-model\.json: cannot read it \(ENOENT\)/);
  });
});
