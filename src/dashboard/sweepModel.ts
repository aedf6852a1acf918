// The sweep view's pure parts (no DOM, so node tests read them): the JSON `GET /api/sweep`
// answers, the table's columns, sorting and filter grammar, axis scales, and the mean ± spread of
// a group of curves. The view itself is sweepView.ts.

import type {
  SweepSettingValue,
  SweepSnapshot,
  SweepSnapshotTrial,
  SweepTrialStatus,
} from '../metrics/sweepSnapshot.js';

// The contract lives in metrics/ (the server's sweep writes it); these names are the view's.
export type TrialStatus = SweepTrialStatus;
export type SettingValue = SweepSettingValue;
export type SweepTrial = SweepSnapshotTrial;
export type { SweepSnapshot };

const STATUSES: readonly string[] = ['pending', 'running', 'done', 'stopped', 'failed'];

const numberOrNull = (v: unknown): number | null =>
  typeof v === 'number' && Number.isFinite(v) ? v : null;

/**
 * The snapshot, checked and normalised (missing numbers null, unknown settings dropped), or a
 * line saying what is wrong with it.
 */
export function parseSnapshot(json: unknown): SweepSnapshot | string {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return 'not an object';
  const o = json as Record<string, unknown>;
  if (!Array.isArray(o.trials)) return '"trials" is not an array';
  if (!Array.isArray(o.settings) || !o.settings.every((s) => typeof s === 'string'))
    return '"settings" is not an array of names';
  const trials: SweepTrial[] = [];
  for (const [i, t] of (o.trials as unknown[]).entries()) {
    if (typeof t !== 'object' || t === null) return `trial ${i} is not an object`;
    const r = t as Record<string, unknown>;
    if (typeof r.trial !== 'string') return `trial ${i} has no id`;
    const settings: Record<string, SettingValue> = {};
    if (typeof r.settings === 'object' && r.settings !== null) {
      for (const [k, v] of Object.entries(r.settings as Record<string, unknown>)) {
        if (typeof v === 'string' || typeof v === 'boolean' || (typeof v === 'number' && v === v))
          settings[k] = v;
      }
    }
    trials.push({
      trial: r.trial,
      runId: typeof r.runId === 'string' ? r.runId : null,
      status: (STATUSES.includes(r.status as string) ? r.status : 'pending') as TrialStatus,
      rung: numberOrNull(r.rung),
      settings,
      steps: numberOrNull(r.steps),
      metric: numberOrNull(r.metric),
      best: numberOrNull(r.best),
      seconds: numberOrNull(r.seconds),
      stepsPerSecond: numberOrNull(r.stepsPerSecond),
      ...(typeof r.error === 'string' ? { error: r.error } : {}),
    });
  }
  return {
    name: typeof o.name === 'string' ? o.name : 'sweep',
    metric: typeof o.metric === 'string' ? o.metric : 'metric',
    higherIsBetter: o.higherIsBetter === true,
    settings: o.settings as string[],
    trials,
  };
}

// ---- columns -----------------------------------------------------------------------------------

export type Cell = string | number | null;

/** A column of the trials table. */
export interface Column {
  /** `trial`, `setting:<name>`, `status` or an outcome (`steps`, `metric`, …). */
  readonly id: string;
  readonly label: string;
  /** Numbers sort numerically and take comparison filters. */
  readonly kind: 'text' | 'number';
  readonly get: (t: SweepTrial) => Cell;
}

const OUTCOMES: ReadonlyArray<readonly [keyof SweepTrial & string, string]> = [
  ['steps', 'steps'],
  ['metric', ''],
  ['best', ''],
  ['seconds', 'seconds'],
  ['stepsPerSecond', 'steps/s'],
];

/** Numeric outcome columns a chart can put on an axis. */
export const OUTCOME_KEYS = ['metric', 'best', 'steps', 'seconds', 'stepsPerSecond'] as const;
export type OutcomeKey = (typeof OUTCOME_KEYS)[number];

export const settingCell = (v: SettingValue | undefined): Cell =>
  v === undefined ? null : typeof v === 'boolean' ? String(v) : v;

/** The status as the table shows it: `stopped at 200`, the rung (step budget) of a halving sweep. */
export function statusText(t: SweepTrial): string {
  return t.status === 'stopped' && t.rung !== null ? `stopped at ${t.rung}` : t.status;
}

