// Small CNNs for the conv tests: every new layer kind, built with new Sequential(...).
import { conv2dLayer } from '../src/nn/conv2d.js';
import { denseLayer } from '../src/nn/dense.js';
import { flattenLayer } from '../src/nn/flatten.js';
import { initConv2d, initDense } from '../src/nn/init.js';
import { poolLayer } from '../src/nn/pool.js';
import { Sequential } from '../src/nn/sequential.js';
import type { Params } from '../src/types.js';

/** conv(tanh) → maxPool → conv(tanh, stride 2) → avgPool → flatten → dense: every new op. */
export function smallCnn(seed: number): Sequential {
  const conv0 = conv2dLayer({
    name: 'conv0',
    index: 0,
    inputShape: [6, 6, 2],
    filters: 3,
    kernelSize: [3, 2],
    strides: [1, 1],
    padding: 'same',
    activation: 'tanh',
  });
  const pool0 = poolLayer({
    name: 'pool0',
    kind: 'maxPool',
    inputShape: conv0.outputShape,
    poolSize: [2, 2],
    strides: [2, 2],
    padding: 'valid',
  });
  const conv1 = conv2dLayer({
    name: 'conv1',
    index: 1,
    inputShape: pool0.outputShape,
    filters: 4,
    kernelSize: [2, 2],
    strides: [2, 2],
    padding: 'same',
    activation: 'tanh',
  });
  const pool1 = poolLayer({
    name: 'pool1',
    kind: 'avgPool',
    inputShape: conv1.outputShape,
    poolSize: [2, 2],
    strides: [1, 1],
    padding: 'same',
  });
  const flatten = flattenLayer('flatten', pool1.outputShape);
  const dense = denseLayer({
    name: 'dense0',
    index: 2,
    inputs: flatten.outputShape[0]!,
    units: 3,
    activation: 'identity',
  });
  const initial: Params = {};
  for (const conv of [conv0, conv1]) {
    const { kernel, bias } = initConv2d(
      conv.kernelSize[0],
      conv.kernelSize[1],
      conv.inputShape[2]!,
      conv.filters,
      'tanh',
      'torch',
      seed + conv.index,
    );
    initial[conv.kernel] = kernel;
    initial[conv.bias] = bias;
  }
  const { kernel, bias } = initDense(dense.inputs, dense.units, 'identity', 'torch', seed + 7);
  initial[dense.kernel] = kernel;
  initial[dense.bias] = bias;
  return new Sequential([conv0, pool0, conv1, pool1, flatten, dense], initial, 'small cnn');
}
