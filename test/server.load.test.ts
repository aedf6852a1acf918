import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { recordedRunOf } from '../src/cli/live.js';
import { arrowSink } from '../src/sinks/arrowSink.js';
import { RunHub } from '../src/sinks/runHub.js';
import { startServer } from '../src/sinks/server.js';
import { prepareRun } from '../src/run/train.js';
import { useTestBackend } from './helpers.js';
import { disableNativeBlas } from '../src/runtime/nativeBlas.js';
import type { Tally } from './fixtures/loadClients.js';

// Real training and a real server in this process; the dashboard clients in a child process, so
// that only the server's work (not the clients') shares the training thread. Throughput is
// compared with the same run without clients just before and just after, so that drift in the
// machine's load hits both sides. Wall-clock steps/s on a shared, oversubscribed machine measure
// the neighbours as much as the server, so the tight bound is on steps per CPU-second of this
// process (training and server together): what the server takes from training, whoever else runs.
const LONG = process.env.GRNG_LONG_TESTS === '1';
const CLIENTS = LONG ? 50 : 10;
const WINDOW_S = LONG ? 60 : 5;
const BASELINE_S = LONG ? 30 : 3;
const WARMUP_S = LONG ? 5 : 1;
/** Most training work per CPU-second the clients may cost: 10 %; the 5-second version gets a lax bound. */
const MAX_CPU_DROP = LONG ? 0.1 : 0.5;
/** Wall-clock steps/s: a lax bound that still catches a server blocking training. */
const MAX_WALL_DROP = 0.5;
/** Heap that survives a full collection may grow this much in the window (the hub keeps every row: ~5 MiB a minute here). */
const MAX_RETAINED_GROWTH = 32 * 2 ** 20;
const MAX_QUEUED_BYTES = 1024 * 1024;
const root = new URL('..', import.meta.url).pathname;

setFlagsFromString('--expose-gc');
/** A full collection, so that heap figures count what is retained, not garbage waiting. */
const collect = runInNewContext('gc') as () => void;

const sleep = (s: number): Promise<void> => new Promise((done) => setTimeout(done, s * 1000));
const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);

