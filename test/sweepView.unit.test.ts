// The sweep view's pure parts (src/dashboard/sweepModel.ts, no DOM): the snapshot check, the
// table's columns, sorting, the filter grammar, axes and the log decision, and the mean ± spread
// of a group of curves whose steps do not line up. The view itself is tested in headless
// Chromium (dashboard.sweep.e2e.test.ts).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  axisOf,
  axisPosition,
  axisTicks,
  columnsOf,
  compareCells,
  filterTrials,
  matchesFilter,
  meanBand,
  metricColumn,
  parseFilter,
  parseSnapshot,
  scaleColor,
  sortTrials,
  statusText,
  wantsLog,
  type Curve,
  type SweepSnapshot,
  type SweepTrial,
} from '../src/dashboard/sweepModel.js';

function trial(id: string, extra: Partial<SweepTrial> = {}): SweepTrial {
  return {
    trial: id,
    runId: `run-${id}`,
    status: 'done',
    rung: null,
    settings: {},
    steps: 100,
    metric: null,
    best: null,
    seconds: 1,
    stepsPerSecond: 100,
    ...extra,
  };
}

const SNAPSHOT: SweepSnapshot = {
  name: 's',
  metric: 'testAccuracy',
  higherIsBetter: true,
  settings: ['optimizer', 'learningRate', 'nesterov', 'seed'],
  trials: [
    trial('a', {
      settings: { optimizer: 'sgd', learningRate: 0.1, nesterov: true, seed: 1 },
      metric: 0.91,
    }),
    trial('b', { settings: { optimizer: 'adamw', learningRate: 1e-3, seed: 1 }, metric: 0.95 }),
    trial('c', {
      settings: { optimizer: 'sgd', learningRate: 0.01, nesterov: false, seed: 2 },
      metric: null,
      status: 'running',
    }),
    trial('d', {
      settings: { optimizer: 'adamw', learningRate: 1e-4, seed: 2 },
      metric: 0.8,
      status: 'stopped',
      rung: 200,
    }),
  ],
};
const columns = columnsOf(SNAPSHOT);
const column = (id: string) => columns.find((c) => c.id === id)!;

describe('snapshot', () => {
  it('accepts the endpoint JSON and normalises what it can', () => {
    const parsed = parseSnapshot(JSON.parse(JSON.stringify(SNAPSHOT)));
    expect(parsed).toEqual(SNAPSHOT);
    const loose = parseSnapshot({
      settings: ['lr'],
      trials: [{ trial: 'x', status: 'weird', settings: { lr: 0.1, bad: {} }, metric: 'no' }],
    }) as SweepSnapshot;
    expect(loose.trials[0]).toMatchObject({
      trial: 'x',
      runId: null,
      status: 'pending',
      settings: { lr: 0.1 },
      metric: null,
    });
    expect(parseSnapshot(null)).toBe('not an object');
    expect(parseSnapshot({ settings: [], trials: {} })).toBe('"trials" is not an array');
    expect(parseSnapshot({ settings: [1], trials: [] })).toMatch(/settings/);
    expect(parseSnapshot({ settings: [], trials: [{}] })).toBe('trial 0 has no id');
  });

  it('has the table columns: trial, settings (seed last), status, outcomes', () => {
    expect(columns.map((c) => c.label)).toEqual([
      'trial',
      'optimizer',
      'learningRate',
      'nesterov',
      'seed',
      'status',
      'steps',
      'testAccuracy',
      'best testAccuracy',
      'seconds',
      'steps/s',
    ]);
    expect(columns.map((c) => c.kind)).toEqual([
      'text',
      'text',
      'number',
      'text',
      'number',
      'text',
      'number',
      'number',
      'number',
      'number',
      'number',
    ]);
    // A setting an optimizer lacks is blank; booleans read as text.
    expect(SNAPSHOT.trials.map((t) => column('setting:nesterov').get(t))).toEqual([
      'true',
      null,
      'false',
      null,
    ]);
    expect(statusText(SNAPSHOT.trials[3]!)).toBe('stopped at 200');
    expect(metricColumn('finalLoss')).toBe('loss');
    expect(metricColumn('testAccuracy')).toBe('testAccuracy');
  });
});

