// The dashboard's sweep view in a real headless Chromium (Debian's `chromium`, driven by
// playwright-core), against the real server (src/sinks/server.ts) with a `sweep` option: 12 trials
// (2 optimizers × 3 learning rates × 2 seeds, one still running) whose runs are synthetic runs in
// the RunHub. Also the endpoint itself over HTTP (no browser needed). Screenshots go to
// test-artifacts/ (git-ignored).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import type { SweepSnapshot, SweepTrial } from '../src/dashboard/sweepModel.js';
import { metricsSchema, rowsToRecordBatch, type RecordedRun } from '../src/metrics/schema.js';
import { RunHub } from '../src/sinks/runHub.js';
import { startServer } from '../src/sinks/server.js';
import type { MetricsRow } from '../src/types.js';
import { syntheticRow, syntheticRun } from './dashboardSynthetic.js';
import { CHROMIUM_PATH, needsPackage } from './systemPackages.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');
const TOKEN = 'sw33p';
const STEPS = 1500;

/** What src/dashboard/sweepView.ts reports through `window.__grng.sweep()`. */
interface SweepStats {
  shown: boolean;
  trials: number;
  rows: number;
  scatterPoints: number;
  parallelLines: number;
  groups: string[];
  groupPoints: number[];
  highlighted: number;
  selected: string[];
}
const stats = (page: Page): Promise<SweepStats> =>
  page.evaluate(() =>
    (globalThis as unknown as { __grng: { sweep(): SweepStats } }).__grng.sweep(),
  );

type Kind = 'ring' | 'adamw';
const LEARNING_RATES: Record<Kind, number[]> = {
  ring: [0.01, 0.05, 0.2],
  adamw: [1e-4, 1e-3, 1e-2],
};
/** Each configuration's final test accuracy (seed 1 a little below, seed 2 a little above). */
const TARGET: Record<Kind, number[]> = { ring: [0.86, 0.93, 0.9], adamw: [0.84, 0.95, 0.89] };

interface Planned {
  readonly trial: SweepTrial;
  readonly run: RecordedRun;
  readonly kind: Kind;
  readonly target: number;
  readonly seed: number;
}

/**
 * A trial's rows: the synthetic run's, with test accuracy rising to `target`. Seed 1 evaluates
 * at steps 100, 200, …, seed 2 at 50, 150, … (a group's curves do not share their steps).
 */
function rowsOf(p: Planned, from: number, to: number): MetricsRow[] {
  const rows: MetricsRow[] = [];
  for (let step = from; step < to; step++) {
    const row = syntheticRow(p.kind, step);
    const evaluated = step > 0 && step % 100 === (p.seed === 1 ? 0 : 50);
    const accuracy = p.target * (1 - Math.exp(-step / 250));
    rows.push({
      ...row,
      testAccuracy: evaluated ? accuracy : null,
      testLoss: evaluated ? 2.3 * (1 - accuracy) : null,
    });
  }
  return rows;
}

/** 12 trials in config order: optimizer, learning rate, seed; the last adamw trial of lr 1e-3 running. */
function plan(): Planned[] {
  const planned: Planned[] = [];
  for (const kind of ['ring', 'adamw'] as const) {
    LEARNING_RATES[kind].forEach((learningRate, i) => {
      for (const seed of [1, 2]) {
        const id = `${kind.slice(0, 2)}${String(i)}s${seed}`.padEnd(12, '0');
        const target = TARGET[kind][i]! + (seed === 1 ? -0.004 : 0.004);
        const running = kind === 'adamw' && i === 1 && seed === 2;
        const runId = `trial-${id}`;
        planned.push({
          kind,
          seed,
          target,
          run: syntheticRun(runId, kind, {
            label: `${kind} lr=${learningRate} seed ${seed}`,
            seed,
            totalSteps: STEPS,
            optimizerOptions: { learningRate },
            group: 'sweep e2e',
          }),
          trial: {
            trial: id,
            runId,
            status: running ? 'running' : 'done',
            rung: null,
            settings: { optimizer: kind, learningRate, seed },
            steps: running ? 600 : STEPS,
            metric: running ? null : Number(target.toFixed(4)),
            best: running ? null : Number((target + 0.002).toFixed(4)),
            seconds: running ? 4.2 : 12.5 + i,
            stepsPerSecond: running ? 142.9 : Number((STEPS / (12.5 + i)).toFixed(1)),
          },
        });
      }
    });
  }
  return planned;
}

function sweepHub(planned: readonly Planned[]): RunHub {
  const hub = new RunHub();
  for (const p of planned) {
    const schema = metricsSchema(p.run);
    const running = p.trial.status === 'running';
    const to = running ? 600 : STEPS;
    hub.addRun(p.run, schema, {
      batches: [rowsToRecordBatch(schema, rowsOf(p, 0, to))],
      finished: !running,
    });
  }
  return hub;
}

