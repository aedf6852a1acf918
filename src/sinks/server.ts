import { createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { basename, dirname, resolve, sep } from 'node:path';
import type { Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import type { RecordBatch, Schema } from 'apache-arrow';
import type { Subscription } from 'rxjs';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { GrngError, invalidOption } from '../errors.js';
import { checkInteger, checkKeys } from '../validate.js';
import { encodeStream } from './encodeStream.js';
import { replyJson, replyText } from './httpReply.js';
import type { HubEvent, HubRun, RunHub } from './runHub.js';

/** Options of {@link startServer}. */
export interface ServerOptions {
  /** Where runs, their history and live batches come from. */
  readonly hub: RunHub;
  /**
   * Address to bind; default `127.0.0.1` (only this machine). `0.0.0.0` opens it to the network.
   */
  readonly host?: string | undefined;
  /** Port; default 8080; 0 picks any free port. */
  readonly port?: number | undefined;
  /**
   * When set, every request and WebSocket upgrade must carry it (`?token=` or `Authorization:
   * Bearer`).
   */
  readonly token?: string | undefined;
  /** Folder holding index.html, app.js and app.css; default the package's dist/dashboard. */
  readonly dashboardDir?: string | undefined;
  /**
   * Bound of each client's send queue in bytes (estimated Arrow size of its waiting rows); default
   * 1 MiB.
   */
  readonly maxQueuedBytes?: number | undefined;
  /**
   * WebSocket ping interval; a client that has not answered the previous ping is dropped. Default
   * 15 000.
   */
  readonly heartbeatMs?: number | undefined;
  /** Rows per history message; default 4096. */
  readonly historyChunkRows?: number | undefined;
  /**
   * Most WebSocket clients at once; default 64. An upgrade beyond it is refused with HTTP 503
   * and `Retry-After`, so a crowd of dashboards cannot take the training process's memory.
   */
  readonly maxClients?: number | undefined;
  /**
   * HTTP deadline; default 10 000. A request's headers must have arrived within it (slow or
   * unfinished requests are cut off), and an HTTP socket on which nothing moves for that long
   * (an idle keep-alive, a download the client stopped reading) is closed.
   */
  readonly httpTimeoutMs?: number | undefined;
  /**
   * When set, the server is a sweep's: `GET /api/sweep` answers what it returns, as JSON (the
   * sweep's trials and their results, docs/protocol.md), 404 while it returns undefined, 500 with
   * the message when it throws; `hello` carries `"sweep": true` so the dashboard knows to ask.
   * Called on each request.
   */
  readonly sweep?: (() => object | undefined) | undefined;
  /**
   * More HTTP paths (a sweep's trial files for workers on other machines, src/sweep/trialFiles.ts):
   * asked first for every request that passed the token check, with any method; true when it
   * answered. They can write, and anything that writes needs a token: the server refuses them
   * without one.
   */
  readonly routes?: ExtraRoutes | undefined;
}

/**
 * Checks an address to bind, as startServer does, so a command can refuse a bad `--host` before
 * it makes anything (a sweep's folder).
 *
 * @example
 * checkHost('local host'); // throws: invalid --host: "local host" (expected an address …)
 */
export function checkHost(host: unknown): void {
  if (typeof host !== 'string' || host.trim() === '' || /\s/.test(host))
    invalidOption('host', host, 'an address such as 127.0.0.1 or 0.0.0.0');
}

/** See {@link ServerOptions.routes}. */
export type ExtraRoutes = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean>;

/** What a client's send queue holds right now (a test and diagnostics hook). */
export interface ClientStats {
  readonly id: number;
  /** Estimated bytes of the live messages waiting in the queue (bounded by maxQueuedBytes). */
  readonly queuedBytes: number;
  /** The most `queuedBytes` has been after any enqueue. */
  readonly peakQueuedBytes: number;
  readonly queuedMessages: number;
  /** Bytes handed to the socket and not yet written out. */
  readonly bufferedAmount: number;
  /** Rows dropped for this client so far, all runs together. */
  readonly droppedRows: number;
}

/** A running server. */
export interface ServerHandle {
  /**
   * The dashboard's address, with `?token=` when a token is set (a loopback address when bound to
   * all interfaces).
   */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  /** Connected WebSocket clients. */
  clients(): number;
  stats(): { clients: ClientStats[] };
  /**
   * Stops the heartbeat, closes every client with 1001, unsubscribes from the hub, closes the HTTP
   * server.
   */
  close(): Promise<void>;
}

const PROTOCOL_VERSION = 1;
/** A client's queue is drained into the socket while the socket holds less than this. */
const SEND_THRESHOLD = 256 * 1024;
/** Client messages are small JSON objects. */
const MAX_CLIENT_MESSAGE = 1024;
/** Bytes a queued live batch message costs beyond its rows (header, bookkeeping). */
const LIVE_ITEM_OVERHEAD = 256;
const MAX_SUBSCRIBED_RUNS = 256;
const MAX_RUN_ID_LENGTH = 256;
/** Sockets beyond the WebSocket clients (page loads, downloads, handshakes in progress). */
const MAX_HTTP_SOCKETS = 128;
/**
 * Live batches whose encoding is kept for the next clients (each client that keeps up sends the
 * same one).
 */
const ENCODING_CACHE_SIZE = 8;
/** How long a client refused for being one too many is asked to wait. */
const RETRY_AFTER_S = 5;
const CLOSE_GRACE_MS = 2000;
const DASHBOARD_FILES: Readonly<Record<string, { file: string; type: string }>> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
};
const KNOWN_OPTIONS = [
  'hub',
  'host',
  'port',
  'token',
  'dashboardDir',
  'maxQueuedBytes',
  'heartbeatMs',
  'historyChunkRows',
  'maxClients',
  'httpTimeoutMs',
  'sweep',
  'routes',
];

const SERVER_NAME = `grng ${packageVersion()}`;

type TextItem = {
  readonly kind: 'text';
  readonly text: string;
  readonly bytes: number;
  readonly counted: boolean;
  readonly pong?: true;
};
type HistoryItem = {
  readonly kind: 'history';
  readonly runId: string;
  readonly schema: Schema;
  readonly batches: readonly RecordBatch[];
  readonly rows: number;
};
interface LiveItem {
  readonly kind: 'live';
  readonly runId: string;
  readonly schema: Schema;
  /**
   * Waiting batches from `head` on (dropped ones before it), less `skip` dropped rows of the first.
   */
  batches: RecordBatch[];
  head: number;
  skip: number;
  rows: number;
  bytes: number;
  readonly perRow: number;
}
type Item = TextItem | HistoryItem | LiveItem;

interface Client {
  readonly id: number;
  readonly ws: WebSocket;
  alive: boolean;
  closed: boolean;
  queue: Item[];
  queuedBytes: number;
  peakQueuedBytes: number;
  /** The one waiting live item per run, oldest first (Map keeps insertion order). */
  readonly live: Map<string, LiveItem>;
  /** Rows dropped per run since that run's previous batch header. */
  readonly missed: Map<string, number>;
  droppedRows: number;
  subscribed: Set<string> | null;
  pongQueued: boolean;
  flushScheduled: boolean;
}

/**
 * Starts the live-metrics server of docs/protocol.md: the dashboard, `/api/runs`, run downloads
 * and the WebSocket endpoint `/ws`, fed by a {@link RunHub}.
 *
 * The hub calls the server synchronously from training, so the server only appends references
 * to each client's queue there and sends later from the event loop, as fast as each socket
 * drains: a slow client gets conflated batches and `missed` counts, never slows training, and
 * its queue stays under `maxQueuedBytes` (history is sent from the hub's own batches and not
 * counted). `/runs/<id>.arrows` serves the recording file of a finished run that has one and
 * otherwise the hub's history encoded as one Arrow IPC stream.
 *
 * @example
 * const hub = new RunHub();
 * const server = await startServer({ hub, port: 0 });
 * console.log(`dashboard: ${server.url}`);
 * await server.close();
 */
export async function startServer(options: ServerOptions): Promise<ServerHandle> {
  if (typeof options !== 'object' || options === null)
    invalidOption('server options', options, 'an object');
  checkKeys('server', options, KNOWN_OPTIONS);
  const hub = options.hub;
  if (
    typeof hub !== 'object' ||
    hub === null ||
    typeof hub.runs !== 'function' ||
    typeof hub.run !== 'function' ||
    typeof hub.events?.subscribe !== 'function'
  ) {
    invalidOption('hub', hub, 'a RunHub');
  }
  const host = options.host ?? '127.0.0.1';
  checkHost(host);
  const port = options.port === undefined ? 8080 : checkInteger('port', options.port, 0, 65535);
  const token = options.token;
  if (
    token !== undefined &&
    (typeof token !== 'string' ||
      token.length === 0 ||
      token.length > 1024 ||
      /[\s\x00-\x1f\x7f]/.test(token))
  ) {
    invalidOption(
      'token',
      '<hidden>',
      'a non-empty string of at most 1024 characters without spaces',
    );
  }
  const dashboardDir = resolve(
    options.dashboardDir === undefined
      ? defaultDashboardDir()
      : checkPath('dashboardDir', options.dashboardDir),
  );
  const maxQueuedBytes =
    options.maxQueuedBytes === undefined
      ? 1024 * 1024
      : checkInteger('maxQueuedBytes', options.maxQueuedBytes, 64 * 1024);
  const heartbeatMs =
    options.heartbeatMs === undefined
      ? 15_000
      : checkInteger('heartbeatMs', options.heartbeatMs, 10, 2 ** 31 - 1);
  const historyChunkRows =
    options.historyChunkRows === undefined
      ? 4096
      : checkInteger('historyChunkRows', options.historyChunkRows, 1, 1 << 20);
  const maxClients =
    options.maxClients === undefined
      ? 64
      : checkInteger('maxClients', options.maxClients, 1, 100_000);
  const httpTimeoutMs =
    options.httpTimeoutMs === undefined
      ? 10_000
      : checkInteger('httpTimeoutMs', options.httpTimeoutMs, 100, 2 ** 31 - 1);
  const sweep = options.sweep;
  if (sweep !== undefined && typeof sweep !== 'function')
    invalidOption('sweep', sweep, 'a function returning the sweep snapshot');
  const routes = options.routes;
  if (routes !== undefined && typeof routes !== 'function')
    invalidOption('routes', routes, 'a function answering requests');
  if (routes !== undefined && token === undefined)
    invalidOption(
      'routes',
      'without a token',
      'a token with them: these paths write, and anything that writes must be authenticated',
    );
  const tokenDigest = token === undefined ? undefined : sha256(token);

  const clients = new Set<Client>();
  let nextClientId = 1;
  /** Encoding a batch costs ~0.3 ms on the training thread: once per batch, not once per client. */
  const recentEncodings = new Map<RecordBatch, Uint8Array>();
  let closing: Promise<void> | undefined;

  // ---- authorisation -------------------------------------------------------------------------

  function authorized(req: IncomingMessage, url: URL): boolean {
    if (!tokenDigest) return true;
    const offered: string[] = [];
    const query = url.searchParams.get('token');
    if (query !== null) offered.push(query);
    const header = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(req.headers.authorization ?? '');
    if (header) offered.push(header[1]!);
    // Digests have equal lengths, so timingSafeEqual neither throws nor leaks the token's length.
    return offered.some((t) => timingSafeEqual(sha256(t), tokenDigest));
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  async function onRequest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    res.setHeader('Cache-Control', 'no-store');
    const url = requestUrl(req);
    if (!url) return void replyText(res, 400, 'bad request path');
    if (!authorized(req, url)) {
      res.setHeader('WWW-Authenticate', 'Bearer realm="grng"');
      return void replyText(
        res,
        401,
        'token required: add ?token=... or Authorization: Bearer ...',
      );
    }
    if (routes && (await routes(req, res, url))) return;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      return void replyText(res, 405, 'only GET and HEAD');
    }
    const head = req.method === 'HEAD';
    const path = url.pathname;
    const asset = DASHBOARD_FILES[path];
    if (asset) return serveDashboardFile(res, asset.file, asset.type, head);
    if (path === '/api/runs') {
      replyJson(res, 200, hub.runs().map(describe));
      return;
    }
    if (path === '/api/sweep') {
      let status = 200;
      let answer: unknown;
      try {
        answer = sweep?.() ?? undefined;
      } catch (error) {
        status = 500;
        answer = { error: error instanceof Error ? error.message : String(error) };
      }
      if (answer === undefined || answer === null) {
        status = 404;
        answer = { error: 'not a sweep' };
      }
      replyJson(res, status, answer);
      return;
    }
    if (path === '/ws')
      return void replyText(
        res,
        426,
        'this is the WebSocket endpoint: connect with a WebSocket client',
      );
    const download = /^\/runs\/([^/]+)\.arrows$/.exec(path);
    if (download) {
      let id: string;
      try {
        id = decodeURIComponent(download[1]!);
      } catch {
        return void replyText(res, 400, 'bad run id');
      }
      const run = hub.run(id);
      if (!run) return void replyText(res, 404, 'no such run');
      return serveRun(res, run, head);
    }
    return void replyText(res, 404, 'not found');
  }

  async function serveDashboardFile(
    res: ServerResponse,
    file: string,
    type: string,
    head: boolean,
  ): Promise<void> {
    const full = resolve(dashboardDir, file);
    if (!full.startsWith(dashboardDir + sep)) return void replyText(res, 404, 'not found');
    let body: Buffer;
    try {
      body = await readFile(full);
    } catch {
      return void replyText(res, 503, 'the dashboard is not built: run `npm run build`');
    }
    res.writeHead(200, { 'Content-Type': type, 'Content-Length': body.byteLength });
    res.end(head ? undefined : body);
  }

  async function serveRun(res: ServerResponse, run: HubRun, head: boolean): Promise<void> {
    const safe = run.run.id.replace(/[^A-Za-z0-9._-]/g, '_') || 'run';
    const headers = {
      'Content-Type': 'application/vnd.apache.arrow.stream',
      'Content-Disposition': `attachment; filename="${safe}.arrows"; filename*=UTF-8''${encodeURIComponent(run.run.id).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}.arrows`,
    };
    // A finished run's recording is complete; a live one may be mid-write, so its rows come
    // from the hub, which holds the same rows as whole batches.
    if (run.recordingPath && run.finished) {
      const size = await stat(run.recordingPath).then(
        (s) => (s.isFile() ? s.size : 0),
        () => 0,
      );
      if (size > 0) {
        res.writeHead(200, { ...headers, 'Content-Length': size });
        if (head) return void res.end();
        await pipeline(createReadStream(run.recordingPath, { start: 0, end: size - 1 }), res).catch(
          () => res.destroy(),
        );
        return;
      }
    }
    const bytes = encodeStream(run.batches, run.schema);
    res.writeHead(200, { ...headers, 'Content-Length': bytes.byteLength });
    res.end(head ? undefined : bytes);
  }

  const server = createServer(
    {
      // Node checks the header and request deadlines only this often (30 s by default), so a
      // slowloris socket would outlive httpTimeoutMs by up to that much.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(httpTimeoutMs / 4))),
      headersTimeout: httpTimeoutMs,
      requestTimeout: httpTimeoutMs,
    },
    (req, res) => {
      onRequest(req, res).catch(() => {
        if (!res.headersSent) replyText(res, 500, 'internal error');
        else res.destroy();
      });
    },
  );
  server.keepAliveTimeout = Math.min(5000, httpTimeoutMs);
  // Idle HTTP sockets (a download nobody reads) are destroyed; ws clears this on upgrade.
  server.timeout = httpTimeoutMs;
  // One bound on every socket, WebSocket clients included: a socket costs memory and a file
  // descriptor before any request on it is complete. Node closes a connection beyond it at once.
  server.maxConnections = maxClients + MAX_HTTP_SOCKETS;

  // ---- WebSocket -----------------------------------------------------------------------------

  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: MAX_CLIENT_MESSAGE,
    perMessageDeflate: false,
    clientTracking: false,
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => socket.destroy());
    const url = requestUrl(req);
    if (!url) return refuseUpgrade(socket, 400);
    if (!authorized(req, url)) return refuseUpgrade(socket, 401);
    if (!sameOrigin(req)) return refuseUpgrade(socket, 403);
    if (url.pathname !== '/ws') return refuseUpgrade(socket, 404);
    if (closing) return refuseUpgrade(socket, 503, 'the server is shutting down');
    // handleUpgrade completes synchronously (no verifyClient), so `clients` is exact here.
    if (clients.size >= maxClients)
      return refuseUpgrade(
        socket,
        503,
        `too many clients (at most ${maxClients}); try again later`,
        { 'Retry-After': String(RETRY_AFTER_S) },
      );
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws));
  });

  function onConnection(ws: WebSocket): void {
    if (closing) return void ws.close(1001, 'server shutting down');
    const client: Client = {
      id: nextClientId++,
      ws,
      alive: true,
      closed: false,
      queue: [],
      queuedBytes: 0,
      peakQueuedBytes: 0,
      live: new Map(),
      missed: new Map(),
      droppedRows: 0,
      subscribed: null,
      pongQueued: false,
      flushScheduled: false,
    };
    clients.add(client);
    ws.on('pong', () => {
      client.alive = true;
    });
    ws.on('message', (data: RawData, isBinary: boolean) => onClientMessage(client, data, isBinary));
    ws.on('error', () => {
      // ws follows every error with 'close' (1009 for an oversized message, 1007 for bad UTF-8).
    });
    ws.on('close', () => forget(client));
    // Everything up to `ready` is queued in one synchronous go: no hub event can slip between
    // the snapshot and the live stream, or appear in both.
    const runs = hub.runs();
    pushText(
      client,
      JSON.stringify({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        server: SERVER_NAME,
        runs: runs.map(describe),
        ...(sweep ? { sweep: true } : {}),
      }),
      false,
    );
    for (const run of runs) queueRunHistory(client, run, false);
    pushText(client, JSON.stringify({ type: 'ready' }), false);
    scheduleFlush(client);
  }

  function forget(client: Client): void {
    client.closed = true;
    client.queue = [];
    client.live.clear();
    client.missed.clear();
    client.queuedBytes = 0;
    clients.delete(client);
  }

  function onClientMessage(client: Client, data: RawData, isBinary: boolean): void {
    if (client.closed) return;
    if (isBinary) return refuse(client, 'binary messages are not accepted');
    const textData = Buffer.isBuffer(data)
      ? data.toString('utf8')
      : Array.isArray(data)
        ? Buffer.concat(data).toString('utf8')
        : Buffer.from(data).toString('utf8');
    let message: unknown;
    try {
      message = JSON.parse(textData);
    } catch {
      return refuse(client, 'invalid JSON');
    }
    if (typeof message !== 'object' || message === null || Array.isArray(message))
      return refuse(client, 'a message must be a JSON object');
    const fields = message as Record<string, unknown>;
    const keys = Object.keys(fields);
    switch (fields.type) {
      case 'ping':
        if (keys.length !== 1) return refuse(client, 'ping takes no fields besides "type"');
        if (!client.pongQueued) {
          client.pongQueued = true;
          pushText(client, JSON.stringify({ type: 'pong' }), true, true);
          enforceBound(client);
          scheduleFlush(client);
        }
        return;
      case 'subscribe': {
        if (keys.length !== 2 || !('runs' in fields))
          return refuse(client, 'subscribe takes exactly "type" and "runs"');
        const runs = fields.runs;
        if (runs === null) {
          client.subscribed = null;
          return;
        }
        if (!Array.isArray(runs) || runs.length > MAX_SUBSCRIBED_RUNS)
          return refuse(
            client,
            `"runs" must be null or an array of at most ${MAX_SUBSCRIBED_RUNS} run ids`,
          );
        if (
          !runs.every((r) => typeof r === 'string' && r.length > 0 && r.length <= MAX_RUN_ID_LENGTH)
        )
          return refuse(client, '"runs" must hold non-empty run id strings');
        subscribe(client, new Set(runs as string[]));
        return;
      }
      default:
        return refuse(
          client,
          typeof fields.type === 'string'
            ? `unknown message type ${JSON.stringify(fields.type)}`
            : 'a message needs a string "type"',
        );
    }
  }

  /** Narrows live batches to `runs`; waiting batches of other runs go too (the client asked). */
  function subscribe(client: Client, runs: Set<string>): void {
    client.subscribed = runs;
    for (const [runId, item] of [...client.live]) {
      if (runs.has(runId)) continue;
      client.live.delete(runId);
      client.missed.delete(runId);
      client.queuedBytes -= item.bytes;
      client.queue = client.queue.filter((i) => i !== item);
    }
  }

  function refuse(client: Client, reason: string): void {
    client.closed = true;
    client.queue = [];
    client.ws.close(1008, clip(reason, 123));
  }

  // ---- queues --------------------------------------------------------------------------------

  function pushText(client: Client, text: string, counted: boolean, pong = false): void {
    const item: TextItem = {
      kind: 'text',
      text,
      bytes: 2 * text.length,
      counted,
      ...(pong ? { pong: true as const } : {}),
    };
    client.queue.push(item);
    if (counted) client.queuedBytes += item.bytes;
  }

  /**
   * Queues a run's description, its rows so far as history messages and its end (uncounted: hub
   * memory).
   */
  function queueRunHistory(
    client: Client,
    run: HubRun,
    counted: boolean,
    runText = JSON.stringify({ type: 'run', run: describe(run) }),
  ): void {
    pushText(client, runText, counted);
    let chunk: RecordBatch[] = [];
    let rows = 0;
    const flushChunk = (): void => {
      client.queue.push({
        kind: 'history',
        runId: run.run.id,
        schema: run.schema,
        batches: chunk,
        rows,
      });
      chunk = [];
      rows = 0;
    };
    for (const batch of run.batches) {
      let offset = 0;
      while (offset < batch.numRows) {
        const take = Math.min(batch.numRows - offset, historyChunkRows - rows);
        chunk.push(
          offset === 0 && take === batch.numRows ? batch : batch.slice(offset, offset + take),
        );
        rows += take;
        offset += take;
        if (rows === historyChunkRows) flushChunk();
      }
    }
    if (rows > 0) flushChunk();
    if (run.finished) pushText(client, JSON.stringify({ type: 'end', runId: run.run.id }), counted);
  }

  /** O(1) amortised: called from training through the hub. */
  function queueLiveBatch(client: Client, runId: string, batch: RecordBatch): void {
    if (client.subscribed && !client.subscribed.has(runId)) return;
    const n = batch.numRows;
    if (n === 0) return;
    let item = client.live.get(runId);
    if (!item) {
      item = {
        kind: 'live',
        runId,
        schema: batch.schema,
        batches: [],
        head: 0,
        skip: 0,
        rows: 0,
        bytes: LIVE_ITEM_OVERHEAD,
        perRow: rowBytes(batch.schema),
      };
      client.live.set(runId, item);
      client.queue.push(item);
      client.queuedBytes += item.bytes;
    }
    item.batches.push(batch);
    item.rows += n;
    item.bytes += n * item.perRow;
    client.queuedBytes += n * item.perRow;
    enforceBound(client);
  }

  /**
   * Drops the oldest waiting rows (oldest run first) until the queue fits its bound. A drained
   * item stays, empty, so its header still reports `missed`. A queue that cannot fit by dropping
   * rows (only run/end/pong messages left) belongs to a hopeless client, which is dropped.
   */
  function enforceBound(client: Client): void {
    if (client.queuedBytes > maxQueuedBytes) {
      for (const item of client.live.values()) {
        if (client.queuedBytes <= maxQueuedBytes) break;
        if (item.rows === 0) continue;
        dropRows(
          client,
          item,
          Math.min(item.rows, Math.ceil((client.queuedBytes - maxQueuedBytes) / item.perRow)),
        );
      }
      if (client.queuedBytes > maxQueuedBytes) {
        forget(client);
        client.ws.terminate();
        return;
      }
    }
    if (client.queuedBytes > client.peakQueuedBytes) client.peakQueuedBytes = client.queuedBytes;
  }

  function dropRows(client: Client, item: LiveItem, count: number): void {
    let left = count;
    // Slicing an Arrow batch costs tens of µs, too much here (training is waiting): skip rows
    // by count and slice once at send time.
    while (left > 0) {
      const available = item.batches[item.head]!.numRows - item.skip;
      if (available <= left) {
        left -= available;
        item.head += 1;
        item.skip = 0;
      } else {
        item.skip += left;
        left = 0;
      }
    }
    if (item.head > 64 && item.head * 2 > item.batches.length) {
      item.batches = item.batches.slice(item.head);
      item.head = 0;
    }
    item.rows -= count;
    item.bytes -= count * item.perRow;
    client.queuedBytes -= count * item.perRow;
    client.missed.set(item.runId, (client.missed.get(item.runId) ?? 0) + count);
    client.droppedRows += count;
  }

  function scheduleFlush(client: Client): void {
    if (client.flushScheduled || client.closed) return;
    client.flushScheduled = true;
    setImmediate(() => {
      client.flushScheduled = false;
      try {
        flush(client);
      } catch {
        forget(client);
        client.ws.terminate();
      }
    });
  }

  /** Sends while the socket has room; each send's callback (written out) flushes again. */
  function flush(client: Client): void {
    const ws = client.ws;
    const onWritten = (error?: Error): void => {
      if (!error) scheduleFlush(client);
    };
    while (
      !client.closed &&
      client.queue.length > 0 &&
      ws.readyState === WebSocket.OPEN &&
      ws.bufferedAmount < SEND_THRESHOLD
    ) {
      const item = client.queue.shift()!;
      if (item.kind === 'text') {
        if (item.counted) client.queuedBytes -= item.bytes;
        if (item.pong) client.pongQueued = false;
        ws.send(item.text, onWritten);
      } else if (item.kind === 'history') {
        ws.send(
          JSON.stringify({
            type: 'batch',
            runId: item.runId,
            rows: item.rows,
            missed: 0,
            history: true,
          }),
        );
        ws.send(encodeStream(item.batches, item.schema), onWritten);
      } else {
        if (client.live.get(item.runId) === item) client.live.delete(item.runId);
        client.queuedBytes -= item.bytes;
        const missed = client.missed.get(item.runId) ?? 0;
        client.missed.delete(item.runId);
        if (item.rows === 0 && missed === 0) continue;
        ws.send(
          JSON.stringify({
            type: 'batch',
            runId: item.runId,
            rows: item.rows,
            missed,
            history: false,
          }),
        );
        const batches = item.batches.slice(item.head);
        if (item.skip > 0) batches[0] = batches[0]!.slice(item.skip);
        const bytes =
          batches.length === 1 && item.skip === 0
            ? encodeHubBatch(batches[0]!)
            : encodeStream(batches, item.schema);
        ws.send(bytes, onWritten);
      }
    }
  }

  /** A whole batch of the hub, encoded alone; shared by every client that sends it next. */
  function encodeHubBatch(batch: RecordBatch): Uint8Array {
    let bytes = recentEncodings.get(batch);
    if (bytes === undefined) {
      bytes = encodeStream([batch]);
      recentEncodings.set(batch, bytes);
      if (recentEncodings.size > ENCODING_CACHE_SIZE)
        recentEncodings.delete(recentEncodings.keys().next().value!);
    }
    return bytes;
  }

  // ---- hub -----------------------------------------------------------------------------------

  function onHubEvent(event: HubEvent): void {
    if (clients.size === 0) return;
    const runText =
      event.type === 'run' ? JSON.stringify({ type: 'run', run: describe(event.run) }) : undefined;
    const endText =
      event.type === 'end' ? JSON.stringify({ type: 'end', runId: event.runId }) : undefined;
    for (const client of clients) {
      // Never let one client's trouble reach the training loop that called the hub.
      try {
        if (client.closed) continue;
        if (event.type === 'batch') queueLiveBatch(client, event.runId, event.batch);
        else if (event.type === 'run') {
          queueRunHistory(client, event.run, true, runText);
          enforceBound(client);
        } else {
          pushText(client, endText!, true);
          enforceBound(client);
        }
        scheduleFlush(client);
      } catch {
        forget(client);
        client.ws.terminate();
      }
    }
  }

  const subscription: Subscription = hub.events.subscribe({
    next: (event) => {
      try {
        onHubEvent(event);
      } catch {
        // onHubEvent already isolates clients; nothing may be thrown into training.
      }
    },
    error: () => undefined,
  });

  // ---- heartbeat -----------------------------------------------------------------------------

  const heartbeat = setInterval(() => {
    for (const client of clients) {
      if (!client.alive) {
        forget(client);
        client.ws.terminate();
        continue;
      }
      client.alive = false;
      try {
        client.ws.ping();
      } catch {
        // not open any more: 'close' cleans up
      }
    }
  }, heartbeatMs);
  heartbeat.unref();

  // ---- listen --------------------------------------------------------------------------------

  try {
    await new Promise<void>((done, fail) => {
      server.once('error', fail);
      server.listen(port, host, () => {
        server.off('error', fail);
        done();
      });
    });
  } catch (error) {
    clearInterval(heartbeat);
    subscription.unsubscribe();
    wss.close();
    throw listenError(error, host, port);
  }
  server.on('error', () => undefined);

  const address = server.address() as AddressInfo;
  const urlHost =
    host === '0.0.0.0'
      ? '127.0.0.1'
      : host === '::'
        ? '[::1]'
        : host.includes(':')
          ? `[${host}]`
          : host;
  const url = `http://${urlHost}:${address.port}/${token === undefined ? '' : `?token=${encodeURIComponent(token)}`}`;

  async function close(): Promise<void> {
    clearInterval(heartbeat);
    subscription.unsubscribe();
    const closed = [...clients].map(
      (client) =>
        new Promise<void>((done) => {
          const ws = client.ws;
          client.closed = true;
          client.queue = [];
          if (ws.readyState === WebSocket.CLOSED) return done();
          const timer = setTimeout(() => ws.terminate(), CLOSE_GRACE_MS);
          ws.once('close', () => {
            clearTimeout(timer);
            done();
          });
          ws.close(1001, 'server shutting down');
        }),
    );
    await Promise.all(closed);
    clients.clear();
    wss.close();
    await new Promise<void>((done) => {
      server.close(() => done());
      server.closeAllConnections();
    });
  }

  return {
    url,
    host: address.address,
    port: address.port,
    clients: () => [...clients].filter((c) => !c.closed).length,
    stats: () => ({
      clients: [...clients].map((c) => ({
        id: c.id,
        queuedBytes: c.queuedBytes,
        peakQueuedBytes: c.peakQueuedBytes,
        queuedMessages: c.queue.length,
        bufferedAmount: c.ws.bufferedAmount,
        droppedRows: c.droppedRows,
      })),
    }),
    close: () => (closing ??= close()),
  };
}

