import uPlot from 'uplot';
import { decimateGrowing, decimateMinMax, type GrowingState } from './decimate.js';
import { formatDuration, formatNumber, formatStep, tickLabels } from './format.js';
import { linesOf, type ChartLine, type ChartSpec } from './chartSpecs.js';
import type { RunSeries, RunStore } from './store.js';

export type XAxis = 'step' | 'wall';

export interface View {
  readonly smoothing: number;
  readonly log: boolean;
  readonly xAxis: XAxis;
  /** Zoomed x window, or null for everything. */
  readonly xRange: readonly [number, number] | null;
  readonly hidden: ReadonlySet<string>;
}

/** Per-run colours, distinct on a dark background (Tableau 10, brightened). */
export const PALETTE = [
  '#5aa9f5',
  '#f5a04a',
  '#62cc74',
  '#f26a6c',
  '#c08be0',
  '#ecd05a',
  '#5fd3c9',
  '#ff9ec2',
  '#c9a07f',
  '#b8c0cc',
];
export const colorOf = (index: number): string => PALETTE[index % PALETTE.length]!;

const HEIGHT = 210;
const WALL_INCRS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 15e3, 3e4, 6e4, 12e4, 3e5, 6e5, 9e5, 18e5,
  36e5, 72e5, 144e5, 288e5, 864e5,
];
const AXIS = {
  stroke: '#8b95a5',
  grid: { stroke: 'rgba(255,255,255,0.06)', width: 1 },
  ticks: { stroke: 'rgba(255,255,255,0.12)', width: 1, size: 4 },
  font: '11px system-ui, sans-serif',
};

export interface ChartEvents {
  /** The user selected an x window (null: double-click, back to everything). */
  zoom(range: readonly [number, number] | null): void;
  /** The chart needs drawing again (it was resized). */
  redraw(): void;
  /** The user clicked a run in this chart's legend: hide or show it everywhere. */
  hide(runId: string, hidden: boolean): void;
}

/** A chart of one quantity, all runs overlaid, redrawn from decimated data. */
export class Chart {
  readonly el: HTMLElement;
  private readonly body: HTMLElement;
  private plot: uPlot | undefined;
  private structure = '';
  private lastKey = '';
  /** Points handed to uPlot in the last draw, over all runs. */
  points = 0;
  /**
   * The largest x handed to uPlot in the last draw. Once decimation caps `points` at about two
   * per pixel column, this is what shows new rows being drawn.
   */
  lastX = -Infinity;
  /** The zoom window the x scale is pinned to. */
  private zoomRange: [number, number] | null = null;
  /** Content width from the ResizeObserver (reading clientWidth every frame forces layout). */
  private cssWidth = 0;
  /** Charts scrolled out of view redraw at most once a second. */
  private onScreen = true;
  private drawnAt = 0;
  /** Set while the page itself shows or hides series (not the user clicking the legend). */
  private applying = false;
  /** Incremental decimation of each run's line (unzoomed), by run id and column. */
  private readonly growing = new Map<string, GrowingState>();
  private readonly lines: readonly ChartLine[];

  constructor(
    readonly spec: ChartSpec,
    parent: HTMLElement,
    private readonly events: ChartEvents,
  ) {
    this.lines = linesOf(spec);
    this.el = document.createElement('figure');
    this.el.className = 'chart';
    this.el.id = `chart-${spec.key}`;
    const caption = document.createElement('figcaption');
    caption.textContent = spec.title;
    this.body = document.createElement('div');
    this.body.className = 'chart-body';
    this.el.append(caption, this.body);
    this.el.hidden = true;
    parent.append(this.el);
    new ResizeObserver((entries) => {
      this.cssWidth = entries[entries.length - 1]?.contentRect.width ?? 0;
      if (this.plot && !this.el.hidden) {
        const width = this.width();
        if (Math.abs(width - this.plot.width) > 1) {
          this.plot.setSize({ width, height: HEIGHT });
          this.lastKey = '';
          events.redraw();
        }
      }
    }).observe(this.body);
    new IntersectionObserver(
      (entries) => {
        const was = this.onScreen;
        this.onScreen = entries[entries.length - 1]?.isIntersecting ?? true;
        if (this.onScreen && !was) events.redraw();
      },
      { rootMargin: '200px' },
    ).observe(this.el);
  }

  private width(): number {
    return Math.max(240, Math.floor(this.cssWidth || this.body.clientWidth));
  }