describe('sorting', () => {
  const ids = (ts: readonly SweepTrial[]) => ts.map((t) => t.trial);

  it('sorts numbers by value, text naturally, blanks last both ways', () => {
    expect(ids(sortTrials(SNAPSHOT.trials, column('metric'), 1))).toEqual(['d', 'a', 'b', 'c']);
    expect(ids(sortTrials(SNAPSHOT.trials, column('metric'), -1))).toEqual(['b', 'a', 'd', 'c']);
    expect(ids(sortTrials(SNAPSHOT.trials, column('setting:learningRate'), 1))).toEqual([
      'd',
      'b',
      'c',
      'a',
    ]);
    // Ties keep the snapshot's order (stable), in either direction.
    expect(ids(sortTrials(SNAPSHOT.trials, column('setting:optimizer'), 1))).toEqual([
      'b',
      'd',
      'a',
      'c',
    ]);
    expect(ids(sortTrials(SNAPSHOT.trials, column('setting:optimizer'), -1))).toEqual([
      'a',
      'c',
      'b',
      'd',
    ]);
    expect(ids(sortTrials(SNAPSHOT.trials, undefined, 1))).toEqual(['a', 'b', 'c', 'd']);
    expect(compareCells('trial2', 'trial10')).toBeLessThan(0);
    expect(compareCells(null, 1, -1)).toBeGreaterThan(0);
  });

  it('reversing reverses every order without blanks or ties', () => {
    fc.assert(
      fc.property(
        // SameValueZero: −0 and +0 are a tie for sorting, so "without ties" excludes the pair
        // (fast-check's default, SameValue, let it through: a CI run drew [0, −0]).
        fc.uniqueArray(fc.double({ noNaN: true, noDefaultInfinity: true }), {
          comparator: 'SameValueZero',
        }),
        (values) => {
          const ts = values.map((v, i) => trial(String(i), { metric: v }));
          const up = sortTrials(ts, column('metric'), 1).map((t) => t.metric);
          const down = sortTrials(ts, column('metric'), -1).map((t) => t.metric);
          expect(down).toEqual([...up].reverse());
          for (let i = 1; i < up.length; i++) expect(up[i]!).toBeGreaterThanOrEqual(up[i - 1]!);
        },
      ),
    );
  });
});

describe('filter grammar', () => {
  it('reads comparisons, exact text and substrings', () => {
    expect(parseFilter('')).toBeUndefined();
    expect(parseFilter('  ')).toBeUndefined();
    expect(parseFilter('>0.9')).toEqual({ kind: 'compare', tests: [['>', 0.9]] });
    expect(parseFilter('<1e-3')).toEqual({ kind: 'compare', tests: [['<', 0.001]] });
    expect(parseFilter('=0.1')).toEqual({ kind: 'compare', tests: [['=', 0.1]] });
    expect(parseFilter('>= 1e-4 <=.01')).toEqual({
      kind: 'compare',
      tests: [
        ['>=', 1e-4],
        ['<=', 0.01],
      ],
    });
    expect(parseFilter('!=3')).toEqual({ kind: 'compare', tests: [['!=', 3]] });
    expect(parseFilter('=AdamW')).toEqual({ kind: 'exact', text: 'adamw' });
    expect(parseFilter('Adam')).toEqual({ kind: 'contains', text: 'adam' });
    expect(parseFilter('>0.9 fast')).toEqual({ kind: 'contains', text: '>0.9 fast' });
  });

  it('matches numbers by comparison and substring, text by substring or exactly', () => {
    const m = (text: string, value: string | number | null, shown?: string) =>
      matchesFilter(parseFilter(text), value, shown);
    expect(m('>0.9', 0.95)).toBe(true);
    expect(m('>0.9', 0.9)).toBe(false);
    expect(m('>=0.9', 0.9)).toBe(true);
    expect(m('>0.9', null)).toBe(false);
    expect(m('<1e-3', 1e-4)).toBe(true);
    expect(m('<1e-3', 1e-3)).toBe(false);
    // Equality forgives float noise: 0.1 + 0.2 is 0.3.
    expect(m('=0.3', 0.1 + 0.2)).toBe(true);
    expect(m('=0.1', 0.1000001)).toBe(false);
    expect(m('>1 <3', 2)).toBe(true);
    expect(m('>1 <3', 3)).toBe(false);
    // A plain number is a substring of the cell as written or shown, or the same value.
    expect(m('0.00', 0.0003)).toBe(true);
    expect(m('1e-3', 0.001)).toBe(true);
    expect(m('1,5', 1500, '1,500')).toBe(true);
    expect(m('95', 0.95)).toBe(true);
    expect(m('96', 0.95)).toBe(false);
    // Text: contains, case-insensitive; `=` for exactly.
    expect(m('ADAM', 'adamw')).toBe(true);
    expect(m('=adam', 'adamw')).toBe(false);
    expect(m('=adamw', 'AdamW')).toBe(true);
    expect(m('sgd', null)).toBe(false);
    // A text cell that reads as a number takes comparisons.
    expect(m('>2', '3')).toBe(true);
    expect(m('>2', 'abc')).toBe(false);
    expect(m('', null)).toBe(true);
  });

  it('filters trials on every column at once', () => {
    const ids = (filters: Record<string, string>) =>
      filterTrials(SNAPSHOT.trials, columns, new Map(Object.entries(filters))).map((t) => t.trial);
    expect(ids({})).toEqual(['a', 'b', 'c', 'd']);
    expect(ids({ metric: '>0.9' })).toEqual(['a', 'b']);
    expect(ids({ metric: '>0.9', 'setting:optimizer': 'sgd' })).toEqual(['a']);
    expect(ids({ 'setting:learningRate': '<1e-2' })).toEqual(['b', 'd']);
    expect(ids({ status: 'stopped' })).toEqual(['d']);
    expect(ids({ 'setting:nesterov': 'true' })).toEqual(['a']);
  });
});

