import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { loadCheckpoint, disposeCheckpoint } from '../src/run/checkpoint.js';
import { recordBatchToRows } from '../src/metrics/schema.js';
import { readRecording } from '../src/streams/readRecording.js';
import type { MetricsRow } from '../src/types.js';
import { RunControl } from '../src/run/runControl.js';
import { handleStopSignals } from '../src/cli/gracefulStop.js';

// Real processes and real signals against the built CLI (npm test builds dist/ first).
const root = new URL('..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'grng-stop-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
beforeAll(() => {
  expect(existsSync(join(root, 'dist/cli/bin.js'))).toBe(true);
});

interface Child {
  readonly done: Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>;
  readonly kill: (signal: NodeJS.Signals) => void;
  /** Resolves once stderr has printed a line matching `pattern`; returns the match. */
  readonly waitFor: (pattern: RegExp) => Promise<RegExpMatchArray>;
}

function grng(args: string[]): Child {
  const child = spawn(process.execPath, ['bin/grng.js', ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const waiters: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    for (const w of [...waiters]) {
      const m = stderr.match(w.pattern);
      if (m) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(m);
      }
    }
  });
  const done = new Promise<{
    code: number | null;
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
  }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return {
    done,
    kill: (signal) => child.kill(signal),
    waitFor: (pattern) =>
      new Promise((resolve, reject) => {
        const m = stderr.match(pattern);
        if (m) return resolve(m);
        waiters.push({ pattern, resolve });
        void done.then(() =>
          reject(new Error(`process exited before printing ${pattern}; stderr:\n${stderr}`)),
        );
      }),
  };
}

const rowsOf = (path: string): MetricsRow[] =>
  readRecording(path).batches.flatMap((b) => recordBatchToRows(b));
// A run long enough to be interrupted mid-way: 64 batches per epoch, 20 epochs.
const RUN = [
  'train',
  '--dataset',
  'synthetic',
  '--backend',
  'cpu',
  '--model',
  'mlp:20-32-4',
  '--batch-size',
  '32',
  '--epochs',
  '20',
  '--optimizer',
  'kfac',
  '--inverse-every',
  '5',
  '--eval-every',
  '25',
];

