import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect as tcpConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { RecordBatch, Schema } from 'apache-arrow';
import { tableFromIPC } from 'apache-arrow';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { isGrngError } from '../src/errors.js';
import { encodeStream } from '../src/sinks/encodeStream.js';
import { metricsSchema, rowsToRecordBatch, type RecordedRun } from '../src/metrics/schema.js';
import { RunHub } from '../src/sinks/runHub.js';
import { startServer, type ServerHandle, type ServerOptions } from '../src/sinks/server.js';
import type { MetricsRow } from '../src/types.js';
import { fakeRecordedRun } from './fixtures/fakeRuns.js';

const LONG = process.env.GRNG_LONG_TESTS === '1';
const root = new URL('..', import.meta.url).pathname;
const BIN = join(root, 'bin/grng.js');

// ---- fixtures -----------------------------------------------------------------------------------

function recordedRun(id: string): RecordedRun {
  return fakeRecordedRun(id);
}

function row(step: number): MetricsRow {
  return {
    step,
    epoch: 0,
    wallMs: step,
    stepMs: 1,
    evaluationMs: 0,
    samples: 8,
    loss: 1 / (step + 1),
    accuracy: 0.5,
    learningRate: 0.1,
    gradNorm: 1,
    updateNorm: 0.5,
    updateGradCorrelation: 0.9,
    testLoss: null,
    testAccuracy: null,
    diagnostics: {},
  };
}

function rowsBatch(schema: Schema, from: number, count: number): RecordBatch {
  return rowsToRecordBatch(
    schema,
    Array.from({ length: count }, (_, i) => row(from + i)),
  );
}

function addRun(hub: RunHub, id: string, rows = 0): Schema {
  const schema = metricsSchema(recordedRun(id));
  hub.addRun(recordedRun(id), schema, { batches: rows > 0 ? [rowsBatch(schema, 0, rows)] : [] });
  return schema;
}

/** A recording file of run `id` holding steps `from`..`from + count - 1`; returns its bytes. */
function writeRecording(path: string, id: string, from: number, count: number): Buffer {
  const schema = metricsSchema(recordedRun(id));
  const bytes = Buffer.from(encodeStream([rowsBatch(schema, from, count)], schema));
  writeFileSync(path, bytes);
  return bytes;
}

let dashboardFolder: string | undefined;
function dashboard(): string {
  if (!dashboardFolder) {
    dashboardFolder = mkdtempSync(join(tmpdir(), 'grng-hardening-dashboard-'));
    writeFileSync(join(dashboardFolder, 'index.html'), '<!doctype html><title>grng</title>');
    writeFileSync(join(dashboardFolder, 'app.js'), 'console.log("grng");');
    writeFileSync(join(dashboardFolder, 'app.css'), 'body { margin: 0 }');
  }
  return dashboardFolder;
}

const servers: ServerHandle[] = [];
const cleanups: Array<() => void> = [];

async function serve(options: Omit<ServerOptions, 'port'>): Promise<ServerHandle> {
  const server = await startServer({ port: 0, dashboardDir: dashboard(), ...options });
  servers.push(server);
  return server;
}

afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) cleanup();
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

// ---- clients ------------------------------------------------------------------------------------

interface Opened {
  readonly ws: WebSocket;
  readonly texts: Array<Record<string, unknown>>;
  readonly closed: Promise<{ code: number; reason: string }>;
  /** Steps of every live batch received, per run, and the `missed` counts. */
  readonly steps: number[];
  missed: number;
}

/** Opens a `ws` client; resolves when open, or rejects with the refusal's status, headers and body. */
function open(url: string, headers: Record<string, string> = {}): Promise<Opened> {
  const ws = new WebSocket(url, { headers });
  const opened: Opened = {
    ws,
    texts: [],
    steps: [],
    missed: 0,
    closed: new Promise((done) =>
      ws.on('close', (code, reason) => done({ code, reason: reason.toString('utf8') })),
    ),
  };
  cleanups.push(() => ws.terminate());
  let expectBinary = false;
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary) {
      const json = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
      opened.texts.push(json);
      if (json.type === 'batch' && json.history === false) {
        opened.missed += json.missed as number;
        expectBinary = true;
      }
    } else if (expectBinary) {
      expectBinary = false;
      opened.steps.push(
        ...Array.from(tableFromIPC(data).getChild('step')!.toArray() as Int32Array),
      );
    }
  });
  ws.on('error', () => undefined);
  return new Promise((done, fail) => {
    ws.once('open', () => done(opened));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () =>
        fail(
          Object.assign(new Error(`HTTP ${res.statusCode}`), {
            status: res.statusCode,
            headers: res.headers,
            body,
          }),
        ),
      );
    });
    ws.once('error', fail);
  });
}

