import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { tableFromIPC, type RecordBatch, type Schema } from 'apache-arrow';
import { tableFromIPC as flechetteFromIPC } from '@uwdata/flechette';
import { afterEach, describe, expect, it } from 'vitest';
import { Observable } from 'rxjs';
import { WebSocket } from 'ws';
import { isGrngError } from '../src/errors.js';
import { encodeStream } from '../src/sinks/encodeStream.js';
import {
  metricsSchema,
  rowsToRecordBatch,
  RUN_METADATA_KEY,
  type RecordedRun,
} from '../src/metrics/schema.js';
import { RunHub, type HubEvent } from '../src/sinks/runHub.js';
import { startServer, type ServerHandle, type ServerOptions } from '../src/sinks/server.js';
import type { MetricsRow } from '../src/types.js';
import { fakeRecordedRun } from './fixtures/fakeRuns.js';

// ---- fixtures -----------------------------------------------------------------------------------

function recordedRun(id: string): RecordedRun {
  return fakeRecordedRun(id, `label of ${id}`);
}

/** A row whose values are functions of its step, so decoded rows can be checked exactly. */
function row(step: number): MetricsRow {
  return {
    step,
    epoch: Math.floor(step / 10),
    wallMs: step * 1.5,
    stepMs: 1.5,
    evaluationMs: 0,
    samples: 8,
    loss: 1 / (step + 1),
    accuracy: (step % 100) / 100,
    learningRate: 0.1,
    gradNorm: step + 0.25,
    updateNorm: 0.5,
    updateGradCorrelation: 0.9,
    testLoss: step % 5 === 0 ? step / 7 : null,
    testAccuracy: null,
    diagnostics: step % 2 === 0 ? { damping: step / 1000 } : {},
  };
}

function rowsBatch(schema: Schema, from: number, count: number): RecordBatch {
  return rowsToRecordBatch(
    schema,
    Array.from({ length: count }, (_, i) => row(from + i)),
  );
}

function addRun(
  hub: RunHub,
  id: string,
  options: { rows?: number; batchRows?: number; finished?: boolean; recordingPath?: string } = {},
): Schema {
  const schema = metricsSchema(recordedRun(id));
  const batches: RecordBatch[] = [];
  const rows = options.rows ?? 0;
  const size = options.batchRows ?? 10;
  for (let from = 0; from < rows; from += size)
    batches.push(rowsBatch(schema, from, Math.min(size, rows - from)));
  hub.addRun(recordedRun(id), schema, {
    batches,
    ...(options.finished ? { finished: true } : {}),
    ...(options.recordingPath ? { recordingPath: options.recordingPath } : {}),
  });
  return schema;
}

/**
 * Decodes a frame with apache-arrow and with flechette, checks that both agree and that every
 * row is the one `row(step)` made, and returns the steps.
 */
function decodeSteps(bytes: Uint8Array, runId?: string): number[] {
  const arrow = tableFromIPC(bytes);
  const fl = flechetteFromIPC(bytes);
  expect(fl.numRows).toBe(arrow.numRows);
  const steps = Array.from(arrow.getChild('step')!.toArray() as Int32Array);
  expect(Array.from(fl.getChild('step').toArray() as Int32Array)).toEqual(steps);
  const loss = arrow.getChild('loss')!;
  const testLoss = arrow.getChild('testLoss')!;
  const damping = arrow.getChild('damping')!;
  const flLoss = fl.getChild('loss');
  const flTestLoss = fl.getChild('testLoss');
  const flDamping = fl.getChild('damping');
  steps.forEach((step, i) => {
    const expected = row(step);
    expect(loss.get(i)).toBe(expected.loss);
    expect(flLoss.at(i)).toBe(expected.loss);
    expect(testLoss.get(i)).toBe(expected.testLoss);
    expect(flTestLoss.at(i)).toBe(expected.testLoss);
    expect(damping.get(i)).toBe(expected.diagnostics.damping ?? null);
    expect(flDamping.at(i)).toBe(expected.diagnostics.damping ?? null);
  });
  if (runId !== undefined) {
    expect(JSON.parse(arrow.schema.metadata.get(RUN_METADATA_KEY)!).id).toBe(runId);
    expect(JSON.parse(fl.schema.metadata?.get(RUN_METADATA_KEY) ?? '{}').id).toBe(runId);
  }
  return steps;
}

// ---- a protocol client ---------------------------------------------------------------------------

