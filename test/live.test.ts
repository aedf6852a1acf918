import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { readRecording } from '../src/streams/readRecording.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const BIN = join(root, 'bin/grng.js');
const dir = mkdtempSync(join(tmpdir(), 'grng-live-'));

async function grng(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], {
      env: { ...process.env, GRNG_BACKEND: 'wasm' },
      maxBuffer: 1 << 24,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('recording and replay from the CLI', () => {
  it('train --record writes a self-describing recording; replay --summary reproduces the run summary', async () => {
    const path = join(dir, 'ring.arrows');
    const trained = await grng([
      'train',
      '--dataset',
      'synthetic',
      '--optimizer',
      'ring',
      '--epochs',
      '2',
      '--batch-size',
      '64',
      '--record',
      path,
      '--json',
    ]);
    expect(trained.code).toBe(0);
    const summary = JSON.parse(trained.stdout.trim().split('\n').at(-1)!);
    const rec = readRecording(path);
    expect(rec.complete).toBe(true);
    expect(rec.rows).toBe(summary.steps);
    expect(rec.run).toMatchObject({
      optimizer: 'ring',
      dataset: 'synthetic',
      backend: 'wasm',
      seed: 1,
      batchSize: 64,
    });
    expect(rec.run.optimizerOptions).toMatchObject({ rho: 0.1, damping: 0.001 });
    const replayed = await grng(['replay', path, '--summary']);
    expect(replayed.code).toBe(0);
    const line = replayed.stdout.split('\n').find((l) => l.startsWith('ring'))!;
    expect(line).toContain(summary.testAccuracy.toFixed(4));
    expect(line).toContain(summary.finalLoss.toFixed(4));
    // A second run with the same name is refused, and nothing is lost.
    const again = await grng([
      'train',
      '--dataset',
      'synthetic',
      '--epochs',
      '1',
      '--record',
      path,
    ]);
    expect(again.code).toBe(2);
    expect(again.stderr.trim()).toMatch(/already exists/);
    expect(readRecording(path).rows).toBe(summary.steps);
  });

  it('compare --record writes one file per optimizer', async () => {
    const base = join(dir, 'cmp.arrows');
    const { code } = await grng([
      'compare',
      '--dataset',
      'synthetic',
      '--optimizers',
      'sgd,adamw',
      '--epochs',
      '1',
      '--record',
      base,
    ]);
    expect(code).toBe(0);
    expect(readRecording(join(dir, 'cmp.sgd.arrows')).run.optimizer).toBe('sgd');
    expect(readRecording(join(dir, 'cmp.adamw.arrows')).run.optimizer).toBe('adamw');
  });

  it('replay of a corrupt file is one line naming the file and byte offset', async () => {
    const bad = join(dir, 'bad.arrows');
    writeFileSync(bad, 'this is not arrow');
    const { code, stderr } = await grng(['replay', bad]);
    expect(code).toBe(2);
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/bad.arrows: expected the Arrow IPC continuation marker .* at byte 0/);
  });

  it('examples/replay-analysis.ts compares recorded runs', async () => {
    const { stdout } = await run(
      process.execPath,
      [
        '--import',
        'tsx',
        'examples/replay-analysis.ts',
        join(dir, 'cmp.sgd.arrows'),
        join(dir, 'cmp.adamw.arrows'),
        '--target',
        '0.5',
      ],
      { cwd: root },
    );
    expect(stdout).toMatch(/sgd \(sgd, seed 1\)/);
    expect(stdout).toMatch(/adamw \(adamw, seed 1\)/);
  });
});

