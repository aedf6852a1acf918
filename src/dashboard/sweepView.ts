import uPlot from 'uplot';
import { PALETTE } from './charts.js';
import { decimateMinMax } from './decimate.js';
import { formatCount, formatNumber, formatStep, tickLabels } from './format.js';
import type { RunSeries, RunStore } from './store.js';
import {
  axisOf,
  axisPosition,
  axisTicks,
  columnsOf,
  filterTrials,
  jitterOf,
  meanBand,
  metricColumn,
  OUTCOME_KEYS,
  scaleColor,
  settingCell,
  sortTrials,
  statusText,
  wantsLog,
  type Axis,
  type Cell,
  type Column,
  type Curve,
  type GroupBand,
  type OutcomeKey,
  type SweepSnapshot,
  type SweepTrial,
} from './sweepModel.js';

/** What the view drew (the page's test hook, see test/dashboard.sweep.e2e.test.ts). */
export interface SweepStats {
  readonly shown: boolean;
  readonly trials: number;
  /** Rows the table shows (after its filters). */
  readonly rows: number;
  readonly scatterPoints: number;
  readonly parallelLines: number;
  /** Legend labels of the grouped curves (one per group). */
  readonly groups: readonly string[];
  /** Steps of each group's mean curve (the union of its trials' steps, or an even grid). */
  readonly groupPoints: readonly number[];
  /** Selected trials drawn over the groups. */
  readonly highlighted: number;
  readonly selected: readonly string[];
}

export interface SweepViewEvents {
  /** Something the user did needs a redraw. */
  redraw(): void;
}

type BandKind = 'sd' | 'minmax';
const BAND_LABEL: Record<BandKind, string> = { sd: '± 1 sd', minmax: 'min–max' };
/** Run columns the curves chart can draw. */
const CURVE_COLUMNS: ReadonlyArray<readonly [string, string]> = [
  ['testAccuracy', 'Test accuracy'],
  ['testLoss', 'Test loss'],
  ['loss', 'Train loss'],
  ['accuracy', 'Batch accuracy'],
];
const OUTCOME_LABEL: Record<OutcomeKey, string> = {
  metric: 'metric',
  best: 'best',
  steps: 'steps',
  seconds: 'seconds',
  stepsPerSecond: 'steps/s',
};
const SVG = 'http://www.w3.org/2000/svg';
const CURVES_HEIGHT = 260;
const PLOT_HEIGHT = 260;
const MUTED = '#8b95a5';
const BLANK = '#59616d';
const AXIS = {
  stroke: MUTED,
  grid: { stroke: 'rgba(255,255,255,0.06)', width: 1 },
  ticks: { stroke: 'rgba(255,255,255,0.12)', width: 1, size: 4 },
  font: '11px system-ui, sans-serif',
};

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: Readonly<Record<string, string | number>> = {},
  className?: string,
): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (className) e.setAttribute('class', className);
  return e;
}

function option(select: HTMLSelectElement, value: string, label: string): void {
  const o = el('option', undefined, label);
  o.value = value;
  select.append(o);
}

/** Fills a select with `options`, keeping its value when still offered (else `fallback`). */
function setOptions(
  select: HTMLSelectElement,
  options: ReadonlyArray<readonly [string, string]>,
  fallback: string,
): void {
  const key = options.map(([v, l]) => `${v}\u0000${l}`).join('\u0001');
  if (select.dataset.options !== key) {
    const was = select.value;
    select.replaceChildren();
    for (const [v, l] of options) option(select, v, l);
    select.dataset.options = key;
    select.value = options.some(([v]) => v === was) ? was : fallback;
  }
}

function labelled(text: string, control: HTMLElement): HTMLLabelElement {
  const label = el('label', 'control', text);
  label.append(control);
  return label;
}

/** A cell as the table shows it (also what text filters match besides the raw value). */
function showCell(column: Column, value: Cell): string {
  if (value === null) return '–';
  if (typeof value !== 'number') return value;
  switch (column.id) {
    case 'steps':
      return formatCount(value);
    case 'metric':
    case 'best':
      return formatNumber(value);
    case 'seconds':
    case 'stepsPerSecond':
      return value.toFixed(1);
    default:
      return String(value);
  }
}

/**
 * Tick values of a numeric axis: the values themselves when there are few (a sweep's grid:
 * 1e-4, 1e-3, 1e-2), else round ones.
 */
function ticksOf(axis: Axis, values: readonly Cell[]): number[] {
  const distinct = [
    ...new Set(values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v))),
  ];
  if (axis.kind !== 'category' && distinct.length > 0 && distinct.length <= 6)
    return distinct.filter((v) => axis.kind !== 'log' || v > 0).sort((a, b) => a - b);
  return axisTicks(axis);
}

const settingsText = (t: SweepTrial): string =>
  Object.entries(t.settings)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(' ');

/**
 * The sweep view (above the run charts when the server is a sweep's): the trials table with
 * sorting, per-column filters and row selection; a scatter of a setting against an outcome; the
 * parallel coordinates of the settings and the metric; and the runs' curves grouped by a setting
 * (mean over each group's trials with a ± 1 sd or min–max band), the selected trials' own curves
 * drawn over them. Every part shows the trials the table's filters leave.
 */