async function until(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 10));
  }
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`${what}: nothing after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A raw HTTP request whose path is sent exactly as written (fetch would normalise it). */
function rawRequest(
  port: number,
  path: string,
  options: { method?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  return new Promise((done, fail) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () =>
          done({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on('error', fail);
    req.end();
  });
}

/** A TCP socket to the server; `closedAt` resolves with the time the server closed it. */
function rawSocket(
  port: number,
): Promise<{ socket: Socket; closedAt: Promise<number>; received: () => string }> {
  return new Promise((done, fail) => {
    const socket = tcpConnect(port, '127.0.0.1');
    let received = '';
    const closedAt = new Promise<number>((resolve) =>
      socket.once('close', () => resolve(performance.now())),
    );
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    socket.on('error', () => undefined);
    cleanups.push(() => socket.destroy());
    socket.once('connect', () => done({ socket, closedAt, received: () => received }));
    socket.once('error', fail);
  });
}

/** Completes a WebSocket handshake by hand on a raw socket and returns it, reading nothing more. */
async function rawWebSocket(port: number): Promise<Socket> {
  const { socket, received } = await rawSocket(port);
  const key = randomBytes(16).toString('base64');
  socket.write(
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await until(() => received().includes('\r\n\r\n'), 'the handshake response', 5000);
  expect(received()).toMatch(/^HTTP\/1\.1 101 /);
  return socket;
}

/** A masked client text frame (RFC 6455 §5.3), payload under 126 bytes. */
function maskedTextFrame(text: string): Buffer {
  const payload = Buffer.from(text);
  const mask = randomBytes(4);
  const frame = Buffer.alloc(6 + payload.length);
  frame[0] = 0x81;
  frame[1] = 0x80 | payload.length;
  mask.copy(frame, 2);
  for (let i = 0; i < payload.length; i++) frame[6 + i] = payload[i]! ^ mask[i % 4]!;
  return frame;
}

// ---- 1. client limit ----------------------------------------------------------------------------

describe('server hardening: client limit', () => {
  it('refuses upgrades beyond maxClients with 503, a reason and Retry-After; HTTP keeps working; a freed slot is usable', async () => {
    const hub = new RunHub();
    const schema = addRun(hub, 'A');
    const server = await serve({ hub, maxClients: 3 });
    const url = `ws://127.0.0.1:${server.port}/ws`;
    const admitted = await Promise.all([open(url), open(url), open(url)]);
    expect(server.clients()).toBe(3);

    const refusals = await Promise.all(
      Array.from({ length: 5 }, () =>
        open(url).then(
          () => undefined,
          (e: { status: number; headers: Record<string, string>; body: string }) => e,
        ),
      ),
    );
    for (const refusal of refusals) {
      expect(refusal?.status).toBe(503);
      expect(refusal?.headers['retry-after']).toBe('5');
      expect(refusal?.body).toMatch(/too many clients \(at most 3\); try again later/);
    }
    expect(server.clients()).toBe(3);
    expect((await fetch(`http://127.0.0.1:${server.port}/api/runs`)).status).toBe(200);
    // The admitted clients are untouched by the refusals.
    hub.pushBatch('A', rowsBatch(schema, 0, 5));
    await until(
      () => admitted.every((c) => c.steps.length === 5),
      'the live batch on every admitted client',
    );

    admitted[0]!.ws.close();
    await until(() => server.clients() === 2, 'the slot to be freed');
    const late = await open(url);
    expect(late.ws.readyState).toBe(WebSocket.OPEN);
    expect(server.clients()).toBe(3);
  });

  it('validates maxClients and httpTimeoutMs', async () => {
    const hub = new RunHub();
    for (const bad of [
      { maxClients: 0 },
      { maxClients: 1.5 },
      { maxClients: '4' },
      { maxClients: -1 },
      { httpTimeoutMs: 0 },
      { httpTimeoutMs: Infinity },
    ]) {
      const error = await startServer({
        hub,
        port: 0,
        dashboardDir: dashboard(),
        ...(bad as object),
      }).then(
        (s) => (servers.push(s), undefined),
        (e: unknown) => e,
      );
      expect(isGrngError(error), JSON.stringify(bad)).toBe(true);
      expect((error as Error).message).toContain(Object.keys(bad)[0]!);
    }
  });
});

// ---- 2. slow and stuck clients ------------------------------------------------------------------

