import { resolve } from 'node:path';
import { GrngError } from '../errors.js';
import { threadEnv } from '../sweep/localPool.js';
import type { WorkerFiles } from '../sweep/redisQueue.js';
import type { CliIo } from './io.js';

export interface WorkerCommandOptions {
  readonly queue: string;
  readonly concurrency: number;
  readonly files: WorkerFiles;
  readonly token?: string;
  readonly cache?: string;
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
  if (options.files === 'http' && !options.token)
    throw new GrngError(
      'invalid-option',
      '--files http needs --token: the token grng sweep --serve was started with',
      { option: 'token' },
    );
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    io.err(`grng: worker on ${redacted(options.queue)}, ${options.concurrency} trial(s) at once\n`);
    await runWorker(options.queue, {
      concurrency: options.concurrency,
      env: threadEnv(),
      signal: stop.signal,
      onLine: (line) => io.err(`grng: ${line}\n`),
      files: options.files,
      ...(options.token ? { token: options.token } : {}),
      ...(options.cache ? { cacheDir: resolve(options.cache) } : {}),
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
