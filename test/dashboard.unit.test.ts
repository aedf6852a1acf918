// The dashboard's pure parts (no DOM): decimation, smoothing, Arrow decoding, the run store,
// number formatting, derived columns. The page itself is tested in headless Chromium (dashboard.e2e.test.ts).
import { RecordBatchStreamWriter } from 'apache-arrow';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeBatch } from '../src/dashboard/arrow.js';
import { CHARTS, linesOf } from '../src/dashboard/chartSpecs.js';
import {
  decimateGrowing,
  decimateMinMax,
  emaInto,
  type GrowingState,
} from '../src/dashboard/decimate.js';
import { formatDuration, formatNumber, tickLabels } from '../src/dashboard/format.js';
import { DERIVED_COLUMNS, isLanguageModel, RunStore } from '../src/dashboard/store.js';
import { metricsSchema, METRIC_COLUMNS } from '../src/metrics/schema.js';
import { rowsToRecordBatch } from '../src/metrics/schema.js';
import { encodeStream } from '../src/sinks/encodeStream.js';
import { syntheticRow, syntheticRun } from './dashboardSynthetic.js';

const series = fc.array(
  fc.oneof(fc.double({ min: -1e6, max: 1e6, noNaN: true }), fc.constant(NaN)),
  { minLength: 1, maxLength: 3000 },
);
const xsOf = (n: number): Float64Array =>
  Float64Array.from({ length: n }, (_, i) => i * 10 + (i % 7)); // ascending, uneven

/** Every output point is an input point, x ascending. */
function expectSubsequence(
  xs: ArrayLike<number>,
  ys: ArrayLike<number>,
  d: { x: Float64Array; y: Float64Array },
): void {
  const index = new Map<number, number>();
  for (let i = 0; i < xs.length; i++) index.set(xs[i]!, i);
  for (let k = 0; k < d.x.length; k++) {
    const i = index.get(d.x[k]!);
    expect(i).toBeDefined();
    expect(Object.is(d.y[k], ys[i!]) || d.y[k] === ys[i!]).toBe(true);
    if (k > 0) expect(d.x[k]!).toBeGreaterThan(d.x[k - 1]!);
  }
}

function extremes(ys: ArrayLike<number>, positive = false): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < ys.length; i++) {
    const v = ys[i]!;
    if (v !== v || (positive && v <= 0)) continue;
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  return { min, max };
}

