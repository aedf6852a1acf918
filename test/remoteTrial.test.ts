// Trials run on a machine without the sweep's folder (src/sweep/remoteTrial.ts) through the
// coordinator's trial files (src/sweep/trialFiles.ts) on the real dashboard server: every file
// lands in the coordinator's folder, the recording while the trial runs, a stopped trial resumes
// on "another machine" (another cache folder) from the checkpoint it uploaded, two runners racing
// run it once, a runner whose lock is taken over stops, and every write is authenticated and
// checked. Trials run dist/ through bin/grng.js: build it first (`npm test` does).
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { recordBatchToRows } from '../src/metrics/schema.js';
import { CHECKPOINT_FILE, hasCheckpoint } from '../src/sinks/checkpointFile.js';
import { RunHub } from '../src/sinks/runHub.js';
import { startServer, type ServerHandle } from '../src/sinks/server.js';
import { readRecording } from '../src/streams/readRecording.js';
import { expandTrials, parseSweepConfig } from '../src/sweep/config.js';
import { runRemoteTrial, type RemoteTrialOptions } from '../src/sweep/remoteTrial.js';
import { runTrial, trialDir, type RunTrialOptions } from '../src/sweep/runTrial.js';
import { MAX_CHUNK_BYTES, trialFilesRoutes } from '../src/sweep/trialFiles.js';
import type { Trial, TrialResult } from '../src/sweep/types.js';

const TOKEN = 'remote-trials-token';
const root = mkdtempSync(join(tmpdir(), 'grng-remote-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let made = 0;
const folder = (name: string): string => join(root, `${name}-${(made += 1)}`);

const trials = expandTrials(
  parseSweepConfig(
    JSON.stringify({
      name: 'remote',
      base: {
        dataset: 'synthetic',
        model: 'mlp:20-16-4',
        'batch-size': 32,
        epochs: 10,
        'eval-every': 20,
      },
      optimizers: { adamw: { lr: [0.01, 0.003] } },
      checkpointEvery: 10,
    }),
    'remote.json',
  ),
);
const RUN_OPTIONS: RunTrialOptions = {
  metric: 'testAccuracy',
  higherIsBetter: true,
  checkpointEvery: 10,
  extraArgs: ['--backend', 'cpu'],
};

interface Coordinator {
  readonly dir: string;
  readonly server: ServerHandle;
  readonly url: string;
}

/** A coordinator: a sweep folder (its sweep.json lists the trials) served with trial files. */
async function coordinator(): Promise<Coordinator> {
  const dir = folder('coordinator');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'sweep.json'), JSON.stringify({ config: {}, trials }));
  const server = await startServer({
    hub: new RunHub(),
    port: 0,
    token: TOKEN,
    routes: trialFilesRoutes(dir),
  });
  servers.push(server);
  return { dir, server, url: `http://127.0.0.1:${server.port}` };
}
const servers: ServerHandle[] = [];
afterAll(async () => {
  for (const server of servers) await server.close();
});

/** A runner on "another machine": its own cache folder, the coordinator's URL and token. */
function remote(
  coord: Coordinator,
  trial: Trial,
  steps: number,
  extra: Partial<RemoteTrialOptions> = {},
): Promise<TrialResult> {
  return runRemoteTrial(
    { sweepDir: '/elsewhere/sweeps/remote', trial, steps },
    { url: coord.url, token: TOKEN },
    { ...RUN_OPTIONS, cacheDir: folder('machine'), ...extra },
  );
}

const rowsOf = (path: string) =>
  readRecording(path).batches.flatMap((batch) => recordBatchToRows(batch));
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** What a run computed, without who ran it and how fast. */
function numbers(result: TrialResult): Partial<TrialResult> {
  const { seconds: _seconds, stepsPerSecond: _speed, ranBy: _ranBy, ...rest } = result;
  return rest;
}

