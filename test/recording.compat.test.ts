// Recordings made before a change to the metrics schema still replay: through readRecording and
// replayArrow, the `grng replay --summary` command, a resumed run's reopenRecording, and the
// dashboard (the server's frames of a served file, decoded into the page's run store).
//
// The old recording is built here column by column, independent of METRIC_COLUMNS and
// rowsToRecordBatch, so a change to either that breaks old files fails this test.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Field,
  Float64,
  Int32,
  makeData,
  RecordBatch,
  RecordBatchStreamWriter,
  Schema,
  Struct,
  vectorFromArray,
} from 'apache-arrow';
import { from, lastValueFrom, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { runReplayCommand } from '../src/cli/replayCommand.js';
import { textWindows } from '../src/data/textDataset.js';
import { decodeBatch } from '../src/dashboard/arrow.js';
import { RunStore } from '../src/dashboard/store.js';
import { isGrngError } from '../src/errors.js';
import { metricsSchema, recordBatchToRows, type RecordedRun } from '../src/metrics/schema.js';
import { describeRun } from '../src/run/describeRun.js';
import { arrowSink } from '../src/sinks/arrowSink.js';
import { encodeStream } from '../src/sinks/encodeStream.js';
import { reopenRecording } from '../src/sinks/reopenRecording.js';
import { toRecordBatches } from '../src/sinks/toRecordBatches.js';
import { readRecording } from '../src/streams/readRecording.js';
import { replayArrow } from '../src/streams/replayArrow.js';
import type { MetricsRow } from '../src/types.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-compat-'));

/** Schema version 1's columns, as recordings made before 2026-12-03 hold them. */
const V1_COLUMNS: ReadonlyArray<readonly [string, 'int' | 'float', boolean]> = [
  ['step', 'int', false],
  ['epoch', 'int', false],
  ['wallMs', 'float', false],
  ['stepMs', 'float', false],
  ['evaluationMs', 'float', false],
  ['samples', 'int', false],
  ['loss', 'float', false],
  ['accuracy', 'float', false],
  ['learningRate', 'float', true],
  ['gradNorm', 'float', true],
  ['updateNorm', 'float', true],
  ['updateGradCorrelation', 'float', true],
  ['testLoss', 'float', true],
  ['testAccuracy', 'float', true],
  ['damping', 'float', true],
  ['newtonIterations', 'float', true],
  ['newtonResidual', 'float', true],
  ['klClip', 'float', true],
  ['winRate', 'float', true],
  ['kalmanTraceP', 'float', true],
  ['kalmanNoise', 'float', true],
  ['kalmanInnovationNorm', 'float', true],
  ['hgNorm', 'float', true],
  ['skippedSteps', 'float', true],
];

/** A version-1 run description: no `labelsPerExample`. */
const V1_RUN = {
  id: 'old-ring',
  label: 'ring (old)',
  optimizer: 'ring',
  optimizerOptions: { rho: 0.1 },
  model: 'mlp:784-256-10',
  dataset: 'mnist',
  backend: 'wasm',
  seed: 1,
  batchSize: 64,
  totalSteps: 40,
  batchesPerEpoch: 20,
  version: '0.1.0',
  startedAt: '2026-11-30T12:00:00.000Z',
};

const STEPS = 40;
/** A cell of the old recording: null for the test metrics off the evaluation steps, and so on. */
function v1Cell(name: string, step: number): number | null {
  const evaluated = step % 10 === 9;
  switch (name) {
    case 'step':
      return step;
    case 'epoch':
      return Math.floor(step / 20);
    case 'wallMs':
      return 15 * step;
    case 'samples':
      return 64;
    case 'loss':
      return 2.3 / (1 + step / 10);
    case 'accuracy':
      return Math.min(0.95, step / 40);
    case 'testLoss':
      return evaluated ? 2.5 / (1 + step / 10) : null;
    case 'testAccuracy':
      return evaluated ? 0.9 : null;
    case 'damping':
      return 1e-3;
    case 'kalmanTraceP':
    case 'winRate':
      return null;
    default:
      return name === 'stepMs' || name === 'evaluationMs' ? 15 : 0.5;
  }
}

