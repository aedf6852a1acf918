import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { readRecording } from '../src/streams/readRecording.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const BIN = join(root, 'bin/grng.js');
const dir = mkdtempSync(join(tmpdir(), 'grng-live-'));

async function grng(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], { env: { ...process.env, GRNG_BACKEND: 'wasm' }, maxBuffer: 1 << 24 });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('recording and replay from the CLI', () => {
  it('train --record writes a self-describing recording; replay --summary reproduces the run summary', async () => {
    const path = join(dir, 'ring.arrows');
    const trained = await grng(['train', '--dataset', 'synthetic', '--optimizer', 'ring', '--epochs', '2', '--batch-size', '64', '--record', path, '--json']);
    expect(trained.code).toBe(0);
    const summary = JSON.parse(trained.stdout.trim().split('\n').at(-1)!);
    const rec = readRecording(path);
    expect(rec.complete).toBe(true);
    expect(rec.rows).toBe(summary.steps);
    expect(rec.run).toMatchObject({ optimizer: 'ring', dataset: 'synthetic', backend: 'wasm', seed: 1, batchSize: 64 });
    expect(rec.run.optimizerOptions).toMatchObject({ rho: 0.1, damping: 0.001 });
    const replayed = await grng(['replay', path, '--summary']);
    expect(replayed.code).toBe(0);
    const line = replayed.stdout.split('\n').find((l) => l.startsWith('ring'))!;
    expect(line).toContain(summary.testAccuracy.toFixed(4));
    expect(line).toContain(summary.finalLoss.toFixed(4));
    // A second run with the same name is refused, and nothing is lost.
    const again = await grng(['train', '--dataset', 'synthetic', '--epochs', '1', '--record', path]);
    expect(again.code).toBe(2);
    expect(again.stderr.trim()).toMatch(/already exists/);
    expect(readRecording(path).rows).toBe(summary.steps);
  });

  it('compare --record writes one file per optimizer', async () => {
    const base = join(dir, 'cmp.arrows');
    const { code } = await grng(['compare', '--dataset', 'synthetic', '--optimizers', 'sgd,adamw', '--epochs', '1', '--record', base]);
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
    const { stdout } = await run(process.execPath, ['--import', 'tsx', 'examples/replay-analysis.ts', join(dir, 'cmp.sgd.arrows'), join(dir, 'cmp.adamw.arrows'), '--target', '0.5'], { cwd: root });
    expect(stdout).toMatch(/sgd \(sgd, seed 1\)/);
    expect(stdout).toMatch(/adamw \(adamw, seed 1\)/);
  });
});

describe('serving live from the CLI', () => {
  it('train --serve prints the URL, a Node client decodes the live stream until the run ends', async () => {
    const child = spawn(process.execPath, [BIN, 'train', '--dataset', 'synthetic', '--optimizer', 'sgd', '--epochs', '4', '--batch-size', '32', '--serve', '--port', '0', '--keep-serving'], { cwd: root, env: { ...process.env, GRNG_BACKEND: 'wasm' } });
    let stderr = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const match = /dashboard at (http:\/\/127\.0\.0\.1:\d+\/)/.exec(stderr);
        if (match) resolve(match[1]!);
      });
      child.once('exit', () => reject(new Error(`grng exited early: ${stderr}`)));
    });
    const client = await run(process.execPath, ['--import', 'tsx', 'examples/dashboard-client.ts', `${url.replace('http', 'ws')}ws`, '--until-ended'], { cwd: root });
    expect(client.stdout).toMatch(/sgd\s+step\s+\d+\s+loss/);
    expect(client.stdout).toMatch(/sgd ended/);
    const page = await fetch(url);
    expect([200, 503]).toContain(page.status);
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(0);
  });
});
