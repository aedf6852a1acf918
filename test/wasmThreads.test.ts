import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/runtime/backend.js';
import { isGrngError } from '../src/errors.js';
import { MAX_WASM_THREADS, wasmThreadsRequested } from '../src/runtime/wasmThreads.js';

const ROOT = new URL('..', import.meta.url).pathname;

describe('wasmThreadsRequested', () => {
  it('takes the option over GRNG_WASM_THREADS, and is undefined when neither is given', () => {
    expect(wasmThreadsRequested(3, { GRNG_WASM_THREADS: '2' })).toBe(3);
    expect(wasmThreadsRequested(undefined, { GRNG_WASM_THREADS: '2' })).toBe(2);
    expect(wasmThreadsRequested(undefined, { GRNG_WASM_THREADS: ' 4 ' })).toBe(4);
    expect(wasmThreadsRequested(undefined, { GRNG_WASM_THREADS: '' })).toBeUndefined();
    expect(wasmThreadsRequested(undefined, {})).toBeUndefined();
  });

  it.each([0, MAX_WASM_THREADS + 1, 1.5, Number.NaN, '2'])(
    'rejects wasmThreads %s with an error naming the option',
    (value) => {
      const error = catchError(() => wasmThreadsRequested(value as number, {}));
      expect(isGrngError(error) && error.code).toBe('invalid-option');
      expect((error as Error).message).toMatch(
        /^invalid wasmThreads: .* \(expected an integer from 1 to 8/,
      );
    },
  );

  it.each(['two', '0', '9', '2.5', '-1', '0x2'])(
    'rejects GRNG_WASM_THREADS=%s with an error naming the variable',
    (value) => {
      const error = catchError(() => wasmThreadsRequested(undefined, { GRNG_WASM_THREADS: value }));
      expect(isGrngError(error) && error.code).toBe('invalid-option');
      expect((error as Error).message).toMatch(/^invalid GRNG_WASM_THREADS: /);
    },
  );
});

describe('the wasm backend already running', () => {
  it('keeps its thread count: asking for another one is a GrngError, asking for the same one is not', async () => {
    const info = await initBackend('wasm', { wasmThreads: 1 });
    expect(info.detail).toMatch(/^tfjs-backend-wasm \((no )?SIMD(, (Open)?BLAS matMul.*)?\)$/);
    const error = await initBackend('wasm', { wasmThreads: 2 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isGrngError(error) && error.code).toBe('backend');
    expect((error as Error).message).toMatch(
      /already runs with 1 thread\(s\) in this process; wasmThreads=2 must be chosen before it first starts/,
    );
    expect(await initBackend('wasm', { wasmThreads: 1 })).toBe(info);
  });
});

interface ProbeResult {
  detail: string;
  pthreads: number;
  losses: number[];
  code: number | null;
  signal: string | null;
  /** Milliseconds from the probe's result line to its exit. */
  exitAfterMs: number;
  matmul: Float32Array;
  params: Float32Array;
}

const dirs: string[] = [];
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Runs test/fixtures/wasmThreadsProbe.ts with GRNG_WASM_THREADS=threads; kills it if it has not exited 20 s after its result. */
function probe(threads: number): Promise<ProbeResult> {
  const dir = mkdtempSync(join(tmpdir(), `grng-wasm-threads-${threads}-`));
  dirs.push(dir);
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'test/fixtures/wasmThreadsProbe.ts', dir],
      {
        cwd: ROOT,
        env: { ...process.env, GRNG_WASM_THREADS: String(threads), GRNG_BLAS: '0' },
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let stdout = '';
    let printedAt: number | undefined;
    let killer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (printedAt === undefined && stdout.includes('\n')) {
        printedAt = performance.now();
        killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      }
    });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(killer);
      if (printedAt === undefined)
        return reject(
          new Error(`probe with ${threads} thread(s) exited (${code ?? signal}) without a result`),
        );
      const read = (name: string) =>
        new Float32Array(new Uint8Array(readFileSync(join(dir, name))).buffer);
      resolve({
        ...(JSON.parse(stdout.split('\n')[0]!) as {
          detail: string;
          pthreads: number;
          losses: number[];
        }),
        code,
        signal,
        exitAfterMs: performance.now() - printedAt,
        matmul: read('matmul.f32'),
        params: read('params.f32'),
      });
    });
  });
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

describe('the multi-threaded wasm build in Node (child processes)', () => {
  it('computes a 1024² matMul and 3 SGD steps of an MLP 784-512-512-10 exactly as the single-threaded build, reports its threads, and lets the process exit', async () => {
    const [single, threaded] = await Promise.all([probe(1), probe(2)]);
    expect(single.detail).toMatch(/^tfjs-backend-wasm \(SIMD\)$/);
    expect(single.pthreads).toBe(0);
    expect(threaded.detail).toBe('tfjs-backend-wasm (SIMD, 2 threads)');
    // XNNPACK's pool of 2 is the main thread plus one running pthread worker.
    expect(threaded.pthreads).toBe(1);
    expect(threaded.matmul.length).toBe(1024 * 1024);
    expect(maxAbsDiff(threaded.matmul, single.matmul)).toBe(0);
    expect(threaded.params.length).toBe(784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10);
    expect(maxAbsDiff(threaded.params, single.params)).toBe(0);
    expect(threaded.losses).toEqual(single.losses);
    // Training moved the loss: the comparison is of a real step, not of untouched weights.
    expect(threaded.losses[2]!).toBeLessThan(threaded.losses[0]!);
    for (const run of [single, threaded]) {
      expect({ code: run.code, signal: run.signal }).toEqual({ code: 0, signal: null });
      expect(run.exitAfterMs).toBeLessThan(10_000);
    }
  }, 120_000);
});

function catchError(f: () => unknown): unknown {
  try {
    f();
  } catch (error) {
    return error;
  }
  return undefined;
}
