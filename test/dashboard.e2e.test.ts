// The dashboard in a real headless Chromium (Debian's `chromium`, driven by playwright-core),
// against the real server (src/sinks/server.ts) fed by a RunHub: a live run that grows while the
// page watches, and a finished run replayed from the hub's history. Screenshots go to
// test-artifacts/ (git-ignored).
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { RunHub } from '../src/sinks/runHub.js';
import { startServer, type ServerHandle } from '../src/sinks/server.js';
import { formatNumber } from '../src/dashboard/format.js';
import { feedHub, syntheticRow, syntheticRun } from './dashboardSynthetic.js';
import { CHROMIUM_PATH, needsPackage } from './systemPackages.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ARTIFACTS = join(ROOT, 'test-artifacts');

/** What main.ts exposes as `window.__grng`. */
interface Hook {
  points(chart: string): number;
  lastX(chart: string): number;
  rows(runId?: string): number;
}
const points = (page: Page, chart: string): Promise<number> =>
  page.evaluate((c) => (globalThis as unknown as { __grng: Hook }).__grng.points(c), chart);
/**
 * Waits until `chart` draws rows newer than those it drew now. Not a growing point count: the
 * decimation caps that at about two points per pixel column, which a busy machine can reach
 * before the first look.
 */
async function drawsNewRows(page: Page, chart: string, timeout: number): Promise<void> {
  const before = await page.evaluate(
    (c) => (globalThis as unknown as { __grng: Hook }).__grng.lastX(c),
    chart,
  );
  await page.waitForFunction(
    ([c, x]) => (globalThis as unknown as { __grng: Hook }).__grng.lastX(c) > x,
    [chart, before] as const,
    { timeout },
  );
}
const rows = (page: Page, runId?: string): Promise<number> =>
  page.evaluate((id) => (globalThis as unknown as { __grng: Hook }).__grng.rows(id), runId);

let browser: Browser | undefined;
let dashboardDir: string;
/** What went wrong on each page: its own list, so a page left open by a failed test cannot fail the next. */
const pageErrors = new WeakMap<Page, string[]>();
const errorsOf = (page: Page): string[] => pageErrors.get(page) ?? [];

/**
 * Builds the bundle and starts Chromium, once; called by each test, so a browser that does not
 * start fails every test with the reason (a failing beforeAll would report them as skipped).
 */
