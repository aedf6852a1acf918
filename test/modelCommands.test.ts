import * as tf from '@tensorflow/tfjs';
import { tableFromArrays, tableFromIPC, tableToIPC } from 'apache-arrow';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { layersModelFiles } from '../src/interop/layersModelFiles.js';
import { useTestBackend } from './helpers.js';

let dir: string;
const at = (name: string): string => join(dir, name);

beforeAll(async () => {
  await useTestBackend();
  dir = mkdtempSync(join(tmpdir(), 'grng-models-'));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Runs the CLI in this process, capturing its output. */
async function grng(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main([...args, '--backend', 'wasm'], {
    out: (t: string) => void (stdout += t),
    err: (t: string) => void (stderr += t),
    isTTY: false,
  });
  return { code, stdout, stderr };
}

/** The last stdout line as JSON (train --json, evaluate --json), after checking the run worked. */
async function grngJson<T = TrainSummary>(
  ...args: string[]
): Promise<{ json: T; stdout: string; stderr: string }> {
  const result = await grng(...args);
  expect(result.stderr).not.toMatch(/grng: (?!backend|parameter groups|wrote|\d+ rows)/);
  expect(result.code).toBe(0);
  return { ...result, json: JSON.parse(result.stdout.trim().split('\n').at(-1)!) as T };
}

/** The fields of train --json the tests read. */
interface TrainSummary {
  readonly steps: number;
  readonly epochs: number;
  readonly finalLoss: number;
  readonly testAccuracy: number;
  readonly testLoss: number;
}

/** evaluate --json. */
interface Evaluation {
  readonly dataset: string;
  readonly examples: number;
  readonly loss: number;
  readonly accuracy: number;
  readonly confusion: number[][];
}

/** What evaluate prints must agree with itself: the matrix counts every example once. */
function expectConsistent(evaluation: Evaluation, classes: number): void {
  const { confusion, examples, accuracy } = evaluation;
  expect(confusion).toHaveLength(classes);
  for (const row of confusion) expect(row).toHaveLength(classes);
  const total = confusion.flat().reduce((a, b) => a + b, 0);
  const diagonal = confusion.reduce((n, row, c) => n + row[c]!, 0);
  expect(total).toBe(examples);
  expect(diagonal / total).toBeCloseTo(accuracy, 12);
}

/** The confusion matrix rows of evaluate's text output: "  2 │ 12 0 … │ 0.857". */
function textMatrixRows(stdout: string): string[] {
  return stdout.split('\n').filter((line) => /^\s*\d+ │ [\d ]+ │ /.test(line));
}

function argmax(values: readonly number[]): number {
  return values.reduce((best, v, i) => (v > values[best]! ? i : best), 0);
}

/** A CSV of `rows` rows of 20 features in [-1, 1] and a label (synthetic's shape). */
function featureRows(rows: number): { x: number[][]; labels: number[] } {
  // A fixed LCG: the file is the same on every run, so a failure repeats.
  let state = 7;
  const next = (): number => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
  const x = Array.from({ length: rows }, () =>
    Array.from({ length: 20 }, () => Math.round((next() * 2 - 1) * 1e4) / 1e4),
  );
  return { x, labels: x.map((_, i) => i % 4) };
}

/** Synthetic's run: 2048 training rows, 512 test rows, 4 classes, seed 1. */
describe('train --save-model, evaluate', () => {
  let summary: TrainSummary;

  beforeAll(async () => {
    ({ json: summary } = await grngJson(
      'train',
      '--dataset',
      'synthetic',
      '--optimizer',
      'ring',
      '--steps',
      '30',
      '--json',
      '--save-model',
      at('A'),
      '--checkpoint-dir',
      at('C'),
    ));
  }, 60_000);

  it('writes a LayersModel and a checkpoint', () => {
    expect(summary.steps).toBe(30);
    expect(existsSync(join(at('A'), 'model.json'))).toBe(true);
    expect(existsSync(join(at('A'), 'weights.bin'))).toBe(true);
  });

  it("evaluate --model reproduces train's test loss and accuracy, with a 4-class confusion matrix", async () => {
    const { json, stdout } = await grngJson<Evaluation>(
      'evaluate',
      '--model',
      at('A'),
      '--dataset',
      'synthetic',
      '--json',
    );
    // train reads its accuracy back from float32, evaluate counts in float64.
    expect(json.accuracy).toBeCloseTo(summary.testAccuracy, 6);
    expect(Math.abs(json.loss - summary.testLoss)).toBeLessThan(1e-5);
    expect(json.examples).toBe(512);
    expectConsistent(json, 4);
    expect(stdout).toMatch(/confusion matrix/);
    expect(textMatrixRows(stdout)).toHaveLength(4);
    expect(stdout).toMatch(/^accuracy {2}\d\.\d{4}$/m);
  }, 30_000);

  it("evaluate --checkpoint needs no --dataset: it takes the checkpoint's", async () => {
    const { json, stdout } = await grngJson<Evaluation>(
      'evaluate',
      '--checkpoint',
      at('C'),
      '--json',
    );
    expect(json.dataset).toBe('synthetic');
    expect(json.accuracy).toBeCloseTo(summary.testAccuracy, 6);
    expect(Math.abs(json.loss - summary.testLoss)).toBeLessThan(1e-5);
    expectConsistent(json, 4);
    expect(textMatrixRows(stdout)).toHaveLength(4);
  }, 30_000);

  it('evaluate names the flag the user gave when the model and the data disagree', async () => {
    // The 4-class checkpoint on a 3-class file: the checkpoint is what was given, not --model.
    writeFileSync(at('three.csv'), 'a,b,label\n0,1,0\n1,0,1\n1,1,2\n0,0,0\n1,1,1\n');
    const mismatch = await grng('evaluate', '--checkpoint', at('C'), '--dataset', at('three.csv'));
    expect(mismatch.code).toBe(2);
    expect(mismatch.stderr).toMatch(/^grng: --checkpoint: .*has 4 outputs .* 3 classes\n$/);
    // Both sources at once: the one-of-them message alone, not blamed on --checkpoint's value.
    const both = await grng('evaluate', '--checkpoint', at('C'), '--model', at('A'));
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^grng: --model DIR .* give one of them\n$/);
  });

  it('train --save-model into a folder that holds a model fails before training, naming --overwrite', async () => {
    const { code, stdout, stderr } = await grng(
      'train',
      '--dataset',
      'synthetic',
      '--optimizer',
      'sgd',
      '--steps',
      '5',
      '--save-model',
      at('A'),
    );
    expect(code).toBe(2);
    expect(stdout).toBe('');
    // One line, and no "grng: backend …" line: nothing started.
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/--save-model .*--overwrite/);
  });

  describe('export and predict', () => {
    const { x, labels } = featureRows(12);
    let csvPredictions: number[][];

    beforeAll(async () => {
      const header = [...Array.from({ length: 20 }, (_, f) => `f${f}`), 'label'];
      writeFileSync(
        at('rows.csv'),
        [header, ...x.map((row, i) => [...row, labels[i]])].map((r) => r.join(',')).join('\n') +
          '\n',
      );
      // The same rows as Arrow columns; Float32 holds the CSV's 4-decimal values to ~1e-8.
      const columns: Record<string, Float32Array | Int32Array> = {};
      for (let f = 0; f < 20; f++) columns[`f${f}`] = Float32Array.from(x, (row) => row[f]!);
      columns.label = Int32Array.from(labels);
      writeFileSync(at('rows.arrow'), tableToIPC(tableFromArrays(columns), 'file'));
    });

    it('export --checkpoint writes a model that predict --model reads: CSV on stdout', async () => {
      const exported = await grng('export', '--checkpoint', at('C'), '--out', at('E'));
      expect(exported.code).toBe(0);
      expect(exported.stderr).toMatch(/grng: wrote .*model\.json/);
      expect(existsSync(join(at('E'), 'weights.bin'))).toBe(true);

      const { code, stdout, stderr } = await grng(
        'predict',
        '--model',
        at('E'),
        '--input',
        at('rows.csv'),
      );
      expect(stderr).toMatch(/grng: 12 rows of .*accuracy against its label column/);
      expect(code).toBe(0);
      const lines = stdout.trim().split('\n');
      expect(lines[0]).toBe('row,label,predicted,p0,p1,p2,p3');
      expect(lines).toHaveLength(13);
      csvPredictions = lines.slice(1).map((line) => line.split(',').map(Number));
      csvPredictions.forEach((cells, i) => {
        expect(cells.slice(0, 2)).toEqual([i, labels[i]]);
        const p = cells.slice(3);
        expect(Math.abs(p.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-5);
        expect(cells[2]).toBe(argmax(p));
      });
    }, 30_000);

    it('predict --checkpoint on Arrow rows writes an Arrow stream with the same predictions', async () => {
      const out = at('p.arrows');
      const { code, stderr } = await grng(
        'predict',
        '--checkpoint',
        at('C'),
        '--input',
        at('rows.arrow'),
        '--out',
        out,
      );
      expect(stderr).toMatch(/→ .*p\.arrows/);
      expect(code).toBe(0);
      const table = tableFromIPC(readFileSync(out));
      expect(table.numRows).toBe(12);
      expect(table.schema.fields.map((f) => f.name)).toEqual([
        'row',
        'label',
        'predicted',
        'p0',
        'p1',
        'p2',
        'p3',
      ]);
      for (let r = 0; r < 12; r++) {
        const p = [0, 1, 2, 3].map((c) => table.getChild(`p${c}`)!.get(r) as number);
        expect(table.getChild('row')!.get(r)).toBe(r);
        expect(table.getChild('label')!.get(r)).toBe(labels[r]);
        expect(table.getChild('predicted')!.get(r)).toBe(argmax(p));
        // Same weights, same rows: the CSV run's class and (to float32 input rounding) numbers.
        expect(table.getChild('predicted')!.get(r)).toBe(csvPredictions[r]![2]);
        p.forEach((v, c) => expect(Math.abs(v - csvPredictions[r]![3 + c]!)).toBeLessThan(1e-5));
      }
    }, 30_000);
  });
});

describe('a CNN on image-shaped rows from a CSV file', () => {
  it('trains with kfac, saves, and evaluate takes the input shape from the saved model', async () => {
    // 4×4 images, 3 classes: bright top half, bright bottom half, bright left half, under noise
    // strong enough that a few test images are misread (a confusion matrix with off-diagonals).
    let state = 1;
    const next = (): number => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return state / 2147483648;
    };
    const header = [...Array.from({ length: 16 }, (_, p) => `p${p}`), 'label'];
    const lines = [header.join(',')];
    for (let i = 0; i < 200; i++) {
      const label = i % 3;
      const pixels = Array.from({ length: 16 }, (_, p) => {
        const [y, x] = [p >> 2, p & 3];
        const on = label === 0 ? y < 2 : label === 1 ? y >= 2 : x < 2;
        return ((on ? 0.3 : 0) + next()).toFixed(3);
      });
      lines.push([...pixels, label].join(','));
    }
    const file = at('images.csv');
    writeFileSync(file, `${lines.join('\n')}\n`);

    const { json: summary, stderr } = await grngJson(
      'train',
      '--dataset',
      file,
      '--input-shape',
      '4x4x1',
      '--model',
      'cnn:4x4x1-c4k3-p2-3',
      '--optimizer',
      'kfac',
      '--batch-size',
      '32',
      '--epochs',
      '10',
      '--steps',
      '30',
      '--json',
      '--save-model',
      at('K'),
      '--checkpoint-dir',
      at('KC'),
    );
    expect(stderr).toMatch(/cnn:4x4x1-c4k3-p2-3/);
    expect(summary.steps).toBe(30);
    expect(summary.testAccuracy).toBeGreaterThan(0.5);

    // No --input-shape: the saved model's [4, 4, 1] reshapes the file's 16-value rows.
    const { json: saved, stdout } = await grngJson<Evaluation>(
      'evaluate',
      '--model',
      at('K'),
      '--dataset',
      file,
      '--json',
    );
    expect(saved.accuracy).toBeCloseTo(summary.testAccuracy, 6);
    expect(Math.abs(saved.loss - summary.testLoss)).toBeLessThan(1e-5);
    expectConsistent(saved, 3);
    expect(textMatrixRows(stdout)).toHaveLength(3);

    // The checkpoint knows its dataset and input shape.
    const { json: checkpointed } = await grngJson<Evaluation>(
      'evaluate',
      '--checkpoint',
      at('KC'),
      '--json',
    );
    expect(checkpointed.accuracy).toBeCloseTo(summary.testAccuracy, 6);
    expect(Math.abs(checkpointed.loss - summary.testLoss)).toBeLessThan(1e-5);
    expectConsistent(checkpointed, 3);
  }, 60_000);
});

