import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { tap } from 'rxjs';
import { afterAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, saveCheckpoint, encodeTree, decodeTree } from '../src/run/checkpoint.js';
import { isGrngError } from '../src/errors.js';
import { RunControl } from '../src/run/runControl.js';
import { CHECKPOINT_FILE } from '../src/sinks/checkpointFile.js';
import { prepareRun, type TrainOptions } from '../src/run/train.js';
import type { MetricsRow } from '../src/types.js';
import { collectRows } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-checkpoint-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const N = 12;
const base = (optimizer: string, backend: 'cpu' | 'wasm'): TrainOptions => ({
  dataset: 'synthetic',
  synthetic: { train: 300, test: 64 },
  model: 'mlp:20-16-4',
  optimizer,
  // Small periods so that N steps cross factor statistics, inverse refreshes and Hessian estimates.
  optimizerOptions: ['kfac', 'ring', 'reng'].includes(optimizer)
    ? { inverseEvery: 5 }
    : optimizer === 'sophia'
      ? { hessianEvery: 3 }
      : optimizer === 'rkalman'
        ? { rows: 8 }
        : {},
  batchSize: 32,
  epochs: 3, // 10 batches per epoch: the resume point (N) is inside the second epoch
  steps: 2 * N,
  evalEvery: 5,
  backend,
});

async function runRows(
  options: TrainOptions,
  onRow?: (row: MetricsRow) => void,
): Promise<MetricsRow[]> {
  const run = await prepareRun(options);
  try {
    const { rows } = await collectRows(onRow ? run.rows.pipe(tap(onRow)) : run.rows);
    return rows;
  } finally {
    run.dispose();
  }
}

const comparable = (r: MetricsRow) => ({
  step: r.step,
  epoch: r.epoch,
  loss: r.loss,
  accuracy: r.accuracy,
  gradNorm: r.gradNorm,
  updateNorm: r.updateNorm,
  testLoss: r.testLoss,
  diagnostics: r.diagnostics,
});

/** The same run with a small CNN (conv, max pool, dense) on the synthetic rows seen as 6×6×1 images. */
const cnnBase = (optimizer: string, backend: 'cpu' | 'wasm'): TrainOptions => ({
  ...base(optimizer, backend),
  synthetic: { train: 300, test: 64, features: 36 },
  inputShape: [6, 6, 1],
  model: 'cnn:6x6x1-c4k3-p2-d8-4',
});

/**
 * The same run with a tiny GPT on a text file: 2,400 bytes, windows of 8 → 270 training windows,
 * batch 32 (9 batches an epoch, so the resume point is in the second epoch).
 */
const textFile = join(dir, 'text.txt');
writeFileSync(
  textFile,
  Array.from({ length: 60 }, (_, i) => `line ${i}: the quick brown fox jumps. `)
    .join('')
    .slice(0, 2400),
);
const gptBase = (optimizer: string, backend: 'cpu' | 'wasm'): TrainOptions => {
  const { synthetic: _synthetic, ...rest } = base(optimizer, backend);
  return { ...rest, dataset: `text:${textFile}`, model: 'gpt:L1-d8-h2-ctx8' };
};

describe.each([
  ['cpu', 'mlp', base],
  ['wasm', 'mlp', base],
  // wasm only: the cpu backend's conv path is the same code (checked in conv.test.ts) at ~10× the time.
  ['wasm', 'cnn', cnnBase],
  // The transformer on cpu is checked by test/transformer.test.ts's cpu run.
  ['wasm', 'gpt', gptBase],
] as const)('checkpoint and resume on %s, %s', (backend, kind, options) => {
  it.each(['sgd', 'adamw', 'sophia', 'kfac', 'ring', 'reng', 'rkalman'])(
    '%s: N steps + stop + resume + N steps equals 2N uninterrupted steps',
    async (optimizer) => {
      const base = options;
      const whole = await runRows(base(optimizer, backend));
      expect(whole.map((r) => r.step)).toEqual([...Array(2 * N).keys()]);

      const ckpt = join(dir, `${backend}-${kind}-${optimizer}`);
      const control = new RunControl();
      const first = await runRows(
        { ...base(optimizer, backend), control, checkpoint: { dir: ckpt, every: 1000 } },
        (row) => {
          if (row.step === N - 1) control.requestStop('test');
        },
      );
      expect(first.map((r) => r.step)).toEqual([...Array(N).keys()]);
      const before = tf.memory().numTensors;
      const checkpoint = loadCheckpoint(ckpt);
      expect(checkpoint.step).toBe(N - 1);
      expect(checkpoint.reason).toBe('stop');
      expect(checkpoint.position.step).toBe(N);
      const second = await runRows({ resume: checkpoint, backend });
      expect(tf.memory().numTensors).toBe(before); // the checkpoint's tensors were taken over and disposed
      expect(second.map((r) => r.step)).toEqual([...Array(N).keys()].map((i) => i + N));

      const resumed = [...first, ...second].map(comparable);
      const expected = whole.map(comparable);
      for (let i = 0; i < expected.length; i++) {
        for (const key of ['loss', 'accuracy', 'gradNorm', 'updateNorm'] as const) {
          expect(resumed[i]![key], `${optimizer} step ${i} ${key}`).toBeCloseTo(
            expected[i]![key],
            6,
          );
        }
        if (expected[i]!.testLoss === null) expect(resumed[i]!.testLoss).toBeNull();
        else
          expect(resumed[i]!.testLoss, `${optimizer} step ${i} testLoss`).toBeCloseTo(
            expected[i]!.testLoss!,
            6,
          );
        for (const [k, v] of Object.entries(expected[i]!.diagnostics)) {
          if (Number.isFinite(v))
            expect(resumed[i]!.diagnostics[k], `${optimizer} step ${i} ${k}`).toBeCloseTo(v, 4);
        }
      }
    },
    120_000,
  );
});