export class SweepView {
  private snapshot: SweepSnapshot | undefined;
  private snapshotVersion = 0;
  private columns: Column[] = [];
  private readonly filters = new Map<string, string>();
  private sortColumn: string | undefined;
  private sortDirection: 1 | -1 = 1;
  private readonly selected = new Set<string>();
  private anchor: string | undefined;
  /** Undefined: log x when the values ask for it. */
  private logX: boolean | undefined;
  /** The trials shown, in table order. */
  private visible: SweepTrial[] = [];

  private readonly title: HTMLElement;
  private readonly meta: HTMLElement;
  private readonly count: HTMLElement;
  private readonly clearButton: HTMLButtonElement;
  private readonly headRow: HTMLTableRowElement;
  private readonly filterRow: HTMLTableRowElement;
  private readonly body: HTMLTableSectionElement;
  private readonly tip: HTMLElement;
  private readonly scatterX = el('select');
  private readonly scatterY = el('select');
  private readonly logXBox = el('input');
  private readonly scatterSvg = svg('svg', {}, 'sweep-svg');
  private readonly scatterLegend = el('div', 'sweep-legend');
  private readonly parallelSvg = svg('svg', {}, 'sweep-svg');
  private readonly parallelLegend = el('div', 'sweep-legend');
  private readonly curveMetric = el('select');
  private readonly curveGroup = el('select');
  private readonly curveBand = el('select');
  private readonly curveCaption = el('span', 'sweep-caption');
  private readonly curvesBody = el('div', 'chart-body sweep-curves-body');
  private plot: uPlot | undefined;
  private plotStructure = '';
  private curvesKey = '';
  private curvesAt = 0;
  private plotsKey = '';
  private tableKey = '';
  private readonly bands: Array<{ band: GroupBand; color: string; kind: BandKind }> = [];
  private bandRange: [number, number] = [Infinity, -Infinity];
  private width = { scatter: 0, parallel: 0, curves: 0 };
  private stats: Omit<SweepStats, 'shown' | 'trials' | 'rows' | 'selected'> = {
    scatterPoints: 0,
    parallelLines: 0,
    groups: [],
    groupPoints: [],
    highlighted: 0,
  };

  constructor(
    private readonly root: HTMLElement,
    private readonly events: SweepViewEvents,
  ) {
    root.hidden = true;
    const head = el('header', 'sweep-head');
    this.title = el('h2', 'sweep-title', 'Sweep');
    this.meta = el('span', 'sweep-meta');
    this.count = el('span', 'sweep-count');
    this.count.id = 'sweep-count';
    this.clearButton = el('button', undefined, 'Clear selection');
    this.clearButton.type = 'button';
    this.clearButton.id = 'sweep-clear';
    this.clearButton.hidden = true;
    this.clearButton.addEventListener('click', () => {
      this.selected.clear();
      this.changed();
    });
    head.append(this.title, this.meta, this.count, this.clearButton);

    const wrap = el('div', 'sweep-table-wrap');
    const table = el('table', 'sweep-table');
    table.id = 'sweep-table';
    const thead = el('thead');
    this.headRow = el('tr');
    this.filterRow = el('tr', 'filters');
    thead.append(this.headRow, this.filterRow);
    this.body = el('tbody');
    table.append(thead, this.body);
    wrap.append(table);
    this.body.addEventListener('mousedown', (e) => {
      if (e.shiftKey) e.preventDefault(); // no text selection on shift-click
    });
    this.body.addEventListener('click', (e) => {
      const row = (e.target as Element).closest('tr');
      const id = row?.dataset.trial;
      if (id !== undefined) this.select(id, e);
    });

    const plots = el('div', 'sweep-plots');
    plots.append(this.scatterFigure(), this.parallelFigure(), this.curvesFigure());
    this.tip = el('div', 'sweep-tip');
    this.tip.hidden = true;
    root.append(head, wrap, plots, this.tip);

    const observe = (target: Element, key: keyof SweepView['width']): void =>
      new ResizeObserver((entries) => {
        const width = Math.floor(entries[entries.length - 1]?.contentRect.width ?? 0);
        if (Math.abs(width - this.width[key]) > 1) {
          this.width[key] = width;
          this.plotsKey = '';
          this.curvesKey = '';
          if (key === 'curves' && this.plot && width > 0)
            this.plot.setSize({ width: this.curvesWidth(), height: CURVES_HEIGHT });
          events.redraw();
        }
      }).observe(target);
    observe(this.scatterSvg, 'scatter');
    observe(this.parallelSvg, 'parallel');
    observe(this.curvesBody, 'curves');
  }

  // ---- building ------------------------------------------------------------------------------