describe('server hardening: slowloris and stuck clients', () => {
  it('cuts off HTTP clients that trickle headers, never finish them, send nothing, or idle on keep-alive; WebSocket clients are not cut', async () => {
    const httpTimeoutMs = 500;
    const hub = new RunHub();
    const schema = addRun(hub, 'A');
    const server = await serve({ hub, httpTimeoutMs });
    const ws = await open(`ws://127.0.0.1:${server.port}/ws`);
    const start = performance.now();

    // One byte every 50 ms, forever: each byte is progress, so only a deadline on the whole header stops it.
    const trickle = await rawSocket(server.port);
    const header = `GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n${'X-Pad: y\r\n'.repeat(1000)}\r\n`;
    let sent = 0;
    const ticker = setInterval(() => {
      if (!trickle.socket.destroyed) trickle.socket.write(header[sent++ % header.length]!);
    }, 50);
    cleanups.push(() => clearInterval(ticker));
    const unfinished = await rawSocket(server.port);
    unfinished.socket.write('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    const silent = await rawSocket(server.port);
    const keepAlive = await rawSocket(server.port);
    keepAlive.socket.write(
      'GET /api/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n',
    );

    const closed = await within(
      Promise.all([trickle.closedAt, unfinished.closedAt, silent.closedAt, keepAlive.closedAt]),
      5000,
      'slow sockets to be closed',
    );
    const after = closed.map((t) => t - start);
    console.log(
      `slowloris: httpTimeoutMs ${httpTimeoutMs}; closed after ${after.map((ms) => ms.toFixed(0)).join(', ')} ms (trickle ${sent} bytes, unfinished, silent, idle keep-alive)`,
    );
    for (const ms of after) expect(ms).toBeLessThan(httpTimeoutMs * 2 + 1500);
    expect(after[0]).toBeGreaterThan(httpTimeoutMs * 0.8);
    expect(keepAlive.received()).toMatch(/^HTTP\/1\.1 200 /); // it was served before going idle
    expect(trickle.received()).not.toMatch(/200 OK/);

    // The WebSocket client, quiet for far longer than the HTTP deadline, is still served.
    await new Promise((done) => setTimeout(done, httpTimeoutMs * 3));
    expect(ws.ws.readyState).toBe(WebSocket.OPEN);
    hub.pushBatch('A', rowsBatch(schema, 0, 3));
    await until(() => ws.steps.length === 3, 'a live batch after the HTTP deadlines');
  });

  it('caps concurrent sockets at maxClients + 128 and recovers when the idle ones time out', async () => {
    const httpTimeoutMs = 1000;
    const server = await serve({ hub: new RunHub(), maxClients: 2, httpTimeoutMs });
    const attempts = 200;
    const sockets = await Promise.all(
      Array.from({ length: attempts }, () => rawSocket(server.port)),
    );
    const closedSoon = (
      await Promise.all(
        sockets.map((s) =>
          Promise.race([
            s.closedAt.then(() => 1),
            new Promise<number>((done) => setTimeout(() => done(0), 300)),
          ]),
        ),
      )
    ).reduce((a, b) => a + b, 0);
    console.log(
      `socket cap: ${attempts} idle sockets, ${attempts - closedSoon} held, ${closedSoon} closed at once (cap ${2 + 128})`,
    );
    expect(attempts - closedSoon).toBeLessThanOrEqual(2 + 128);
    expect(closedSoon).toBeGreaterThanOrEqual(attempts - 130);
    await within(
      Promise.all(sockets.map((s) => s.closedAt)),
      httpTimeoutMs * 2 + 3000,
      'every idle socket to time out',
    );
    expect((await fetch(`http://127.0.0.1:${server.port}/api/runs`)).status).toBe(200);
  });

  it('a raw WebSocket client that never reads stays within its queue bound, is dropped by the heartbeat, and neither blocks the producer nor starves a reading client', async () => {
    const maxQueuedBytes = 256 * 1024;
    const heartbeatMs = 2000;
    const rowsPerBatch = 256;
    const hub = new RunHub();
    const schema = addRun(hub, 'S');
    const server = await serve({ hub, maxQueuedBytes, heartbeatMs });
    const reader = await open(`ws://127.0.0.1:${server.port}/ws`);
    const connectedAt = performance.now();
    const stuck = await rawWebSocket(server.port);
    stuck.pause();
    await until(() => server.clients() === 2, 'both clients');
    const stuckId = Math.max(...server.stats().clients.map((c) => c.id));
    const stuckStats = () => server.stats().clients.find((c) => c.id === stuckId);

    let pushed = 0;
    let slowestPushMs = 0;
    let peak = 0;
    let dropped = 0;
    let droppedAt = 0;
    // Push until the server has given up on the stuck client (the heartbeat finds no pong).
    while (stuckStats() !== undefined) {
      // Fast until the stuck client's queue overflows, then a gentle trickle until the heartbeat.
      const rows = dropped === 0 ? rowsPerBatch : 16;
      const batch = rowsBatch(schema, pushed, rows);
      const t = performance.now();
      hub.pushBatch('S', batch);
      slowestPushMs = Math.max(slowestPushMs, performance.now() - t);
      pushed += rows;
      const s = stuckStats();
      if (s) {
        peak = Math.max(peak, s.peakQueuedBytes);
        dropped = s.droppedRows;
      }
      droppedAt = performance.now() - connectedAt;
      if (dropped === 0) await nextTurn();
      else await new Promise((done) => setTimeout(done, 20));
      if (droppedAt > heartbeatMs * 2 + 5000) throw new Error('the stuck client was never dropped');
    }
    hub.endRun('S');
    await until(
      () => reader.texts.some((m) => m.type === 'end'),
      'the end on the reading client',
      20_000,
    );
    console.log(
      `never-reading raw client: ${pushed} rows pushed (batches of ${rowsPerBatch} until it overflowed, then 16 every 20 ms); its queue peaked at ${peak} B of ${maxQueuedBytes}; ${dropped} rows dropped for it; ` +
        `dropped by the heartbeat (${heartbeatMs} ms) after ${droppedAt.toFixed(0)} ms; slowest push ${slowestPushMs.toFixed(2)} ms; reading client got ${reader.steps.length} rows, missed ${reader.missed}`,
    );
    expect(dropped).toBeGreaterThan(0); // it really was stuck and holding a full queue
    expect(peak).toBeLessThanOrEqual(maxQueuedBytes);
    expect(droppedAt).toBeLessThan(heartbeatMs * 2 + 1500);
    expect(slowestPushMs).toBeLessThan(100); // a GC pause at worst: never waits on the socket
    expect(server.clients()).toBe(1);
    // The reading client's rows are all there or accounted for, in order, the last one included.
    expect(reader.steps.length + reader.missed).toBe(pushed);
    expect(reader.steps.at(-1)).toBe(pushed - 1);
    expect(reader.steps.every((s, i) => i === 0 || s > reader.steps[i - 1]!)).toBe(true);
  });

  it('a client that floods pings and never reads keeps at most one pong waiting', async () => {
    const maxQueuedBytes = 64 * 1024;
    const hub = new RunHub();
    const schema = addRun(hub, 'A');
    const server = await serve({ hub, maxQueuedBytes, heartbeatMs: 60_000 });
    const flooder = await rawWebSocket(server.port);
    flooder.pause();
    // Loopback buffers hold megabytes: first fill them with rows until the server has to queue
    // (and drop) for this client, so that the pongs cannot simply flow out.
    for (let next = 0; server.stats().clients[0]!.droppedRows === 0; next += 256) {
      hub.pushBatch('A', rowsBatch(schema, next, 256));
      await nextTurn();
    }
    const frame = maskedTextFrame('{"type":"ping"}');
    const pings = 100_000;
    for (let i = 0; i < pings; i += 1000) {
      flooder.write(Buffer.concat(Array.from({ length: 1000 }, () => frame)));
      await nextTurn();
    }
    // The flooder cannot see answers; give the server time to read every ping.
    await new Promise((done) => setTimeout(done, 1000));
    const stats = server.stats().clients[0]!;
    console.log(
      `ping flood: ${pings} pings from a client that never reads, its socket full; queue ${stats.queuedMessages} messages (rows and one pong), ${stats.queuedBytes} B of ${maxQueuedBytes}; socket buffer ${stats.bufferedAmount} B`,
    );
    expect(stats.bufferedAmount).toBeGreaterThan(0); // the pongs really had nowhere to go
    expect(stats.queuedMessages).toBeLessThanOrEqual(2);
    expect(stats.queuedBytes).toBeLessThanOrEqual(maxQueuedBytes);
    expect(server.clients()).toBe(1);
  });
});

// ---- 3. fuzzed client messages ------------------------------------------------------------------

const MAX_MESSAGE = 1024;
type Outcome = 'open' | 1007 | 1008 | 1009;

/** What docs/protocol.md says the server does with one client frame. */
function expectedOutcome(bytes: Buffer, binary: boolean): Outcome {
  if (bytes.length > MAX_MESSAGE) return 1009;
  if (binary) return 1008;
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return 1007;
  }
  let message: unknown;
  try {
    message = JSON.parse(text);
  } catch {
    return 1008;
  }
  if (typeof message !== 'object' || message === null || Array.isArray(message)) return 1008;
  const fields = message as Record<string, unknown>;
  const keys = Object.keys(fields);
  if (fields.type === 'ping') return keys.length === 1 ? 'open' : 1008;
  if (fields.type === 'subscribe') {
    if (keys.length !== 2 || !('runs' in fields)) return 1008;
    if (fields.runs === null) return 'open';
    if (!Array.isArray(fields.runs) || fields.runs.length > 256) return 1008;
    return fields.runs.every((r) => typeof r === 'string' && r.length > 0 && r.length <= 256)
      ? 'open'
      : 1008;
  }
  return 1008;
}