describe('--export-output logits', () => {
  it('saves the same network as the default export, less its softmax', async () => {
    const run = (out: string, ...more: string[]): Promise<unknown> =>
      grngJson(
        'train',
        '--dataset',
        'synthetic',
        '--optimizer',
        'adamw',
        '--steps',
        '10',
        '--json',
        '--save-model',
        out,
        ...more,
      );
    // The same seed trains the same weights twice; only what predict returns differs.
    await run(at('probabilities'));
    await run(at('logits'), '--export-output', 'logits');
    const probabilitiesModel = await tf.loadLayersModel(layersModelFiles(at('probabilities')));
    const logitsModel = await tf.loadLayersModel(layersModelFiles(at('logits')));
    try {
      const x = tf.tensor2d(featureRows(16).x);
      const [probabilities, softmaxed, logits] = tf.tidy(() => {
        const p = probabilitiesModel.predict(x) as tf.Tensor;
        const z = logitsModel.predict(x) as tf.Tensor;
        return [p.arraySync(), tf.softmax(z).arraySync(), z.arraySync()] as number[][][];
      });
      x.dispose();
      // Logits are not probabilities: some are negative or rows do not sum to 1.
      expect(logits!.some((row) => Math.abs(row.reduce((a, b) => a + b, 0) - 1) > 1e-3)).toBe(true);
      probabilities!.forEach((row, r) =>
        row.forEach((p, c) => expect(Math.abs(p - softmaxed![r]![c]!)).toBeLessThan(1e-5)),
      );
    } finally {
      probabilitiesModel.dispose();
      logitsModel.dispose();
    }
  }, 60_000);
});