  /** Whether any run has a value for this quantity. */
  hasData(store: RunStore): boolean {
    if (this.spec.always) return store.runs.size > 0;
    for (const run of store.runs.values()) if (this.reports(run)) return true;
    return false;
  }

  private reports(run: RunSeries): boolean {
    return this.lines.some((line) => run.present.has(line.column));
  }

  /**
   * Redraws when data or view changed. Returns 'stale' when it put off a redraw (scrolled out of
   * view and drawn less than a second ago, unless `force`): call again later.
   */
  render(store: RunStore, view: View, force = false): 'drawn' | 'unchanged' | 'stale' {
    const show = this.hasData(store);
    if (this.el.hidden === show) this.el.hidden = !show;
    if (!show) {
      this.points = 0;
      this.lastX = -Infinity;
      return 'unchanged';
    }
    // The runs that report this quantity (colours stay those of the run's place in the panel).
    const all = [...store.runs.values()];
    const reporting = all.filter((r) => this.reports(r));
    const runs = reporting.length > 0 ? reporting : all;
    const colors = runs.map((r) => colorOf(all.indexOf(r)));
    const log = view.log && this.spec.log;
    const structure = `${runs.map((r) => `${r.run.id}\u0000${r.run.label}`).join('\u0001')}|${colors.join()}|${log}|${view.xAxis}`;
    if (structure !== this.structure || !this.plot) {
      this.plot?.destroy();
      this.plot = this.create(runs, colors, log, view.xAxis);
      this.structure = structure;
      this.lastKey = '';
    }
    const plot = this.plot;
    const key = `${store.version}|${view.smoothing}|${view.xRange?.join(',') ?? ''}|${[...view.hidden].join(',')}|${plot.width}`;
    if (key === this.lastKey) return 'unchanged';
    const now = performance.now();
    if (!force && !this.onScreen && this.lastKey !== '' && now - this.drawnAt < 1000)
      return 'stale';
    this.lastKey = key;
    this.drawnAt = now;

    const buckets = Math.max(
      50,
      Math.round(plot.bbox.width / (window.devicePixelRatio || 1)) || this.width(),
    );
    this.zoomRange = view.xRange ? [view.xRange[0], view.xRange[1]] : null;
    const x0 = view.xRange ? view.xRange[0] : -Infinity;
    const x1 = view.xRange ? view.xRange[1] : Infinity;
    const xColumn = view.xAxis === 'step' ? 'step' : 'wallMs';
    const tables: uPlot.AlignedData[] = [];
    let points = 0;
    let lastX = -Infinity;
    runs.forEach((run: RunSeries, i) => {
      const visible = !view.hidden.has(run.run.id);
      const xs = run.column(xColumn);
      this.lines.forEach((line, j) => {
        const ys = run.smoothed(line.column, view.smoothing);
        if (!visible || !xs || !ys) {
          tables.push([[], []]);
        } else {
          let d;
          if (view.xRange) d = decimateMinMax(xs, ys, run.rows, buckets, x0, x1, log);
          else {
            // Unzoomed, the usual live case: only the rows added since the last frame are read.
            const key = `${xColumn}|${view.smoothing}|${log}|${buckets}`;
            const id = `${run.run.id}\u0000${line.column}`;
            const grown = decimateGrowing(
              this.growing.get(id),
              key,
              xs,
              ys,
              run.rows,
              buckets,
              log,
            );
            if (grown.state) this.growing.set(id, grown.state);
            else this.growing.delete(id);
            d = grown.points;
          }
          points += d.x.length;
          if (d.x.length > 0) lastX = Math.max(lastX, d.x[d.x.length - 1]!);
          tables.push([d.x, d.y]);
        }
        const index = 1 + i * this.lines.length + j;
        const s = plot.series[index];
        if (s && s.show !== visible) {
          this.applying = true;
          plot.setSeries(index, { show: visible });
          this.applying = false;
        }
      });
    });
    const data: uPlot.AlignedData =
      tables.length === 0 ? [[]] : tables.length === 1 ? tables[0]! : uPlot.join(tables);
    plot.setData(data);
    this.points = points;
    this.lastX = lastX;
    this.el.dataset.points = String(points);
    this.el.dataset.yDistr = String(plot.scales.y?.distr ?? 1);
    return 'drawn';
  }

