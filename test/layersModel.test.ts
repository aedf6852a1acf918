import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lastValueFrom, toArray } from 'rxjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isGrngError } from '../src/errors.js';
import { mapKerasTopology, SUPPORTED_KERAS_LAYERS } from '../src/interop/kerasTopology.js';
import { fromLayersModel, toLayersModel } from '../src/interop/layersModel.js';
import {
  layersModelFiles,
  loadLayersModelFile,
  readLayersModelTopology,
  saveLayersModel,
} from '../src/interop/layersModelFiles.js';
import { buildModel } from '../src/nn/buildModel.js';
import { modelLayout } from '../src/nn/modelLayout.js';
import { parseCnnSpec, parseGptSpec } from '../src/nn/modelSpec.js';
import { mlp, type Sequential } from '../src/nn/sequential.js';
import { prepareRun } from '../src/run/train.js';
import type { Params } from '../src/types.js';
import { useTestBackend } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-layers-'));
beforeAll(async () => {
  await useTestBackend();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Models of every family, with every setting export has to carry (strides, padding, pools). */
const MODELS: Record<string, { make: () => Sequential; input: () => tf.Tensor }> = {
  'mlp (tanh hidden)': {
    make: () =>
      mlp({ inputs: 12, layers: [{ units: 9, activation: 'tanh' }, { units: 3 }], seed: 3 }),
    input: () => tf.randomNormal([6, 12], 0, 1, 'float32', 1),
  },
  'mlp over images (flatten first)': {
    make: () => mlp({ inputs: 16, inputShape: [4, 4, 1], layers: [{ units: 5 }], seed: 4 }),
    input: () => tf.randomNormal([6, 4, 4, 1], 0, 1, 'float32', 2),
  },
  'cnn (same/valid, strides, max and average pools)': {
    make: () => buildModel(parseCnnSpec('cnn:13x11x2-c4k3-p2-c3k2x3s2v-a2s1-d6-4'), { seed: 5 }),
    input: () => tf.randomNormal([5, 13, 11, 2], 0, 1, 'float32', 3),
  },
  'cnn with same-padded pools': {
    make: () =>
      buildModel(
        {
          inputShape: [7, 7, 1],
          layers: [
            { type: 'conv2d', filters: 3, kernelSize: [3, 3], strides: [2, 2], padding: 'same' },
            { type: 'maxPool', poolSize: [2, 2], strides: [2, 2], padding: 'same' },
            { type: 'avgPool', poolSize: [3, 3], strides: [1, 1], padding: 'same' },
            { type: 'flatten' },
            { type: 'dense', units: 3, activation: 'gelu' },
            { type: 'dense', units: 2 },
          ],
        },
        { seed: 6 },
      ),
    input: () => tf.randomNormal([4, 7, 7, 1], 0, 1, 'float32', 4),
  },
  'gpt (custom tfjs layers)': {
    make: () => buildModel(parseGptSpec('gpt:L2-d8-h2-ctx6-v11'), { seed: 7 }),
    input: () => tf.floor(tf.randomUniform([3, 6], 0, 11, 'float32', 5)),
  },
};

function maxDifference(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(tf.reshape(a, b.shape), b))).dataSync()[0]!);
}

function logitsOf(model: Sequential, x: tf.Tensor): tf.Tensor2D {
  return tf.tidy(() => model.apply(model.params as Params, x).logits);
}

