import {
  Field,
  Float64,
  Int32,
  makeData,
  RecordBatch,
  Schema,
  Struct,
  type Data,
} from 'apache-arrow';
import type { MetricsRow } from '../types.js';

/**
 * The one Arrow schema of every metrics stream (recordings, WebSocket frames). Columns are fixed:
 * every quantity of docs/algorithms.md's Metrics section has its own column, null where an
 * optimizer does not report it, so runs
 * of different optimizers share one schema and overlay directly.
 */
export const METRIC_COLUMNS = [
  { name: 'step', type: 'int', nullable: false },
  { name: 'epoch', type: 'int', nullable: false },
  { name: 'wallMs', type: 'float', nullable: false },
  { name: 'stepMs', type: 'float', nullable: false },
  { name: 'evaluationMs', type: 'float', nullable: false },
  { name: 'samples', type: 'int', nullable: false },
  { name: 'loss', type: 'float', nullable: false },
  { name: 'accuracy', type: 'float', nullable: false },
  { name: 'learningRate', type: 'float', nullable: true },
  { name: 'gradNorm', type: 'float', nullable: true },
  { name: 'updateNorm', type: 'float', nullable: true },
  { name: 'updateGradCorrelation', type: 'float', nullable: true },
  { name: 'testLoss', type: 'float', nullable: true },
  { name: 'testAccuracy', type: 'float', nullable: true },
  { name: 'damping', type: 'float', nullable: true },
  { name: 'newtonIterations', type: 'float', nullable: true },
  { name: 'newtonResidual', type: 'float', nullable: true },
  { name: 'klClip', type: 'float', nullable: true },
  { name: 'winRate', type: 'float', nullable: true },
  { name: 'kalmanTraceP', type: 'float', nullable: true },
  { name: 'kalmanNoise', type: 'float', nullable: true },
  { name: 'kalmanInnovationNorm', type: 'float', nullable: true },
  { name: 'hgNorm', type: 'float', nullable: true },
  { name: 'skippedSteps', type: 'float', nullable: true },
] as const;

export type MetricColumn = (typeof METRIC_COLUMNS)[number]['name'];

/** Diagnostics that have their own column (the rest of MetricsRow.diagnostics is not recorded). */
export const DIAGNOSTIC_COLUMNS: readonly MetricColumn[] = [
  'damping',
  'newtonIterations',
  'newtonResidual',
  'klClip',
  'winRate',
  'kalmanTraceP',
  'kalmanNoise',
  'kalmanInnovationNorm',
  'hgNorm',
  'skippedSteps',
];

/** Schema-metadata key holding the run's description (JSON of {@link RecordedRun}). */
export const RUN_METADATA_KEY = 'grng.run';
/** Schema-metadata key of the schema's own version, bumped on incompatible changes. */
export const SCHEMA_VERSION_KEY = 'grng.schema';
export const SCHEMA_VERSION = '1';

/** What a recording says about its run (schema metadata, sent to dashboards). */
export interface RecordedRun {
  /** Unique id of the run (also the dashboard's legend key). */
  readonly id: string;
  /** Human label, e.g. `ring` or `ring seed 2`. */
  readonly label: string;
  readonly optimizer: string;
  readonly optimizerOptions: Readonly<Record<string, unknown>>;
  readonly model: string;
  readonly dataset: string;
  readonly backend: string;
  readonly seed: number;
  readonly batchSize: number;
  readonly totalSteps: number;
  readonly batchesPerEpoch: number;
  /** grng's package version. */
  readonly version: string;
  /** ISO time the run started. */
  readonly startedAt: string;
  /** The group a run belongs to (a `compare` invocation), so dashboards can show it together. */
  readonly group?: string;
  /**
   * Labels per example: 1 for a classifier, the context for a byte-level language model, whose
   * `loss` and `testLoss` are then the mean per token (byte) in nats, so that ÷ ln 2 they are
   * bits per character. Absent in recordings made before it was recorded (read as 1).
   */
  readonly labelsPerExample?: number;
}