describe('axes', () => {
  it('goes log when every value is positive and they span more than 20×', () => {
    expect(wantsLog([1e-4, 1e-3, 1e-2])).toBe(true);
    expect(wantsLog([1, 20])).toBe(false);
    expect(wantsLog([1, 20.01])).toBe(true);
    expect(wantsLog([0, 1, 100])).toBe(false);
    expect(wantsLog([-1, 100])).toBe(false);
    expect(wantsLog([5])).toBe(false);
    expect(wantsLog([1, null, 100])).toBe(true);
    expect(wantsLog(['a', 1, 100])).toBe(false);
    expect(wantsLog([])).toBe(false);
  });

  it('places values on categorical, linear and log axes', () => {
    const cat = axisOf(['sgd', 'adamw', null, 'sgd', true]);
    expect(cat).toEqual({ kind: 'category', categories: ['adamw', 'sgd', 'true'] });
    expect(axisPosition(cat, 'adamw')).toBe(0);
    expect(axisPosition(cat, 'true')).toBe(1);
    expect(axisPosition(cat, true)).toBe(1);
    expect(axisPosition(cat, null)).toBeNull();
    const log = axisOf([1e-4, 1e-2, 1e-3]);
    expect(log).toEqual({ kind: 'log', min: 1e-4, max: 1e-2 });
    expect(axisPosition(log, 1e-3)).toBeCloseTo(0.5, 12);
    expect(axisTicks(log)).toEqual([1e-4, 1e-3, 1e-2]);
    const lin = axisOf([1, 2, 3]);
    expect(lin).toEqual({ kind: 'linear', min: 1, max: 3 });
    expect(axisPosition(lin, 2.5)).toBe(0.75);
    expect(axisPosition(axisOf([7, 7]), 7)).toBe(0.5);
    expect(axisOf([1e-4, 1e-2], false).kind).toBe('linear');
    expect(axisTicks({ kind: 'linear', min: 0.83, max: 0.96 })).toEqual([0.85, 0.9, 0.95]);
    expect(scaleColor(0)).toBe('#440154');
    expect(scaleColor(1)).toBe('#fde725');
  });
});