/** Writes a recording exactly as schema version 1 did, in two record batches. */
function writeV1Recording(path: string): void {
  const fields = V1_COLUMNS.map(
    ([name, type, nullable]) =>
      new Field(name, type === 'int' ? new Int32() : new Float64(), nullable),
  );
  const schema = new Schema(
    fields,
    new Map([
      ['grng.run', JSON.stringify(V1_RUN)],
      ['grng.schema', '1'],
    ]),
  );
  const batch = (from: number, to: number): RecordBatch => {
    const children = fields.map((field) => {
      const values = Array.from({ length: to - from }, (_, i) => v1Cell(field.name, from + i));
      return vectorFromArray(values, field.type).data[0]!;
    });
    return new RecordBatch(
      schema,
      makeData({ type: new Struct(fields), length: to - from, nullCount: 0, children }),
    );
  };
  writeFileSync(
    path,
    RecordBatchStreamWriter.writeAll([batch(0, 25), batch(25, STEPS)]).toUint8Array(true),
  );
}

const ioCapture = () => {
  const out: string[] = [];
  const err: string[] = [];
  return {
    out,
    err,
    io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t), isTTY: false },
  };
};

describe('a recording made before labelsPerExample (schema version 1)', () => {
  const path = join(dir, 'v1.arrows');
  writeV1Recording(path);

  it('reads back: the run without labelsPerExample, every row and its nulls', () => {
    const rec = readRecording(path);
    expect(rec.complete).toBe(true);
    expect(rec.run).toEqual(V1_RUN);
    expect(rec.run.labelsPerExample).toBeUndefined();
    const rows = rec.batches.flatMap((b) => recordBatchToRows(b));
    expect(rows).toHaveLength(STEPS);
    expect(rows[12]).toMatchObject({
      step: 12,
      loss: v1Cell('loss', 12),
      testLoss: null,
      testAccuracy: null,
      diagnostics: { damping: 1e-3 },
    });
    expect(rows[19]).toMatchObject({ testLoss: v1Cell('testLoss', 19), testAccuracy: 0.9 });
    expect(rows[19]!.diagnostics).not.toHaveProperty('kalmanTraceP');
  });

  it('replays, and `grng replay --summary` prints its table', async () => {
    const replayed = await lastValueFrom(replayArrow(path).pipe(toArray()));
    expect(replayed.map((r) => r.row.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i));
    expect(replayed[0]!.run.id).toBe('old-ring');
    const { out, err, io } = ioCapture();
    await runReplayCommand([path], { summary: true, port: 0, host: '127.0.0.1' }, io);
    expect(err).toEqual([]);
    expect(out.join('')).toContain('ring (old)');
  });

  it('shows on the dashboard as a classifier: its charts, no bits per character', async () => {
    // `grng serve`: the file's own batches; `grng replay --serve`: rows re-encoded by the sinks.
    const rec = readRecording(path);
    const served = decodeBatch(encodeStream(rec.batches, rec.schema));
    const rows = (await lastValueFrom(replayArrow(path).pipe(toArray()))).map((r) => r.row);
    const reencoded = await lastValueFrom(
      from(rows).pipe(toRecordBatches(metricsSchema(rec.run)), toArray()),
    );
    for (const decoded of [served, decodeBatch(encodeStream(reencoded))]) {
      expect(decoded.run).toEqual(V1_RUN);
      const store = new RunStore();
      store.upsert({ ...(decoded.run as RecordedRun), rows: 0, finished: true });
      store.append(V1_RUN.id, decoded, 0);
      const series = store.runs.get(V1_RUN.id)!;
      expect(series.rows).toBe(STEPS);
      expect(series.column('loss')![3]).toBe(v1Cell('loss', 3));
      expect(series.present.has('testLoss')).toBe(true);
      expect(series.present.has('kalmanTraceP')).toBe(false);
      expect(series.present.has('bitsPerCharacter')).toBe(false);
      expect(series.column('bitsPerCharacter')).toBeUndefined();
    }
  });

  it('a resumed run reopens it and appends rows', async () => {
    const copy = join(dir, 'v1-resumed.arrows');
    writeV1Recording(copy);
    const reopened = reopenRecording(copy, 29);
    expect(reopened.lastStep).toBe(29);
    expect(reopened.run).toEqual(V1_RUN);
    const more: MetricsRow[] = recordBatchToRows(reopened.batches[1]!).map((row, i) => ({
      ...row,
      step: 30 + i,
    }));
    await lastValueFrom(
      from(more).pipe(arrowSink(reopened.run, { record: copy, append: true }), toArray()),
    );
    const rec = readRecording(copy);
    expect(rec.run).toEqual(V1_RUN);
    expect(rec.rows).toBe(30 + more.length);
  });
});