describe('min/max decimation', () => {
  it('keeps the extremes, the ends and at most ~2 points per bucket', () => {
    fc.assert(
      fc.property(
        series,
        fc.integer({ min: 1, max: 200 }),
        fc.boolean(),
        (values, buckets, positive) => {
          const ys = Float64Array.from(values);
          const xs = xsOf(ys.length);
          const d = decimateMinMax(xs, ys, ys.length, buckets, -Infinity, Infinity, positive);
          expectSubsequence(xs, ys, d);
          expect(d.x.length).toBeLessThanOrEqual(2 * buckets + 2);
          const all = extremes(ys, positive);
          const kept = extremes(d.y);
          if (all.min === Infinity) expect(d.x.length).toBe(0);
          else {
            expect(kept).toEqual(all);
            for (const v of d.y) expect(positive ? v > 0 : !Number.isNaN(v)).toBe(true);
          }
        },
      ),
    );
  });

  it('reads only the visible window, plus one point beyond each edge', () => {
    const n = 10_000;
    const xs = Float64Array.from({ length: n }, (_, i) => i);
    const ys = Float64Array.from({ length: n }, (_, i) => Math.sin(i / 50));
    const d = decimateMinMax(xs, ys, n, 100, 2000, 3000);
    expect(d.x[0]).toBe(1999);
    expect(d.x[d.x.length - 1]).toBe(3001);
    expect(d.x.length).toBeLessThanOrEqual(202);
    // A small window is drawn at full resolution.
    expect(decimateMinMax(xs, ys, n, 100, 10, 20).x).toEqual(
      Float64Array.from({ length: 13 }, (_, i) => 9 + i),
    );
  });

  it('grows incrementally to the same points as one pass, bounded, with the latest point', () => {
    fc.assert(
      fc.property(
        series,
        fc.integer({ min: 1, max: 60 }),
        fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 20 }),
        (values, buckets, chunks) => {
          const ys = Float64Array.from(values);
          const xs = xsOf(ys.length);
          let state: GrowingState | undefined;
          let n = 0;
          let last = decimateGrowing(undefined, 'k', xs, ys, 0, buckets).points;
          for (const c of [...chunks, ys.length]) {
            n = Math.min(ys.length, n + c);
            const r = decimateGrowing(state, 'k', xs, ys, n, buckets);
            state = r.state;
            last = r.points;
            const fresh = decimateGrowing(undefined, 'k', xs, ys, n, buckets).points;
            expect(r.points).toEqual(fresh);
          }
          expectSubsequence(xs, ys, last);
          expect(last.x.length).toBeLessThanOrEqual(2 * (2 * buckets + 2) + 1);
          expect(extremes(last.y)).toEqual(extremes(ys));
          let latest = ys.length - 1;
          while (latest >= 0 && Number.isNaN(ys[latest]!)) latest--;
          if (latest >= 0) expect(last.x[last.x.length - 1]).toBe(xs[latest]);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('a 100k-step series decimates in a few milliseconds, and a live frame costs only the new rows', () => {
    const n = 100_000;
    const xs = Float64Array.from({ length: n }, (_, i) => i);
    const ys = Float64Array.from({ length: n }, (_, i) => Math.exp(-i / 1e4) + Math.sin(i));
    let t = performance.now();
    for (let r = 0; r < 10; r++) decimateMinMax(xs, ys, n, 1200);
    const full = (performance.now() - t) / 10;
    let { state } = decimateGrowing(undefined, 'k', xs, ys, n - 64, 1200);
    t = performance.now();
    for (let r = 0; r < 10; r++)
      state = decimateGrowing(state, 'k', xs, ys, n - 64 + r * 6, 1200).state;
    const live = (performance.now() - t) / 10;
    expect(full).toBeLessThan(20);
    expect(live).toBeLessThan(2);
  });
});

describe('smoothing', () => {
  it('debiased EMA, extended incrementally, NaN skipped', () => {
    const ys = Float64Array.from([1, 2, NaN, 4, 8, 16]);
    const whole = emaInto(undefined, 0.5, ys, 6).out.slice(0, 6);
    let s = emaInto(undefined, 0.5, ys, 2);
    s = emaInto(s, 0.5, ys, 4);
    s = emaInto(s, 0.5, ys, 6);
    expect(s.out.slice(0, 6)).toEqual(whole);
    expect(whole[0]).toBe(1); // debiased: the first value is itself
    expect(whole[1]).toBeCloseTo((0.25 * 1 + 0.5 * 2) / 0.75);
    expect(whole[2]).toBeNaN();
    expect(emaInto(undefined, 0, ys, 6).out.slice(0, 6)).toEqual(ys);
  });
});

describe('Arrow decoding and the run store', () => {
  const run = syntheticRun('r1', 'ring');
  const schema = metricsSchema(run);
  const rows = Array.from({ length: 300 }, (_, i) => syntheticRow('ring', i));
  const encode = (from: number, to: number) =>
    encodeStream([rowsToRecordBatch(schema, rows.slice(from, to))]);

  it('decodes a protocol frame: every column, nulls as NaN, the run from the schema metadata', () => {
    const d = decodeBatch(encode(0, 300));
    expect(d.rows).toBe(300);
    expect(d.run).toEqual(run);
    expect([...d.columns.keys()]).toEqual(METRIC_COLUMNS.map((c) => c.name));
    expect(d.columns.get('step')![299]).toBe(299);
    expect(d.columns.get('loss')![7]).toBe(rows[7]!.loss);
    expect(d.columns.get('testLoss')![100]).toBe(rows[100]!.testLoss);
    expect(d.columns.get('testLoss')![101]).toBeNaN();
    expect(d.columns.get('kalmanTraceP')!.every(Number.isNaN)).toBe(true);
    expect(d.columns.get('damping')![5]).toBe(rows[5]!.diagnostics.damping);
  });

  it('decodes a stream of several record batches, including sliced ones', () => {
    const batch = rowsToRecordBatch(schema, rows);
    const bytes = RecordBatchStreamWriter.writeAll([
      batch.slice(0, 10),
      batch.slice(10, 250),
      batch.slice(250),
    ]).toUint8Array(true);
    const d = decodeBatch(bytes);
    expect(d.rows).toBe(300);
    expect(Array.from(d.columns.get('step')!)).toEqual(rows.map((r) => r.step));
    expect(Array.from(d.columns.get('testAccuracy')!, (v) => (Number.isNaN(v) ? null : v))).toEqual(
      rows.map((r) => r.testAccuracy),
    );
  });

  it('decodes a frame with the schema and no rows (every waiting row was dropped)', () => {
    const d = decodeBatch(encodeStream([], schema)); // what the server sends then
    expect(d.rows).toBe(0);
    expect(d.run).toEqual(run);
    const store = new RunStore();
    store.append(run.id, decodeBatch(encode(0, 10)), 0);
    store.append(run.id, d, 40);
    expect(store.runs.get(run.id)!.rows).toBe(10);
    expect(store.runs.get(run.id)!.missed).toBe(40);
  });

  it('the store grows columns, tracks which quantities a run reports, counts missed rows', () => {
    const store = new RunStore();
    store.upsert({ ...run, rows: 0, finished: false });
    for (let at = 0; at < 300; at += 37)
      store.append(run.id, decodeBatch(encode(at, Math.min(300, at + 37))), at === 74 ? 5 : 0);
    const s = store.runs.get(run.id)!;
    expect(s.rows).toBe(300);
    expect(store.rows()).toBe(300);
    expect(s.missed).toBe(5);
    expect(Array.from(s.column('step')!.subarray(0, 300))).toEqual(rows.map((r) => r.step));
    expect(s.present.has('damping')).toBe(true);
    expect(s.present.has('testLoss')).toBe(true);
    expect(s.present.has('kalmanNoise')).toBe(false);
    expect(s.run).not.toHaveProperty('rows');
    store.end(run.id);
    expect(s.finished).toBe(true);
    // A batch for a run never announced still lands (its description from the schema).
    store.append(
      'other',
      decodeBatch(
        RecordBatchStreamWriter.writeAll([
          rowsToRecordBatch(metricsSchema({ ...run, id: 'other', label: 'o' }), rows.slice(0, 3)),
        ]).toUint8Array(true),
      ),
      0,
    );
    expect(store.runs.get('other')!.run.label).toBe('o');
  });
});

describe('bits per character', () => {
  const rows = Array.from({ length: 250 }, (_, i) => syntheticRow('adamw', i));
  const frames = (run: ReturnType<typeof syntheticRun>) => {
    const schema = metricsSchema(run);
    return [0, 100, 200].map((at) =>
      decodeBatch(encodeStream([rowsToRecordBatch(schema, rows.slice(at, at + 100))])),
    );
  };

  it('a language model run gets its losses ÷ ln 2, announced first or not', () => {
    const lm = syntheticRun('lm', 'adamw', { labelsPerExample: 128, dataset: 'fortunes' });
    expect(isLanguageModel(lm)).toBe(true);
    for (const announced of [true, false]) {
      const store = new RunStore();
      if (announced) store.upsert({ ...lm, rows: 0, finished: false });
      for (const frame of frames(lm)) store.append(lm.id, frame, 0);
      const s = store.runs.get(lm.id)!;
      expect(s.rows).toBe(250);
      expect(s.present.has('bitsPerCharacter')).toBe(true);
      expect(s.present.has('testBitsPerCharacter')).toBe(true);
      const bits = s.column('bitsPerCharacter')!;
      const testBits = s.column('testBitsPerCharacter')!;
      for (const row of rows) {
        expect(bits[row.step]).toBeCloseTo(row.loss / Math.LN2, 12);
        if (row.testLoss === null) expect(testBits[row.step]).toBeNaN();
        else expect(testBits[row.step]).toBeCloseTo(row.testLoss / Math.LN2, 12);
      }
      // The recorded columns are left as they are (nats).
      expect(s.column('loss')![7]).toBe(rows[7]!.loss);
    }
  });

  it('a classifier, or a run recorded before labelsPerExample, gets none', () => {
    for (const run of [
      syntheticRun('old', 'ring'),
      syntheticRun('mlp', 'ring', { labelsPerExample: 1 }),
    ]) {
      expect(isLanguageModel(run)).toBe(false);
      const store = new RunStore();
      for (const frame of frames(run)) store.append(run.id, frame, 0);
      const s = store.runs.get(run.id)!;
      expect(s.rows).toBe(250);
      for (const name of Object.keys(DERIVED_COLUMNS)) {
        expect(s.present.has(name)).toBe(false);
        expect(s.column(name)).toBeUndefined();
      }
    }
  });

  it('every chart draws columns that exist: recorded or derived', () => {
    const known = new Set([...METRIC_COLUMNS.map((c) => c.name), ...Object.keys(DERIVED_COLUMNS)]);
    for (const spec of CHARTS)
      for (const line of linesOf(spec)) expect(known).toContain(line.column);
    const bits = CHARTS.find((c) => c.key === 'bitsPerCharacter')!;
    expect(linesOf(bits).map((l) => l.column)).toEqual([
      'bitsPerCharacter',
      'testBitsPerCharacter',
    ]);
    expect(new Set(CHARTS.map((c) => c.key)).size).toBe(CHARTS.length);
  });
});

describe('formatting', () => {
  it('numbers, durations and tick labels that tell neighbouring ticks apart', () => {
    expect(formatNumber(0.123456)).toBe('0.1235');
    expect(formatNumber(2.5e-4)).toBe('2.5e-4');
    expect(formatNumber(1e-5)).toBe('1e-5');
    expect(formatNumber(123456)).toBe('1.23e5');
    expect(formatNumber(null)).toBe('—');
    expect(formatDuration(850)).toBe('850ms');
    expect(formatDuration(12_500)).toBe('12.5s');
    expect(formatDuration(185_000)).toBe('3m 05s');
    expect(formatDuration(3_720_000)).toBe('1h 02m');
    expect(tickLabels([0.04001, 0.04002, 0.04003])).toEqual(['0.04001', '0.04002', '0.04003']);
    expect(tickLabels([0, 0.5, 1])).toEqual(['0.0', '0.5', '1.0']);
    expect(tickLabels([0.05, 0.075, 0.1, 0.125])).toEqual(['0.050', '0.075', '0.100', '0.125']);
    expect(tickLabels([0, 250, 500])).toEqual(['0', '250', '500']);
    expect(tickLabels([1e-6, 2e-6, 3e-6])).toEqual(['1e-6', '2e-6', '3e-6']);
    expect(tickLabels([0, 2e-5, 4e-5])).toEqual(['0', '2e-5', '4e-5']);
    expect(tickLabels([0.1, null, 1], true)).toEqual(['0.1', '', '1']);
  });
});