describe('grng → LayersModel → grng', () => {
  for (const [name, { make, input }] of Object.entries(MODELS)) {
    it(`${name}: predictions equal to 1e-5, weights bit-identical, no tensor left`, async () => {
      const model = make();
      const x = input();
      const before = tf.memory().numTensors;
      const logits = logitsOf(model, x);
      // In memory, raw logits: tfjs-layers computes grng's function.
      const keras = toLayersModel(model, { output: 'logits' });
      const kerasLogits = keras.predict(x) as tf.Tensor;
      expect(maxDifference(kerasLogits, logits)).toBeLessThan(1e-5);
      keras.dispose();
      // Through files, with the default softmax output.
      const path = join(dir, name.replace(/\W+/g, '-'));
      await saveLayersModel(model, path);
      const served = await tf.loadLayersModel(layersModelFiles(path));
      const probabilities = served.predict(x) as tf.Tensor;
      const grngProbabilities = tf.softmax(logits);
      expect(maxDifference(probabilities, grngProbabilities)).toBeLessThan(1e-5);
      served.dispose();
      const back = await loadLayersModelFile(path);
      expect(Object.keys(back.params)).toEqual(Object.keys(model.params));
      for (const key of Object.keys(model.params))
        expect(back.params[key]!.dataSync(), key).toEqual(model.params[key]!.dataSync());
      expect(modelLayout(back)).toEqual(modelLayout(model));
      const backLogits = logitsOf(back, x);
      expect(maxDifference(backLogits, logits)).toBe(0);
      tf.dispose([kerasLogits, probabilities, grngProbabilities, logits, backLogits]);
      back.dispose();
      expect(tf.memory().numTensors).toBe(before);
      model.dispose();
      x.dispose();
    });
  }

  it('records what it exported in model.json (grng model, output, labels per example)', async () => {
    const model = buildModel(parseGptSpec('gpt:L1-d8-h2-ctx4-v9'), {
      description: 'gpt:L1-d8-h2-ctx4-v9',
    });
    await saveLayersModel(model, join(dir, 'meta'), { output: 'logits' });
    model.dispose();
    const json = JSON.parse(readFileSync(join(dir, 'meta', 'model.json'), 'utf8'));
    expect(json.format).toBe('layers-model');
    expect(json.weightsManifest[0].paths).toEqual(['weights.bin']);
    expect(json.userDefinedMetadata.grng).toMatchObject({
      model: 'gpt:L1-d8-h2-ctx4-v9',
      output: 'logits',
      labelsPerExample: 4,
    });
    expect(readLayersModelTopology(join(dir, 'meta')).exported?.model).toBe('gpt:L1-d8-h2-ctx4-v9');
  });
});