/** RUN of the protocol: the run's description plus `rows` and `finished`. */
function describe(run: HubRun): Record<string, unknown> {
  return { ...run.run, rows: run.rows, finished: run.finished };
}

/** Estimated Arrow bytes of one row: fixed-width values plus a validity bit per column. */
const rowBytesCache = new WeakMap<Schema, number>();
function rowBytes(schema: Schema): number {
  let bytes = rowBytesCache.get(schema);
  if (bytes === undefined) {
    bytes = Math.ceil(schema.fields.length / 8);
    for (const field of schema.fields) {
      const arrayType = (field.type as { ArrayType?: { BYTES_PER_ELEMENT?: number } }).ArrayType;
      bytes += arrayType?.BYTES_PER_ELEMENT ?? 16;
    }
    rowBytesCache.set(schema, bytes);
  }
  return bytes;
}

function requestUrl(req: IncomingMessage): URL | undefined {
  try {
    return new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return undefined;
  }
}

function refuseUpgrade(
  socket: Duplex,
  status: number,
  reason = STATUS_CODES[status] ?? 'Error',
  extraHeaders: Readonly<Record<string, string>> = {},
): void {
  const body = `${reason}\n`;
  const headers = {
    ...(status === 401 ? { 'WWW-Authenticate': 'Bearer realm="grng"' } : {}),
    ...extraHeaders,
  };
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  if (!socket.writable) return void socket.destroy();
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`,
  );
}

function sha256(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/** Cuts a close reason to `max` UTF-8 bytes (the WebSocket limit is 123). */
function clip(reason: string, max: number): string {
  let out = reason;
  while (Buffer.byteLength(out) > max) out = out.slice(0, -1);
  return out;
}

function checkPath(option: string, value: unknown): string {
  if (typeof value !== 'string' || value.length === 0)
    invalidOption(option, value, 'a folder path');
  return value;
}

function listenError(error: unknown, host: string, port: number): GrngError {
  const code = (error as { code?: unknown }).code;
  if (code === 'EADDRINUSE')
    return new GrngError(
      'invalid-option',
      `port ${port} is in use on ${host}; pass --port 0 for any free port`,
      { option: 'port', value: port },
      { cause: error },
    );
  if (code === 'EACCES')
    return new GrngError(
      'invalid-option',
      `port ${port} on ${host} needs privileges; pass a port above 1023 or --port 0`,
      { option: 'port', value: port },
      { cause: error },
    );
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return new GrngError(
      'invalid-option',
      `cannot bind host ${JSON.stringify(host)}: not an address of this machine`,
      { option: 'host', value: host },
      { cause: error },
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return new GrngError(
    'invalid-option',
    `cannot listen on ${host}:${port}: ${message}`,
    { option: 'port', value: port },
    { cause: error },
  );
}

/** src/sinks → ../../dist/dashboard; dist/sinks → ../dashboard. */
function defaultDashboardDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  return basename(dirname(here)) === 'src'
    ? resolve(here, '../../dist/dashboard')
    : resolve(here, '../dashboard');
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(
      readFileSync(new URL('../../package.json', import.meta.url), 'utf8'),
    ) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/**
 * Browsers let any page open a WebSocket to 127.0.0.1 and do not apply cross-site rules to it,
 * so a page from elsewhere could read the metrics of a server without a token. A browser always
 * sends Origin: accept it only when it names this very host. Clients that are not browsers (Node,
 * Python) send no Origin and are governed by the token alone.
 */
function sameOrigin(req: IncomingMessage): boolean {
  const origin = req.headers.origin;
  if (origin === undefined) return true;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}