/** trial, every varied setting, status, steps, metric, best, seconds, steps/s. */
export function columnsOf(snapshot: SweepSnapshot): Column[] {
  const settings = snapshot.settings.map((name): Column => {
    const numeric = snapshot.trials.every((t) => {
      const v = t.settings[name];
      return v === undefined || typeof v === 'number';
    });
    return {
      id: `setting:${name}`,
      label: name,
      kind: numeric ? 'number' : 'text',
      get: (t) => settingCell(t.settings[name]),
    };
  });
  return [
    { id: 'trial', label: 'trial', kind: 'text', get: (t) => t.trial },
    ...settings,
    { id: 'status', label: 'status', kind: 'text', get: statusText },
    ...OUTCOMES.map(([key, label]): Column => ({
      id: key,
      label:
        key === 'metric'
          ? snapshot.metric
          : key === 'best'
            ? `best ${snapshot.metric}`
            : label || key,
      kind: 'number',
      get: (t) => t[key] as number | null,
    })),
  ];
}

// ---- sorting -----------------------------------------------------------------------------------

const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

/** Numbers by value, text naturally (`lr2` before `lr10`), nulls last whatever the direction. */
export function compareCells(a: Cell, b: Cell, direction: 1 | -1 = 1): number {
  if (a === null || b === null) return a === b ? 0 : a === null ? 1 : -1;
  if (typeof a === 'number' && typeof b === 'number') return direction * (a - b);
  return direction * collator.compare(String(a), String(b));
}

/** The trials sorted by `column` (stable: ties keep the snapshot's order). */
export function sortTrials<T extends SweepTrial>(
  trials: readonly T[],
  column: Column | undefined,
  direction: 1 | -1,
): T[] {
  if (!column) return [...trials];
  return trials
    .map((t, i) => ({ t, i, v: column.get(t) }))
    .sort((a, b) => compareCells(a.v, b.v, direction) || a.i - b.i)
    .map((e) => e.t);
}

// ---- filters -----------------------------------------------------------------------------------

export type Comparison = '<' | '<=' | '>' | '>=' | '=' | '!=';

/**
 * A column filter: comparisons that must all hold (`>0.9`, `>=1e-4 <1e-2`, `=0.1`, `!=3`), an
 * exact text (`=adamw`), or a case-insensitive substring of the cell.
 */
export type Filter =
  | { readonly kind: 'compare'; readonly tests: ReadonlyArray<readonly [Comparison, number]> }
  | { readonly kind: 'exact'; readonly text: string }
  | { readonly kind: 'contains'; readonly text: string };

const NUMBER = String.raw`[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?`;
const COMPARISON = new RegExp(String.raw`(<=|>=|!=|==|<|>|=)\s*(${NUMBER})`, 'gi');

/** The filter a box's text means; undefined for an empty box (every row passes). */
export function parseFilter(text: string): Filter | undefined {
  const trimmed = text.trim();
  if (trimmed === '') return undefined;
  const tests: Array<[Comparison, number]> = [];
  const rest = trimmed.replace(COMPARISON, (_m, op: string, value: string) => {
    tests.push([(op === '==' ? '=' : op) as Comparison, Number(value)]);
    return ' ';
  });
  if (tests.length > 0 && /^[\s,&]*$/.test(rest)) return { kind: 'compare', tests };
  const exact = /^==?(.+)$/.exec(trimmed);
  if (exact) return { kind: 'exact', text: exact[1]!.trim().toLowerCase() };
  return { kind: 'contains', text: trimmed.toLowerCase() };
}

function holds(op: Comparison, v: number, x: number): boolean {
  const same = v === x || Math.abs(v - x) <= 1e-9 * Math.max(Math.abs(v), Math.abs(x));
  switch (op) {
    case '<':
      return v < x && !same;
    case '<=':
      return v <= x || same;
    case '>':
      return v > x && !same;
    case '>=':
      return v >= x || same;
    case '=':
      return same;
    case '!=':
      return !same;
  }
}

/**
 * Whether a cell passes: comparisons need a number (a text cell that reads as one counts), a
 * blank cell (null) passes no comparison; text matches the cell as written or as `shown`.
 */