const jsonValue = fc.oneof(
  fc.constant(null),
  fc.boolean(),
  fc.double(),
  fc.string(),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string(), fc.integer(), { maxKeys: 2 }),
);
const runIds = fc.array(
  fc.oneof(
    fc.string({ maxLength: 300 }),
    fc.string({ unit: 'grapheme', maxLength: 8 }),
    fc.integer(),
    fc.constant(''),
  ),
  { maxLength: 400 },
);
const frames: fc.Arbitrary<{ bytes: Buffer; binary: boolean; kind: string }> = fc.oneof(
  fc
    .record({ data: fc.uint8Array({ maxLength: 1500 }), binary: fc.boolean() })
    .map(({ data, binary }) => ({ bytes: Buffer.from(data), binary, kind: 'random bytes' })),
  fc
    .json({ maxDepth: 4 })
    .map((json) => ({ bytes: Buffer.from(json), binary: false, kind: 'random JSON' })),
  fc
    .record(
      {
        type: fc.oneof(
          fc.constantFrom('ping', 'subscribe', 'Ping', 'pong', 'hello', ''),
          fc.string(),
          jsonValue,
        ),
        runs: fc.oneof(fc.constant(null), runIds, jsonValue),
        extra: jsonValue,
      },
      { requiredKeys: [] },
    )
    .map((message) => ({
      bytes: Buffer.from(JSON.stringify(message)),
      binary: false,
      kind: 'protocol-shaped',
    })),
  fc
    .record({
      runs: fc.array(fc.string({ minLength: 1, maxLength: 4 }), { minLength: 150, maxLength: 400 }),
      binary: fc.boolean(),
    })
    .map(({ runs, binary }) => ({
      bytes: Buffer.from(JSON.stringify({ type: 'subscribe', runs })),
      binary,
      kind: 'huge run list',
    })),
  fc.integer({ min: MAX_MESSAGE + 1, max: 64 * 1024 }).map((n) => ({
    bytes: Buffer.from(JSON.stringify({ type: 'ping' }).padEnd(n, ' ')),
    binary: false,
    kind: 'oversized',
  })),
  fc
    .constantFrom(
      '{"type":"ping"}',
      '{"type":"subscribe","runs":null}',
      '{"type":"subscribe","runs":["A"]}',
      '\ufeff{"type":"ping"}',
      '{"type":"ping","type":"ping"}',
      '{"__proto__":{},"type":"ping"}',
    )
    .map((text) => ({ bytes: Buffer.from(text), binary: false, kind: 'edge' })),
);

