import type { RecordedRun } from '../metrics/schema.js';
import type { DecodedBatch } from './arrow.js';
import { emaInto, type EmaState } from './decimate.js';

/** Protocol's RUN: the `grng.run` description plus `rows` and `finished`. */
export type WireRun = RecordedRun & { readonly rows?: number; readonly finished?: boolean };

/**
 * Columns the page derives from recorded ones: a language model's losses in bits per character
 * (its loss is nats per byte-level token, so ÷ ln 2; on ASCII text a byte is a character).
 */
export const DERIVED_COLUMNS: Readonly<Record<string, string>> = {
  bitsPerCharacter: 'loss',
  testBitsPerCharacter: 'testLoss',
};

/**
 * Whether a run's loss is per token of a language model: more than one label per example.
 * Recordings from before `labelsPerExample` was recorded are classifiers.
 */
export function isLanguageModel(run: RecordedRun): boolean {
  return (run.labelsPerExample ?? 1) > 1;
}

/** The batch's columns plus, for a language model, the derived ones. */
function withDerived(run: RecordedRun, batch: DecodedBatch): ReadonlyMap<string, Float64Array> {
  if (!isLanguageModel(run)) return batch.columns;
  const columns = new Map(batch.columns);
  for (const [name, source] of Object.entries(DERIVED_COLUMNS)) {
    const values = batch.columns.get(source);
    if (values)
      columns.set(
        name,
        values.map((v) => v / Math.LN2),
      );
  }
  return columns;
}

/** One run's columns, grown in place (capacity doubles), NaN where null. */
export class RunSeries {
  run: RecordedRun;
  finished = false;
  /** Rows the server dropped for us (back-pressure). */
  missed = 0;
  rows = 0;
  /** Bumped whenever rows are appended. */
  version = 0;
  private readonly columns = new Map<string, Float64Array>();
  /** Columns with at least one non-null value. */
  readonly present = new Set<string>();
  private readonly smoothing = new Map<string, EmaState>();

  constructor(run: RecordedRun) {
    this.run = run;
  }

  column(name: string): Float64Array | undefined {
    return this.columns.get(name);
  }

  /**
   * The column EMA-smoothed with `alpha` (0: the column itself), cached and extended as rows
   * arrive.
   */
  smoothed(name: string, alpha: number): Float64Array | undefined {
    const raw = this.columns.get(name);
    if (!raw || alpha <= 0) return raw;
    const state = emaInto(this.smoothing.get(name), alpha, raw, this.rows);
    this.smoothing.set(name, state);
    return state.out;
  }

  append(batch: DecodedBatch): void {
    const n = batch.rows;
    if (n === 0) return;
    const need = this.rows + n;
    const columns = withDerived(this.run, batch);
    for (const [name, values] of columns) {
      let col = this.columns.get(name);
      if (!col || col.length < need) {
        const grown = new Float64Array(Math.max(need, (col?.length ?? 0) * 2, 256)).fill(NaN);
        if (col) grown.set(col.subarray(0, this.rows));
        col = grown;
        this.columns.set(name, col);
      }
      col.set(values, this.rows);
      if (!this.present.has(name)) {
        for (let i = 0; i < n; i++) {
          if (values[i] === values[i]) {
            this.present.add(name);
            break;
          }
        }
      }
    }
    // Columns this batch lacks stay NaN for its rows (spare capacity is NaN from allocation).
    for (const [name, col] of this.columns) {
      if (columns.has(name) || col.length >= need) continue;
      const grown = new Float64Array(Math.max(need, col.length * 2)).fill(NaN);
      grown.set(col.subarray(0, this.rows));
      this.columns.set(name, grown);
    }
    this.rows = need;
    this.version++;
  }
}

/** Every run the page knows, in the order the server announced them. */
export class RunStore {
  readonly runs = new Map<string, RunSeries>();
  /** Bumped on any change (new run, rows, end), so renderers can tell whether to redraw. */
  version = 0;

  upsert(run: WireRun): RunSeries {
    let series = this.runs.get(run.id);
    if (!series) {
      series = new RunSeries(stripWire(run));
      this.runs.set(run.id, series);
    } else series.run = stripWire(run);
    if (run.finished) series.finished = true;
    this.version++;
    return series;
  }

  append(runId: string, batch: DecodedBatch, missed: number): void {
    const series = this.runs.get(runId) ?? this.upsert(batch.run ?? placeholder(runId));
    series.missed += missed;
    series.append(batch);
    this.version++;
  }

  end(runId: string): void {
    const series = this.runs.get(runId);
    if (series && !series.finished) {
      series.finished = true;
      this.version++;
    }
  }

  rows(runId?: string): number {
    if (runId !== undefined) return this.runs.get(runId)?.rows ?? 0;
    let total = 0;
    for (const s of this.runs.values()) total += s.rows;
    return total;
  }
}

function stripWire(run: WireRun): RecordedRun {
  const { rows: _rows, finished: _finished, ...rest } = run;
  return rest;
}

function placeholder(id: string): RecordedRun {
  return {
    id,
    label: id,
    optimizer: '?',
    optimizerOptions: {},
    model: '?',
    dataset: '?',
    backend: '?',
    seed: 0,
    batchSize: 0,
    totalSteps: 0,
    batchesPerEpoch: 0,
    version: '?',
    startedAt: '',
  };
}
