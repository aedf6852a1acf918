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