describe('tf.sequential() → grng → LayersModel', () => {
  function kerasCnn(): tf.Sequential {
    return tf.sequential({
      layers: [
        tf.layers.inputLayer({ inputShape: [8, 8, 1] }),
        tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same' }),
        tf.layers.activation({ activation: 'relu' }),
        tf.layers.averagePooling2d({ poolSize: 2 }),
        tf.layers.conv2d({ filters: 3, kernelSize: [2, 3], strides: 2, activation: 'tanh' }),
        tf.layers.flatten(),
        tf.layers.dropout({ rate: 0.5 }),
        tf.layers.dense({ units: 7, activation: 'gelu' }),
        tf.layers.dense({ units: 3, activation: 'softmax' }),
      ],
    });
  }

  it('maps every supported layer, keeps the weights, and predicts the same', async () => {
    const keras = kerasCnn();
    const x = tf.randomNormal([5, 8, 8, 1], 0, 1, 'float32', 9);
    const kerasProbabilities = keras.predict(x) as tf.Tensor;
    const model = fromLayersModel(keras, { description: 'keras cnn' });
    expect(model.layers.map((l) => l.kind)).toEqual([
      'conv2d',
      'avgPool',
      'conv2d',
      'flatten',
      'dense',
      'dense',
    ]);
    const grngProbabilities = tf.softmax(logitsOf(model, x));
    expect(maxDifference(grngProbabilities, kerasProbabilities)).toBeLessThan(1e-5);
    // Back to tfjs: the same probabilities again (the Dropout is gone; at inference it did nothing).
    await saveLayersModel(model, join(dir, 'keras-cnn'));
    const again = await tf.loadLayersModel(layersModelFiles(join(dir, 'keras-cnn')));
    const againProbabilities = again.predict(x) as tf.Tensor;
    expect(maxDifference(againProbabilities, kerasProbabilities)).toBeLessThan(1e-5);
    tf.dispose([x, kerasProbabilities, grngProbabilities, againProbabilities]);
    keras.dispose();
    again.dispose();
    model.dispose();
  });

  it('notes the Dropout it leaves out and the softmax it leaves to the loss', () => {
    const keras = kerasCnn();
    const mapping = mapKerasTopology(keras.toJSON(null, false), 'cnn');
    keras.dispose();
    expect(mapping.dropped).toHaveLength(1);
    expect(mapping.dropped[0]).toMatch(/Dropout.*rate 0\.5/);
    expect(mapping.softmaxOutput).toBe(true);
    expect(mapping.spec.layers.at(-1)).toEqual({
      type: 'dense',
      units: 3,
      activation: 'identity',
    });
  });

  it('a model saved by tfjs-layers itself trains in grng (RING) and its loss goes down, no leak', async () => {
    const keras = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [20], units: 16, activation: 'relu' }),
        tf.layers.dense({ units: 4, activation: 'softmax' }),
      ],
    });
    const path = join(dir, 'tfjs-saved');
    await keras.save(layersModelFiles(path));
    const kernel = keras.layers[0]!.getWeights()[0]!.dataSync().slice();
    keras.dispose();
    const before = tf.memory().numTensors;
    const run = await prepareRun({
      model: path,
      dataset: 'synthetic',
      optimizer: 'ring',
      steps: 40,
      batchSize: 32,
    });
    // It starts from the file's weights, not from grng's initialiser.
    expect(run.model.params['dense0/kernel']!.dataSync()).toEqual(kernel);
    const rows = await lastValueFrom(run.rows.pipe(toArray()));
    const first = rows.slice(0, 5).reduce((s, r) => s + r.loss, 0) / 5;
    const last = rows.slice(-5).reduce((s, r) => s + r.loss, 0) / 5;
    expect(last).toBeLessThan(first * 0.8);
    run.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('what cannot be mapped is a one-line error naming the layer and what is supported', () => {
  const sequential = (layers: unknown[]) => ({
    class_name: 'Sequential',
    config: { name: 'm', layers },
  });
  const layer = (cls: string, config: Record<string, unknown>) => ({
    class_name: cls,
    config: { name: `${cls.toLowerCase()}_1`, ...config },
  });
  const input = { batch_input_shape: [null, 8, 8, 1] };
  const CASES: Array<[string, unknown, RegExp]> = [
    [
      'an unsupported layer',
      sequential([layer('BatchNormalization', input), layer('Dense', { units: 2 })]),
      /layer 0 batchnormalization_1 \(BatchNormalization\) is not supported; grng maps InputLayer, Dense, Conv2D/,
    ],
    [
      'a functional model',
      { class_name: 'Model', config: { layers: [] } },
      /is a Model model; only Sequential models/,
    ],
    [
      'dilated convolution',
      sequential([
        layer('Conv2D', { ...input, filters: 2, kernel_size: 3, dilation_rate: [2, 2] }),
        layer('Flatten', {}),
        layer('Dense', { units: 2 }),
      ]),
      /conv2d_1 \(Conv2D\) has dilation_rate \[2,2\]; grng supports 1/,
    ],
    [
      'channels-first data',
      sequential([
        layer('Conv2D', { ...input, filters: 2, kernel_size: 3, data_format: 'channels_first' }),
        layer('Dense', { units: 2 }),
      ]),
      /has data_format "channels_first"; grng supports channels_last/,
    ],
    [
      'a layer without bias',
      sequential([layer('Dense', { batch_input_shape: [null, 4], units: 2, use_bias: false })]),
      /has use_bias false; grng supports layers with a bias/,
    ],
    [
      'a regularizer',
      sequential([
        layer('Dense', {
          batch_input_shape: [null, 4],
          units: 2,
          kernel_regularizer: { class_name: 'L1L2', config: {} },
        }),
      ]),
      /has a kernel_regularizer; grng trains without regularizers/,
    ],
    [
      'a sigmoid',
      sequential([
        layer('Dense', { batch_input_shape: [null, 4], units: 2, activation: 'sigmoid' }),
      ]),
      /has activation "sigmoid"; grng supports linear, relu, tanh, gelu, and softmax on the last layer/,
    ],
    [
      'a hidden softmax',
      sequential([
        layer('Dense', { batch_input_shape: [null, 4], units: 3, activation: 'softmax' }),
        layer('Dense', { units: 2 }),
      ]),
      /has a softmax before the last layer/,
    ],
    [
      'a frozen layer',
      sequential([layer('Dense', { batch_input_shape: [null, 4], units: 2, trainable: false })]),
      /is frozen \(trainable: false\)/,
    ],
    [
      "a layer norm with Keras's epsilon",
      sequential([
        layer('Dense', { batch_input_shape: [null, 4], units: 3 }),
        layer('LayerNormalization', { axis: -1, epsilon: 0.001 }),
        layer('Dense', { units: 2 }),
      ]),
      /has epsilon 0\.001; grng supports 0\.00001/,
    ],
    ['no input shape', sequential([layer('Dense', { units: 2 })]), /declares no input shape/],
    [
      'an unknown input size',
      sequential([layer('Dense', { batch_input_shape: [null, null], units: 2 })]),
      /unknown sizes/,
    ],
    [
      'no Dense at the end',
      sequential([layer('Conv2D', { ...input, filters: 2, kernel_size: 3 })]),
      /must end in a Dense layer/,
    ],
  ];
  for (const [what, topology, message] of CASES) {
    it(what, () => {
      let error: unknown;
      try {
        mapKerasTopology(topology, 'model.json');
      } catch (caught) {
        error = caught;
      }
      expect(isGrngError(error), String(error)).toBe(true);
      const text = (error as Error).message;
      expect(text).toMatch(message);
      expect(text.startsWith('model model.json: ')).toBe(true);
      expect(text).not.toContain('\n');
    });
  }

  it('lists what it supports', () => {
    expect(SUPPORTED_KERAS_LAYERS).toEqual(
      expect.arrayContaining(['Dense', 'Conv2D', 'MaxPooling2D', 'AveragePooling2D', 'Flatten']),
    );
  });

  it('a Dense over images without Flatten is named by its Keras layer', () => {
    const keras = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [6, 6, 1], filters: 2, kernelSize: 3, name: 'features' }),
        tf.layers.dense({ units: 2, name: 'head' }),
      ],
    });
    expect(() => fromLayersModel(keras)).toThrow(/layer head \(Dense\): needs flat input/);
    keras.dispose();
  });

  it('mismatched weight shapes and damaged files name the file', async () => {
    const model = mlp({ inputs: 6, layers: [{ units: 4 }, { units: 2 }] });
    const path = join(dir, 'damaged');
    await saveLayersModel(model, path);
    model.dispose();
    const jsonPath = join(path, 'model.json');
    const good = readFileSync(jsonPath, 'utf8');
    const json = JSON.parse(good);
    // A manifest that disagrees with the topology's shapes.
    json.weightsManifest[0].weights[0].shape = [4, 6];
    writeFileSync(jsonPath, JSON.stringify(json));
    await expect(loadLayersModelFile(path)).rejects.toThrow(
      `LayersModel file ${jsonPath} cannot be loaded by tfjs (Shape mismatch: [6,4] vs. [4,6])`,
    );
    // A truncated weights file.
    writeFileSync(jsonPath, good);
    const weights = readFileSync(join(path, 'weights.bin'));
    writeFileSync(join(path, 'weights.bin'), weights.subarray(0, 10));
    await expect(loadLayersModelFile(path)).rejects.toThrow(
      `LayersModel file ${jsonPath} lists 152 bytes of weights, but its weight files hold 10`,
    );
    // Not JSON, no topology, missing.
    writeFileSync(jsonPath, '{"modelTopology": ');
    expect(() => readLayersModelTopology(path)).toThrow(`LayersModel file ${jsonPath} is not JSON`);
    writeFileSync(jsonPath, '{"weightsManifest": []}');
    expect(() => readLayersModelTopology(path)).toThrow(/has no modelTopology/);
    expect(() => readLayersModelTopology(join(dir, 'nowhere'))).toThrow(/does not exist/);
  });
});