  private scatterFigure(): HTMLElement {
    const fig = el('figure', 'chart sweep-plot');
    fig.id = 'sweep-scatter';
    const caption = el('figcaption');
    this.logXBox.type = 'checkbox';
    this.logXBox.id = 'sweep-log-x';
    this.scatterX.id = 'sweep-scatter-x';
    this.scatterY.id = 'sweep-scatter-y';
    const log = el('label', 'control');
    log.append(this.logXBox, ' log x');
    caption.append(
      el('span', 'sweep-caption', 'Trials'),
      labelled('x', this.scatterX),
      labelled('y', this.scatterY),
      log,
    );
    this.scatterX.addEventListener('change', () => {
      this.logX = undefined;
      this.changed();
    });
    this.scatterY.addEventListener('change', () => this.changed());
    this.logXBox.addEventListener('change', () => {
      this.logX = this.logXBox.checked;
      this.changed();
    });
    this.scatterSvg.setAttribute('height', String(PLOT_HEIGHT));
    this.hover(this.scatterSvg);
    fig.append(caption, this.scatterSvg, this.scatterLegend);
    return fig;
  }

  private parallelFigure(): HTMLElement {
    const fig = el('figure', 'chart sweep-plot');
    fig.id = 'sweep-parallel';
    const caption = el('figcaption');
    caption.append(el('span', 'sweep-caption', 'Parallel coordinates: settings and metric'));
    this.parallelSvg.setAttribute('height', String(PLOT_HEIGHT));
    this.hover(this.parallelSvg);
    fig.append(caption, this.parallelSvg, this.parallelLegend);
    return fig;
  }

  private curvesFigure(): HTMLElement {
    const fig = el('figure', 'chart sweep-plot sweep-curves');
    fig.id = 'sweep-curves';
    const caption = el('figcaption');
    this.curveMetric.id = 'sweep-curve-metric';
    this.curveGroup.id = 'sweep-curve-group';
    this.curveBand.id = 'sweep-curve-band';
    option(this.curveBand, 'sd', BAND_LABEL.sd);
    option(this.curveBand, 'minmax', BAND_LABEL.minmax);
    caption.append(
      this.curveCaption,
      labelled('curve', this.curveMetric),
      labelled('grouped by', this.curveGroup),
      labelled('band', this.curveBand),
    );
    for (const s of [this.curveMetric, this.curveGroup, this.curveBand])
      s.addEventListener('change', () => this.changed());
    fig.append(caption, this.curvesBody);
    return fig;
  }

  /** Points and lines name their trial on hover and select it on click. */
  private hover(target: SVGSVGElement): void {
    target.addEventListener('mousemove', (e) => {
      const mark = (e.target as Element).closest('[data-trial]');
      const trial =
        mark && this.snapshot?.trials.find((t) => t.trial === mark.getAttribute('data-trial'));
      if (!trial) {
        this.tip.hidden = true;
        return;
      }
      this.tip.textContent = `${trial.trial}  ${settingsText(trial)}  ${this.snapshot!.metric} ${formatNumber(trial.metric)} (${statusText(trial)})`;
      this.tip.hidden = false;
      const box = this.root.getBoundingClientRect();
      this.tip.style.left = `${e.clientX - box.left + 12}px`;
      this.tip.style.top = `${e.clientY - box.top + 12}px`;
    });
    target.addEventListener('mouseleave', () => {
      this.tip.hidden = true;
    });
    target.addEventListener('click', (e) => {
      const id = (e.target as Element).closest('[data-trial]')?.getAttribute('data-trial');
      if (id) this.select(id, e);
    });
  }

  // ---- state ---------------------------------------------------------------------------------

  /** A new snapshot from `GET /api/sweep` (undefined: not a sweep, hide). */
  setSnapshot(snapshot: SweepSnapshot | undefined): void {
    this.snapshot = snapshot;
    this.snapshotVersion++;
    this.root.hidden = snapshot === undefined;
    if (!snapshot) return;
    const columns = columnsOf(snapshot);
    const signature = columns.map((c) => `${c.id}\u0000${c.label}\u0000${c.kind}`).join('\u0001');
    if (
      signature !== this.columns.map((c) => `${c.id}\u0000${c.label}\u0000${c.kind}`).join('\u0001')
    )
      this.buildHeader(columns);
    this.columns = columns;
    for (const id of [...this.selected])
      if (!snapshot.trials.some((t) => t.trial === id)) this.selected.delete(id);

    const settings = snapshot.settings.map((s) => [s, s] as const);
    const numeric = snapshot.settings.filter(
      (s) =>
        s !== 'seed' &&
        s !== 'optimizer' &&
        columns.find((c) => c.id === `setting:${s}`)?.kind === 'number',
    );
    setOptions(this.scatterX, settings, numeric[0] ?? snapshot.settings[0] ?? '');
    setOptions(
      this.scatterY,
      OUTCOME_KEYS.map(
        (k) =>
          [
            k,
            k === 'metric'
              ? snapshot.metric
              : k === 'best'
                ? `best ${snapshot.metric}`
                : OUTCOME_LABEL[k],
          ] as const,
      ),
      'metric',
    );
    setOptions(
      this.curveGroup,
      settings,
      snapshot.settings.includes('optimizer') ? 'optimizer' : (snapshot.settings[0] ?? ''),
    );
    const metric = metricColumn(snapshot.metric);
    const curves = CURVE_COLUMNS.some(([c]) => c === metric)
      ? CURVE_COLUMNS
      : [[metric, metric] as const, ...CURVE_COLUMNS];
    setOptions(this.curveMetric, curves, metric);
  }

