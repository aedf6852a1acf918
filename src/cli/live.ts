import { randomUUID } from 'node:crypto';
import { extname, basename, dirname, join } from 'node:path';
import type { MonoTypeOperatorFunction } from 'rxjs';
import { arrowSink } from '../sinks/arrowSink.js';
import type { RecordedRun } from '../metrics/schema.js';
import { RunHub } from '../sinks/runHub.js';
import { startServer, type ExtraRoutes, type ServerHandle } from '../sinks/server.js';
import type { RunMetadata } from '../run/train.js';
import type { MetricsRow } from '../types.js';
import { VERSION } from '../version.js';
import type { RunControl } from '../run/runControl.js';
import type { ReopenedRecording } from '../sinks/reopenRecording.js';
import type { CliIo } from './io.js';

/** Flags for recording and live serving, shared by train, compare and replay. */
export interface LiveOptions {
  readonly record?: string;
  readonly overwrite?: boolean;
  readonly serve?: boolean;
  readonly port: number;
  readonly host: string;
  readonly token?: string;
  /** Most WebSocket clients at once (server default when absent). */
  readonly maxClients?: number;
  readonly keepServing?: boolean;
}

/** The run description that recordings and dashboards carry. */
export function recordedRunOf(
  meta: RunMetadata,
  label: string,
  group?: string,
  id = newRunId(label),
): RecordedRun {
  return {
    id,
    label,
    optimizer: meta.optimizer,
    optimizerOptions: meta.optimizerOptions as Record<string, unknown>,
    model: meta.model,
    dataset: meta.dataset,
    backend: meta.backend,
    seed: meta.seed,
    batchSize: meta.batchSize,
    totalSteps: meta.totalSteps,
    batchesPerEpoch: meta.batchesPerEpoch,
    labelsPerExample: meta.labelsPerExample,
    version: VERSION,
    startedAt: new Date().toISOString(),
    ...(group ? { group } : {}),
  };
}

/** `runs/x.arrows` for one run; `runs/x.ring.arrows` for the run `ring` of several. */
export function recordingPathFor(path: string, label: string | undefined): string {
  if (!label) return path;
  const ext = extname(path) || '.arrows';
  return join(dirname(path), `${basename(path, extname(path))}.${label}${ext}`);
}

/** How a command's run ends around the dashboard server (see {@link withLive}). */
export interface LiveEnd {
  /** Serve even without --serve (the serve command), and keep serving. */
  readonly alwaysServe?: boolean;
  /** Whether a signal stopped the run: a stopped run means "stop", so it does not keep serving. */
  readonly stopped?: () => boolean;
  /**
   * Runs once the body is done, before any keep-serving: the command prints its report here and
   * ends its own Ctrl-C handling, so that from then on Ctrl-C only stops the serving.
   */
  readonly done?: () => void | Promise<void>;
  /** What the line printed before keep-serving says is over (e.g. "training done"). */
  readonly finished?: string;
  /** A sweep's snapshot, served as GET /api/sweep (the dashboard's sweep view). */
  readonly sweep?: () => object | undefined;
  /** More HTTP paths (a sweep's trial files); the server refuses them without a token. */
  readonly routes?: ExtraRoutes;
}

/**
 * Starts the dashboard server when asked, runs `body` with the hub (undefined when not serving),
 * then `done`, then keeps serving until SIGINT/SIGTERM if asked (saying so, with the URL), and
 * closes the server.
 */
export async function withLive(
  options: LiveOptions,
  io: CliIo,
  body: (hub: RunHub | undefined, server: ServerHandle | undefined) => Promise<void>,
  {
    alwaysServe = false,
    stopped = (): boolean => false,
    done = (): void => undefined,
    finished = 'done',
    sweep,
    routes,
  }: LiveEnd = {},
): Promise<void> {
  if (!options.serve && !alwaysServe) {
    await body(undefined, undefined);
    await done();
    return;
  }
  const hub = new RunHub();
  const server = await startServer({
    hub,
    ...(sweep ? { sweep } : {}),
    ...(routes ? { routes } : {}),
    host: options.host,
    port: options.port,
    ...(options.token ? { token: options.token } : {}),
    ...(options.maxClients !== undefined ? { maxClients: options.maxClients } : {}),
  });
  io.err(`grng: dashboard at ${server.url}\n`);
  try {
    await body(hub, server);
    await done();
    if ((options.keepServing || alwaysServe) && !stopped()) {
      // Listen before saying so: a Ctrl-C right after the line must find the handler.
      const interrupted = new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGINT', stop);
          process.off('SIGTERM', stop);
          resolve();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      io.err(`grng: ${finished}; the dashboard keeps serving at ${server.url} (Ctrl-C to stop)\n`);
      await interrupted;
    }
  } finally {
    await server.close();
  }
}

/** The Arrow sink for one run when recording or serving, else nothing. */
export function liveSink(
  meta: RunMetadata,
  options: LiveOptions,
  hub: RunHub | undefined,
  label: string,
  many: boolean,
  run: RunSinkOptions = {},
): MonoTypeOperatorFunction<MetricsRow> | undefined {
  if (!options.record && !hub) return undefined;
  const resumed = run.resumed;
  // A resumed run keeps its recording's run (same id, same metadata), with the new step count.
  const recorded = resumed
    ? { ...resumed.run, totalSteps: meta.totalSteps }
    : recordedRunOf(meta, label, run.group, run.id);
  return arrowSink(recorded, {
    ...(options.record
      ? {
          record: recordingPathFor(options.record, many ? label : undefined),
          ...(resumed ? { append: true } : { overwrite: options.overwrite ?? false }),
        }
      : {}),
    ...(hub ? { hub } : {}),
    ...(resumed ? { history: resumed.batches } : {}),
    ...(run.control ? { batching: { flushOn: run.control.flushes } } : {}),
  });
}

/** How one run's rows reach its recording and the dashboard. */
export interface RunSinkOptions {
  /** The compare group the run belongs to. */
  readonly group?: string;
  /** Its id (so checkpoints can name it before the sink exists). */
  readonly id?: string;
  /** Flush requests (before a checkpoint) reach the recording through this. */
  readonly control?: RunControl;
  /** The recording of a resumed run, reopened to append. */
  readonly resumed?: ReopenedRecording;
}

/** A fresh run id: the label and 8 random hex digits. */
export function newRunId(label: string): string {
  return `${label}-${randomUUID().slice(0, 8)}`;
}
