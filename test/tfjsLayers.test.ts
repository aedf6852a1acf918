// Exporting a grng GPT as a TensorFlow.js LayersModel (src/interop/tfjsLayers.ts): the
// tf.sequential() twin of a `gpt:` model, loaded with grng's parameters, predicts grng's logits;
// it survives a save and a tf.loadLayersModel round trip bit for bit; predicting leaks nothing.
import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  GrngEmbedding,
  GrngTransformerBlock,
  registerGrngLayers,
} from '../src/interop/tfjsLayers.js';
import { buildModel } from '../src/nn/buildModel.js';
import { LAYER_NORM_EPSILON } from '../src/nn/layerNorm.js';
import { GRNG_LAYER_NORM_EPSILON } from '../src/interop/tfjsLayers.js';
import { parseGptSpec } from '../src/nn/modelSpec.js';
import type { Sequential } from '../src/nn/sequential.js';
import { useTestBackend } from './helpers.js';

const SPEC = 'gpt:L2-d16-h2-ctx8-v20';
const BLOCKS = 2;
const WIDTH = 16;
const HEADS = 2;
const POSITIONS = 8;
const VOCABULARY = 20;
const BATCH = 4;

let backend = '';
let grng: Sequential;
let exported: tf.Sequential;
let tokens: tf.Tensor2D;
let tensorsAtStart = 0;

/** The tf.sequential() a `gpt:` model corresponds to, with freshly initialised weights. */
function twin(): tf.Sequential {
  const model = tf.sequential();
  model.add(
    new GrngEmbedding({
      vocabulary: VOCABULARY,
      positions: POSITIONS,
      width: WIDTH,
      inputShape: [POSITIONS],
    }),
  );
  for (let i = 0; i < BLOCKS; i++)
    model.add(
      new GrngTransformerBlock({
        positions: POSITIONS,
        width: WIDTH,
        heads: HEADS,
        hidden: 4 * WIDTH,
      }),
    );
  model.add(tf.layers.layerNormalization({ axis: -1, epsilon: LAYER_NORM_EPSILON }));
  model.add(tf.layers.dense({ units: VOCABULARY }));
  return model;
}

function maxAbsDifference(a: tf.Tensor, b: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);
}

beforeAll(async () => {
  backend = await useTestBackend();
  tensorsAtStart = tf.memory().numTensors;
  // Importing the module registered the classes already; registering again must be harmless.
  registerGrngLayers();
  grng = buildModel(parseGptSpec(SPEC), { seed: 1 });
  // Trained-looking weights: grng starts layer-norm scales at ones and shifts at zeros, which
  // would hide a swapped gamma and beta or a norm that ignored them.
  const keys = grng.layers.flatMap((layer) => layer.params);
  keys.forEach((key, i) => {
    const p = grng.params[key]!;
    tf.tidy(() => p.assign(tf.add(p, tf.randomUniform(p.shape, -0.3, 0.3, 'float32', 7 + i))));
  });
  exported = twin();
  exported.setWeights(keys.map((key) => grng.params[key]!));
  tokens = tf.tidy(() =>
    tf.floor(tf.randomUniform([BATCH, POSITIONS], 0, VOCABULARY, 'float32', 3)),
  ) as tf.Tensor2D;
});

