import { colorOf } from './charts.js';
import { formatCount } from './format.js';
import type { RunSeries, RunStore } from './store.js';

interface Card {
  readonly el: HTMLElement;
  readonly status: HTMLElement;
  readonly rows: HTMLElement;
  readonly bar: HTMLElement;
  readonly missed: HTMLElement;
  signature: string;
}

export interface PanelEvents {
  /** The user toggled a run's visibility in the charts. */
  toggle(runId: string): void;
}

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

function optionText(value: unknown): string {
  if (typeof value === 'number') return String(Number(value.toPrecision(6)));
  if (typeof value === 'string') return value;
  return JSON.stringify(value);
}

function formatStart(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso || '—';
  const pad = (n: number): string => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/**
 * The legend and metadata panel: one card per run (colour, label, live/finished, progress,
 * optimizer and options, model, dataset, backend, seed, version, start, download link), grouped
 * by `group`. Clicking a run's swatch hides or shows it in every chart.
 */
export class RunsPanel {
  private readonly cards = new Map<string, Card>();
  private order: string | undefined;

  constructor(
    private readonly root: HTMLElement,
    private readonly downloadHref: (runId: string) => string,
    private readonly events: PanelEvents,
  ) {}

  render(store: RunStore, hidden: ReadonlySet<string>): void {
    const runs = [...store.runs.values()];
    const order = runs.map((r) => `${r.run.id}\u0000${r.run.group ?? ''}`).join('\u0001');
    if (order !== this.order) {
      this.order = order;
      this.rebuild(runs);
    }
    runs.forEach((series, i) => this.update(series, i, hidden.has(series.run.id)));
  }

  private rebuild(runs: readonly RunSeries[]): void {
    this.root.replaceChildren();
    if (runs.length === 0) {
      this.root.append(el('p', 'empty', 'No runs yet.'));
      return;
    }
    const groups = new Map<string, RunSeries[]>();
    for (const r of runs) {
      const g = r.run.group ?? '';
      groups.set(g, [...(groups.get(g) ?? []), r]);
    }
    for (const [group, members] of groups) {
      const box = el('section', 'group');
      if (group) box.append(el('h3', 'group-name', group));
      for (const series of members) box.append(this.card(series).el);
      this.root.append(box);
    }
  }

  private card(series: RunSeries): Card {
    const existing = this.cards.get(series.run.id);
    if (existing) return existing;
    const card = el('article', 'run');
    const status = el('span', 'badge');
    const rows = el('span', 'rows');
    const missed = el('span', 'missed');
    const bar = el('div', 'bar');
    const progress = el('div', 'progress');
    progress.append(bar);
    const entry: Card = { el: card, status, rows, bar, missed, signature: '' };
    this.cards.set(series.run.id, entry);
    card.append(progress);
    return entry;
  }

  private update(series: RunSeries, index: number, hidden: boolean): void {
    const card = this.card(series);
    const run = series.run;
    const signature = JSON.stringify([run, index]);
    if (signature !== card.signature) {
      card.signature = signature;
      this.fill(card, series, index);
    }
    card.el.classList.toggle('hidden-run', hidden);
    card.el.classList.toggle('finished', series.finished);
    const status = series.finished ? 'finished' : 'live';
    if (card.status.textContent !== status) card.status.textContent = status;
    const total = run.totalSteps > 0 ? ` / ${formatCount(run.totalSteps)}` : '';
    const rows = `${formatCount(series.rows)}${total} steps`;
    if (card.rows.textContent !== rows) card.rows.textContent = rows;
    const missed =
      series.missed > 0 ? `${formatCount(series.missed)} rows missed (slow connection)` : '';
    if (card.missed.textContent !== missed) card.missed.textContent = missed;
    const fraction = series.finished
      ? 1
      : run.totalSteps > 0
        ? Math.min(1, series.rows / run.totalSteps)
        : 0;
    card.bar.style.width = `${(fraction * 100).toFixed(1)}%`;
  }

  private fill(card: Card, series: RunSeries, index: number): void {
    const run = series.run;
    const color = colorOf(index);
    card.el.style.setProperty('--run-color', color);
    card.el.dataset.runId = run.id;

    const head = el('header', 'run-head');
    const swatch = el('button', 'swatch');
    swatch.type = 'button';
    swatch.title = 'Show or hide this run in the charts';
    swatch.setAttribute('aria-label', `toggle ${run.label}`);
    swatch.addEventListener('click', () => this.events.toggle(run.id));
    const label = el('span', 'label', run.label);
    label.title = run.id;
    head.append(swatch, label, card.status);

    const line = el('div', 'run-line');
    line.append(card.rows, card.missed);

    const meta = el('dl', 'meta');
    const add = (k: string, v: string | Node): void => {
      const dd = el('dd');
      if (typeof v === 'string') dd.textContent = v;
      else dd.append(v);
      meta.append(el('dt', undefined, k), dd);
    };
    const options = el('span', 'options');
    const entries = Object.entries(run.optimizerOptions ?? {});
    options.append(el('strong', undefined, run.optimizer));
    for (const [k, v] of entries) options.append(el('code', undefined, `${k}=${optionText(v)}`));
    add('optimizer', options);
    add('model', run.model);
    add('dataset', `${run.dataset}${run.batchSize ? ` · batch ${run.batchSize}` : ''}`);
    add('backend', run.backend);
    add('seed', String(run.seed));
    add('version', `grng ${run.version}`);
    add('started', formatStart(run.startedAt));

    const download = el('a', 'download', 'Download recording (.arrows)');
    download.href = this.downloadHref(run.id);
    download.setAttribute('download', `${run.id}.arrows`);

    const progress = card.el.querySelector('.progress');
    card.el.replaceChildren(head, line, ...(progress ? [progress] : []), meta, download);
  }
}