async function call(
  coord: Coordinator,
  method: string,
  path: string,
  body?: Uint8Array | string,
  token: string | null = TOKEN,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${coord.url}${path}`, {
    method,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
    ...(body === undefined ? {} : { body }),
  });
  const text = await res.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    json = { text };
  }
  return { status: res.status, json };
}

describe('trials through the coordinator’s trial files', () => {
  it('a trial run elsewhere leaves its files in the coordinator’s folder, the recording growing while it runs, with the numbers of a local run', async () => {
    const coord = await coordinator();
    const trial = trials[0]!;
    const steps = 200;
    const recording = join(trialDir(coord.dir, trial.id), 'run.arrows');
    const cacheDir = folder('machine');
    let sizeWhileRunning = 0;
    let finished = false;
    const watch = (async () => {
      while (!finished) {
        if (existsSync(recording))
          sizeWhileRunning = Math.max(sizeWhileRunning, statSync(recording).size);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    const [result, local] = await Promise.all([
      remote(coord, trial, steps, { cacheDir, syncMs: 100 }).finally(() => (finished = true)),
      runTrial({ sweepDir: folder('local'), trial, steps }, RUN_OPTIONS),
    ]);
    await watch;
    expect(result.status, result.error).toBe('done');
    expect(numbers(result)).toEqual(numbers(local));
    // The coordinator's copy: every step once, the checkpoint, the result.
    expect(rowsOf(recording).map((r) => r.step)).toEqual(range(steps));
    expect(readRecording(recording).complete).toBe(true);
    expect(sizeWhileRunning).toBeGreaterThan(0);
    expect(hasCheckpoint(join(trialDir(coord.dir, trial.id), 'checkpoint'))).toBe(true);
    const stored = JSON.parse(
      readFileSync(join(trialDir(coord.dir, trial.id), `result-${steps}.json`), 'utf8'),
    ) as TrialResult;
    expect(stored).toEqual(result);
    expect(existsSync(join(trialDir(coord.dir, trial.id), 'lock'))).toBe(false);
    // Nothing of the trial is left on the runner's machine.
    const { readdirSync } = await import('node:fs');
    const left = readdirSync(cacheDir, { recursive: true }).filter((p) =>
      String(p).includes(trial.id),
    );
    expect(left.filter((p) => String(p).split('/').length > 3)).toEqual([]);
    // Asked again, the stored result answers: nothing runs.
    let spawned = 0;
    const again = await remote(coord, trial, steps, { onChild: () => (spawned += 1) });
    expect(again).toEqual(result);
    expect(spawned).toBe(0);
  });

  it('a trial stopped on one machine resumes on another from the checkpoint it uploaded: each step once, the same numbers', async () => {
    const coord = await coordinator();
    const trial = trials[1]!;
    const steps = 400;
    const checkpoint = join(trialDir(coord.dir, trial.id), 'checkpoint');
    let child: number | undefined;
    const first = remote(coord, trial, steps, {
      syncMs: 100,
      onChild: (pid) => (child = pid),
    }).catch((error: unknown) => error as Error);
    await expect
      .poll(() => hasCheckpoint(checkpoint), { timeout: 30_000, interval: 50 })
      .toBe(true);
    process.kill(child!, 'SIGTERM'); // as a worker's shutdown does: checkpoint and stop
    const stopped = await first;
    expect(String(stopped)).toMatch(/was stopped before 400 steps; it resumes from its checkpoint/);
    const before = rowsOf(join(trialDir(coord.dir, trial.id), 'run.arrows'));
    expect(before.length).toBeGreaterThan(0);
    expect(before.length).toBeLessThan(steps);
    const [result, local] = await Promise.all([
      remote(coord, trial, steps),
      runTrial({ sweepDir: folder('local'), trial, steps }, RUN_OPTIONS),
    ]);
    expect(result.status, result.error).toBe('done');
    expect(numbers(result)).toEqual(numbers(local));
    const after = rowsOf(join(trialDir(coord.dir, trial.id), 'run.arrows'));
    expect(after.map((r) => r.step)).toEqual(range(steps));
    // Resumed, not started over: the first machine's early rows are kept (their clock readings).
    const kept = before.filter((r) => r.step < 10);
    expect(after.slice(0, kept.length).map((r) => r.wallMs)).toEqual(kept.map((r) => r.wallMs));
  });

  it('two runners racing for one trial run it once', async () => {
    const coord = await coordinator();
    const trial = trials[0]!;
    let spawned = 0;
    const onChild = (): void => void (spawned += 1);
    const [a, b] = await Promise.all([
      remote(coord, trial, 40, { onChild }),
      remote(coord, trial, 40, { onChild }),
    ]);
    expect(a.status, a.error).toBe('done');
    expect(b).toEqual(a);
    expect(spawned).toBe(1);
  });

  it('a runner whose lock another runner took over stops its training and says so', async () => {
    const coord = await coordinator();
    const trial = trials[1]!;
    const lock = join(trialDir(coord.dir, trial.id), 'lock');
    let child: number | undefined;
    const running = remote(coord, trial, 2000, {
      syncMs: 100,
      onChild: (pid) => (child = pid),
    }).catch((error: unknown) => error as Error);
    await expect
      .poll(() => child !== undefined && existsSync(lock), { timeout: 30_000 })
      .toBe(true);
    // As if its heartbeats had stopped reaching the coordinator and the lock went stale.
    rmSync(lock);
    expect((await call(coord, 'POST', `/api/trials/${trial.id}/lock?owner=other:1:1`)).status).toBe(
      200,
    );
    const error = await running;
    expect(String(error)).toMatch(/another runner took its lock over/);
    expect(() => process.kill(child!, 0)).toThrow(); // its training process is gone
    expect(readFileSync(lock, 'utf8')).toBe('other:1:1');
  });
});

describe('the trial-file endpoints refuse what they must', () => {
  it('no routes without a token; 401 without the token; unknown trials, missing owners, writes without the lock, gaps, oversize chunks, bad results and torn checkpoints', async () => {
    await expect(
      startServer({ hub: new RunHub(), port: 0, routes: trialFilesRoutes(root) }),
    ).rejects.toThrow(/routes.*token/);
    const coord = await coordinator();
    const id = trials[0]!.id;
    const at = `/api/trials/${id}`;
    expect((await call(coord, 'GET', `${at}/run.arrows`, undefined, null)).status).toBe(401);
    expect((await call(coord, 'GET', `${at}/run.arrows`, undefined, 'wrong')).status).toBe(401);
    expect((await call(coord, 'GET', `${at}/run.arrows`)).status).toBe(404);
    expect((await call(coord, 'GET', '/api/trials/0123456789ab/run.arrows')).json.error).toBe(
      'no trial 0123456789ab in this sweep',
    );
    expect((await call(coord, 'GET', `/api/trials/${id}/../sweep.json`)).status).toBe(404);
    expect((await call(coord, 'POST', `${at}/lock`)).status).toBe(400);
    expect((await call(coord, 'POST', `${at}/lock?owner=a%20b`)).status).toBe(400);
    // Writes need the lock.
    const unlocked = await call(coord, 'PUT', `${at}/run.arrows?owner=me:1:1&offset=0`, 'x');
    expect(unlocked.status).toBe(409);
    expect(unlocked.json.error).toBe(`trial ${id}'s lock is not held by me:1:1`);
    expect((await call(coord, 'POST', `${at}/lock?owner=me:1:1`)).status).toBe(200);
    expect((await call(coord, 'POST', `${at}/lock?owner=you:2:2`)).json).toEqual({
      held: false,
      holder: 'me:1:1',
    });
    // Appends only at the end.
    expect(
      (await call(coord, 'PUT', `${at}/run.arrows?owner=me:1:1&offset=0`, 'abc')).json,
    ).toEqual({ size: 3 });
    expect((await call(coord, 'PUT', `${at}/run.arrows?owner=me:1:1&offset=3`, 'de')).json).toEqual(
      { size: 5 },
    );
    expect((await call(coord, 'PUT', `${at}/run.arrows?owner=me:1:1&offset=9`, 'x')).json).toEqual({
      error: "offset 9 is not the file's end",
      size: 5,
    });
    expect((await call(coord, 'PUT', `${at}/run.arrows?owner=me:1:1`, 'x')).status).toBe(400);
    const big = new Uint8Array(MAX_CHUNK_BYTES + 1);
    expect((await call(coord, 'PUT', `${at}/run.arrows?owner=me:1:1&offset=5`, big)).status).toBe(
      413,
    );
    expect(readFileSync(join(trialDir(coord.dir, id), 'run.arrows'), 'utf8')).toBe('abcde');
    // Results are checked: this trial's, at this budget.
    const result = { id, budget: 40, status: 'done', steps: 40, seconds: 1 };
    const wrong = await call(
      coord,
      'PUT',
      `${at}/result-40.json?owner=me:1:1`,
      JSON.stringify({ ...result, id: 'aaaaaaaaaaaa' }),
    );
    expect(wrong.json.error).toBe(`result-40.json: its id is "aaaaaaaaaaaa", not ${id}`);
    expect((await call(coord, 'PUT', `${at}/result-40.json?owner=me:1:1`, '{')).json.error).toBe(
      'result-40.json: not JSON',
    );
    expect(
      (await call(coord, 'PUT', `${at}/result-40.json?owner=me:1:1`, JSON.stringify(result)))
        .status,
    ).toBe(200);
    expect((await call(coord, 'GET', `${at}/result-40.json`)).json).toEqual(result);
    // A checkpoint is committed only whole and valid; a bad one leaves none.
    expect(
      (await call(coord, 'PUT', `${at}/checkpoint?owner=me:1:1&offset=0`, 'GRNGCKPT-torn')).status,
    ).toBe(200);
    const { createHash } = await import('node:crypto');
    const digest = createHash('sha256').update('GRNGCKPT-torn').digest('hex');
    expect(
      (await call(coord, 'POST', `${at}/checkpoint?owner=me:1:1&size=99&sha256=${digest}`)).status,
    ).toBe(409);
    const torn = await call(
      coord,
      'POST',
      `${at}/checkpoint?owner=me:1:1&size=13&sha256=${digest}`,
    );
    expect(torn.status).toBe(400);
    expect(String(torn.json.error)).toMatch(/^not a grng checkpoint: /);
    expect(existsSync(join(trialDir(coord.dir, id), 'checkpoint', CHECKPOINT_FILE))).toBe(false);
    expect((await call(coord, 'DELETE', `${at}/checkpoint?owner=me:1:1`)).status).toBe(405);
    // Released by its owner only.
    await call(coord, 'DELETE', `${at}/lock?owner=you:2:2`);
    expect(existsSync(join(trialDir(coord.dir, id), 'lock'))).toBe(true);
    await call(coord, 'DELETE', `${at}/lock?owner=me:1:1`);
    expect(existsSync(join(trialDir(coord.dir, id), 'lock'))).toBe(false);
  });

  it('a runner with the wrong token fails in one line saying so', async () => {
    const coord = await coordinator();
    const error = await runRemoteTrial(
      { sweepDir: '/elsewhere', trial: trials[0]!, steps: 40 },
      { url: coord.url, token: 'not-it' },
      { ...RUN_OPTIONS, cacheDir: folder('machine') },
    ).catch((e: unknown) => e as Error);
    expect(String(error)).toBe(
      `Error: the sweep's coordinator at ${coord.url} refused the token (HTTP 401): give grng worker the token grng sweep was started with`,
    );
  });
});
