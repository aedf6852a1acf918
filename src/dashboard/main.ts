import { decodeBatch } from './arrow.js';
import { Chart, type View, type XAxis } from './charts.js';
import { CHARTS } from './chartSpecs.js';
import { connect, socketUrl, type ConnectionState } from './connection.js';
import { RunsPanel } from './runsPanel.js';
import { RunStore } from './store.js';
import { parseSnapshot } from './sweepModel.js';
import { SweepView, type SweepStats } from './sweepView.js';

/** Test hook: what the page drew (see test/dashboard.e2e.test.ts). */
interface GrngHook {
  points(chart: string): number;
  /** The largest x drawn in `chart` (-Infinity when nothing is drawn). */
  lastX(chart: string): number;
  rows(runId?: string): number;
  /** The sweep view: what its table, scatter, parallel coordinates and curves show. */
  sweep(): SweepStats;
}
declare global {
  interface Window {
    __grng: GrngHook;
  }
}

const $ = <T extends HTMLElement>(id: string): T => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`dashboard: #${id} missing from index.html`);
  return e as T;
};

const token = new URLSearchParams(location.search).get('token');
const withToken = (path: string): string =>
  token ? `${path}?token=${encodeURIComponent(token)}` : path;

const connectionEl = $('connection');
const smoothingEl = $<HTMLInputElement>('smoothing');
const smoothingOut = $<HTMLOutputElement>('smoothing-value');
const logEl = $<HTMLInputElement>('log-scale');
const xAxisEl = $<HTMLSelectElement>('x-axis');
const resetZoomEl = $<HTMLButtonElement>('reset-zoom');
const chartsEl = $('charts');
const emptyEl = $('empty');
const hintEl = $('hint');

let store = new RunStore();
/** While reconnecting: the server resends history into a fresh store, swapped in at `ready`. */
let incoming: RunStore | undefined;
const hidden = new Set<string>();
let xRange: readonly [number, number] | null = null;

const view = (): View => ({
  smoothing: Number(smoothingEl.value),
  log: logEl.checked,
  xAxis: xAxisEl.value as XAxis,
  xRange,
  hidden,
});

const charts = CHARTS.map(
  (spec) =>
    new Chart(spec, chartsEl, {
      zoom(range) {
        xRange = range;
        resetZoomEl.hidden = range === null;
        schedule();
      },
      redraw: () => schedule(),
      hide(id, hide) {
        if (hide) hidden.add(id);
        else hidden.delete(id);
        schedule();
      },
    }),
);
const sweepView = new SweepView($('sweep'), { redraw: () => schedule() });
const panel = new RunsPanel(
  $('run-list'),
  (id) => withToken(`runs/${encodeURIComponent(id)}.arrows`),
  {
    toggle(id) {
      if (hidden.has(id)) hidden.delete(id);
      else hidden.add(id);
      schedule();
    },
  },
);

/**
 * Redraws happen at most once per animation frame and only when something changed: at once for
 * the user's actions, at most 10 times a second for live rows, 5 while history streams in (a
 * long run's history arrives in many batches).
 */
let frame = 0;
let later: ReturnType<typeof setTimeout> | undefined;
let drawnAt = 0;
/** Draw every chart at the next frame, scrolled into view or not (history is complete). */
let forceAll = false;
function schedule(): void {
  if (frame === 0) frame = requestAnimationFrame(draw);
}
function scheduleWithin(ms: number): void {
  if (frame !== 0 || later !== undefined) return;
  const wait = ms - (performance.now() - drawnAt);
  if (wait <= 0) schedule();
  else later = setTimeout(schedule, wait);
}
function draw(): void {
  frame = 0;
  if (later !== undefined) clearTimeout(later);
  later = undefined;
  drawnAt = performance.now();
  const v = view();
  let stale = false;
  stale = sweepView.render(store, v.smoothing, forceAll) === 'stale' || stale;
  for (const chart of charts) stale = chart.render(store, v, forceAll) === 'stale' || stale;
  forceAll = false;
  panel.render(store, hidden);
  emptyEl.hidden = store.runs.size > 0;
  hintEl.hidden = store.runs.size === 0;
  if (stale) later = setTimeout(schedule, 1000);
}