function snapshotOf(trials: readonly SweepTrial[]): SweepSnapshot {
  return {
    name: 'e2e',
    metric: 'testAccuracy',
    higherIsBetter: true,
    settings: ['optimizer', 'learningRate', 'seed'],
    trials,
  };
}

describe('GET /api/sweep', () => {
  it('answers the snapshot as JSON, 404 when not a sweep, 401 without the token', async () => {
    const planned = plan();
    let current: SweepSnapshot | undefined = snapshotOf(planned.map((p) => p.trial));
    const hub = new RunHub();
    const dashboardDir = mkdtempSync(join(tmpdir(), 'grng-sweep-empty-'));
    const sweep = await startServer({
      hub,
      port: 0,
      token: TOKEN,
      dashboardDir,
      sweep: () => current,
    });
    const plain = await startServer({ hub, port: 0, dashboardDir });
    try {
      const base = `http://127.0.0.1:${sweep.port}/api/sweep`;
      const refused = await fetch(base);
      expect(refused.status).toBe(401);
      expect(refused.headers.get('www-authenticate')).toContain('Bearer');
      expect((await fetch(`${base}?token=wrong`)).status).toBe(401);
      const ok = await fetch(base, { headers: { Authorization: `Bearer ${TOKEN}` } });
      expect(ok.status).toBe(200);
      expect(ok.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(ok.headers.get('cache-control')).toBe('no-store');
      expect(await ok.json()).toEqual(current);
      const head = await fetch(`${base}?token=${TOKEN}`, { method: 'HEAD' });
      expect(head.status).toBe(200);
      expect(await head.text()).toBe('');
      expect((await fetch(`${base}?token=${TOKEN}`, { method: 'POST' })).status).toBe(405);
      // The option returning undefined: not (yet) a sweep.
      current = undefined;
      const missing = await fetch(`${base}?token=${TOKEN}`);
      expect(missing.status).toBe(404);
      expect(missing.headers.get('cache-control')).toBe('no-store');
      expect(await missing.json()).toEqual({ error: 'not a sweep' });
      // The option throwing: 500 with its message.
      const torn = await startServer({
        hub,
        port: 0,
        dashboardDir,
        sweep: () => {
          throw new Error('sweep.json is torn');
        },
      });
      try {
        const failed = await fetch(`http://127.0.0.1:${torn.port}/api/sweep`);
        expect(failed.status).toBe(500);
        expect(await failed.json()).toEqual({ error: 'sweep.json is torn' });
      } finally {
        await torn.close();
      }
      // No option at all.
      const none = await fetch(`http://127.0.0.1:${plain.port}/api/sweep`);
      expect(none.status).toBe(404);
      expect(await none.json()).toEqual({ error: 'not a sweep' });
      await expect(
        startServer({ hub, port: 0, sweep: 'yes' as unknown as () => object }),
      ).rejects.toThrow(/sweep/);
    } finally {
      await sweep.close();
      await plain.close();
      rmSync(dashboardDir, { recursive: true, force: true });
    }
  });
});

let browser: Browser | undefined;
let dashboardDir: string | undefined;
const pageErrors = new WeakMap<Page, string[]>();
const errorsOf = (page: Page): string[] => pageErrors.get(page) ?? [];

/** Builds the bundle from the current source into a folder of our own and starts Chromium, once. */
let setup: Promise<void> | undefined;
function ready(): Promise<void> {
  setup ??= (async () => {
    dashboardDir = mkdtempSync(join(tmpdir(), 'grng-sweep-dashboard-'));
    execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-dashboard.mjs'), dashboardDir], {
      stdio: 'pipe',
    });
    mkdirSync(ARTIFACTS, { recursive: true });
    browser = await chromium.launch({
      executablePath: CHROMIUM_PATH,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
  })();
  return setup;
}

afterAll(async () => {
  await browser?.close();
  if (dashboardDir) rmSync(dashboardDir, { recursive: true, force: true });
});

async function open(url: string, before?: (page: Page) => void): Promise<Page> {
  const page = await browser!.newPage({ viewport: { width: 1440, height: 1400 } });
  const errors: string[] = [];
  pageErrors.set(page, errors);
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.stack ?? e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning')
      errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  before?.(page);
  await page.goto(url);
  return page;
}

const cellTexts = (page: Page, column: string): Promise<string[]> =>
  page.locator(`#sweep-table tbody td[data-column="${column}"]`).allTextContents();
const metricValues = async (page: Page): Promise<(number | null)[]> =>
  (await cellTexts(page, 'metric')).map((t) => (t === '–' ? null : Number(t)));

describe('sweep view in headless Chromium', () => {
  beforeEach((context) => needsPackage(context, 'chromium'));

  it('shows the trials table, scatter, parallel coordinates and grouped curves, live', async () => {
    await ready();
    const planned = plan();
    const trials = planned.map((p) => p.trial);
    let current = snapshotOf(trials);
    const hub = sweepHub(planned);
    const server = await startServer({
      hub,
      port: 0,
      token: TOKEN,
      dashboardDir: dashboardDir!,
      sweep: () => current,
    });
    const page = await open(server.url);
    try {
      await page.waitForSelector('#sweep:not([hidden])', { timeout: 10_000 });
      await expect.poll(() => page.locator('#sweep-table tbody tr').count()).toBe(12);
      expect(await page.textContent('#sweep-count')).toBe('12 of 12 trials');
      expect(await page.locator('#sweep-table thead tr:first-child th').allTextContents()).toEqual([
        'trial',
        'optimizer',
        'learningRate',
        'seed',
        'status',
        'steps',
        'testAccuracy',
        'best testAccuracy',
        'seconds',
        'steps/s',
      ]);
      expect(await cellTexts(page, 'status')).toEqual(trials.map((t) => t.status));

      // Sorting: a header click sorts ascending (blanks last), a second descending.
      const header = page.locator('#sweep-table th[data-column="metric"] .sort');
      await header.click();
      await expect
        .poll(() => page.getAttribute('#sweep-table th[data-column="metric"]', 'aria-sort'))
        .toBe('ascending');
      const done = trials.filter((t) => t.metric !== null).map((t) => t.metric!);
      const ascending = [...done].sort((a, b) => a - b);
      expect(await metricValues(page)).toEqual([...ascending, null]);
      await header.click();
      await expect.poll(() => metricValues(page)).toEqual([...[...ascending].reverse(), null]);
      await page.locator('#sweep-table th[data-column="setting:learningRate"] .sort').click();
      await expect
        .poll(() => cellTexts(page, 'setting:learningRate'))
        .toEqual(
          trials
            .map((t) => t.settings.learningRate as number)
            .sort((a, b) => a - b)
            .map(String),
        );

      // Scatter: one point per trial with a metric (not the running one), log x (lr spans
      // 1e-4…0.2), one colour per optimizer; parallel coordinates: one line per trial.
      await expect.poll(async () => (await stats(page)).scatterPoints).toBe(11);
      expect(await page.locator('#sweep-scatter circle.point').count()).toBe(11);
      expect(await page.locator('#sweep-scatter-x').inputValue()).toBe('learningRate');
      expect(await page.isChecked('#sweep-log-x')).toBe(true);
      const fills = await page
        .locator('#sweep-scatter circle.point')
        .evaluateAll((cs) => [...new Set(cs.map((c) => c.getAttribute('fill')))]);
      expect(fills).toHaveLength(2);
      expect(await page.locator('#sweep-scatter .sweep-legend .entry').allTextContents()).toEqual([
        'adamw',
        'ring',
      ]);
      expect(await page.locator('#sweep-parallel path.trial-line').count()).toBe(12);
      expect((await stats(page)).parallelLines).toBe(12);
      expect(await page.locator('#sweep-parallel .axis-label').allTextContents()).toEqual([
        'optimizer',
        'learningRate (log)',
        'seed',
        'testAccuracy',
      ]);
      // The log toggle: off gives a linear axis.
      await page.click('#sweep-log-x');
      await expect
        .poll(() => page.locator('#sweep-scatter .axis-label').first().textContent())
        .toBe('learningRate');
      await page.click('#sweep-log-x');

      // Grouped curves: one series per optimizer, the mean test accuracy over the union of
      // its trials' (misaligned) evaluation steps.
      await expect
        .poll(async () => (await stats(page)).groups)
        .toEqual([
          'optimizer=adamw mean ± 1 sd (6 trials)',
          'optimizer=ring mean ± 1 sd (6 trials)',
        ]);
      // Evaluations at 100…1400 (seed 1) and 50…1450 (seed 2).
      expect((await stats(page)).groupPoints).toEqual([29, 29]);
      expect(await page.locator('#sweep-curves .u-legend .u-series th').allTextContents()).toEqual([
        'step',
        ...(await stats(page)).groups,
      ]);
      await page.selectOption('#sweep-curve-band', 'minmax');
      await expect
        .poll(async () => (await stats(page)).groups[0])
        .toBe('optimizer=adamw mean min–max (6 trials)');

      // Selecting two rows (click, then ctrl-click) overlays their own curves, highlighted.
      const rows = page.locator('#sweep-table tbody tr');
      await rows.nth(0).click();
      await rows.nth(2).click({ modifiers: ['Control'] });
      await expect.poll(async () => (await stats(page)).highlighted).toBe(2);
      expect(await page.locator('#sweep-table tbody tr.selected').count()).toBe(2);
      const legend = await page.locator('#sweep-curves .u-legend .u-series th').allTextContents();
      expect(legend.filter((l) => l.startsWith('★'))).toHaveLength(2);
      expect(await page.locator('#sweep-scatter circle.point.selected').count()).toBe(2);
      expect(await page.locator('#sweep-parallel path.trial-line.selected').count()).toBe(2);
      // Shift-click selects the range from the last click (rows 3 to 6).
      await rows.nth(5).click({ modifiers: ['Shift'] });
      await expect.poll(async () => (await stats(page)).selected.length).toBe(4);
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-sweep.png'), fullPage: true });
      await page
        .locator('#sweep')
        .screenshot({ path: join(ARTIFACTS, 'dashboard-sweep-view.png') });
      await page.click('#sweep-clear');
      await expect.poll(async () => (await stats(page)).highlighted).toBe(0);

      // A filter `>0.9` on the metric narrows the rows, the count and the plots.
      const above = done.filter((m) => m > 0.9).length;
      await page.fill('#sweep-table input.filter[data-column="metric"]', '>0.9');
      await expect.poll(() => page.locator('#sweep-table tbody tr').count()).toBe(above);
      expect(await page.textContent('#sweep-count')).toBe(`${above} of 12 trials`);
      for (const m of await metricValues(page)) expect(m).toBeGreaterThan(0.9);
      expect((await stats(page)).scatterPoints).toBe(above);
      expect(await page.locator('#sweep-parallel path.trial-line').count()).toBe(above);
      await page.fill('#sweep-table input.filter[data-column="setting:optimizer"]', 'ring');
      const ringAbove = planned.filter(
        (p) => p.kind === 'ring' && p.trial.metric !== null && p.trial.metric > 0.9,
      ).length;
      await expect.poll(() => page.locator('#sweep-table tbody tr').count()).toBe(ringAbove);
      await page.fill('#sweep-table input.filter[data-column="metric"]', '');
      await page.fill('#sweep-table input.filter[data-column="setting:optimizer"]', '');
      await expect.poll(() => page.locator('#sweep-table tbody tr').count()).toBe(12);

      // The running trial finishes: its status, metric and point appear by the next poll.
      const running = planned.find((p) => p.trial.status === 'running')!;
      const schema = metricsSchema(running.run);
      hub.pushBatch(running.run.id, rowsToRecordBatch(schema, rowsOf(running, 600, STEPS)));
      hub.endRun(running.run.id);
      const changedAt = Date.now();
      current = snapshotOf(
        trials.map((t) =>
          t === running.trial
            ? {
                ...t,
                status: 'done' as const,
                steps: STEPS,
                metric: Number(running.target.toFixed(4)),
                best: Number((running.target + 0.002).toFixed(4)),
                seconds: 10.5,
                stepsPerSecond: 142.9,
              }
            : t,
        ),
      );
      const statusCell = page.locator(
        `#sweep-table tr[data-trial="${running.trial.trial}"] td[data-column="status"]`,
      );
      await expect
        .poll(() => statusCell.textContent(), { timeout: 4000, interval: 50 })
        .toBe('done');
      // The poll interval is 2 s; a second more for the fetch and the redraw on a busy machine.
      expect(Date.now() - changedAt).toBeLessThan(3000);
      await expect.poll(async () => (await stats(page)).scatterPoints).toBe(12);
      expect(await page.textContent('#sweep-count')).toBe('12 of 12 trials');
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-sweep-done.png'), fullPage: true });
    } finally {
      await page.close();
      await server.close();
    }
    expect(errorsOf(page)).toEqual([]);
  }, 60_000);

  it('stays hidden, asking nothing, on a server that is not a sweep', async () => {
    await ready();
    const planned = plan().slice(0, 2);
    const hub = sweepHub(planned);
    const server = await startServer({ hub, port: 0, dashboardDir: dashboardDir! });
    const asked: string[] = [];
    const page = await open(server.url, (p) =>
      p.on('request', (r) => {
        if (r.url().includes('/api/sweep')) asked.push(r.url());
      }),
    );
    try {
      await page.waitForFunction(
        (n) =>
          ((globalThis as unknown as { __grng?: { rows(): number } }).__grng?.rows() ?? 0) === n,
        2 * STEPS,
        { timeout: 10_000 },
      );
      await page.waitForTimeout(2500);
      expect(await page.isHidden('#sweep')).toBe(true);
      expect((await stats(page)).shown).toBe(false);
      expect(asked).toEqual([]);
    } finally {
      await page.close();
      await server.close();
    }
    expect(errorsOf(page)).toEqual([]);
  }, 30_000);
});