export function matchesFilter(filter: Filter | undefined, value: Cell, shown?: string): boolean {
  if (!filter) return true;
  if (filter.kind === 'compare') {
    const v = typeof value === 'number' ? value : value === null ? NaN : Number(value);
    if (!Number.isFinite(v) || (typeof value === 'string' && value.trim() === '')) return false;
    return filter.tests.every(([op, x]) => holds(op, v, x));
  }
  if (value === null) return false;
  const texts = [String(value).toLowerCase(), ...(shown ? [shown.toLowerCase()] : [])];
  if (filter.kind === 'exact') {
    if (texts.includes(filter.text)) return true;
    const x = Number(filter.text);
    return (
      typeof value === 'number' && filter.text !== '' && Number.isFinite(x) && holds('=', value, x)
    );
  }
  if (texts.some((t) => t.includes(filter.text))) return true;
  // A plain number also finds the same value written otherwise (`1e-3` finds 0.001).
  const x = Number(filter.text);
  return (
    typeof value === 'number' &&
    /\d/.test(filter.text) &&
    Number.isFinite(x) &&
    holds('=', value, x)
  );
}

/** Trials passing every column's filter (filters by column id). */
export function filterTrials<T extends SweepTrial>(
  trials: readonly T[],
  columns: readonly Column[],
  filters: ReadonlyMap<string, string>,
  show: (column: Column, value: Cell) => string = (_c, v) => (v === null ? '' : String(v)),
): T[] {
  const active = columns
    .map((c) => [c, parseFilter(filters.get(c.id) ?? '')] as const)
    .filter((e): e is readonly [Column, Filter] => e[1] !== undefined);
  if (active.length === 0) return [...trials];
  return trials.filter((t) =>
    active.every(([c, f]) => {
      const v = c.get(t);
      return matchesFilter(f, v, show(c, v));
    }),
  );
}

// ---- axes --------------------------------------------------------------------------------------

/** How much wider than its smallest value a positive range must be to read better in log. */
export const LOG_SPAN = 20;

/** Log pays when every value is positive and they span more than 20× (needs two values). */
export function wantsLog(values: Iterable<Cell | boolean | undefined>): boolean {
  let min = Infinity;
  let max = -Infinity;
  let count = 0;
  for (const v of values) {
    if (v === null || v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) return false;
    min = Math.min(min, v);
    max = Math.max(max, v);
    count++;
  }
  return count >= 2 && max > LOG_SPAN * min;
}

/** An axis: categories in natural order, or a numeric range (log where {@link wantsLog}). */
export type Axis =
  | { readonly kind: 'category'; readonly categories: readonly string[] }
  | { readonly kind: 'linear' | 'log'; readonly min: number; readonly max: number };

/** The axis for a column's values: categories if any is text or boolean. */
export function axisOf(
  values: ReadonlyArray<Cell | boolean | undefined>,
  log = wantsLog(values),
): Axis {
  const present = values.filter(
    (v): v is string | number | boolean => v !== null && v !== undefined,
  );
  if (present.some((v) => typeof v !== 'number')) {
    const categories = [...new Set(present.map(String))].sort(collator.compare);
    return { kind: 'category', categories };
  }
  const numbers = (present as number[]).filter((v) => Number.isFinite(v) && (!log || v > 0));
  if (numbers.length === 0) return { kind: 'linear', min: 0, max: 1 };
  return { kind: log ? 'log' : 'linear', min: Math.min(...numbers), max: Math.max(...numbers) };
}

/** Where a value sits on the axis, 0 (low) to 1 (high); null when it has no place (blank). */
export function axisPosition(axis: Axis, value: Cell | boolean | undefined): number | null {
  if (value === null || value === undefined) return null;
  if (axis.kind === 'category') {
    const i = axis.categories.indexOf(String(value));
    if (i < 0) return null;
    return axis.categories.length === 1 ? 0.5 : i / (axis.categories.length - 1);
  }
  if (typeof value !== 'number' || !Number.isFinite(value)) return null;
  if (axis.kind === 'log') {
    if (value <= 0) return null;
    const lo = Math.log(axis.min);
    const hi = Math.log(axis.max);
    return hi === lo ? 0.5 : (Math.log(value) - lo) / (hi - lo);
  }
  return axis.max === axis.min ? 0.5 : (value - axis.min) / (axis.max - axis.min);
}