interface Received {
  readonly json?: Record<string, unknown> & { type: string };
  readonly binary?: Uint8Array;
}

class Client {
  readonly messages: Received[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: Array<() => void> = [];

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      this.messages.push(
        isBinary ? { binary: new Uint8Array(data) } : { json: JSON.parse(data.toString('utf8')) },
      );
      this.wake();
    });
    this.closed = new Promise((done) =>
      ws.on('close', (code, reason) => {
        done({ code, reason: reason.toString('utf8') });
        this.wake();
      }),
    );
    ws.on('error', () => undefined);
  }

  static open(
    url: string,
    options: ConstructorParameters<typeof WebSocket>[2] = {},
  ): Promise<Client> {
    const ws = new WebSocket(url, options);
    const client = new Client(ws);
    return new Promise((done, fail) => {
      ws.once('open', () => done(client));
      ws.once('unexpected-response', (_req, res) => fail(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', fail);
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  async waitFor(
    predicate: (messages: Received[]) => boolean,
    what: string,
    timeoutMs = 10_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.messages)) {
      if (Date.now() > deadline)
        throw new Error(
          `timed out waiting for ${what}; got ${this.messages.length} messages, last ${JSON.stringify(this.messages.at(-1)?.json)}`,
        );
      await new Promise<void>((done) => {
        const timer = setTimeout(done, 50);
        this.waiters.push(() => {
          clearTimeout(timer);
          done();
        });
      });
    }
  }

  waitForJson(
    predicate: (m: Received['json'] & object) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<void> {
    return this.waitFor(
      (ms) => ms.some((m) => m.json !== undefined && predicate(m.json)),
      what,
      timeoutMs,
    );
  }

  /** Message types in order, binaries as 'binary'. */
  types(): string[] {
    return this.messages.map((m) => m.json?.type ?? 'binary');
  }

  /** Batch headers with their decoded steps. */
  batches(): Array<{ header: Record<string, unknown>; steps: number[] }> {
    const out: Array<{ header: Record<string, unknown>; steps: number[] }> = [];
    this.messages.forEach((m, i) => {
      if (m.json?.type !== 'batch') return;
      const next = this.messages[i + 1];
      expect(next?.binary, 'a binary message follows every batch header').toBeDefined();
      const steps = decodeSteps(next!.binary!, m.json.runId as string);
      expect(steps.length).toBe(m.json.rows);
      out.push({ header: m.json, steps });
    });
    return out;
  }

  send(message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message));
  }
}

// ---- server lifecycle ----------------------------------------------------------------------------

const servers: ServerHandle[] = [];
const sockets: WebSocket[] = [];

async function serve(
  options: Omit<ServerOptions, 'port'> & { port?: number },
): Promise<ServerHandle> {
  const server = await startServer({ port: 0, dashboardDir: dashboard(), ...options });
  servers.push(server);
  return server;
}

async function connect(
  server: ServerHandle,
  path = 'ws',
  options: ConstructorParameters<typeof WebSocket>[2] = {},
): Promise<Client> {
  const client = await Client.open(`ws://127.0.0.1:${server.port}/${path}`, options);
  sockets.push(client.ws);
  return client;
}

afterEach(async () => {
  for (const ws of sockets.splice(0)) ws.terminate();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

let dashboardFolder: string | undefined;
function dashboard(): string {
  if (!dashboardFolder) {
    dashboardFolder = mkdtempSync(join(tmpdir(), 'grng-dashboard-'));
    writeFileSync(
      join(dashboardFolder, 'index.html'),
      '<!doctype html><title>grng</title><script src="app.js"></script>',
    );
    writeFileSync(join(dashboardFolder, 'app.js'), 'console.log("grng dashboard");');
    writeFileSync(join(dashboardFolder, 'app.css'), 'body { margin: 0 }');
    writeFileSync(join(dashboardFolder, 'secret.txt'), 'SECRET-IN-DASHBOARD-DIR');
  }
  return dashboardFolder;
}

/** A raw HTTP GET whose path is sent exactly as written (fetch would normalise `..`). */
function rawGet(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((done, fail) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => done({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', fail);
    req.end();
  });
}

/** Fails instead of hanging when a promise does not settle in time. */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function busyWait(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    // simulated training step
  }
}

// ---- tests ---------------------------------------------------------------------------------------

describe('startServer: protocol order', () => {
  it('sends hello, history (run, batch pairs, end), ready, then live run/batch/end in order', async () => {
    const hub = new RunHub();
    addRun(hub, 'A', { rows: 20, batchRows: 10 });
    addRun(hub, 'F', { rows: 3, finished: true });
    const server = await serve({ hub, historyChunkRows: 7 });
    const client = await connect(server);
    await client.waitForJson((m) => m.type === 'ready', 'ready');
    expect(client.types()).toEqual([
      'hello',
      'run',
      'batch',
      'binary',
      'batch',
      'binary',
      'batch',
      'binary',
      'run',
      'batch',
      'binary',
      'end',
      'ready',
    ]);
    const hello = client.messages[0]!.json!;
    const { version } = JSON.parse(
      readFileSync(new URL('../package.json', import.meta.url), 'utf8'),
    ) as { version: string };
    expect(hello).toMatchObject({ type: 'hello', protocol: 1, server: `grng ${version}` });
    expect(hello.runs).toEqual([
      { ...recordedRun('A'), rows: 20, finished: false },
      { ...recordedRun('F'), rows: 3, finished: true },
    ]);
    expect(client.messages[1]!.json).toEqual({
      type: 'run',
      run: { ...recordedRun('A'), rows: 20, finished: false },
    });
    const history = client.batches();
    expect(history.map((b) => b.header)).toEqual([
      { type: 'batch', runId: 'A', rows: 7, missed: 0, history: true },
      { type: 'batch', runId: 'A', rows: 7, missed: 0, history: true },
      { type: 'batch', runId: 'A', rows: 6, missed: 0, history: true },
      { type: 'batch', runId: 'F', rows: 3, missed: 0, history: true },
    ]);
    expect(history.slice(0, 3).flatMap((b) => b.steps)).toEqual(
      Array.from({ length: 20 }, (_, i) => i),
    );
    expect(client.messages[11]!.json).toEqual({ type: 'end', runId: 'F' });

    const before = client.messages.length;
    const schemaA = hub.run('A')!.schema;
    hub.pushBatch('A', rowsBatch(schemaA, 20, 5));
    await client.waitFor((ms) => ms.length >= before + 2, 'live batch');
    const schemaB = addRun(hub, 'B');
    hub.pushBatch('B', rowsBatch(schemaB, 0, 4));
    hub.endRun('A');
    await client.waitForJson((m) => m.type === 'end' && m.runId === 'A', 'end of A');
    const live = client.messages.slice(before);
    expect(live.map((m) => m.json?.type ?? 'binary')).toEqual([
      'batch',
      'binary',
      'run',
      'batch',
      'binary',
      'end',
    ]);
    expect(live[2]!.json).toEqual({
      type: 'run',
      run: { ...recordedRun('B'), rows: 0, finished: false },
    });
    const liveBatches = client.batches().slice(4);
    expect(liveBatches.map((b) => b.header)).toEqual([
      { type: 'batch', runId: 'A', rows: 5, missed: 0, history: false },
      { type: 'batch', runId: 'B', rows: 4, missed: 0, history: false },
    ]);
    expect(liveBatches[0]!.steps).toEqual([20, 21, 22, 23, 24]);
    expect(liveBatches[1]!.steps).toEqual([0, 1, 2, 3]);
    expect(server.clients()).toBe(1);
  });

  it('gives a late joiner the full history of several runs, and subscribe filters live batches', async () => {
    const hub = new RunHub();
    const schemaA = addRun(hub, 'A');
    const schemaB = addRun(hub, 'B');
    const server = await serve({ hub });
    const early = await connect(server);
    await early.waitForJson((m) => m.type === 'ready', 'ready');
    for (let i = 0; i < 30; i++) {
      hub.pushBatch('A', rowsBatch(schemaA, i * 8, 8));
      hub.pushBatch('B', rowsBatch(schemaB, i * 3, 3));
      if (i % 5 === 0) await nextTurn();
    }
    hub.endRun('A');
    await early.waitForJson((m) => m.type === 'end', 'end of A');

    const late = await connect(server);
    await late.waitForJson((m) => m.type === 'ready', 'ready');
    const lateHistory = late.batches();
    expect(lateHistory.every((b) => b.header.history === true && b.header.missed === 0)).toBe(true);
    expect(lateHistory.filter((b) => b.header.runId === 'A').flatMap((b) => b.steps)).toEqual(
      Array.from({ length: 240 }, (_, i) => i),
    );
    expect(lateHistory.filter((b) => b.header.runId === 'B').flatMap((b) => b.steps)).toEqual(
      Array.from({ length: 90 }, (_, i) => i),
    );
    expect(late.types().filter((t) => t !== 'batch' && t !== 'binary')).toEqual([
      'hello',
      'run',
      'end',
      'run',
      'ready',
    ]);
    // The early client saw the same rows live.
    const earlyA = early.batches().filter((b) => b.header.runId === 'A');
    expect(earlyA.every((b) => b.header.history === false && b.header.missed === 0)).toBe(true);
    expect(earlyA.flatMap((b) => b.steps)).toEqual(Array.from({ length: 240 }, (_, i) => i));

    late.send({ type: 'subscribe', runs: ['C'] });
    late.send({ type: 'ping' }); // answered after the subscribe took effect
    await late.waitForJson((m) => m.type === 'pong', 'pong');
    const mark = late.messages.length;
    const schemaC = addRun(hub, 'C');
    hub.pushBatch('B', rowsBatch(schemaB, 90, 3));
    hub.pushBatch('C', rowsBatch(schemaC, 0, 2));
    hub.endRun('B');
    await late.waitForJson((m) => m.type === 'end' && m.runId === 'B', 'end of B');
    const after = late.messages.slice(mark);
    expect(after.filter((m) => m.json?.type === 'batch').map((m) => m.json!.runId)).toEqual(['C']);
    expect(
      after.filter((m) => m.json?.type === 'run').map((m) => (m.json!.run as { id: string }).id),
    ).toEqual(['C']);
    // Back to everything.
    late.send({ type: 'subscribe', runs: null });
    late.send({ type: 'ping' });
    await late.waitFor(
      (ms) => ms.filter((m) => m.json?.type === 'pong').length === 2,
      'second pong',
    );
    hub.pushBatch('C', rowsBatch(schemaC, 2, 2));
    hub.pushBatch('A', rowsBatch(schemaA, 240, 1)); // A has ended: the hub ignores it
    await late.waitFor(
      (ms) => ms.filter((m) => m.json?.type === 'batch' && m.json.runId === 'C').length === 2,
      'C again',
    );
    expect(
      late
        .batches()
        .filter((b) => b.header.runId === 'C')
        .flatMap((b) => b.steps),
    ).toEqual([0, 1, 2, 3]);
  });
});

describe('startServer: back-pressure', () => {
  it('keeps a stuck client within its queue bound, does not slow the producer, and accounts for every dropped row', async () => {
    const maxQueuedBytes = 256 * 1024;
    const rowsPerBatch = 64;
    const timedBatches = 2000;
    const stepWorkMs = 0.1;
    const TIMED_FROM = 10_000_000; // steps of the timed batches, built before the clock starts

    const hub = new RunHub();
    const schema = addRun(hub, 'S');
    const server = await serve({ hub, maxQueuedBytes, heartbeatMs: 60_000 });
    // The baseline producer pushes the very same batches into a hub whose server has no client.
    const baseHub = new RunHub();
    addRun(baseHub, 'base');
    await serve({ hub: baseHub, maxQueuedBytes });
    const timed = Array.from({ length: timedBatches }, (_, i) =>
      rowsBatch(schema, TIMED_FROM + i * rowsPerBatch, rowsPerBatch),
    );

    const pushedSteps: number[] = [];
    const push = (batch: RecordBatch): void => {
      hub.pushBatch('S', batch);
      for (const step of batch.getChild('step')!.toArray() as Int32Array) pushedSteps.push(step);
    };
    async function produce(
      target: RunHub,
      runId: string,
      batches: readonly RecordBatch[],
    ): Promise<number> {
      const start = performance.now();
      for (let i = 0; i < batches.length; i++) {
        busyWait(stepWorkMs); // a (very fast) training step
        target.pushBatch(runId, batches[i]!);
        if (i % 8 === 7) await nextTurn(); // lets the server send between steps, as training does
      }
      return performance.now() - start;
    }

    const client = await connect(server);
    await client.waitForJson((m) => m.type === 'ready', 'ready');
    (client.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
    // Fill the kernel's socket buffers until the server sees the client as stuck, then fill its
    // queue so that rows are being dropped (untimed: this also warms up the code paths).
    const stats = () => server.stats().clients[0]!;
    let next = 0;
    while (stats().droppedRows < 10 * rowsPerBatch) {
      push(rowsBatch(schema, next, rowsPerBatch));
      next += rowsPerBatch;
      await nextTurn();
      if (next > 2_000_000) throw new Error('the client never got stuck');
    }
    const fillRows = next;
    await produce(baseHub, 'base', timed.slice(0, 200)); // warm up the baseline too

    // Timed, interleaved in segments so that machine noise hits both alike.
    let baseline = 0;
    let withStuck = 0;
    for (let from = 0; from < timedBatches; from += 250) {
      const segment = timed.slice(from, from + 250);
      baseline += await produce(baseHub, 'base', segment);
      const start = performance.now();
      await produce(hub, 'S', segment);
      withStuck += performance.now() - start;
      for (const batch of segment)
        for (const step of batch.getChild('step')!.toArray() as Int32Array) pushedSteps.push(step);
    }
    const during = stats();
    console.log(
      `stuck client: ${timedBatches} batches of ${rowsPerBatch} rows with ${stepWorkMs} ms of work each: no client ${baseline.toFixed(0)} ms, stuck client ${withStuck.toFixed(0)} ms (×${(withStuck / baseline).toFixed(3)}); ` +
        `queue ${during.queuedBytes} B, peak ${during.peakQueuedBytes} B of ${maxQueuedBytes}; socket buffer ${during.bufferedAmount} B; ${fillRows} rows to get stuck; dropped ${during.droppedRows} rows`,
    );
    expect(during.peakQueuedBytes).toBeLessThanOrEqual(maxQueuedBytes);
    expect(during.queuedBytes).toBeGreaterThan(maxQueuedBytes / 2); // it really is holding a full queue
    expect(during.bufferedAmount).toBeLessThan(256 * 1024 + maxQueuedBytes + 64 * 1024);
    expect(during.droppedRows).toBeGreaterThan((timedBatches * rowsPerBatch) / 2);
    expect(withStuck).toBeLessThan(baseline * 1.5);

    // Resume: what arrives plus what is reported missed is exactly what was pushed, in order.
    (client.ws as unknown as { _socket: { resume(): void } })._socket.resume();
    hub.endRun('S');
    await client.waitForJson((m) => m.type === 'end' && m.runId === 'S', 'end of S', 20_000);
    const indexOf = new Map(pushedSteps.map((step, i) => [step, i]));
    const live = client.batches().filter((b) => b.header.runId === 'S');
    let expectedNext = 0;
    let received = 0;
    let missed = 0;
    for (const { header, steps } of live) {
      expect(header.history).toBe(false);
      const first = indexOf.get(steps[0]!)!;
      // `missed` is exactly the gap between the previous row received and this batch's first.
      expect(first - expectedNext).toBe(header.missed);
      steps.forEach((step, i) => expect(step).toBe(pushedSteps[first + i]));
      expectedNext = first + steps.length;
      received += steps.length;
      missed += header.missed as number;
    }
    expect(expectedNext).toBe(pushedSteps.length); // the newest rows are never dropped
    expect(received + missed).toBe(pushedSteps.length);
    expect(missed).toBe(stats().droppedRows); // (the queued `end` message made room for itself too)
    expect(missed).toBeGreaterThanOrEqual(during.droppedRows);
    expect(live.some((b) => (b.header.rows as number) > rowsPerBatch)).toBe(true); // conflated
    console.log(
      `stuck client after resume: ${received} rows received in ${live.length} batches + ${missed} missed = ${pushedSteps.length} pushed`,
    );
  }, 30_000);
});

describe('startServer: access', () => {
  it('requires the token on every request and upgrade, by query or Bearer header', async () => {
    const hub = new RunHub();
    addRun(hub, 'A', { rows: 2 });
    const server = await serve({ hub, token: 's3cret' });
    const base = `http://127.0.0.1:${server.port}`;
    expect(server.url).toBe(`http://127.0.0.1:${server.port}/?token=s3cret`);
    for (const path of ['/', '/app.js', '/api/runs', '/runs/A.arrows', '/nope']) {
      expect((await fetch(`${base}${path}`)).status).toBe(401);
      expect((await fetch(`${base}${path}?token=wrong`)).status).toBe(401);
      expect((await fetch(`${base}${path}?token=s3cre`)).status).toBe(401);
      expect(
        (await fetch(`${base}${path}`, { headers: { Authorization: 'Bearer nope' } })).status,
      ).toBe(401);
    }
    expect((await fetch(server.url)).status).toBe(200);
    const runs = await fetch(`${base}/api/runs`, { headers: { Authorization: 'Bearer s3cret' } });
    expect(runs.status).toBe(200);
    expect(((await runs.json()) as Array<{ id: string }>).map((r) => r.id)).toEqual(['A']);
    expect((await fetch(`${base}/api/runs?token=s3cret`)).status).toBe(200);

    await expect(connect(server, 'ws')).rejects.toThrow('HTTP 401');
    await expect(connect(server, 'ws?token=wrong')).rejects.toThrow('HTTP 401');
    await expect(
      connect(server, 'ws', { headers: { Authorization: 'Bearer wrong' } }),
    ).rejects.toThrow('HTTP 401');
    const byQuery = await connect(server, 'ws?token=s3cret');
    await byQuery.waitForJson((m) => m.type === 'ready', 'ready');
    const byHeader = await connect(server, 'ws', { headers: { Authorization: 'Bearer s3cret' } });
    await byHeader.waitForJson((m) => m.type === 'ready', 'ready');
    expect(server.clients()).toBe(2);
  });

  it('refuses WebSocket upgrades from pages of another origin (403) and accepts its own', async () => {
    const hub = new RunHub();
    addRun(hub, 'A', { rows: 2 });
    const server = await serve({ hub });
    await expect(
      connect(server, 'ws', { headers: { Origin: 'https://evil.example' } }),
    ).rejects.toThrow('HTTP 403');
    await expect(connect(server, 'ws', { headers: { Origin: 'not a url' } })).rejects.toThrow(
      'HTTP 403',
    );
    const own = await connect(server, 'ws', {
      headers: { Origin: `http://127.0.0.1:${server.port}` },
    });
    await own.waitForJson((m) => m.type === 'ready', 'ready');
  });

  it('binds 127.0.0.1 by default, 0.0.0.0 only when asked, and says when the port is taken', async () => {
    const hub = new RunHub();
    const local = await serve({ hub });
    expect(local.host).toBe('127.0.0.1');
    expect(local.url).toBe(`http://127.0.0.1:${local.port}/`);
    const wide = await serve({ hub, host: '0.0.0.0' });
    expect(wide.host).toBe('0.0.0.0');
    expect(wide.url).toBe(`http://127.0.0.1:${wide.port}/`);

    const taken = await startServer({ hub, port: local.port, dashboardDir: dashboard() }).then(
      (s) => servers.push(s),
      (e: unknown) => e,
    );
    expect(isGrngError(taken)).toBe(true);
    expect((taken as Error).message).toMatch(new RegExp(`port ${local.port} is in use.*--port 0`));
    for (const bad of [
      { port: -1 },
      { port: 70000 },
      { port: 1.5 },
      { heartbeatMs: 0 },
      { maxQueuedBytes: 10 },
      { historyChunkRows: 0 },
      { token: '' },
      { host: '' },
      { bogus: 1 },
    ]) {
      const error = await startServer({ hub, dashboardDir: dashboard(), ...(bad as object) }).then(
        (s) => (servers.push(s), undefined),
        (e: unknown) => e,
      );
      expect(isGrngError(error), JSON.stringify(bad)).toBe(true);
      expect((error as Error).message).toContain(Object.keys(bad)[0]!);
    }
  });
});

describe('startServer: client messages', () => {
  it('answers ping with pong and accepts a message of exactly 1 KiB', async () => {
    const server = await serve({ hub: new RunHub() });
    const client = await connect(server);
    client.send({ type: 'ping' });
    await client.waitForJson((m) => m.type === 'pong', 'pong');
    const padded = JSON.stringify({ type: 'ping' }).padEnd(1024, ' ');
    expect(Buffer.byteLength(padded)).toBe(1024);
    client.send(padded);
    await client.waitFor(
      (ms) => ms.filter((m) => m.json?.type === 'pong').length === 2,
      'second pong',
    );
    expect(client.ws.readyState).toBe(WebSocket.OPEN);
  });

  const bad: Array<[string, string | Buffer, RegExp]> = [
    ['binary', Buffer.from([1, 2, 3]), /binary/],
    ['invalid JSON', '{"type": "ping"', /invalid JSON/],
    ['not an object', '[1,2]', /JSON object/],
    ['no type', '{"runs":null}', /type/],
    ['unknown type', '{"type":"shutdown"}', /unknown message type "shutdown"/],
    ['ping with fields', '{"type":"ping","x":1}', /ping/],
    ['subscribe without runs', '{"type":"subscribe"}', /subscribe/],
    ['subscribe runs not an array', '{"type":"subscribe","runs":"A"}', /runs/],
    ['subscribe runs not strings', '{"type":"subscribe","runs":[1]}', /runs/],
    ['subscribe empty id', '{"type":"subscribe","runs":[""]}', /runs/],
    ['subscribe extra field', '{"type":"subscribe","runs":[],"all":true}', /subscribe/],
    ['long unknown type', JSON.stringify({ type: 'é'.repeat(300) }), /unknown message type/],
  ];
  it.each(bad)('closes with 1008 and a reason on %s', async (_name, message, reason) => {
    const server = await serve({ hub: new RunHub() });
    const client = await connect(server);
    await client.waitForJson((m) => m.type === 'ready', 'ready');
    client.ws.send(message, { binary: Buffer.isBuffer(message) });
    const closed = await within(client.closed, 3000, 'close');
    expect(closed.code).toBe(1008);
    expect(closed.reason).toMatch(reason);
    expect(Buffer.byteLength(closed.reason)).toBeLessThanOrEqual(123);
  });

  it('closes with 1009 on a message over 1 KiB', async () => {
    const server = await serve({ hub: new RunHub() });
    const client = await connect(server);
    client.send(JSON.stringify({ type: 'ping' }).padEnd(1025, ' '));
    expect((await within(client.closed, 3000, 'close')).code).toBe(1009);
  });
});

describe('startServer: heartbeat and shutdown', () => {
  it('terminates a client that does not answer pings and keeps one that does', async () => {
    const server = await serve({ hub: new RunHub(), heartbeatMs: 100 });
    const silent = await connect(server, 'ws', { autoPong: false });
    const healthy = await connect(server);
    expect(server.clients()).toBe(2);
    const start = Date.now();
    const closed = await within(silent.closed, 2000, 'termination');
    expect(closed.code).toBe(1006); // terminated, no close frame
    expect(Date.now() - start).toBeLessThan(1000);
    await new Promise((done) => setTimeout(done, 400));
    expect(healthy.ws.readyState).toBe(WebSocket.OPEN);
    expect(server.clients()).toBe(1);
  });

  it('close() closes clients with 1001, unsubscribes from the hub and stops listening', async () => {
    /** A hub that counts the subscribers of its events. */
    class CountingHub extends RunHub {
      subscribers = 0;
      override get events(): Observable<HubEvent> {
        return new Observable<HubEvent>((subscriber) => {
          this.subscribers += 1;
          const subscription = super.events.subscribe(subscriber);
          return () => {
            this.subscribers -= 1;
            subscription.unsubscribe();
          };
        });
      }
    }
    const hub = new CountingHub();
    const schema = addRun(hub, 'A');
    const server = await startServer({ hub, port: 0, dashboardDir: dashboard() });
    expect(hub.subscribers).toBe(1);
    const client = await Client.open(`ws://127.0.0.1:${server.port}/ws`);
    await client.waitForJson((m) => m.type === 'ready', 'ready');
    await server.close();
    expect(await within(client.closed, 3000, 'close')).toEqual({
      code: 1001,
      reason: 'server shutting down',
    });
    expect(server.clients()).toBe(0);
    // A server still subscribed would keep the hub (and every run in it) alive, and work on each batch.
    expect(hub.subscribers).toBe(0);
    expect(() => hub.pushBatch('A', rowsBatch(schema, 0, 1))).not.toThrow();
    await expect(fetch(`http://127.0.0.1:${server.port}/api/runs`)).rejects.toThrow();
    await server.close(); // idempotent
  });
});

describe('startServer: HTTP', () => {
  it('serves the dashboard files, /api/runs and 503 when the dashboard is not built', async () => {
    const hub = new RunHub();
    addRun(hub, 'A', { rows: 12 });
    addRun(hub, 'B', { rows: 1, finished: true });
    const server = await serve({ hub });
    const base = `http://127.0.0.1:${server.port}`;
    const page = await fetch(`${base}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(await page.text()).toContain('<title>grng</title>');
    expect((await fetch(`${base}/app.js`)).headers.get('content-type')).toMatch(/javascript/);
    expect(await (await fetch(`${base}/app.css`)).text()).toContain('margin');
    expect((await fetch(`${base}/api/runs`)).headers.get('content-type')).toMatch(
      /application\/json/,
    );
    expect(await (await fetch(`${base}/api/runs`)).json()).toEqual([
      { ...recordedRun('A'), rows: 12, finished: false },
      { ...recordedRun('B'), rows: 1, finished: true },
    ]);
    expect((await fetch(`${base}/api/runs`, { method: 'POST' })).status).toBe(405);
    expect((await fetch(`${base}/secret.txt`)).status).toBe(404);
    expect((await fetch(`${base}/index.html`)).status).toBe(404);
    const headOnly = await fetch(`${base}/app.js`, { method: 'HEAD' });
    expect(headOnly.status).toBe(200);
    expect(await headOnly.text()).toBe('');

    const unbuilt = await serve({ hub, dashboardDir: join(tmpdir(), 'grng-no-such-dashboard') });
    const missing = await fetch(`http://127.0.0.1:${unbuilt.port}/`);
    expect(missing.status).toBe(503);
    expect(await missing.text()).toMatch(/npm run build/);
  });

  it('downloads a run as Arrow: the recording file of a finished run, the history otherwise', async () => {
    const folder = mkdtempSync(join(tmpdir(), 'grng-recording-'));
    const recording = join(folder, 'rec.arrows');
    const schemaR = metricsSchema(recordedRun('R'));
    // The file holds more rows than the hub, so the test can tell which one was served.
    const fileBytes = encodeStream([rowsBatch(schemaR, 0, 50), rowsBatch(schemaR, 50, 50)]);
    writeFileSync(recording, fileBytes);
    const hub = new RunHub();
    addRun(hub, 'R', { rows: 10, finished: true, recordingPath: recording });
    addRun(hub, 'live run/1', { rows: 23, batchRows: 4 });
    // A live run's recording may be mid-write: its download comes from the hub.
    addRun(hub, 'L', { rows: 7, recordingPath: recording });
    const server = await serve({ hub });
    const base = `http://127.0.0.1:${server.port}`;

    const file = await fetch(`${base}/runs/R.arrows`);
    expect(file.status).toBe(200);
    expect(file.headers.get('content-type')).toBe('application/vnd.apache.arrow.stream');
    expect(file.headers.get('content-disposition')).toMatch(/^attachment; filename="R\.arrows"/);
    const fileBody = new Uint8Array(await file.arrayBuffer());
    expect(Buffer.from(fileBody).equals(Buffer.from(fileBytes))).toBe(true);
    expect(decodeSteps(fileBody, 'R')).toEqual(Array.from({ length: 100 }, (_, i) => i));

    const history = await fetch(`${base}/runs/${encodeURIComponent('live run/1')}.arrows`);
    expect(history.status).toBe(200);
    expect(history.headers.get('content-disposition')).toMatch(/filename="live_run_1\.arrows"/);
    expect(decodeSteps(new Uint8Array(await history.arrayBuffer()), 'live run/1')).toEqual(
      Array.from({ length: 23 }, (_, i) => i),
    );
    expect(
      decodeSteps(new Uint8Array(await (await fetch(`${base}/runs/L.arrows`)).arrayBuffer()), 'L'),
    ).toEqual([0, 1, 2, 3, 4, 5, 6]);
    const head = await fetch(`${base}/runs/R.arrows`, { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe(String(fileBytes.byteLength));
    expect((await fetch(`${base}/runs/nope.arrows`)).status).toBe(404);
    expect((await fetch(`${base}/runs/%E0%A4%A.arrows`)).status).toBe(400);
  });

  it('never serves a file outside the dashboard folder', async () => {
    const hub = new RunHub();
    addRun(hub, 'A', { rows: 1 });
    const server = await serve({ hub });
    const attempts = [
      '/../package.json',
      '/%2e%2e/package.json',
      '/%2e%2e%2fpackage.json',
      '/..%2f..%2f..%2fpackage.json',
      '/runs/../../package.json',
      '/runs/..%2f..%2fpackage.json.arrows',
      '/app.js/../../../package.json',
      '/..\\..\\package.json',
      '//etc/passwd',
      '/secret.txt',
      '/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
      `/${'../'.repeat(8)}etc/passwd`,
    ];
    for (const path of attempts) {
      const { status, body } = await rawGet(server.port, path);
      expect([400, 404], path).toContain(status);
      expect(body, path).not.toMatch(/"name"|root:|SECRET/);
    }
  });
});
