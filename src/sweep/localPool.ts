import { availableParallelism } from 'node:os';
import { runTrial, type RunTrialOptions } from './runTrial.js';
import type { TrialExecutor, TrialRequest, TrialResult } from './types.js';

/**
 * The environment of one of `workers` trial processes sharing this machine: OpenBLAS gets the
 * cores divided among them (at least one each) and the wasm backend one thread, so N workers do
 * not run N × cores threads.
 *
 * @example
 * threadEnv(2, 2); // { OPENBLAS_NUM_THREADS: '1', GRNG_WASM_THREADS: '1' }
 */
export function threadEnv(workers: number, cores = availableParallelism()): NodeJS.ProcessEnv {
  return {
    OPENBLAS_NUM_THREADS: String(Math.max(1, Math.floor(cores / workers))),
    GRNG_WASM_THREADS: '1',
  };
}

/**
 * Runs trials in at most `workers` child processes at once on this machine (each trial its own
 * `grng train` process, see runTrial), first come first served.
 *
 * @example
 * const pool = localPool(2, { metric: 'testAccuracy', higherIsBetter: true, checkpointEvery: 50 });
 */
export function localPool(workers: number, options: RunTrialOptions): TrialExecutor {
  const env = { ...threadEnv(workers), ...options.env };
  let running = 0;
  const waiting: Array<() => void> = [];
  let closed = false;
  const slot = async (): Promise<void> => {
    if (running < workers) {
      running += 1;
      return;
    }
    await new Promise<void>((resolve) => waiting.push(resolve));
  };
  const release = (): void => {
    const next = waiting.shift();
    if (next) next();
    else running -= 1;
  };
  return {
    async run(request: TrialRequest): Promise<TrialResult> {
      if (closed) throw new Error('the local pool is closed');
      await slot();
      try {
        return await runTrial(request, { ...options, env });
      } finally {
        release();
      }
    },
    async close(): Promise<void> {
      closed = true;
    },
  };
}