describe('a run of a JSON model file', () => {
  it('resumes and evaluates from its checkpoint after the model file is gone', async () => {
    const modelFile = at('small.json');
    writeFileSync(
      modelFile,
      JSON.stringify({
        inputShape: [20],
        layers: [
          { type: 'dense', units: 8 },
          { type: 'dense', units: 4 },
        ],
      }),
    );
    const checkpoint = at('J');
    const first = await grngJson(
      'train',
      '--dataset',
      'synthetic',
      '--model',
      modelFile,
      '--optimizer',
      'ring',
      '--steps',
      '20',
      '--json',
      '--checkpoint-dir',
      checkpoint,
    );
    expect(first.json.steps).toBe(20);
    // The checkpoint carries the layer layout, so nothing reads the file again.
    rmSync(modelFile);
    const resumed = await grngJson('train', '--resume', checkpoint, '--steps', '40', '--json');
    expect(resumed.stderr).toMatch(/resuming at step 20/);
    // 40 steps of 16 per epoch in all.
    expect(resumed.json.epochs).toBe(2.5);
    const evaluated = await grngJson<Evaluation>('evaluate', '--checkpoint', checkpoint, '--json');
    expect(evaluated.json.accuracy).toBeCloseTo(resumed.json.testAccuracy, 6);
    expect(Math.abs(evaluated.json.loss - resumed.json.testLoss)).toBeLessThan(1e-5);
  }, 60_000);
});