let setup: Promise<void> | undefined;
function ready(): Promise<void> {
  setup ??= (async () => {
    // Test the current source: bundle it into a folder of our own.
    dashboardDir = mkdtempSync(join(tmpdir(), 'grng-dashboard-'));
    execFileSync(
      process.execPath,
      [
        join(ROOT, 'scripts', 'build-dashboard.mjs'),
        ...(process.env.GRNG_DASHBOARD_DEV ? ['--dev'] : []),
        dashboardDir,
      ],
      { stdio: 'pipe' },
    );
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
});

async function open(server: ServerHandle): Promise<Page> {
  const page = await browser!.newPage({ viewport: { width: 1440, height: 1000 } });
  const errors: string[] = [];
  pageErrors.set(page, errors);
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.stack ?? e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()} (${m.location().url})`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await page.goto(server.url);
  return page;
}

/** Log scale on: the loss chart's y scale becomes logarithmic (uPlot distr 3) and still draws. */
async function toggleLogScale(page: Page): Promise<void> {
  expect(await page.getAttribute('#chart-loss', 'data-y-distr')).toBe('1');
  await page.click('#log-scale');
  await page.waitForSelector('#chart-loss[data-y-distr="3"]', { timeout: 5000 });
  expect(await points(page, 'loss')).toBeGreaterThan(0);
}

describe('dashboard in headless Chromium', () => {
  beforeEach((context) => needsPackage(context, 'chromium'));

  it('draws live runs, grows as batches arrive, toggles log scale', async () => {
    await ready();
    const hub = new RunHub();
    const ring = syntheticRun('live-ring', 'ring', { label: 'ring' });
    const adamw = syntheticRun('live-adamw', 'adamw', { label: 'adamw' });
    // A token on purpose: the page must pass it to its bundle, the WebSocket and the downloads.
    const server = await startServer({ hub, port: 0, token: 's3cret', dashboardDir });
    let again: ServerHandle | undefined;
    const feeds = [
      feedHub(hub, ring, 'ring', { first: 200, perTick: 24, everyMs: 50 }),
      feedHub(hub, adamw, 'adamw', { first: 200, perTick: 24, everyMs: 50 }),
    ];
    const page = await open(server);
    try {
      await page.waitForFunction(
        () => ((globalThis as unknown as { __grng?: Hook }).__grng?.points('loss') ?? 0) > 0,
        undefined,
        { timeout: 10_000 },
      );
      await page.waitForSelector('#connection:text-is("live")', { timeout: 5000 });
      const firstRows = await rows(page, ring.id);
      await drawsNewRows(page, 'loss', 10_000);
      expect(await rows(page, ring.id)).toBeGreaterThan(firstRows);

      // Every quantity a run reports gets its chart; the others stay hidden.
      for (const chart of ['accuracy', 'gradNorm', 'learningRate', 'damping', 'klClip', 'hgNorm']) {
        await page.waitForSelector(`#chart-${chart}:not([hidden])`, { timeout: 5000 });
      }
      expect(await page.isHidden('#chart-kalmanTraceP')).toBe(true);
      // Classifiers: no bits per character.
      expect(await page.isHidden('#chart-bitsPerCharacter')).toBe(true);

      // The legend/metadata panel, with download links that carry the token and work.
      await expect
        .poll(() => page.locator('.run .label').allTextContents())
        .toEqual(['ring', 'adamw']);
      expect(await page.locator('.run').first().textContent()).toContain('mlp:784-256-10');
      const href = await page.locator('.run .download').first().getAttribute('href');
      expect(href).toBe('runs/live-ring.arrows?token=s3cret');
      const download = await page.evaluate(async (h) => {
        const r = await fetch(h);
        return { status: r.status, bytes: (await r.arrayBuffer()).byteLength };
      }, href!);
      expect(download.status).toBe(200);
      expect(download.bytes).toBeGreaterThan(1000);

      await toggleLogScale(page);
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-live.png'), fullPage: true });

      // The server going away shows as disconnected; the page reconnects when it is back and
      // gets everything again.
      for (const f of feeds) f.stop();
      const beforeOutage = errorsOf(page).length;
      await server.close();
      await page.waitForSelector('#connection:text-is("disconnected")', { timeout: 5000 });
      again = await startServer({ hub, port: server.port, token: 's3cret', dashboardDir });
      await page.waitForSelector('#connection:text-is("live")', { timeout: 10_000 });
      // A retry that fell inside the outage is refused, as it should be (a slow machine can get one in).
      const duringOutage = errorsOf(page).splice(beforeOutage);
      errorsOf(page).push(...duringOutage.filter((e) => !e.includes('ERR_CONNECTION_REFUSED')));
      await expect
        .poll(() => rows(page), { timeout: 5000 })
        .toBe(hub.run(ring.id)!.rows + hub.run(adamw.id)!.rows);
      expect(await points(page, 'loss')).toBeGreaterThan(0);
    } finally {
      await page.close();
      for (const f of feeds) f.stop();
      await server.close();
      await again?.close();
    }
    expect(errorsOf(page)).toEqual([]);
  }, 30_000);

  it('shows a finished (replayed) run the same way', async () => {
    await ready();
    const hub = new RunHub();
    const ring = syntheticRun('replay-ring', 'ring', {
      label: 'ring (recorded)',
      totalSteps: 20_000,
    });
    const kalman = syntheticRun('replay-rkalman', 'rkalman', {
      label: 'rkalman (recorded)',
      totalSteps: 20_000,
    });
    feedHub(hub, ring, 'ring', { total: 20_000, finished: true });
    feedHub(hub, kalman, 'rkalman', { total: 20_000, finished: true });
    const server = await startServer({ hub, port: 0, dashboardDir });
    const page = await open(server);
    try {
      await page.waitForFunction(
        () => (globalThis as unknown as { __grng?: Hook }).__grng?.rows() === 40_000,
        undefined,
        { timeout: 10_000 },
      );
      await page.waitForFunction(
        () => (globalThis as unknown as { __grng: Hook }).__grng.points('loss') > 0,
        undefined,
        { timeout: 5000 },
      );
      // 20 000 steps per run are decimated to about two points per pixel column.
      const drawn = await points(page, 'loss');
      const width = await page
        .locator('#chart-loss')
        .evaluate((e) => (e as unknown as { clientWidth: number }).clientWidth);
      expect(drawn).toBeLessThanOrEqual(2 * (2 * width + 4));
      expect(drawn).toBeGreaterThan(width / 2);
      await expect
        .poll(() => page.locator('.run .badge').allTextContents())
        .toEqual(['finished', 'finished']);
      for (const chart of ['testLoss', 'testAccuracy', 'kalmanTraceP', 'kalmanNoise', 'damping']) {
        await page.waitForSelector(`#chart-${chart}:not([hidden])`, { timeout: 5000 });
      }
      await toggleLogScale(page);
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-replay.png'), fullPage: true });

      // Smoothing, wall-time x axis, drag to zoom (full resolution inside), reset.
      await page.fill('#smoothing', '0.9');
      await expect.poll(() => page.textContent('#smoothing-value')).toBe('0.90');
      await page.selectOption('#x-axis', 'wall');
      await expect
        .poll(() => page.locator('#chart-loss .u-legend th').first().textContent())
        .toContain('time');
      expect(await points(page, 'loss')).toBeGreaterThan(0);
      const over = (await page.locator('#chart-loss .u-over').boundingBox())!;
      await page.mouse.move(over.x + over.width * 0.1, over.y + 20);
      await page.mouse.down();
      await page.mouse.move(over.x + over.width * 0.12, over.y + 30, { steps: 4 });
      await page.mouse.up();
      await page.waitForSelector('#reset-zoom:visible', { timeout: 5000 });
      // 2 % of 20 000 steps per run, below two points per pixel: every row in the window is drawn.
      await expect.poll(() => points(page, 'loss')).toBeLessThan(2 * 600);
      const zoomed = await points(page, 'loss');
      expect(zoomed).toBeGreaterThan(2 * 300);
      await page.click('#reset-zoom');
      await page.waitForSelector('#reset-zoom', { state: 'hidden', timeout: 5000 });
      await expect.poll(() => points(page, 'loss')).not.toBe(zoomed);
    } finally {
      await page.close();
      await server.close();
    }
    expect(errorsOf(page)).toEqual([]);
  }, 30_000);

  it('draws a language model run in bits per character, train and test', async () => {
    await ready();
    const hub = new RunHub();
    const total = 3000;
    const gpt = syntheticRun('lm-gpt', 'adamw', {
      label: 'gpt',
      model: 'gpt:L2-d128-h4-ctx128',
      dataset: 'fortunes',
      labelsPerExample: 128,
      totalSteps: total,
    });
    const mlp = syntheticRun('lm-mlp', 'ring', {
      label: 'mlp',
      labelsPerExample: 1,
      totalSteps: total,
    });
    feedHub(hub, gpt, 'adamw', { total, finished: true });
    feedHub(hub, mlp, 'ring', { total, finished: true });
    const server = await startServer({ hub, port: 0, dashboardDir });
    const page = await open(server);
    try {
      await page.waitForFunction(
        (n) => (globalThis as unknown as { __grng?: Hook }).__grng?.rows() === n,
        2 * total,
        { timeout: 10_000 },
      );
      await page.waitForSelector('#chart-bitsPerCharacter:not([hidden])', { timeout: 5000 });
      await expect.poll(() => points(page, 'bitsPerCharacter')).toBeGreaterThan(0);
      // Only the language model, as two lines: train and test (dashed), in bits (nats ÷ ln 2).
      const legend = page.locator('#chart-bitsPerCharacter .u-legend .u-series');
      await expect
        .poll(() => legend.locator('th').allTextContents())
        .toEqual(['step', 'gpt train', 'gpt test']);
      const lastTrain = syntheticRow('adamw', total - 1).loss;
      const lastTest = syntheticRow('adamw', total - 100).testLoss!;
      await expect
        .poll(() => legend.nth(1).locator('td').textContent())
        .toBe(formatNumber(lastTrain / Math.LN2));
      await expect
        .poll(() => legend.nth(2).locator('td').textContent())
        .toBe(formatNumber(lastTest / Math.LN2));
      // The loss charts keep every run, in nats.
      await expect
        .poll(() => page.locator('#chart-loss .u-legend th').allTextContents())
        .toEqual(['step', 'gpt', 'mlp']);
      await page.screenshot({
        path: join(ARTIFACTS, 'dashboard-language-model.png'),
        fullPage: true,
      });
    } finally {
      await page.close();
      await server.close();
    }
    expect(errorsOf(page)).toEqual([]);
  }, 30_000);

  it('follows a real `grng train --serve` run, and a `grng replay --serve` of its recording', async () => {
    await ready();
    const recording = join(mkdtempSync(join(tmpdir(), 'grng-e2e-')), 'ring.arrows');
    const startCli = async (
      args: string[],
    ): Promise<{ url: string; stop(): Promise<number | null> }> => {
      const child = spawn(process.execPath, [join(ROOT, 'bin', 'grng.js'), ...args], {
        cwd: ROOT,
        env: { ...process.env, GRNG_BACKEND: 'wasm' },
      });
      let stderr = '';
      const url = await new Promise<string>((resolve, reject) => {
        child.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
          const match = /dashboard at (http:\/\/\S+)/.exec(stderr);
          if (match) resolve(match[1]!);
        });
        child.once('exit', () => reject(new Error(`grng exited before serving: ${stderr}`)));
      });
      return {
        url,
        // Stop once the run is over and the CLI only serves (graceful stop mid-run is issue 6).
        stop: async () => {
          for (
            let waited = 0;
            !stderr.includes('(Ctrl-C to stop)') && waited < 60_000;
            waited += 50
          )
            await new Promise((r) => setTimeout(r, 50));
          child.kill('SIGINT');
          return new Promise((resolve) => child.once('exit', resolve));
        },
      };
    };
    const live = await startCli([
      'train',
      '--dataset',
      'synthetic',
      '--optimizer',
      'ring',
      '--epochs',
      '12',
      '--batch-size',
      '32',
      '--record',
      recording,
      '--serve',
      '--port',
      '0',
      '--keep-serving',
    ]);
    const page = await open({ url: live.url } as ServerHandle);
    try {
      await page.waitForFunction(
        () => ((globalThis as unknown as { __grng?: Hook }).__grng?.points('loss') ?? 0) > 0,
        undefined,
        { timeout: 20_000 },
      );
      await drawsNewRows(page, 'loss', 20_000);
      await toggleLogScale(page);
      await page.screenshot({ path: join(ARTIFACTS, 'dashboard-cli-live.png'), fullPage: true });
      expect(errorsOf(page)).toEqual([]);
    } finally {
      await page.close();
      expect(await live.stop()).toBe(0);
    }
    const replay = await startCli([
      'replay',
      recording,
      '--serve',
      '--port',
      '0',
      '--speed',
      '50',
      '--keep-serving',
    ]);
    const again = await open({ url: replay.url } as ServerHandle);
    try {
      await again.waitForFunction(
        () => ((globalThis as unknown as { __grng?: Hook }).__grng?.points('loss') ?? 0) > 0,
        undefined,
        { timeout: 20_000 },
      );
      await toggleLogScale(again);
      await again.screenshot({ path: join(ARTIFACTS, 'dashboard-cli-replay.png'), fullPage: true });
      expect(errorsOf(again)).toEqual([]);
    } finally {
      await again.close();
      expect(await replay.stop()).toBe(0);
    }
  });
});