  private buildHeader(columns: readonly Column[]): void {
    this.headRow.replaceChildren();
    this.filterRow.replaceChildren();
    for (const id of [...this.filters.keys()])
      if (!columns.some((c) => c.id === id)) this.filters.delete(id);
    if (this.sortColumn && !columns.some((c) => c.id === this.sortColumn))
      this.sortColumn = undefined;
    for (const column of columns) {
      const th = el('th');
      th.dataset.column = column.id;
      th.className = column.kind === 'number' ? 'num' : '';
      const button = el('button', 'sort', column.label);
      button.type = 'button';
      button.title = 'Sort by this column (again: reverse)';
      button.addEventListener('click', () => {
        if (this.sortColumn === column.id) this.sortDirection = this.sortDirection === 1 ? -1 : 1;
        else {
          this.sortColumn = column.id;
          this.sortDirection = 1;
        }
        this.changed();
      });
      th.append(button);
      this.headRow.append(th);
      const cell = el('th');
      const input = el('input', 'filter');
      input.type = 'search';
      input.dataset.column = column.id;
      input.placeholder = column.kind === 'number' ? '>0.9, <1e-3, =0.1' : 'contains';
      input.title =
        column.kind === 'number'
          ? 'Filter: >x, >=x, <x, <=x, =x, !=x (several: all must hold), or text the cell contains'
          : 'Filter: text the cell contains, or =text for exactly that';
      input.setAttribute('aria-label', `filter ${column.label}`);
      input.value = this.filters.get(column.id) ?? '';
      input.addEventListener('input', () => {
        this.filters.set(column.id, input.value);
        this.changed();
      });
      cell.append(input);
      this.filterRow.append(cell);
    }
  }

  private select(id: string, e: MouseEvent): void {
    const toggle = e.ctrlKey || e.metaKey;
    if (e.shiftKey && this.anchor !== undefined) {
      const order = this.visible.map((t) => t.trial);
      const a = order.indexOf(this.anchor);
      const b = order.indexOf(id);
      if (a >= 0 && b >= 0) {
        if (!toggle) this.selected.clear();
        for (let i = Math.min(a, b); i <= Math.max(a, b); i++) this.selected.add(order[i]!);
        this.changed();
        return;
      }
    }
    if (toggle || e.shiftKey) {
      if (this.selected.has(id)) this.selected.delete(id);
      else this.selected.add(id);
    } else if (this.selected.size === 1 && this.selected.has(id)) this.selected.clear();
    else {
      this.selected.clear();
      this.selected.add(id);
    }
    this.anchor = id;
    this.changed();
  }

  private changed(): void {
    this.tableKey = '';
    this.plotsKey = '';
    this.curvesKey = '';
    this.events.redraw();
  }

  // ---- drawing -------------------------------------------------------------------------------

  /**
   * Draws what changed. 'stale': the curves put off a redraw for live rows (at most twice a
   * second: a large sweep's means cost more than a chart's lines); call again later.
   */
  render(store: RunStore, smoothing: number, force = false): 'drawn' | 'unchanged' | 'stale' {
    const snapshot = this.snapshot;
    if (!snapshot || this.root.hidden) return 'unchanged';
    const tableKey = `${this.snapshotVersion}|${this.sortColumn}|${this.sortDirection}|${[...this.filters].join()}|${[...this.selected].join()}`;
    let drawn = false;
    if (tableKey !== this.tableKey) {
      this.tableKey = tableKey;
      this.renderTable(snapshot);
      drawn = true;
    }
    const plotsKey = `${tableKey}|${this.scatterX.value}|${this.scatterY.value}|${this.logX}|${this.width.scatter}|${this.width.parallel}`;
    if (plotsKey !== this.plotsKey) {
      this.plotsKey = plotsKey;
      this.renderScatter(snapshot);
      this.renderParallel(snapshot);
      drawn = true;
    }
    const controls = `${tableKey}|${this.curveMetric.value}|${this.curveGroup.value}|${this.curveBand.value}|${smoothing}|${this.width.curves}`;
    const curvesKey = `${controls}|${store.version}|${store.runs.size}`;
    if (curvesKey !== this.curvesKey) {
      const now = performance.now();
      // Only rows changed (same controls) and drawn less than 500 ms ago: later.
      if (!force && this.curvesKey.startsWith(`${controls}|`) && now - this.curvesAt < 500)
        return 'stale';
      this.curvesKey = curvesKey;
      this.curvesAt = now;
      this.renderCurves(snapshot, store, smoothing);
      drawn = true;
    }
    return drawn ? 'drawn' : 'unchanged';
  }