function setState(state: ConnectionState): void {
  connectionEl.textContent = state;
  connectionEl.dataset.state = state;
}

const target = (): RunStore => incoming ?? store;
connect(socketUrl(location, token), {
  state: setState,
  hello(runs, info) {
    if (info.sweep) sweepPoller.start();
    else sweepPoller.stop(true);
    // A (re)connection resends everything: decode it aside so the charts do not blink empty.
    incoming = store.runs.size > 0 ? new RunStore() : undefined;
    if (!incoming) store = new RunStore();
    for (const run of runs) target().upsert(run);
    schedule();
  },
  run(run) {
    target().upsert(run);
    schedule();
  },
  batch(header, bytes) {
    let decoded;
    try {
      decoded = decodeBatch(bytes);
    } catch (err) {
      console.error(`grng: cannot decode a batch of run ${header.runId}`, err);
      return;
    }
    target().append(header.runId, decoded, header.missed);
    if (!incoming) scheduleWithin(header.history ? 200 : 100);
  },
  end(runId) {
    target().end(runId);
    schedule();
  },
  ready() {
    if (incoming) {
      store = incoming;
      incoming = undefined;
    }
    forceAll = true;
    schedule();
  },
});

smoothingEl.addEventListener('input', () => {
  smoothingOut.value = Number(smoothingEl.value).toFixed(2);
  schedule();
});
logEl.addEventListener('change', schedule);
xAxisEl.addEventListener('change', () => {
  xRange = null; // a window in steps means nothing in milliseconds
  resetZoomEl.hidden = true;
  schedule();
});
resetZoomEl.addEventListener('click', () => {
  xRange = null;
  resetZoomEl.hidden = true;
  schedule();
});

/**
 * Polls `GET /api/sweep` every 2 s while the server says (in `hello`) that it is a sweep's; stops
 * for good on 404 (not a sweep) or 401. A page hidden in a background tab skips its polls.
 */
const SWEEP_POLL_MS = 2000;
const sweepPoller = (() => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running = false;
  /** Bumped by each start, so a fetch still in flight from before a stop ends its loop. */
  let generation = 0;
  let last = '';
  const later = (): void => {
    if (running) timer = setTimeout(() => void poll(generation), SWEEP_POLL_MS);
  };
  async function poll(mine: number): Promise<void> {
    timer = undefined;
    if (!running || mine !== generation) return;
    if (document.visibilityState === 'hidden') return later();
    try {
      const response = await fetch(withToken('api/sweep'), { cache: 'no-store' });
      if (!running || mine !== generation) return;
      if (response.status === 404 || response.status === 401) {
        stop(true);
        return;
      }
      if (response.ok) {
        const body = await response.text();
        if (!running || mine !== generation) return;
        if (body !== last) {
          last = body;
          const snapshot = parseSnapshot(JSON.parse(body));
          if (typeof snapshot === 'string') console.warn(`grng: bad sweep snapshot: ${snapshot}`);
          else {
            sweepView.setSnapshot(snapshot);
            schedule();
          }
        }
      }
    } catch {
      // The server is away (it reconnects) or sent something unreadable: try again later.
    }
    later();
  }
  function stop(hide: boolean): void {
    running = false;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    if (hide) {
      last = '';
      sweepView.setSnapshot(undefined);
      schedule();
    }
  }
  return {
    start(): void {
      if (running) return;
      running = true;
      void poll(++generation);
    },
    stop,
  };
})();

window.__grng = {
  points: (chart) => charts.find((c) => c.spec.key === chart)?.points ?? 0,
  lastX: (chart) => charts.find((c) => c.spec.key === chart)?.lastX ?? -Infinity,
  rows: (runId) => store.rows(runId),
  sweep: () => sweepView.summary(),
};
schedule();