describe('server hardening: fuzzed client messages', () => {
  const runs = LONG ? 2000 : 500;
  it(
    `answers ${runs} random frames with a pong or a documented close code, never throws, and keeps serving a bystander`,
    async () => {
      const hub = new RunHub();
      const schema = addRun(hub, 'A');
      const server = await serve({ hub, maxClients: 8 });
      const url = `ws://127.0.0.1:${server.port}/ws`;
      const bystander = await open(url);
      let produced = 0;
      const producer = setInterval(() => {
        hub.pushBatch('A', rowsBatch(schema, produced, 4));
        produced += 4;
      }, 10);
      cleanups.push(() => clearInterval(producer));
      const tally = new Map<string, number>();
      const start = performance.now();

      await fc.assert(
        fc.asyncProperty(frames, async ({ bytes, binary, kind }) => {
          const expected = expectedOutcome(bytes, binary);
          const client = await open(url);
          client.ws.send(bytes, { binary });
          client.ws.send('{"type":"ping"}');
          const outcome = await within(
            Promise.race([
              client.closed.then(({ code, reason }) => ({ code, reason })),
              until(() => client.texts.some((m) => m.type === 'pong'), 'pong').then(
                () => 'open' as const,
              ),
            ]),
            5000,
            `the answer to ${kind} ${bytes.subarray(0, 64).toString('hex')}`,
          );
          client.ws.terminate();
          const got = outcome === 'open' ? 'open' : outcome.code;
          tally.set(`${kind} → ${got}`, (tally.get(`${kind} → ${got}`) ?? 0) + 1);
          expect(got).toBe(expected);
          // The server's own refusals say why; ws closes 1007 and 1009 without a reason.
          if (got === 1008) expect(outcome === 'open' ? '' : outcome.reason).not.toBe('');
        }),
        { numRuns: runs },
      );
      const seconds = (performance.now() - start) / 1000;
      clearInterval(producer);
      hub.endRun('A');
      await until(() => bystander.texts.some((m) => m.type === 'end'), 'the end on the bystander');
      console.log(
        `fuzz: ${runs} frames in ${seconds.toFixed(1)} s; ${[...tally]
          .sort()
          .map(([k, n]) => `${k}: ${n}`)
          .join(
            '; ',
          )}; bystander got ${bystander.steps.length}/${produced} rows, missed ${bystander.missed}`,
      );
      expect(bystander.ws.readyState).toBe(WebSocket.OPEN);
      expect(bystander.steps.length + bystander.missed).toBe(produced);
      expect(bystander.steps.at(-1)).toBe(produced - 1);
      await until(() => server.clients() === 1, 'the fuzzed clients to be gone');
      // Every outcome the protocol documents was actually exercised.
      const outcomes = new Set([...tally.keys()].map((k) => k.split(' → ')[1]));
      expect([...outcomes].sort()).toEqual(['1007', '1008', '1009', 'open']);
    },
    LONG ? 600_000 : 120_000,
  );
});