  private renderTable(snapshot: SweepSnapshot): void {
    const sort = this.columns.find((c) => c.id === this.sortColumn);
    const filtered = filterTrials(snapshot.trials, this.columns, this.filters, showCell);
    this.visible = sortTrials(filtered, sort, this.sortDirection);
    for (const th of this.headRow.children) {
      const cell = th as HTMLElement;
      const sorted = cell.dataset.column === this.sortColumn;
      cell.setAttribute(
        'aria-sort',
        sorted ? (this.sortDirection === 1 ? 'ascending' : 'descending') : 'none',
      );
    }
    const rows = this.visible.map((t) => {
      const tr = el('tr');
      tr.dataset.trial = t.trial;
      tr.dataset.status = t.status;
      if (this.selected.has(t.trial)) {
        tr.classList.add('selected');
        tr.setAttribute('aria-selected', 'true');
      }
      for (const column of this.columns) {
        const value = column.get(t);
        const td = el('td', column.kind === 'number' ? 'num' : undefined);
        td.dataset.column = column.id;
        if (column.id === 'status') {
          const badge = el('span', `status status-${t.status}`, showCell(column, value));
          if (t.error) badge.title = t.error;
          td.append(badge);
        } else if (column.id === 'setting:optimizer' && value !== null) {
          const swatch = el('span', 'dot');
          swatch.style.background = this.optimizerColor(String(value));
          td.append(swatch, String(value));
        } else td.textContent = showCell(column, value);
        tr.append(td);
      }
      return tr;
    });
    this.body.replaceChildren(...rows);
    const m = snapshot.trials.length;
    this.count.textContent = `${this.visible.length} of ${m} trial${m === 1 ? '' : 's'}`;
    const counts = new Map<string, number>();
    for (const t of snapshot.trials) counts.set(t.status, (counts.get(t.status) ?? 0) + 1);
    this.title.textContent = `Sweep ${snapshot.name}`;
    this.meta.textContent = `${snapshot.metric}, ${snapshot.higherIsBetter ? 'higher' : 'lower'} is better · ${[...counts].map(([s, n]) => `${n} ${s}`).join(' · ')}`;
    this.clearButton.hidden = this.selected.size === 0;
  }

  /** Each optimizer's colour, by its place among the sweep's optimizers (also the groups'). */
  private categoryColor(setting: string, value: string): string {
    const values = [
      ...new Set(
        (this.snapshot?.trials ?? []).map((t) => {
          const v = t.settings[setting];
          return v === undefined ? '–' : String(v);
        }),
      ),
    ].sort(new Intl.Collator('en', { numeric: true }).compare);
    const i = values.indexOf(value);
    return PALETTE[(i < 0 ? values.length : i) % PALETTE.length]!;
  }

  private optimizerColor(value: string): string {
    return this.categoryColor('optimizer', value);
  }

  private optimizerOf(t: SweepTrial): string {
    const v = t.settings.optimizer;
    return v === undefined ? 'trials' : String(v);
  }