/** A few tick values of a numeric axis: decades for log, round values otherwise. */
export function axisTicks(axis: Axis): number[] {
  if (axis.kind === 'category') return [];
  if (axis.min === axis.max) return [axis.min];
  if (axis.kind === 'log') {
    const ticks: number[] = [];
    for (let e = Math.ceil(Math.log10(axis.min)); 10 ** e <= axis.max * (1 + 1e-9); e++)
      ticks.push(Number((10 ** e).toPrecision(12)));
    return ticks.length >= 2 ? ticks : [axis.min, axis.max];
  }
  // Round steps (1, 2 or 5 × 10^k), about four of them across the range.
  const raw = (axis.max - axis.min) / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = magnitude * ([1, 2, 5, 10].find((f) => f * magnitude >= raw) ?? 10);
  const ticks: number[] = [];
  for (let k = Math.ceil(axis.min / step - 1e-9); k * step <= axis.max + step * 1e-9; k++)
    ticks.push(Number((k * step).toPrecision(12)));
  return ticks;
}

/** A colour of a perceptual scale (viridis) at t in [0, 1]. */
export function scaleColor(t: number): string {
  const stops = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ] as const;
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const hex = (c: number): string => Math.round(c).toString(16).padStart(2, '0');
  const a = stops[i]!;
  const b = stops[i + 1]!;
  return `#${hex(a[0] + (b[0] - a[0]) * f)}${hex(a[1] + (b[1] - a[1]) * f)}${hex(a[2] + (b[2] - a[2]) * f)}`;
}

/** Deterministic jitter in [-1, 1] for a trial id (spreads points sharing a category). */
export function jitterOf(id: string): number {
  let h = 2166136261;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 16777619);
  return ((h >>> 0) / 0xffffffff) * 2 - 1;
}

// ---- group curves ------------------------------------------------------------------------------

/** One trial's curve: `ys[i]` at step `xs[i]` for i < n (NaN where the row has no value). */
export interface Curve {
  readonly xs: ArrayLike<number>;
  readonly ys: ArrayLike<number>;
  readonly n: number;
}

/** The mean of a group's curves on a common step grid, with ± 1 sd and min–max. */
export interface GroupBand {
  readonly x: number[];
  readonly mean: number[];
  /** Sample standard deviation (0 with one curve at that step). */
  readonly sd: number[];
  readonly min: number[];
  readonly max: number[];
  /** How many curves have a value at each step. */
  readonly count: number[];
}

/** The finite points of a curve, ascending in x, one per x (the last row wins). */
function pointsOf(curve: Curve): { x: number[]; y: number[] } {
  const x: number[] = [];
  const y: number[] = [];
  let sorted = true;
  for (let i = 0; i < curve.n; i++) {
    const xi = curve.xs[i]!;
    const yi = curve.ys[i]!;
    if (!Number.isFinite(xi) || !Number.isFinite(yi)) continue;
    if (x.length > 0 && xi <= x[x.length - 1]!) {
      if (xi === x[x.length - 1]) {
        y[y.length - 1] = yi;
        continue;
      }
      sorted = false;
    }
    x.push(xi);
    y.push(yi);
  }
  if (sorted) return { x, y };
  const order = x.map((_, i) => i).sort((a, b) => x[a]! - x[b]! || a - b);
  const ox: number[] = [];
  const oy: number[] = [];
  for (const i of order) {
    if (ox.length > 0 && ox[ox.length - 1] === x[i]) oy[oy.length - 1] = y[i]!;
    else {
      ox.push(x[i]!);
      oy.push(y[i]!);
    }
  }
  return { x: ox, y: oy };
}

/** The curve's value at `at`: linear between its neighbouring points, NaN outside its range. */
function valueAt(p: { x: number[]; y: number[] }, at: number, from: { i: number }): number {
  const { x, y } = p;
  if (x.length === 0 || at < x[0]! || at > x[x.length - 1]!) return NaN;
  // `at` only grows across one pass, so the cursor walks forward.
  while (from.i + 1 < x.length && x[from.i + 1]! <= at) from.i++;
  const i = from.i;
  if (x[i] === at || i + 1 >= x.length) return y[i]!;
  const f = (at - x[i]!) / (x[i + 1]! - x[i]!);
  return y[i]! + f * (y[i + 1]! - y[i]!);
}