describe('serving live from the CLI', () => {
  it('train --serve prints the URL, a Node client decodes the live stream until the run ends', async () => {
    const child = spawn(
      process.execPath,
      [
        BIN,
        'train',
        '--dataset',
        'synthetic',
        '--optimizer',
        'sgd',
        '--epochs',
        '4',
        '--batch-size',
        '32',
        '--serve',
        '--port',
        '0',
        '--keep-serving',
      ],
      { cwd: root, env: { ...process.env, GRNG_BACKEND: 'wasm' } },
    );
    let stderr = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const match = /dashboard at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr);
        if (match) resolve(match[1]!);
      });
      child.once('exit', () => reject(new Error(`grng exited early: ${stderr}`)));
    });
    const client = await run(
      process.execPath,
      [
        '--import',
        'tsx',
        'examples/dashboard-client.ts',
        `${url.replace('http', 'ws')}ws`,
        '--until-ended',
      ],
      { cwd: root },
    );
    expect(client.stdout).toMatch(/sgd\s+step\s+\d+\s+loss/);
    expect(client.stdout).toMatch(/sgd ended/);
    const page = await fetch(url);
    expect([200, 503]).toContain(page.status);
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
  });
});

describe('npm start', () => {
  it('keeps serving the dashboard after training, says so with the URL, and exits 0 on Ctrl-C', async () => {
    // The start script itself, made small: commander keeps the last value of a repeated flag.
    const script = (
      JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: { start: string } }
    ).scripts.start;
    const [node, bin, ...args] = script.trim().split(/\s+/);
    expect([node, bin]).toEqual(['node', 'bin/grng.js']);
    const small = [
      '--dataset',
      'synthetic',
      '--model',
      'mlp:20-16-4',
      '--steps',
      '6',
      '--batch-size',
      '32',
      '--record',
      join(dir, 'start.arrows'),
    ];
    const child = spawn(process.execPath, [BIN, ...args, ...small], {
      cwd: root,
      env: { ...process.env, GRNG_BACKEND: 'wasm' },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => void (stdout += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        child.stderr.on('data', (chunk: Buffer) => {
          stderr += chunk.toString();
          const match =
            /^grng: training done; the dashboard keeps serving at (http:\/\/127\.0\.0\.1:\d+\/) \(Ctrl-C to stop\)$/m.exec(
              stderr,
            );
          if (match) resolve(match[1]!);
        });
        void exited.then((code) =>
          reject(new Error(`npm start's command exited (${code}) instead of serving: ${stderr}`)),
        );
      });
      // The table came when training was done, not at Ctrl-C.
      expect(stdout).toMatch(/^ring\s+wasm\s+synthetic\s+6\s/m);
      expect(stdout).toMatch(/^adamw\s+wasm\s+synthetic\s+6\s/m);

      // Still there a while later, over HTTP and WebSocket, with both finished runs.
      await new Promise((r) => setTimeout(r, 1000));
      expect(child.exitCode).toBeNull();
      const page = await fetch(url);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('<title>grng');
      const runs = (await (await fetch(`${url}api/runs`)).json()) as Array<{
        label: string;
        rows: number;
        finished: boolean;
      }>;
      expect(runs.map((r) => [r.label, r.rows, r.finished])).toEqual([
        ['ring', 6, true],
        ['adamw', 6, true],
      ]);
      const ws = new WebSocket(`${url.replace('http', 'ws')}ws`);
      const ends: string[] = [];
      await new Promise<void>((resolve, reject) => {
        ws.on('message', (data, binary) => {
          if (binary) return;
          const message = JSON.parse(data.toString()) as { type: string; runId?: string };
          if (message.type === 'end') ends.push(message.runId!);
          if (message.type === 'ready') resolve();
        });
        ws.once('error', reject);
      });
      expect(ends).toHaveLength(2);
      const closed = new Promise<number>((resolve) => ws.once('close', resolve));

      child.kill('SIGINT');
      expect(await exited, stderr).toBe(0);
      expect(await closed).toBe(1001);
      // Ctrl-C after training only stops the serving: no "stopping the run" lines.
      expect(stderr).not.toMatch(/finishing the current step|stopped by/);
    } finally {
      child.kill('SIGKILL');
    }
  }, 120_000);

  it('-- --no-keep-serving exits when training is done', async () => {
    const { code, stderr } = await grng([
      'compare',
      '--dataset',
      'synthetic',
      '--optimizers',
      'sgd',
      '--steps',
      '2',
      '--serve',
      '--port',
      '0',
      '--keep-serving',
      '--no-keep-serving',
    ]);
    expect(code, stderr).toBe(0);
    expect(stderr).toMatch(/dashboard at http/);
    expect(stderr).not.toMatch(/keeps serving/);
  });
});