  private renderScatter(snapshot: SweepSnapshot): void {
    const root = this.scatterSvg;
    const width = Math.max(260, this.width.scatter || root.clientWidth || 420);
    root.setAttribute('width', String(width));
    root.setAttribute('viewBox', `0 0 ${width} ${PLOT_HEIGHT}`);
    root.replaceChildren();
    const setting = this.scatterX.value;
    const outcome = (this.scatterY.value || 'metric') as OutcomeKey;
    const xs = this.visible.map((t) => settingCell(t.settings[setting]));
    const canLog =
      xs.some((v) => v !== null) && xs.every((v) => v === null || (typeof v === 'number' && v > 0));
    const log = canLog && (this.logX ?? wantsLog(xs));
    this.logXBox.disabled = !canLog;
    this.logXBox.checked = log;
    const xAxis = axisOf(
      snapshot.trials.map((t) => settingCell(t.settings[setting])),
      log,
    );
    const points = this.visible
      .map((t, i) => ({ t, x: xs[i] ?? null, y: t[outcome] }))
      .filter(
        (p): p is { t: SweepTrial; x: string | number; y: number } => p.y !== null && p.x !== null,
      );
    const yValues = points.map((p) => p.y);
    let yMin = Math.min(...yValues);
    let yMax = Math.max(...yValues);
    if (!Number.isFinite(yMin)) [yMin, yMax] = [0, 1];
    if (yMin === yMax)
      [yMin, yMax] = [yMin - Math.abs(yMin || 1) * 0.05, yMax + Math.abs(yMax || 1) * 0.05];
    const pad = (yMax - yMin) * 0.06;
    const yAxis: Axis = { kind: 'linear', min: yMin - pad, max: yMax + pad };
    const m = { left: 58, right: 16, top: 10, bottom: 34 };
    const w = width - m.left - m.right;
    const h = PLOT_HEIGHT - m.top - m.bottom;
    const category = xAxis.kind === 'category';
    // Categories sit inside the frame with room for their jitter.
    const px = (p: number): number =>
      m.left + (category ? w * (0.1 + 0.8 * p) : w * (0.04 + 0.92 * p));
    const py = (p: number): number => m.top + h * (1 - p);
    root.append(svg('rect', { x: m.left, y: m.top, width: w, height: h }, 'frame'));
    for (const tick of axisTicks(yAxis)) {
      const y = py(axisPosition(yAxis, tick)!);
      root.append(svg('line', { x1: m.left, x2: m.left + w, y1: y, y2: y }, 'grid'));
      const label = svg('text', { x: m.left - 6, y: y + 4, 'text-anchor': 'end' }, 'tick');
      label.textContent = formatNumber(tick);
      root.append(label);
    }
    const xTicks: Array<[number, string]> =
      xAxis.kind === 'category'
        ? xAxis.categories.map((c) => [axisPosition(xAxis, c)!, c])
        : ticksOf(
            xAxis,
            snapshot.trials.map((t) => settingCell(t.settings[setting])),
          ).map((v) => [axisPosition(xAxis, v)!, formatNumber(v)]);
    for (const [p, text] of xTicks) {
      const x = px(p);
      root.append(svg('line', { x1: x, x2: x, y1: m.top, y2: m.top + h }, 'grid'));
      const label = svg('text', { x, y: m.top + h + 14, 'text-anchor': 'middle' }, 'tick');
      label.textContent = text;
      root.append(label);
    }
    const xLabel = svg(
      'text',
      { x: m.left + w / 2, y: PLOT_HEIGHT - 4, 'text-anchor': 'middle' },
      'axis-label',
    );
    xLabel.textContent = `${setting}${log ? ' (log)' : ''}`;
    const yLabel = svg(
      'text',
      {
        x: 12,
        y: m.top + h / 2,
        'text-anchor': 'middle',
        transform: `rotate(-90 12 ${m.top + h / 2})`,
      },
      'axis-label',
    );
    yLabel.textContent =
      outcome === 'metric'
        ? snapshot.metric
        : outcome === 'best'
          ? `best ${snapshot.metric}`
          : OUTCOME_LABEL[outcome];
    root.append(xLabel, yLabel);
    const spread = category
      ? (0.8 * w) / Math.max(2, xAxis.kind === 'category' ? xAxis.categories.length : 0) / 4
      : 0;
    const any = this.selected.size > 0;
    // Selected points last, so they are drawn on top.
    points.sort(
      (a, b) => Number(this.selected.has(a.t.trial)) - Number(this.selected.has(b.t.trial)),
    );
    for (const p of points) {
      const pos = axisPosition(xAxis, p.x);
      if (pos === null) continue;
      const selected = this.selected.has(p.t.trial);
      const dot = svg(
        'circle',
        {
          cx: px(pos) + spread * jitterOf(p.t.trial),
          cy: py(axisPosition(yAxis, p.y)!),
          r: selected ? 6 : 4.5,
          fill: this.optimizerColor(this.optimizerOf(p.t)),
        },
        `point${selected ? ' selected' : ''}${any && !selected ? ' faded' : ''}`,
      );
      dot.setAttribute('data-trial', p.t.trial);
      dot.setAttribute('data-optimizer', this.optimizerOf(p.t));
      const title = svg('title');
      title.textContent = `${p.t.trial} ${settingsText(p.t)}: ${formatNumber(p.y)}`;
      dot.append(title);
      root.append(dot);
    }
    this.stats = { ...this.stats, scatterPoints: root.querySelectorAll('circle.point').length };
    // Legend: one colour per optimizer; hovering an entry picks out its points.
    const optimizers = [...new Set(snapshot.trials.map((t) => this.optimizerOf(t)))].sort(
      new Intl.Collator('en', { numeric: true }).compare,
    );
    this.scatterLegend.replaceChildren(
      ...optimizers.map((name) => {
        const entry = el('span', 'entry');
        const swatch = el('span', 'dot');
        swatch.style.background = this.optimizerColor(name);
        entry.append(swatch, name);
        entry.addEventListener('mouseenter', () => {
          for (const c of root.querySelectorAll('circle.point'))
            c.classList.toggle('dim', c.getAttribute('data-optimizer') !== name);
        });
        entry.addEventListener('mouseleave', () => {
          for (const c of root.querySelectorAll('circle.point')) c.classList.remove('dim');
        });
        return entry;
      }),
    );
  }