describe('a gpt: model exported as a tfjs-layers model', () => {
  it("uses grng's layer-norm epsilon, and imports nothing but tfjs (a browser takes it alone)", () => {
    expect(GRNG_LAYER_NORM_EPSILON).toBe(LAYER_NORM_EPSILON);
    const source = readFileSync(new URL('../src/interop/tfjsLayers.ts', import.meta.url), 'utf8');
    expect([...source.matchAll(/^import .* from '([^']+)';$/gm)].map((m) => m[1])).toEqual([
      '@tensorflow/tfjs',
    ]);
  });

  it('has grng weight order and readable names', () => {
    const names = exported.layers.map((layer) =>
      layer.weights.map((w) => w.originalName.slice(layer.name.length + 1)),
    );
    expect(names[0]).toEqual(['tokens', 'positions']);
    expect(names[1]).toEqual([
      'ln1/gamma',
      'ln1/beta',
      'q/kernel',
      'q/bias',
      'k/kernel',
      'k/bias',
      'v/kernel',
      'v/bias',
      'o/kernel',
      'o/bias',
      'ln2/gamma',
      'ln2/beta',
      'fc1/kernel',
      'fc1/bias',
      'fc2/kernel',
      'fc2/bias',
    ]);
    expect(exported.layers.length).toBe(grng.layers.length);
    exported.layers.forEach((layer, l) =>
      layer.weights.forEach((w, i) =>
        expect(w.shape).toEqual(grng.params[grng.layers[l]!.params[i]!]!.shape),
      ),
    );
  });

  it("predicts grng's logits to 1e-5, from float32 and int32 ids", () => {
    const predicted = exported.predict(tokens) as tf.Tensor;
    const fromInts = tf.tidy(() => exported.predict(tf.cast(tokens, 'int32')) as tf.Tensor);
    const logits = tf.tidy(() =>
      tf.reshape(grng.apply(grng.params, tokens).logits, [BATCH, POSITIONS, VOCABULARY]),
    );
    expect(predicted.shape).toEqual([BATCH, POSITIONS, VOCABULARY]);
    const difference = maxAbsDifference(predicted, logits);
    console.log(`${backend}: max |tfjs-layers − grng| = ${difference.toExponential(2)}`);
    expect(difference).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDifference(fromInts, predicted)).toBe(0);
    // The logits are not trivially equal (e.g. all zero): they spread over classes.
    expect(tf.tidy(() => tf.moments(logits).variance.dataSync()[0]!)).toBeGreaterThan(1e-3);
    tf.dispose([predicted, fromInts, logits]);
  });

  it("matches grng layer by layer (the built-in norm's biased variance, dense per position)", () => {
    const ids = tokens;
    const sequence = tf.randomNormal([BATCH, POSITIONS, WIDTH], 0.5, 2, 'float32', 11);
    const differences = exported.layers.map((layer, l) =>
      tf.tidy(() => {
        const input = l === 0 ? ids : sequence;
        const ours = layer.apply(input) as tf.Tensor;
        return maxAbsDifference(ours, grng.layers[l]!.apply(grng.params, input));
      }),
    );
    console.log(
      `${backend}: per layer ${exported.layers.map((layer, l) => `${layer.getClassName()} ${differences[l]!.toExponential(2)}`).join(', ')}`,
    );
    for (const difference of differences) expect(difference).toBeLessThanOrEqual(1e-5);
    sequence.dispose();
  });

  it('saves and reloads through tf.loadLayersModel with identical weights and predictions', async () => {
    let saved: tf.io.ModelArtifacts | undefined;
    await exported.save(
      tf.io.withSaveHandler(async (artifacts) => {
        saved = artifacts;
        return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
      }),
    );
    const topology = JSON.stringify(saved!.modelTopology);
    expect(topology).toContain('GrngEmbedding');
    expect(topology).toContain('GrngTransformerBlock');
    const reloaded = await tf.loadLayersModel(tf.io.fromMemory(saved!));
    const before = exported.getWeights();
    const after = reloaded.getWeights();
    expect(after.length).toBe(before.length);
    for (let i = 0; i < before.length; i++) {
      expect(after[i]!.shape).toEqual(before[i]!.shape);
      expect(Array.from(after[i]!.dataSync())).toEqual(Array.from(before[i]!.dataSync()));
    }
    const [original, roundTripped] = [exported, reloaded].map(
      (model) => model.predict(tokens) as tf.Tensor,
    );
    expect(Array.from(roundTripped!.dataSync())).toEqual(Array.from(original!.dataSync()));
    tf.dispose([original!, roundTripped!]);
    reloaded.dispose();
  });

  it('leaves no tensor behind after a predict', () => {
    // The first call may set up lasting state (kernels, caches); count from the second.
    tf.dispose(exported.predict(tokens) as tf.Tensor);
    const count = tf.memory().numTensors;
    tf.dispose(exported.predict(tokens) as tf.Tensor);
    expect(tf.memory().numTensors).toBe(count);
  });

  it('frees every tensor once both models and the input are disposed', () => {
    exported.dispose();
    grng.dispose();
    tokens.dispose();
    expect(tf.memory().numTensors).toBe(tensorsAtStart);
  });
});