async function waitForRows(path: string, rows: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (existsSync(path)) {
      try {
        if (readRecording(path).rows >= rows) return;
      } catch {
        // Still being written: the schema may not be complete yet.
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${path} never reached ${rows} rows`);
}

describe('graceful stop and resume through the CLI', () => {
  it('SIGTERM finishes the step, flushes the recording, checkpoints, exits 0; --resume appends and matches an uninterrupted run', async () => {
    const recording = join(dir, 'stopped.arrows');
    const checkpoint = join(dir, 'ckpt');
    const child = grng([
      ...RUN,
      '--record',
      recording,
      '--checkpoint-dir',
      checkpoint,
      '--checkpoint-every',
      '1000',
    ]);
    await waitForRows(recording, 64); // the first record batch is on disk: training is well under way
    child.kill('SIGTERM');
    const stopped = await child.done;
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(stopped.stderr).toMatch(/grng: SIGTERM: finishing the current step/);
    expect(stopped.stderr).toMatch(
      /grng: stopped by SIGTERM after \d+ steps; checkpoint in .*ckpt \(continue with --resume/,
    );
    const saved = loadCheckpoint(checkpoint);
    expect(saved.reason).toBe('stop');
    const recorded = readRecording(recording);
    expect(recorded.complete).toBe(true); // end-of-stream marker written: flushed and closed
    const firstRows = rowsOf(recording);
    expect(firstRows.map((r) => r.step)).toEqual([...Array(saved.step + 1).keys()]); // every step up to the checkpoint, no more
    disposeCheckpoint(saved);

    const total = saved.step + 1 + 40;
    const resumed = await grng([
      'train',
      '--resume',
      checkpoint,
      '--steps',
      String(total),
      '--json',
    ]).done;
    expect(resumed.code, resumed.stderr).toBe(0);
    expect(resumed.stderr).toMatch(new RegExp(`resuming at step ${saved.step + 1} from`));
    expect(JSON.parse(resumed.stdout.trim().split('\n').pop()!).steps).toBe(40);
    const appended = readRecording(recording);
    expect(appended.complete).toBe(true);
    expect(appended.run.id).toBe(recorded.run.id); // the same run, continued
    const all = rowsOf(recording);
    expect(all.map((r) => r.step)).toEqual([...Array(total).keys()]);
    expect(all.at(-1)!.wallMs).toBeGreaterThan(firstRows.at(-1)!.wallMs); // the run's clock continues

    const straight = join(dir, 'straight.arrows');
    const uninterrupted = await grng([...RUN, '--steps', String(total), '--record', straight]).done;
    expect(uninterrupted.code, uninterrupted.stderr).toBe(0);
    const expected = rowsOf(straight);
    expect(expected).toHaveLength(total);
    for (let i = 0; i < total; i++) {
      expect(all[i]!.loss, `step ${i} loss`).toBeCloseTo(expected[i]!.loss, 6);
      expect(all[i]!.updateNorm, `step ${i} ‖update‖`).toBeCloseTo(expected[i]!.updateNorm, 6);
      expect(all[i]!.diagnostics.damping ?? NaN).toBeCloseTo(
        expected[i]!.diagnostics.damping ?? NaN,
        9,
      );
    }
  }, 120_000);

  it('a second signal exits at once (130), and the recording keeps what was written', async () => {
    const recording = join(dir, 'twice.arrows');
    // Slow steps (a 2048-wide factor inverted by Newton–Schulz every step, cold each time: ≥ 1 s;
    // Cholesky would take ~0.25 s), so the first signal finds a step in progress and the second arrives
    // before it ends.
    const child = grng([
      'train',
      '--dataset',
      'synthetic',
      '--backend',
      'wasm',
      '--model',
      'mlp:20-2048-4',
      '--optimizer',
      'kfac',
      '--inverse-every',
      '1',
      '--inverse',
      'newton-schulz',
      '--newton-warm-trials',
      '0',
      '--epochs',
      '1',
      '--record',
      recording,
    ]);
    await child.waitFor(/grng: backend/);
    await new Promise((r) => setTimeout(r, 2000));
    child.kill('SIGINT');
    await child.waitFor(/SIGINT: finishing the current step/);
    child.kill('SIGINT');
    const result = await child.done;
    expect(result.code, result.stderr).toBe(130);
    expect(result.stderr).toMatch(/SIGINT again: exiting now/);
    expect(result.stderr).not.toMatch(/stopped by SIGINT/);
    // Killed mid-run: readable up to its last complete batch, or the documented error when no
    // batch was written yet (see docs/reliability.md).
    try {
      const rows = rowsOf(recording);
      expect(rows.map((r) => r.step)).toEqual([...Array(rows.length).keys()]);
    } catch (error) {
      expect((error as Error).message).toMatch(
        /twice.arrows: .* at byte \d+|cannot read recording/,
      );
    }
  }, 60_000);

  it('the signal handler: first signal asks for a stop, the second exits with 128 + signal number', () => {
    const control = new RunControl();
    const lines: string[] = [];
    const exits: number[] = [];
    const restore = handleStopSignals(
      { out: () => {}, err: (t) => lines.push(t), isTTY: false },
      control,
      (code) => exits.push(code),
    );
    try {
      process.emit('SIGTERM', 'SIGTERM');
      expect(control.stopRequested).toBe(true);
      expect(control.stopReason).toBe('SIGTERM');
      expect(exits).toEqual([]);
      process.emit('SIGINT', 'SIGINT');
      expect(exits).toEqual([130]);
      expect(control.stopReason).toBe('SIGTERM');
    } finally {
      restore();
    }
    expect(process.listenerCount('SIGINT')).toBe(0);
    expect(lines).toHaveLength(2);
  });

  it('SIGINT closes dashboard clients with a reason and exits 0', async () => {
    const child = grng([...RUN, '--serve', '--port', '0', '--keep-serving']);
    const [, url] = await child.waitFor(/dashboard at (http:\/\/\S+)/);
    const ws = new WebSocket(`${url!.replace('http', 'ws').replace(/\/?(\?.*)?$/, '/ws$1')}`);
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    );
    await child.waitFor(/grng: backend/);
    await new Promise((r) => setTimeout(r, 500));
    child.kill('SIGINT');
    const result = await child.done;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).not.toMatch(/keeps serving|Ctrl-C to stop/); // a stopped run does not keep serving
    const close = await closed;
    expect(close.code).toBe(1001);
    expect(close.reason.length).toBeGreaterThan(0);
  }, 60_000);

  it('--max-bad-steps: a diverging run stops with one line naming the step and what was not finite', async () => {
    const result = await grng([
      'train',
      '--dataset',
      'synthetic',
      '--backend',
      'cpu',
      '--model',
      'mlp:20-32-4',
      '--optimizer',
      'sgd',
      '--lr',
      '1e30',
      '--max-bad-steps',
      '3',
      '--epochs',
      '1',
    ]).done;
    expect(result.code).toBe(1);
    const lines = result.stderr
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('grng:') && !l.startsWith('grng: backend'));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(
      /step \d+: 3 consecutive non-finite steps \(max-bad-steps 3\); the (loss|gradient of dense\d\/(kernel|bias) \(layer dense\d\)) is NaN or infinite/,
    );
  }, 60_000);
});
