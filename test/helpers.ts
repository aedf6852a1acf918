import * as tf from '@tensorflow/tfjs';
import { afterEach, beforeEach, expect } from 'vitest';
import { isGrngError, type GrngError } from '../src/errors.js';
import { initBackend } from '../src/runtime/backend.js';
import { disableNativeBlas, enableNativeBlas } from '../src/runtime/nativeBlas.js';
import type { Batch } from '../src/types.js';

/** Starts the backend tests run on: GRNG_TEST_BACKEND, default wasm (the project default). */
export async function useTestBackend(): Promise<string> {
  const info = await initBackend(
    (process.env.GRNG_TEST_BACKEND as 'wasm' | 'cpu' | undefined) ?? 'wasm',
  );
  return info.name;
}

/** A hand-made batch (not from the paced source); `released` counts hold releases. */
export function makeBatch(
  x: number[][],
  y: number[],
  step = 0,
  extra: Partial<Batch> = {},
): Batch & { holds: number; releases: number; dispose(): void } {
  const xt = tf.tensor2d(x);
  const yt = tf.tensor1d(y, 'int32');
  const batch = {
    step,
    epoch: 0,
    index: step,
    batchesPerEpoch: 1,
    lastOfEpoch: false,
    last: false,
    size: y.length,
    x: xt,
    y: yt,
    holds: 0,
    releases: 0,
    hold() {
      batch.holds += 1;
      return () => {
        batch.releases += 1;
      };
    },
    dispose() {
      tf.dispose([xt, yt]);
    },
    ...extra,
  };
  return batch;
}

/** Runs a pipeline to completion, keeping every row and the live tensor count after each one. */
export async function collectRows<T>(
  source: import('rxjs').Observable<T>,
): Promise<{ rows: T[]; counts: number[] }> {
  const rows: T[] = [];
  const counts: number[] = [];
  await new Promise<void>((resolve, reject) =>
    source.subscribe({
      next: (row) => {
        rows.push(row);
        counts.push(tf.memory().numTensors);
      },
      error: reject,
      complete: resolve,
    }),
  );
  return { rows, counts };
}

/**
 * Registers hooks that fail any test of the current file that leaves tensors behind: every test
 * must dispose what it made, so the count ends where it started.
 */
export function expectNoTensorLeftPerTest(): void {
  let tensorsAtStart = 0;
  beforeEach(() => {
    tensorsAtStart = tf.memory().numTensors;
  });
  afterEach(() => {
    expect(tf.memory().numTensors).toBe(tensorsAtStart);
  });
}

/** `f` on the tfjs fallback: the native kernels taken away for the call, then put back. */
export function onFallback<T>(f: () => T): T {
  disableNativeBlas();
  try {
    return f();
  } finally {
    enableNativeBlas();
  }
}

/** The GrngError an action throws (failing the test when it throws nothing, or something else). */
export function errorOf(action: () => unknown): GrngError {
  try {
    action();
  } catch (error) {
    expect(isGrngError(error), String(error)).toBe(true);
    return error as GrngError;
  }
  throw new Error('expected a GrngError, nothing was thrown');
}

/** Runs the CLI in-process (src/cli/main.ts) and returns its exit code and what it printed. */
export async function runCli(
  argv: readonly string[],
): Promise<{ code: number; out: string; err: string }> {
  const { main } = await import('../src/cli/main.js');
  let out = '';
  let err = '';
  const code = await main(argv, {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    isTTY: false,
  });
  return { code, out, err };
}