describe('group mean ± spread', () => {
  const curve = (points: Array<[number, number]>): Curve => ({
    xs: Float64Array.from(points, (p) => p[0]),
    ys: Float64Array.from(points, (p) => p[1]),
    n: points.length,
  });

  it('averages curves on their shared steps', () => {
    const band = meanBand([
      curve([
        [0, 1],
        [10, 3],
      ]),
      curve([
        [0, 3],
        [10, 5],
      ]),
    ]);
    expect(band.x).toEqual([0, 10]);
    expect(band.mean).toEqual([2, 4]);
    expect(band.sd[0]).toBeCloseTo(Math.SQRT2, 12);
    expect(band.min).toEqual([1, 3]);
    expect(band.max).toEqual([3, 5]);
    expect(band.count).toEqual([2, 2]);
  });

  it('aligns misaligned sparse steps by interpolating, never past a curve’s ends', () => {
    const nan = NaN;
    // Seed 1 evaluates at 100, 200, 300; seed 2 at 150, 250 (rows in between are NaN: sparse).
    const a: Curve = {
      xs: [0, 50, 100, 150, 200, 250, 300],
      ys: [nan, nan, 0.5, nan, 0.7, nan, 0.8],
      n: 7,
    };
    const b = curve([
      [150, 0.4],
      [250, 0.6],
    ]);
    const band = meanBand([a, b]);
    expect(band.x).toEqual([100, 150, 200, 250, 300]);
    expect(band.count).toEqual([1, 2, 2, 2, 1]);
    // At 150: a is 0.6 (between 0.5 and 0.7), b 0.4; at 200: a 0.7, b 0.5 (between 0.4 and 0.6).
    expect(band.mean[0]).toBeCloseTo(0.5, 12);
    expect(band.mean[1]).toBeCloseTo(0.5, 12);
    expect(band.mean[2]).toBeCloseTo(0.6, 12);
    expect(band.mean[3]).toBeCloseTo(0.675, 12);
    expect(band.mean[4]).toBeCloseTo(0.8, 12);
    expect(band.sd[0]).toBe(0);
    expect(band.sd[1]).toBeCloseTo(Math.sqrt(0.02), 12);
    expect(band.min[2]).toBeCloseTo(0.5, 12);
    expect(band.max[2]).toBeCloseTo(0.7, 12);
  });

  it('ignores empty curves and repeated steps, and grids long curves', () => {
    expect(meanBand([]).x).toEqual([]);
    expect(meanBand([curve([])]).x).toEqual([]);
    const repeated = meanBand([
      curve([
        [0, 1],
        [5, 2],
        [5, 4],
        [10, 6],
      ]),
    ]);
    expect(repeated.x).toEqual([0, 5, 10]);
    expect(repeated.mean).toEqual([1, 4, 6]);
    const long = Array.from({ length: 5000 }, (_, i) => [i, i * 2] as [number, number]);
    const band = meanBand([curve(long), curve(long.slice(1000))], 100);
    expect(band.x.length).toBeLessThanOrEqual(100);
    expect(band.x[0]).toBe(0);
    expect(band.x[band.x.length - 1]).toBe(4999);
    // A straight line stays on itself; within a grid step of a curve's end (0, 1000, 4999),
    // within half a grid step of it (slope 2).
    const gridStep = 4999 / 99;
    for (let k = 0; k < band.x.length; k++) {
      const end = [0, 1000, 4999].some((e) => Math.abs(band.x[k]! - e) < gridStep);
      expect(Math.abs(band.mean[k]! - band.x[k]! * 2)).toBeLessThanOrEqual(end ? gridStep : 1e-9);
      expect(band.count[k]).toBe(band.x[k]! >= 1000 ? 2 : 1);
    }
  });

  it('averages a dense noisy curve over each grid step instead of sampling it', () => {
    // 2x ± 1, alternating every step: sampled at even steps it would read 2x + 1 throughout.
    const noisy = Array.from(
      { length: 10_000 },
      (_, i) => [i, 2 * i + (i % 2 ? -1 : 1)] as [number, number],
    );
    const band = meanBand([curve(noisy)], 101);
    expect(band.x).toHaveLength(101);
    for (let k = 1; k < band.x.length - 1; k++)
      expect(Math.abs(band.mean[k]! - 2 * band.x[k]!)).toBeLessThan(0.5);
    // A sparse curve gridded with a dense one keeps its value between its own points.
    const sparse = curve([
      [0, 0],
      [9999, 9999],
    ]);
    const both = meanBand([curve(noisy), sparse], 101);
    for (let k = 0; k < both.x.length; k++) expect(both.count[k]).toBe(2);
    expect(both.min[50]).toBeCloseTo(both.x[50]!, 6);
  });

  it('keeps mean within min–max and sd ≥ 0 for any curves', () => {
    const points = fc.array(
      fc.tuple(fc.integer({ min: 0, max: 200 }), fc.double({ min: -10, max: 10, noNaN: true })),
      { maxLength: 40 },
    );
    fc.assert(
      fc.property(fc.array(points, { minLength: 1, maxLength: 5 }), (sets) => {
        const curves = sets.map((ps) => curve([...ps].sort((p, q) => p[0] - q[0])));
        // Exact steps, and gridded (fewer grid steps than distinct steps).
        for (const band of [meanBand(curves), meanBand(curves, 7)])
          for (let k = 0; k < band.x.length; k++) {
            expect(band.mean[k]!).toBeGreaterThanOrEqual(band.min[k]! - 1e-9);
            expect(band.mean[k]!).toBeLessThanOrEqual(band.max[k]! + 1e-9);
            expect(band.sd[k]!).toBeGreaterThanOrEqual(0);
            expect(band.count[k]!).toBeGreaterThan(0);
            if (k > 0) expect(band.x[k]!).toBeGreaterThan(band.x[k - 1]!);
          }
      }),
    );
  });
});