/** The metrics schema with a run's metadata attached. */
export function metricsSchema(run: RecordedRun): Schema {
  const fields = METRIC_COLUMNS.map(
    (c) => new Field(c.name, c.type === 'int' ? new Int32() : new Float64(), c.nullable),
  );
  return new Schema(
    fields,
    new Map([
      [RUN_METADATA_KEY, JSON.stringify(run)],
      [SCHEMA_VERSION_KEY, SCHEMA_VERSION],
    ]),
  );
}

/** Reads the run description back from a schema (undefined when it is not a grng stream). */
export function runOfSchema(schema: Schema): RecordedRun | undefined {
  const text = schema.metadata.get(RUN_METADATA_KEY);
  if (!text) return undefined;
  try {
    return JSON.parse(text) as RecordedRun;
  } catch {
    return undefined;
  }
}

/** The value of a column in a metrics row (null when absent or not finite). */
function cell(row: MetricsRow, name: MetricColumn): number | null {
  const value = (
    DIAGNOSTIC_COLUMNS.includes(name)
      ? row.diagnostics[name]
      : (row as unknown as Record<string, unknown>)[name]
  ) as number | null | undefined;
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/** Packs rows into one record batch of the metrics schema. */
export function rowsToRecordBatch(schema: Schema, rows: readonly MetricsRow[]): RecordBatch {
  const children: Data[] = METRIC_COLUMNS.map((c) => {
    const values = c.type === 'int' ? new Int32Array(rows.length) : new Float64Array(rows.length);
    const valid = new Uint8Array(Math.ceil(rows.length / 8));
    let nulls = 0;
    rows.forEach((row, i) => {
      const v = cell(row, c.name);
      if (v === null) {
        nulls += 1;
        values[i] = c.type === 'int' ? 0 : NaN;
      } else {
        values[i] = v;
        valid[i >> 3]! |= 1 << (i & 7);
      }
    });
    const type = c.type === 'int' ? new Int32() : new Float64();
    return makeData({
      type,
      length: rows.length,
      nullCount: nulls,
      data: values,
      ...(nulls > 0 ? { nullBitmap: valid } : {}),
    } as never) as Data;
  });
  const struct = makeData({
    type: new Struct(schema.fields),
    length: rows.length,
    nullCount: 0,
    children,
  });
  return new RecordBatch(schema, struct);
}

/** Unpacks a record batch of the metrics schema into rows (diagnostics from their columns). */
export function recordBatchToRows(batch: RecordBatch): MetricsRow[] {
  const columns = METRIC_COLUMNS.map((c) => [c.name, batch.getChild(c.name)] as const);
  const rows: MetricsRow[] = [];
  for (let i = 0; i < batch.numRows; i++) {
    const base: Record<string, number | null> = {};
    const diagnostics: Record<string, number> = {};
    for (const [name, vector] of columns) {
      const v = vector?.get(i) as number | null | undefined;
      const value = v === undefined ? null : v;
      if (DIAGNOSTIC_COLUMNS.includes(name)) {
        if (value !== null) diagnostics[name] = value;
      } else base[name] = value;
    }
    rows.push({
      step: base.step ?? 0,
      epoch: base.epoch ?? 0,
      wallMs: base.wallMs ?? 0,
      stepMs: base.stepMs ?? 0,
      evaluationMs: base.evaluationMs ?? 0,
      samples: base.samples ?? 0,
      loss: base.loss ?? NaN,
      accuracy: base.accuracy ?? NaN,
      learningRate: base.learningRate ?? NaN,
      gradNorm: base.gradNorm ?? NaN,
      updateNorm: base.updateNorm ?? NaN,
      updateGradCorrelation: base.updateGradCorrelation ?? NaN,
      testLoss: base.testLoss ?? null,
      testAccuracy: base.testAccuracy ?? null,
      diagnostics,
    });
  }
  return rows;
}
