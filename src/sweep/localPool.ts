import { runTrial, type RunTrialOptions } from './runTrial.js';
import type { TrialExecutor, TrialRequest, TrialResult } from './types.js';

/**
 * The environment of a trial process: one OpenBLAS thread and one wasm thread. A sweep's
 * parallelism is its trials; and OpenBLAS rounds differently with another thread count (measured:
 * a sweep on 1 worker with 2 BLAS threads and on 2 workers with 1 each gave different accuracies),
 * so one thread per trial is what makes a sweep give the same numbers on any number of workers
 * and machines. More workers than cores would oversubscribe the machine: the default is one per
 * core.
 *
 * @example
 * threadEnv(); // { OPENBLAS_NUM_THREADS: '1', GRNG_WASM_THREADS: '1' }
 */
export function threadEnv(): NodeJS.ProcessEnv {
  return { OPENBLAS_NUM_THREADS: '1', GRNG_WASM_THREADS: '1' };
}

/**
 * Runs trials in at most `workers` child processes at once on this machine (each trial its own
 * `grng train` process, see runTrial), first come first served.
 *
 * @example
 * const pool = localPool(2, { metric: 'testAccuracy', higherIsBetter: true, checkpointEvery: 50 });
 */
export function localPool(workers: number, options: RunTrialOptions): TrialExecutor {
  const env = { ...threadEnv(), ...options.env };
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