// ---- 4. token -----------------------------------------------------------------------------------

describe('server hardening: token', () => {
  const TOKEN = 'S3cret-Token_42';
  const wrongTokens: Array<[string, { query?: string; headers?: Record<string, string> }]> = [
    ['no token', {}],
    ['empty ?token=', { query: '?token=' }],
    ['wrong token', { query: '?token=nope' }],
    ['token in upper case', { query: `?token=${TOKEN.toUpperCase()}` }],
    ['token in lower case', { query: `?token=${TOKEN.toLowerCase()}` }],
    ['token less its last character', { query: `?token=${TOKEN.slice(0, -1)}` }],
    ['token plus a character', { query: `?token=${TOKEN}x` }],
    ['token plus a NUL byte', { query: `?token=${TOKEN}%00` }],
    ['token with a trailing space', { query: `?token=${TOKEN}%20` }],
    ['an 8 KiB token', { query: `?token=${'t'.repeat(8 * 1024)}` }],
    ['token under another name', { query: `?Token=${TOKEN}` }],
    ['empty Bearer', { headers: { Authorization: 'Bearer ' } }],
    ['wrong Bearer', { headers: { Authorization: 'Bearer nope' } }],
    ['Bearer in upper case', { headers: { Authorization: `Bearer ${TOKEN.toUpperCase()}` } }],
    [
      'Basic auth with the token',
      { headers: { Authorization: `Basic ${Buffer.from(`user:${TOKEN}`).toString('base64')}` } },
    ],
    ['the token as the whole header', { headers: { Authorization: TOKEN } }],
    ['the token as a cookie', { headers: { Cookie: `token=${TOKEN}` } }],
  ];

  it.each(wrongTokens)(
    'refuses %s with 401 on every HTTP route, download and the WebSocket upgrade',
    async (_name, { query = '', headers = {} }) => {
      const hub = new RunHub();
      addRun(hub, 'A', 5);
      const server = await serve({ hub, token: TOKEN });
      for (const [method, path] of [
        ['GET', '/'],
        ['GET', '/app.js'],
        ['GET', '/api/runs'],
        ['GET', '/runs/A.arrows'],
        ['HEAD', '/runs/A.arrows'],
        ['GET', '/ws'],
        ['GET', '/no-such-path'],
        ['POST', '/api/runs'],
      ] as const) {
        const res = await rawRequest(server.port, `${path}${query}`, { method, headers });
        expect(res.status, `${method} ${path}`).toBe(401);
        expect(res.headers['www-authenticate']).toBe('Bearer realm="grng"');
        expect(res.body.toString('utf8')).toBe(
          method === 'HEAD' ? '' : 'token required: add ?token=... or Authorization: Bearer ...\n',
        );
      }
      const refusal = await open(`ws://127.0.0.1:${server.port}/ws${query}`, headers).then(
        () => undefined,
        (e: { status: number }) => e,
      );
      expect(refusal?.status).toBe(401);
      expect(server.clients()).toBe(0);
    },
  );

  it('accepts the exact token as ?token= or Bearer (the scheme in any case), on every route and the upgrade', async () => {
    const hub = new RunHub();
    addRun(hub, 'A', 5);
    const server = await serve({ hub, token: TOKEN });
    const ways: Array<{ query?: string; headers?: Record<string, string> }> = [
      { query: `?token=${TOKEN}` },
      { headers: { Authorization: `Bearer ${TOKEN}` } },
      { headers: { Authorization: `bearer ${TOKEN}` } },
      { query: '?token=wrong', headers: { Authorization: `Bearer ${TOKEN}` } },
    ];
    for (const { query = '', headers = {} } of ways) {
      expect((await rawRequest(server.port, `/${query}`, { headers })).status).toBe(200);
      expect(
        JSON.parse(
          (await rawRequest(server.port, `/api/runs${query}`, { headers })).body.toString(),
        ).map((r: { id: string }) => r.id),
      ).toEqual(['A']);
      const download = await rawRequest(server.port, `/runs/A.arrows${query}`, { headers });
      expect(download.status).toBe(200);
      expect(
        Array.from(tableFromIPC(download.body).getChild('step')!.toArray() as Int32Array),
      ).toEqual([0, 1, 2, 3, 4]);
      const client = await open(`ws://127.0.0.1:${server.port}/ws${query}`, headers);
      await until(() => client.texts.some((m) => m.type === 'ready'), 'ready');
      client.ws.close();
    }
  });
});