describe('a language model run (labelsPerExample > 1)', () => {
  const text = new TextEncoder().encode('the quick brown fox jumps over the lazy dog. '.repeat(20));
  const data = { name: 'text:fox.txt', train: textWindows(text, 16) };
  const run = describeRun(
    {
      optimizer: 'adamw',
      model: 'gpt:L1-d16-h2-ctx16',
      data,
      batches: { batchSize: 4 },
      backend: 'cpu',
    },
    { id: 'lm', label: 'gpt' },
  );
  const rows: MetricsRow[] = Array.from({ length: 30 }, (_, step) => ({
    step,
    epoch: 0,
    wallMs: step,
    stepMs: 1,
    evaluationMs: 0,
    samples: 4,
    loss: 5.5 - step / 10,
    accuracy: 0.1,
    learningRate: 1e-3,
    gradNorm: 1,
    updateNorm: 0.01,
    updateGradCorrelation: NaN,
    testLoss: step % 10 === 9 ? 5.6 - step / 10 : null,
    testAccuracy: step % 10 === 9 ? 0.1 : null,
    diagnostics: {},
  }));

  it('records the context as labelsPerExample; the dashboard draws its losses in bits', async () => {
    expect(run.labelsPerExample).toBe(16);
    const path = join(dir, 'lm.arrows');
    await lastValueFrom(from(rows).pipe(arrowSink(run, { record: path }), toArray()));
    const rec = readRecording(path);
    expect(rec.run.labelsPerExample).toBe(16);
    const store = new RunStore();
    store.append(run.id, decodeBatch(encodeStream(rec.batches, rec.schema)), 0);
    const series = store.runs.get(run.id)!;
    expect(series.run.labelsPerExample).toBe(16);
    const bits = series.column('bitsPerCharacter')!;
    const testBits = series.column('testBitsPerCharacter')!;
    for (const row of rows) {
      expect(bits[row.step]).toBeCloseTo(row.loss / Math.LN2, 12);
      if (row.testLoss === null) expect(testBits[row.step]).toBeNaN();
      else expect(testBits[row.step]).toBeCloseTo(row.testLoss / Math.LN2, 12);
    }
    // A classifier's description says 1 label per example: no bits per character.
    const classifier = describeRun({
      optimizer: 'sgd',
      model: 'mlp:4-3',
      data: { name: 'tiny', train: { x: new Float32Array(8), y: new Int32Array(2), n: 2 } },
      batches: { batchSize: 2 },
      backend: 'cpu',
    });
    expect(classifier.labelsPerExample).toBe(1);
  });

  it('a recording whose labelsPerExample is not a number is refused', () => {
    const path = join(dir, 'lm-damaged.arrows');
    const schema = metricsSchema({ ...run, labelsPerExample: '16' as unknown as number });
    writeFileSync(path, encodeStream([], schema));
    let caught: unknown;
    try {
      readRecording(path);
    } catch (error) {
      caught = error;
    }
    expect(isGrngError(caught) && caught.message).toContain(
      'the grng.run metadata has no number labelsPerExample',
    );
  });
});
