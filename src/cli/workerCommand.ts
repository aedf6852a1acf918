import { threadEnv } from '../sweep/localPool.js';
import type { CliIo } from './io.js';

export interface WorkerCommandOptions {
  readonly queue: string;
  readonly concurrency: number;
}

/**
 * `grng worker --queue redis://HOST:PORT`: runs sweep trials from the queue on this machine, each
 * in its own `grng train` process, until Ctrl-C or SIGTERM (the trial in progress finishes; a
 * second signal kills it, and the queue gives it to another worker, which resumes it from its
 * checkpoint).
 */
export async function runWorkerCommand(options: WorkerCommandOptions, io: CliIo): Promise<void> {
  const stop = new AbortController();
  let signals = 0;
  const onSignal = (): void => {
    signals += 1;
    if (signals === 1)
      io.err('grng: worker stopping after the trial in progress (again to stop now)\n');
    stop.abort();
    if (signals > 1) process.exit(130);
  };
  // A malformed URL is one line, before the worker says it started.
  const { checkQueueUrl, redacted, runWorker } = await import('../sweep/redisQueue.js');
  checkQueueUrl(options.queue);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    io.err(`grng: worker on ${redacted(options.queue)}, ${options.concurrency} trial(s) at once\n`);
    await runWorker(options.queue, {
      concurrency: options.concurrency,
      env: threadEnv(),
      signal: stop.signal,
      onLine: (line) => io.err(`grng: ${line}\n`),
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