describe('checkpoint files', () => {
  it('round-trip every kind of state value', async () => {
    const blobs: (Float32Array | Int32Array)[] = [];
    const t = tf.tensor2d([
      [1, 2],
      [3, 4],
    ]);
    const i = tf.tensor1d([1, -2], 'int32');
    const tree = {
      a: t,
      b: [i, 3, NaN, Infinity, -Infinity, undefined, null, 'x', true],
      c: { d: new Int32Array([5, 6]), e: new Float32Array([0.5]) },
    };
    const encoded = await encodeTree(tree, blobs);
    const decoded = decodeTree(JSON.parse(JSON.stringify(encoded)), blobs) as typeof tree;
    expect(await (decoded.a as tf.Tensor).array()).toEqual([
      [1, 2],
      [3, 4],
    ]);
    expect((decoded.b[0] as tf.Tensor).dtype).toBe('int32');
    expect(decoded.b.slice(1)).toEqual([3, NaN, Infinity, -Infinity, undefined, null, 'x', true]);
    expect(decoded.c.d).toEqual(new Int32Array([5, 6]));
    tf.dispose([t, i, decoded.a, decoded.b[0] as tf.Tensor]);
  });

  it('replaces the checkpoint atomically and leaves no temporary file', async () => {
    const ckpt = join(dir, 'atomic');
    const control = new RunControl();
    await runRows({
      ...base('kfac', 'cpu'),
      steps: 6,
      control,
      checkpoint: { dir: ckpt, every: 2 },
    });
    expect(readdirSync(ckpt)).toEqual([CHECKPOINT_FILE]);
    const checkpoint = loadCheckpoint(ckpt);
    expect(checkpoint.step).toBe(5);
    expect(checkpoint.reason).toBe('end');
    expect(checkpoint.run.optimizer).toBe('kfac');
    // The Kronecker factors, inverses and momentum are all in it.
    const curvature = checkpoint.curvature as {
      layers: {
        a: { sum: tf.Tensor };
        g: { sum: tf.Tensor };
        inverse: { aInverse: tf.Tensor; gInverse: tf.Tensor };
      }[];
    };
    expect(
      curvature.layers.map((l) => [
        l.a.sum.shape,
        l.g.sum.shape,
        l.inverse.aInverse.shape,
        l.inverse.gInverse.shape,
      ]),
    ).toEqual([
      [
        [21, 21],
        [16, 16],
        [21, 21],
        [16, 16],
      ],
      [
        [17, 17],
        [4, 4],
        [17, 17],
        [4, 4],
      ],
    ]);
    expect(Object.keys((checkpoint.optimizer as { velocity: object }).velocity)).toEqual([
      'dense0/kernel',
      'dense0/bias',
      'dense1/kernel',
      'dense1/bias',
    ]);
    const { disposeCheckpoint } = await import('../src/run/checkpoint.js');
    disposeCheckpoint(checkpoint);
  });

  it('a damaged, truncated or foreign checkpoint is one clear error naming file and offset', async () => {
    const ckpt = join(dir, 'damaged');
    await runRows({ ...base('adamw', 'cpu'), steps: 3, checkpoint: { dir: ckpt } });
    const file = join(ckpt, CHECKPOINT_FILE);
    const bytes = readFileSync(file);
    const flipped = Buffer.from(bytes);
    flipped[bytes.length - 5]! ^= 0x10;
    writeFileSync(file, flipped);
    expect(() => loadCheckpoint(ckpt)).toThrow(
      /checkpoint .*checkpoint.grng: payload does not match its SHA-256 .* at byte \d+/,
    );
    writeFileSync(file, bytes.subarray(0, 100));
    expect(() => loadCheckpoint(ckpt)).toThrow(
      /header length \d+ runs past the end of the file \(100 bytes\) at byte 12/,
    );
    writeFileSync(file, 'not a checkpoint at all');
    expect(() => loadCheckpoint(ckpt)).toThrow(/expected the magic "GRNGCKPT" at byte 0/);
    expect(() => loadCheckpoint(join(dir, 'nowhere'))).toThrow(
      /cannot read checkpoint folder .*nowhere: no checkpoint there/,
    );
  });

  it('resuming with a different configuration, or past the end, is refused', async () => {
    const ckpt = join(dir, 'config');
    await runRows({ ...base('sgd', 'cpu'), steps: 4, checkpoint: { dir: ckpt } });
    const error = await prepareRun({ resume: loadCheckpoint(ckpt), batchSize: 64 }).catch(
      (e: unknown) => e,
    );
    expect(
      isGrngError(error) &&
        /batchSize 64 differs from the checkpoint's 32/.test((error as Error).message),
    ).toBe(true);
    const ended = await prepareRun({ resume: loadCheckpoint(ckpt), backend: 'cpu' }).catch(
      (e: unknown) => e,
    );
    expect(
      isGrngError(ended) &&
        /is at step 3, the run's last step \(4 steps\); raise --steps or --epochs/.test(
          (ended as Error).message,
        ),
    ).toBe(true);
    expect(existsSync(join(ckpt, CHECKPOINT_FILE))).toBe(true);
  });
});