// ---- 5. grng serve DIR, the real CLI ------------------------------------------------------------

interface ServeCli {
  readonly child: ChildProcess;
  readonly port: number;
  stderr(): string;
}

async function grngServe(args: string[]): Promise<ServeCli> {
  const child = spawn(process.execPath, [BIN, 'serve', ...args, '--port', '0'], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      const match = /dashboard at http:\/\/127\.0\.0\.1:(\d+)\//.exec(stderr);
      if (match && /recording\(s\) from/.test(stderr)) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`grng serve exited with ${code}: ${stderr}`)));
  });
  return { child, port, stderr: () => stderr };
}

describe('server hardening: grng serve DIR (real CLI)', () => {
  const top = mkdtempSync(join(tmpdir(), 'grng-serve-traversal-'));
  const dir = join(top, 'runs');
  const outside = join(top, 'outside');
  let files: Record<string, Buffer> = {};
  let cli: ServeCli | undefined;

  beforeAll(async () => {
    mkdirSync(dir);
    mkdirSync(outside);
    mkdirSync(join(dir, 'sub'));
    mkdirSync(join(dir, 'folder.arrows'));
    writeFileSync(join(outside, 'plain.txt'), 'TOP-SECRET-OUTSIDE');
    files = {
      a: writeRecording(join(dir, 'a.arrows'), 'a', 0, 30),
      b: writeRecording(join(dir, 'b.arrows'), 'b', 100, 5),
      copyOfA: writeRecording(join(dir, 'copy-of-a.arrows'), 'a', 5000, 7),
      c: writeRecording(join(dir, 'sub', 'c.data'), 'c', 200, 3),
      evil: writeRecording(join(dir, 'evil.arrows'), '../outside/secret-outside', 300, 2),
      secret: writeRecording(join(outside, 'secret-outside.arrows'), 'secret-outside', 9000, 4),
    };
    symlinkSync(join(outside, 'secret-outside.arrows'), join(dir, 'link-out.arrows'));
    symlinkSync('../outside/plain.txt', join(dir, 'relative-out.arrows'));
    symlinkSync(join(dir, 'sub', 'c.data'), join(dir, 'link-in.arrows'));
    symlinkSync(join(top, 'nowhere'), join(dir, 'dangling.arrows'));
    execFileSync('mkfifo', [join(dir, 'fifo.arrows')]);
    // The CLI runs from dist (`npm test` builds it first).
    cli = await grngServe([dir, '--max-clients', '1']);
  });

  afterAll(async () => {
    if (!cli) return;
    const exited = new Promise<number | null>((done) => cli!.child.once('exit', done));
    cli.child.kill('SIGINT');
    expect(await within(exited, 10_000, 'grng serve to stop on SIGINT')).toBe(0);
  });

  it('serves only regular files inside DIR, one file per run id, and says why it skipped the others', () => {
    const lines = cli!.stderr().split('\n');
    const warning = (file: string): string =>
      lines.find((l) => l.includes(join(dir, file))) ?? `no line for ${file}`;
    expect(warning('copy-of-a.arrows')).toMatch(
      /skipping .*: run id "a" is already served from .*a\.arrows/,
    );
    expect(warning('link-out.arrows')).toMatch(
      /skipping .*: a symbolic link to .*secret-outside\.arrows, outside the folder/,
    );
    expect(warning('relative-out.arrows')).toMatch(/outside the folder/);
    expect(warning('dangling.arrows')).toMatch(/skipping .*ENOENT/);
    expect(warning('fifo.arrows')).toMatch(/skipping .*: not a regular file/);
    expect(warning('folder.arrows')).toMatch(/skipping .*: not a regular file/);
    expect(cli!.stderr()).toMatch(/grng: 4 recording\(s\) from/);
    expect(cli!.stderr()).not.toMatch(/TOP-SECRET/);
  });

  it('downloads each run by id, byte for byte, and nothing else for any traversal trick', async () => {
    const port = cli!.port;
    const runs = JSON.parse((await rawRequest(port, '/api/runs')).body.toString()) as Array<{
      id: string;
    }>;
    expect(runs.map((r) => r.id).sort()).toEqual(['../outside/secret-outside', 'a', 'b', 'c']);
    const get = async (path: string): Promise<Buffer> => {
      const res = await rawRequest(port, path);
      expect(res.status, path).toBe(200);
      return res.body;
    };
    expect((await get('/runs/a.arrows')).equals(files.a!)).toBe(true);
    expect((await get('/runs/b.arrows')).equals(files.b!)).toBe(true);
    expect((await get('/runs/c.arrows')).equals(files.c!)).toBe(true); // through a link inside DIR
    // An id that looks like a path names that run, and its own file, however it is encoded.
    for (const path of [
      '/runs/..%2Foutside%2Fsecret-outside.arrows',
      '/runs/%2e%2e%2Foutside%2fsecret-outside.arrows',
      '/runs/%2E%2E%2F%6Futside%2Fsecret-outside.arrows',
    ]) {
      expect((await get(path)).equals(files.evil!), path).toBe(true);
    }

    const secretPath = join(outside, 'secret-outside.arrows');
    const attempts = [
      '/runs/..%2F..%2Fetc%2Fpasswd.arrows',
      '/runs/..%2F..%2Foutside%2Fsecret-outside.arrows',
      '/runs/.%2Foutside%2Fsecret-outside.arrows',
      '/runs/%2e%2e%2f%2e%2e%2foutside%2fsecret-outside.arrows',
      '/runs/%252e%252e%252foutside%252fsecret-outside.arrows',
      '/runs/../outside/secret-outside.arrows',
      '/runs/..\\outside\\secret-outside.arrows',
      '/runs/..%5Coutside%5Csecret-outside.arrows',
      '/runs/secret-outside.arrows',
      '/runs/link-out.arrows',
      '/runs/relative-out.arrows',
      '/runs/copy-of-a.arrows',
      '/runs/fifo.arrows',
      '/runs/a.arrows%00',
      '/runs/a%00.arrows',
      '/runs/a.arrows%00.png',
      `/runs/${encodeURIComponent(secretPath)}.arrows`,
      `/runs/${encodeURIComponent(secretPath.slice(0, -'.arrows'.length))}.arrows`,
      `/runs/${secretPath}`,
      `/runs//${secretPath}`,
      '/../../package.json',
      '/%2e%2e/%2e%2e/package.json',
      '/.%2e/.%2e/package.json',
      '/..%c0%af..%c0%afpackage.json',
      '/app.js/..%2F..%2F..%2Fpackage.json',
      '/..\\..\\package.json',
      `/${'..%2F'.repeat(40)}etc%2Fpasswd`,
      `/runs/${'..%2F'.repeat(40)}etc%2Fpasswd.arrows`,
      `/runs/${'a'.repeat(12_000)}.arrows`,
      'http://127.0.0.1/../../package.json',
      '*',
    ];
    const forbidden = /TOP-SECRET|"name": "grng"|root:x|secret-outside/;
    const statuses = new Map<number, number>();
    for (const path of attempts) {
      const res = await rawRequest(port, path);
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      expect([400, 404, 431], path).toContain(res.status);
      expect(res.body.toString('latin1'), path).not.toMatch(forbidden);
      expect(res.body.includes(files.secret!.subarray(-64)), path).toBe(false);
    }
    // Headers beyond Node's 16 KiB limit never reach the server's code.
    const huge = await rawRequest(port, `/runs/${'a'.repeat(100_000)}.arrows`).then(
      (res) => res.status,
      (error: NodeJS.ErrnoException) => error.code,
    );
    expect([431, 'ECONNRESET', 'EPIPE']).toContain(huge);
    console.log(
      `grng serve traversal: ${attempts.length + 1} paths refused (${[...statuses].map(([s, n]) => `${n}×${s}`).join(', ')}, 100 KB path → ${huge}); 4 of 10 directory entries served`,
    );
  });

  it('--max-clients 1 refuses the second WebSocket with 503; --max-clients 0 is a usage error', async () => {
    const url = `ws://127.0.0.1:${cli!.port}/ws`;
    const first = await open(url);
    await until(() => first.texts.some((m) => m.type === 'ready'), 'ready');
    const refusal = await open(url).then(
      () => undefined,
      (e: { status: number; body: string }) => e,
    );
    expect(refusal?.status).toBe(503);
    expect(refusal?.body).toMatch(/too many clients \(at most 1\)/);
    first.ws.close();
    await first.closed;
    const again = await open(url).then(
      (c) => c,
      async () => {
        // The server may not have seen the close yet: one retry after the documented wait.
        await new Promise((done) => setTimeout(done, 500));
        return open(url);
      },
    );
    expect(again.ws.readyState).toBe(WebSocket.OPEN);

    for (const bad of ['0', '-2', '1.5', 'many']) {
      const result = await promisify(execFile)(
        process.execPath,
        [BIN, 'serve', dir, '--port', '0', '--max-clients', bad],
        { cwd: root },
      ).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => e,
      );
      expect(result.code, bad).toBe(2);
      expect(result.stderr).toMatch(
        new RegExp(`--max-clients must be an integer ≥ 1, got "${bad}"`),
      );
    }
  });
});