  private renderParallel(snapshot: SweepSnapshot): void {
    const root = this.parallelSvg;
    const width = Math.max(260, this.width.parallel || root.clientWidth || 420);
    root.setAttribute('width', String(width));
    root.setAttribute('viewBox', `0 0 ${width} ${PLOT_HEIGHT}`);
    root.replaceChildren();
    const dims = [
      ...snapshot.settings.map((s) => ({
        label: s,
        get: (t: SweepTrial): Cell => settingCell(t.settings[s]),
      })),
      { label: snapshot.metric, get: (t: SweepTrial): Cell => t.metric },
    ];
    const axes = dims.map((d) => axisOf(snapshot.trials.map(d.get)));
    const m = { left: 40, right: 56, top: 22, bottom: 30 };
    const h = PLOT_HEIGHT - m.top - m.bottom;
    const blankY = PLOT_HEIGHT - 10;
    const ax = (i: number): number =>
      dims.length === 1 ? width / 2 : m.left + ((width - m.left - m.right) * i) / (dims.length - 1);
    const py = (p: number): number => m.top + h * (1 - p);
    const metricAxis = axes[axes.length - 1]!;
    const colorOf = (t: SweepTrial): string => {
      const p = axisPosition(metricAxis, t.metric);
      if (p === null) return BLANK;
      return scaleColor(snapshot.higherIsBetter ? p : 1 - p);
    };
    const any = this.selected.size > 0;
    const lines = svg('g', {}, 'lines');
    const ordered = [...this.visible].sort(
      (a, b) => Number(this.selected.has(a.trial)) - Number(this.selected.has(b.trial)),
    );
    for (const t of ordered) {
      const d = dims
        .map((dim, i) => {
          const p = axisPosition(axes[i]!, dim.get(t));
          return `${i === 0 ? 'M' : 'L'}${ax(i).toFixed(1)},${(p === null ? blankY : py(p)).toFixed(1)}`;
        })
        .join('');
      const selected = this.selected.has(t.trial);
      const path = svg(
        'path',
        { d, stroke: colorOf(t) },
        `trial-line${selected ? ' selected' : ''}${any && !selected ? ' faded' : ''}${t.metric === null ? ' blank' : ''}`,
      );
      path.setAttribute('data-trial', t.trial);
      const title = svg('title');
      title.textContent = `${t.trial} ${settingsText(t)}: ${snapshot.metric} ${formatNumber(t.metric)}`;
      path.append(title);
      lines.append(path);
    }
    root.append(lines);
    dims.forEach((dim, i) => {
      const axis = axes[i]!;
      const x = ax(i);
      const g = svg('g', {}, 'axis');
      g.append(svg('line', { x1: x, x2: x, y1: m.top, y2: m.top + h }, 'axis-line'));
      const label = svg('text', { x, y: 12, 'text-anchor': 'middle' }, 'axis-label');
      label.textContent = `${dim.label}${axis.kind === 'log' ? ' (log)' : ''}`;
      g.append(label);
      const ticks: Array<[number, string]> =
        axis.kind === 'category'
          ? axis.categories.map((c) => [axisPosition(axis, c)!, c])
          : ticksOf(axis, snapshot.trials.map(dim.get)).map((v) => [
              axisPosition(axis, v)!,
              formatNumber(v),
            ]);
      for (const [p, text] of ticks) {
        const t = svg('text', { x: x + 4, y: py(p) + 4 }, 'tick');
        t.textContent = text;
        g.append(t);
      }
      if (snapshot.trials.some((t) => dim.get(t) === null)) {
        const t = svg('text', { x: x + 4, y: blankY + 4 }, 'tick');
        t.textContent = 'n/a';
        g.append(t);
      }
      root.append(g);
    });
    this.stats = { ...this.stats, parallelLines: lines.childElementCount };
    const low = metricAxis.kind === 'category' ? undefined : metricAxis;
    const gradient = el('span', 'gradient');
    gradient.style.background = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map((t) => scaleColor(t)).join(', ')})`;
    const worst = low ? (snapshot.higherIsBetter ? low.min : low.max) : undefined;
    const best = low ? (snapshot.higherIsBetter ? low.max : low.min) : undefined;
    this.parallelLegend.replaceChildren(
      el('span', undefined, `colour: ${snapshot.metric}, worse ${formatNumber(worst)}`),
      gradient,
      el('span', undefined, `${formatNumber(best)} better`),
      ...(snapshot.trials.some((t) => t.metric === null)
        ? [el('span', 'blank-note', '· grey: no value yet')]
        : []),
    );
  }

  private curvesWidth(): number {
    return Math.max(260, this.width.curves || this.curvesBody.clientWidth || 600);
  }

  private renderCurves(snapshot: SweepSnapshot, store: RunStore, smoothing: number): void {
    const column = this.curveMetric.value || metricColumn(snapshot.metric);
    const setting = this.curveGroup.value;
    const kind = (this.curveBand.value || 'sd') as BandKind;
    const runOf = (t: SweepTrial): RunSeries | undefined =>
      t.runId === null ? undefined : store.runs.get(t.runId);
    const curveOf = (run: RunSeries): Curve | undefined => {
      const xs = run.column('step');
      const ys = run.smoothed(column, smoothing);
      return xs && ys ? { xs, ys, n: run.rows } : undefined;
    };
    const groups = new Map<string, SweepTrial[]>();
    for (const t of this.visible) {
      if (!runOf(t)) continue;
      const v = t.settings[setting];
      const key = v === undefined ? '–' : String(v);
      groups.set(key, [...(groups.get(key) ?? []), t]);
    }
    const collator = new Intl.Collator('en', { numeric: true });
    const keys = [...groups.keys()].sort(collator.compare);
    this.bands.length = 0;
    this.bandRange = [Infinity, -Infinity];
    const tables: uPlot.AlignedData[] = [];
    const series: uPlot.Series[] = [];
    const labels: string[] = [];
    for (const key of keys) {
      const members = groups.get(key)!;
      const curves = members.map((t) => curveOf(runOf(t)!)).filter((c): c is Curve => !!c);
      const band = meanBand(curves);
      const color = this.categoryColor(setting, key);
      this.bands.push({ band, color, kind });
      for (let i = 0; i < band.x.length; i++) {
        const lo = kind === 'sd' ? band.mean[i]! - band.sd[i]! : band.min[i]!;
        const hi = kind === 'sd' ? band.mean[i]! + band.sd[i]! : band.max[i]!;
        if (lo < this.bandRange[0]) this.bandRange[0] = lo;
        if (hi > this.bandRange[1]) this.bandRange[1] = hi;
      }
      tables.push([band.x, band.mean]);
      const label = `${setting}=${key} mean ${BAND_LABEL[kind]} (${members.length} trial${members.length === 1 ? '' : 's'})`;
      labels.push(label);
      series.push({
        label,
        stroke: color,
        width: 1.5,
        spanGaps: true,
        value: (_u, v) => formatNumber(v),
      });
    }
    let highlighted = 0;
    const buckets = Math.max(100, this.curvesWidth());
    for (const t of snapshot.trials) {
      if (!this.selected.has(t.trial)) continue;
      const run = runOf(t);
      const curve = run && curveOf(run);
      if (!curve) continue;
      const d = decimateMinMax(curve.xs, curve.ys, curve.n, buckets);
      tables.push([d.x, d.y]);
      highlighted++;
      const v = t.settings[setting];
      series.push({
        label: `★ ${t.trial} (${settingsText(t)})`,
        stroke: this.categoryColor(setting, v === undefined ? '–' : String(v)),
        width: 3,
        dash: [8, 3],
        spanGaps: true,
        value: (_u, v) => formatNumber(v),
      });
    }
    const title = CURVE_COLUMNS.find(([c]) => c === column)?.[1] ?? column;
    this.curveCaption.textContent = `${title} by ${setting}: mean over each group's trials, band ${BAND_LABEL[kind]}${highlighted > 0 ? ', selected trials dashed' : ''}`;
    const structure = `${series.map((s) => `${s.label}\u0000${String(s.stroke)}`).join('\u0001')}`;
    if (!this.plot || structure !== this.plotStructure) {
      this.plot?.destroy();
      this.plot = this.createPlot(series);
      this.plotStructure = structure;
    }
    const data: uPlot.AlignedData =
      tables.length === 0 ? [[]] : tables.length === 1 ? tables[0]! : uPlot.join(tables);
    this.plot.setData(data);
    this.curvesBody.dataset.groups = String(keys.length);
    this.curvesBody.dataset.highlighted = String(highlighted);
    this.stats = {
      ...this.stats,
      groups: labels,
      groupPoints: this.bands.map((b) => b.band.x.length),
      highlighted,
    };
  }

  private createPlot(series: readonly uPlot.Series[]): uPlot {
    this.curvesBody.replaceChildren();
    const opts: uPlot.Options = {
      width: this.curvesWidth(),
      height: CURVES_HEIGHT,
      pxAlign: false,
      padding: [8, 18, 0, 0],
      cursor: { points: { size: 6 } },
      legend: { show: true, live: true },
      scales: {
        x: {
          time: false,
          range: (_u, min, max) => (min === max ? [min - 1, max + 1] : [min, max]),
        },
        y: {
          range: (_u, min, max) => {
            const lo = Math.min(min ?? Infinity, this.bandRange[0]);
            const hi = Math.max(max ?? -Infinity, this.bandRange[1]);
            if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
            const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1;
            return [lo - pad, hi + pad];
          },
        },
      },
      axes: [
        {
          ...AXIS,
          size: 30,
          values: (_u: uPlot, splits: number[]) =>
            splits.map((v) => (v === null ? '' : formatStep(v))),
        },
        { ...AXIS, size: 58, values: (_u: uPlot, splits: number[]) => tickLabels(splits) },
      ],
      series: [
        {
          label: 'step',
          value: (_u, v) => (v === null || v === undefined ? '—' : String(Math.round(v))),
        },
        ...series,
      ],
      hooks: {
        // The bands go under the lines: drawn after the grid, before the series.
        drawAxes: [(u: uPlot) => this.drawBands(u)],
      },
    };
    return new uPlot(opts, [[], ...series.map(() => [])], this.curvesBody);
  }

  private drawBands(u: uPlot): void {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    this.bands.forEach(({ band, color, kind }, i) => {
      if (band.x.length === 0 || u.series[i + 1]?.show === false) return;
      const lo = (k: number): number =>
        kind === 'sd' ? band.mean[k]! - band.sd[k]! : band.min[k]!;
      const hi = (k: number): number =>
        kind === 'sd' ? band.mean[k]! + band.sd[k]! : band.max[k]!;
      ctx.beginPath();
      for (let k = 0; k < band.x.length; k++) {
        const x = u.valToPos(band.x[k]!, 'x', true);
        const y = u.valToPos(hi(k), 'y', true);
        if (k === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      }
      for (let k = band.x.length - 1; k >= 0; k--)
        ctx.lineTo(u.valToPos(band.x[k]!, 'x', true), u.valToPos(lo(k), 'y', true));
      ctx.closePath();
      ctx.globalAlpha = 0.24;
      ctx.fillStyle = color;
      ctx.fill();
      ctx.globalAlpha = 1;
    });
    ctx.restore();
  }

  /** For the page's test hook. */
  summary(): SweepStats {
    return {
      shown: !this.root.hidden,
      trials: this.snapshot?.trials.length ?? 0,
      rows: this.body.childElementCount,
      selected: [...this.selected],
      ...this.stats,
    };
  }
}