describe('server under load', () => {
  // One re-measurement for the long version: on the shared 2-core VM the per-CPU-second drop of
  // one 60 s window varies with what else the cores do (measured −0.7, −1.1, −5.7 and −10.9 % on
  // the same code); a server that really costs more than 10 % fails both windows.
  const options = { timeout: LONG ? 300_000 : 60_000, retry: LONG ? 1 : 0 };
  it(
    `keeps training throughput within ${MAX_CPU_DROP * 100}% per CPU-second while ${CLIENTS} clients in another process watch for ${WINDOW_S} s, memory bounded`,
    options,
    async () => {
      const backend = await useTestBackend();
      // This measures what the server takes from training: keep OpenBLAS's own threads (which
      // spin while they wait) out of the fight with the 50-client process for the 2 cores.
      disableNativeBlas();
      // The long version trains what `npm start` trains (MNIST, mlp:784-256-10, batch 128: ~100+
      // steps/s, a metrics row each); the short one a tiny synthetic net at ~600 steps/s, the worst
      // case for the server (every row goes to every client).
      const workload = LONG
        ? { dataset: 'mnist' as const, model: 'mlp:784-256-10', batchSize: 128 }
        : { dataset: 'synthetic' as const, batchSize: 32 };
      const prepared = await prepareRun({
        ...workload,
        optimizer: 'sgd',
        epochs: 100_000,
        steps: 50_000_000,
        backend: backend as 'wasm',
      });
      const hub = new RunHub();
      const server = await startServer({
        hub,
        port: 0,
        maxClients: 64,
        maxQueuedBytes: MAX_QUEUED_BYTES,
      });
      let steps = 0;
      let trainingError: unknown;
      const training = prepared.rows
        .pipe(arrowSink(recordedRunOf(prepared.meta, 'load'), { hub }))
        .subscribe({
          next: () => (steps += 1),
          error: (error: unknown) => (trainingError = error),
        });

      let phase = 'warm-up';
      const samples: Array<{
        phase: string;
        rss: number;
        heapUsed: number;
        arrayBuffers: number;
        clients: number;
        peakQueued: number;
      }> = [];
      const sampler = setInterval(() => {
        const memory = process.memoryUsage();
        const stats = server.stats().clients;
        samples.push({
          phase,
          rss: memory.rss,
          heapUsed: memory.heapUsed,
          arrayBuffers: memory.arrayBuffers,
          clients: stats.length,
          peakQueued: Math.max(0, ...stats.map((c) => c.peakQueuedBytes)),
        });
      }, 1000);
      type Mark = { t: number; steps: number; cpuUs: number };
      const mark = (): Mark => {
        const cpu = process.cpuUsage();
        return { t: performance.now(), steps, cpuUs: cpu.user + cpu.system };
      };
      const rate = (from: Mark, to: Mark): number =>
        ((to.steps - from.steps) * 1000) / (to.t - from.t);
      const perCpuSecond = (from: Mark, to: Mark): number =>
        ((to.steps - from.steps) * 1e6) / (to.cpuUs - from.cpuUs);
      const retained = (): number => {
        collect();
        return process.memoryUsage().heapUsed;
      };

      try {
        await sleep(WARMUP_S);
        phase = 'before';
        const before0 = mark();
        await sleep(BASELINE_S);
        const before1 = mark();

        phase = 'connecting';
        const child = spawn(
          process.execPath,
          [
            '--import',
            'tsx',
            'test/fixtures/loadClients.ts',
            `ws://127.0.0.1:${server.port}/ws`,
            String(CLIENTS),
          ],
          { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] },
        );
        const lines = createInterface({ input: child.stdout! });
        const nextLine = (): Promise<string> =>
          new Promise((done, fail) => {
            lines.once('line', done);
            child.once('exit', (code) => fail(new Error(`the client process exited with ${code}`)));
          });
        expect(await nextLine()).toBe(`connected ${CLIENTS}`);
        phase = 'clients';
        const retainedAtStart = retained();
        const with0 = mark();
        const rowsAtStart = hub.run(hub.runs()[0]!.run.id)!.rows;
        await sleep(WINDOW_S);
        const with1 = mark();
        const retainedAtEnd = retained();
        const rowsAtEnd = hub.run(hub.runs()[0]!.run.id)!.rows;
        phase = 'disconnecting';
        child.stdin!.write('stop\n');
        const tallies = JSON.parse(await nextLine()) as Tally[];
        await new Promise((done) => child.once('exit', done));
        for (let i = 0; i < 100 && server.clients() > 0; i++) await sleep(0.05);

        phase = 'after';
        const after0 = mark();
        await sleep(BASELINE_S);
        const after1 = mark();
        phase = 'done';

        expect(trainingError).toBeUndefined();
        const baseline = (rate(before0, before1) + rate(after0, after1)) / 2;
        const withClients = rate(with0, with1);
        const drop = 1 - withClients / baseline;
        const cpuBaseline = (perCpuSecond(before0, before1) + perCpuSecond(after0, after1)) / 2;
        const cpuWithClients = perCpuSecond(with0, with1);
        const cpuDrop = 1 - cpuWithClients / cpuBaseline;
        const inPhase = (name: string) => samples.filter((s) => s.phase === name);
        const max = (
          list: typeof samples,
          key: 'rss' | 'heapUsed' | 'arrayBuffers' | 'peakQueued',
        ) => Math.max(0, ...list.map((s) => s[key]));
        const rowsToClients = tallies.map((t) => t.rows);
        console.log(
          `load: ${backend}, ${prepared.meta.model} on ${prepared.meta.dataset}, batch ${prepared.meta.batchSize}, sgd; ${CLIENTS} clients in a child process for ${((with1.t - with0.t) / 1000).toFixed(1)} s: ` +
            `${withClients.toFixed(1)} steps/s vs ${rate(before0, before1).toFixed(1)} before and ${rate(after0, after1).toFixed(1)} after without clients ` +
            `(drop ${(drop * 100).toFixed(1)}%); per CPU-second ${cpuWithClients.toFixed(1)} vs ${perCpuSecond(before0, before1).toFixed(1)} / ${perCpuSecond(after0, after1).toFixed(1)} steps (drop ${(cpuDrop * 100).toFixed(1)}%); ${rowsAtEnd - rowsAtStart} rows published in the window, each client got ${Math.min(...rowsToClients)}–${Math.max(...rowsToClients)} live rows ` +
            `(${Math.min(...tallies.map((t) => t.liveBatches))}–${Math.max(...tallies.map((t) => t.liveBatches))} batches, missed ${tallies.reduce((n, t) => n + t.missed, 0)} in all, ${mib(tallies.reduce((n, t) => n + t.bytes, 0))} MiB received); ` +
            `server process max RSS ${mib(max(inPhase('before'), 'rss'))} MiB before, ${mib(max(inPhase('clients'), 'rss'))} MiB with clients, ${mib(max(inPhase('after'), 'rss'))} MiB after; ` +
            `max heap ${mib(max(inPhase('before'), 'heapUsed'))} / ${mib(max(inPhase('clients'), 'heapUsed'))} / ${mib(max(inPhase('after'), 'heapUsed'))} MiB; ` +
            `heap retained after a full GC ${mib(retainedAtStart)} MiB at the start of the window, ${mib(retainedAtEnd)} MiB at its end; ` +
            `largest client queue ${max(samples, 'peakQueued')} B of ${MAX_QUEUED_BYTES}; ${samples.length} samples at 1 s`,
        );

        expect(tallies).toHaveLength(CLIENTS);
        for (const tally of tallies) {
          expect(tally.ready).toBe(true);
          expect(tally.closedCode).toBeNull(); // still connected when the window ended
          expect(tally.liveBatches).toBeGreaterThan(0);
        }
        expect(Math.max(...inPhase('clients').map((s) => s.clients))).toBe(CLIENTS);
        expect(cpuWithClients).toBeGreaterThanOrEqual((1 - MAX_CPU_DROP) * cpuBaseline);
        expect(withClients).toBeGreaterThanOrEqual((1 - MAX_WALL_DROP) * baseline);
        expect(max(samples, 'peakQueued')).toBeLessThanOrEqual(MAX_QUEUED_BYTES);
        // Per-client state is bounded by the queue bound; keeping what was sent would grow by the
        // megabytes the clients received, times nothing shared.
        expect(retainedAtEnd - retainedAtStart).toBeLessThan(MAX_RETAINED_GROWTH);
        expect(server.clients()).toBe(0);
      } finally {
        clearInterval(sampler);
        training.unsubscribe();
        prepared.dispose();
        await server.close();
      }
    },
  );
});