describe('compare --save-model', () => {
  const compare = (...more: string[]) =>
    grng(
      'compare',
      '--dataset',
      'synthetic',
      '--optimizers',
      'sgd,ring',
      '--steps',
      '10',
      '--save-model',
      at('D'),
      ...more,
    );

  it('writes one model per optimizer; again only with --overwrite', async () => {
    const first = await compare();
    expect(first.code).toBe(0);
    expect(existsSync(join(at('D'), 'sgd', 'model.json'))).toBe(true);
    expect(existsSync(join(at('D'), 'ring', 'model.json'))).toBe(true);

    const refused = await compare();
    expect(refused.code).toBe(2);
    // Refused before any training: no summary table, one line naming the flag.
    expect(refused.stdout).toBe('');
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/--save-model .*--overwrite/);

    const again = await compare('--overwrite');
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/sgd[\s\S]*ring/);
  }, 60_000);
});

describe('a model saved by tfjs-layers itself', () => {
  it('trains from the CLI, leaving its dropout out, and lowers its loss', async () => {
    const modelDir = at('keras');
    const keras = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [20], units: 16, activation: 'relu' }),
        tf.layers.dropout({ rate: 0.2 }),
        tf.layers.dense({ units: 4, activation: 'softmax' }),
      ],
    });
    try {
      await keras.save(layersModelFiles(modelDir));
    } finally {
      keras.dispose();
    }

    const untrained = await grngJson<Evaluation>(
      'evaluate',
      '--model',
      modelDir,
      '--dataset',
      'synthetic',
      '--split',
      'train',
      '--json',
    );
    const trained = await grng(
      'train',
      '--model',
      modelDir,
      '--dataset',
      'synthetic',
      '--optimizer',
      'ring',
      '--steps',
      '40',
      '--json',
    );
    expect(trained.code).toBe(0);
    expect(trained.stderr).toMatch(/left out .*\(Dropout\), rate 0\.2/);
    const summary = JSON.parse(trained.stdout.trim().split('\n').at(-1)!) as TrainSummary;
    expect(summary.steps).toBe(40);
    expect(summary.finalLoss).toBeLessThan(untrained.json.loss);
  }, 60_000);
});