/**
 * The curve on `grid`, smoothed over it: its rows are pooled by nearest grid step (half-way
 * boundaries) into centroids (mean step, mean value), which are read at each grid step linearly
 * (a row per grid step or fewer: the rows themselves); NaN outside the curve's first and last
 * step, the end centroid's value between it and the curve's end.
 */
function binMeans(p: { x: number[]; y: number[] }, grid: readonly number[]): Float64Array {
  const cx: number[] = [];
  const cy: number[] = [];
  let k = 0;
  let bin = -1;
  let sx = 0;
  let sy = 0;
  let n = 0;
  const close = (): void => {
    if (n > 0) {
      cx.push(sx / n);
      cy.push(sy / n);
    }
    sx = sy = n = 0;
  };
  for (let i = 0; i < p.x.length; i++) {
    const x = p.x[i]!;
    while (k + 1 < grid.length && (grid[k]! + grid[k + 1]!) / 2 <= x) k++;
    if (k !== bin) {
      close();
      bin = k;
    }
    sx += x;
    sy += p.y[i]!;
    n++;
  }
  close();
  const centroids = { x: cx, y: cy };
  const first = p.x[0]!;
  const last = p.x[p.x.length - 1]!;
  const out = new Float64Array(grid.length).fill(NaN);
  const cursor = { i: 0 };
  for (let g = 0; g < grid.length; g++) {
    const at = grid[g]!;
    if (at < first || at > last) continue;
    out[g] =
      at <= cx[0]!
        ? cy[0]!
        : at >= cx[cx.length - 1]!
          ? cy[cy.length - 1]!
          : valueAt(centroids, at, cursor);
  }
  return out;
}

/**
 * Mean, sample sd, min and max over a group's curves (a sweep's seeds), step by step. Curves
 * rarely share their steps (test rows are sparse, evaluations of resumed or halved trials land
 * elsewhere): each curve is read at every step any curve has, linearly between its own points
 * and never beyond its first or last, so a step counts only the curves that reach it. Past
 * `maxPoints` distinct steps the grid is that many steps evenly spread instead, and each curve
 * counts there smoothed over its rows nearest that grid step (a noisy train loss read at every
 * k-th step alone would alias).
 */
export function meanBand(curves: readonly Curve[], maxPoints = 800): GroupBand {
  const points = curves.map(pointsOf).filter((p) => p.x.length > 0);
  const band: GroupBand = { x: [], mean: [], sd: [], min: [], max: [], count: [] };
  if (points.length === 0) return band;
  let lo = Infinity;
  let hi = -Infinity;
  const steps = new Set<number>();
  let many = false;
  for (const p of points) {
    lo = Math.min(lo, p.x[0]!);
    hi = Math.max(hi, p.x[p.x.length - 1]!);
    if (many) continue;
    for (const x of p.x) {
      steps.add(x);
      if (steps.size > maxPoints) {
        many = true;
        break;
      }
    }
  }
  let grid: number[];
  if (!many) grid = [...steps].sort((a, b) => a - b);
  else {
    const n = Math.max(2, maxPoints);
    grid = [];
    for (let k = 0; k < n; k++) {
      const x = Math.round(lo + ((hi - lo) * k) / (n - 1));
      if (grid.length === 0 || x > grid[grid.length - 1]!) grid.push(x);
    }
  }
  const binned = many ? points.map((p) => binMeans(p, grid)) : undefined;
  const cursors = points.map(() => ({ i: 0 }));
  for (const [k, at] of grid.entries()) {
    let count = 0;
    let sum = 0;
    let min = Infinity;
    let max = -Infinity;
    const values: number[] = [];
    points.forEach((p, j) => {
      const v = binned ? binned[j]![k]! : valueAt(p, at, cursors[j]!);
      if (v !== v) return;
      values.push(v);
      count++;
      sum += v;
      if (v < min) min = v;
      if (v > max) max = v;
    });
    if (count === 0) continue;
    const mean = sum / count;
    let ss = 0;
    for (const v of values) ss += (v - mean) * (v - mean);
    band.x.push(at);
    band.mean.push(mean);
    band.sd.push(count > 1 ? Math.sqrt(ss / (count - 1)) : 0);
    band.min.push(min);
    band.max.push(max);
    band.count.push(count);
  }
  return band;
}

/** The run column holding a sweep metric's curve (`finalLoss` is the train loss). */
export function metricColumn(metric: string): string {
  return metric === 'finalLoss' ? 'loss' : metric;
}