  private create(
    runs: readonly RunSeries[],
    colors: readonly string[],
    log: boolean,
    xAxis: XAxis,
  ): uPlot {
    this.body.replaceChildren();
    const wall = xAxis === 'wall';
    const opts: uPlot.Options = {
      width: this.width(),
      height: HEIGHT,
      pxAlign: false,
      padding: [8, 18, 0, 0],
      cursor: {
        sync: { key: 'grng' },
        drag: { x: true, y: false, setScale: false },
        bind: { dblclick: () => null },
        points: { size: 6 },
      },
      select: { show: true, left: 0, top: 0, width: 0, height: 0 },
      legend: { show: true, live: true },
      scales: {
        x: {
          time: false,
          range: (_u, min, max) =>
            this.zoomRange ?? (min === max ? [min - 1, max + 1] : [min, max]),
        },
        // Log: a tight range (not whole decades) so a series spanning 0.1…0.3 fills the chart.
        y: log ? { distr: 3, log: 10, range: (_u, min, max) => logRange(min, max) } : { distr: 1 },
      },
      axes: [
        {
          ...AXIS,
          size: 30,
          ...(wall ? { incrs: WALL_INCRS } : {}),
          values: (_u: uPlot, splits: number[]) =>
            splits.map((v) => (v === null ? '' : wall ? formatDuration(v) : formatStep(v))),
        },
        { ...AXIS, size: 58, values: (_u: uPlot, splits: number[]) => tickLabels(splits, log) },
      ],
      series: [
        // Legend values: at the cursor while hovering, else the latest (so it reads live).
        {
          label: wall ? 'time' : 'step',
          value: (u, v, _s, idx) => formatX(idx === null ? lastValue(u.data[0]) : v, wall),
        },
        ...runs.flatMap((run, i) =>
          this.lines.map((line) => ({
            label: line.label ? `${run.run.label} ${line.label}` : run.run.label,
            stroke: colors[i]!,
            width: 1.5,
            ...(line.dash ? { dash: [...line.dash] } : {}),
            spanGaps: true,
            value: (u: uPlot, v: number | null, s: number, idx: number | null) =>
              formatNumber(idx === null ? lastValue(u.data[s]) : v),
          })),
        ),
      ],
      hooks: {
        setSelect: [
          (u: uPlot) => {
            const { left, width } = u.select;
            if (width < 4) return;
            const lo = u.posToVal(left, 'x');
            const hi = u.posToVal(left + width, 'x');
            u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
            if (hi > lo) this.events.zoom([lo, hi]);
          },
        ],
        setSeries: [
          (_u: uPlot, index: number | null, series: uPlot.Series) => {
            const run = index ? runs[Math.floor((index - 1) / this.lines.length)] : undefined;
            if (!this.applying && run && series.show !== undefined)
              this.events.hide(run.run.id, !series.show);
          },
        ],
        ready: [
          (u: uPlot) => {
            u.over.addEventListener('dblclick', () => this.events.zoom(null));
          },
        ],
      },
    };
    return new uPlot(opts, [[], ...runs.flatMap(() => this.lines.map(() => []))], this.body);
  }
}

function formatX(v: number | null | undefined, wall: boolean): string {
  if (v === null || v === undefined) return '—';
  return wall ? formatDuration(v) : String(Math.round(v));
}

/** The last non-null value of a series (its data is sorted by x). */
function lastValue(values: ArrayLike<number | null | undefined> | undefined): number | null {
  if (!values) return null;
  for (let i = values.length - 1; i >= 0; i--) {
    const v = values[i];
    if (v !== null && v !== undefined && v === v) return v;
  }
  return null;
}

/**
 * A log y range hugging the data: limits rounded to one significant digit (0.037…2.5 → 0.03…3),
 * where uPlot's own rounds the top out to a whole decade. The bottom must stay a multiple of its
 * decade's power, as uPlot's log ticks count up from it.
 */
function logRange(min: number | null, max: number | null): uPlot.Range.MinMax {
  if (min === null || max === null || !(min > 0) || !(max > 0)) return [0.1, 10];
  const clean = (v: number): number => Number(v.toPrecision(12));
  const lowMag = 10 ** Math.floor(Math.log10(min));
  const highMag = 10 ** Math.floor(Math.log10(max));
  const low = clean(lowMag * Math.floor(clean(min / lowMag)));
  let high = clean(highMag * Math.ceil(clean(max / highMag)));
  if (high <= low) high = clean(low * 2);
  return [low, high];
}
