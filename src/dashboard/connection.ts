import type { WireRun } from './store.js';

export type ConnectionState = 'connecting' | 'live' | 'disconnected';

export interface BatchHeader {
  readonly runId: string;
  readonly rows: number;
  readonly missed: number;
  readonly history: boolean;
}

/** What `hello` says about the server besides its runs. */
export interface HelloInfo {
  readonly sweep: boolean;
}

export interface ProtocolHandlers {
  state(state: ConnectionState): void;
  /** `info.sweep`: the server answers `GET /api/sweep` (it is a sweep's). */
  hello(runs: readonly WireRun[], info: HelloInfo): void;
  run(run: WireRun): void;
  batch(header: BatchHeader, bytes: Uint8Array): void;
  end(runId: string): void;
  ready(): void;
}

/** `ws(s)://<page's directory>/ws[?token=…]`, relative so the page works under a path prefix. */
export function socketUrl(page: Location, token: string | null): string {
  const url = new URL('ws', page.href);
  url.protocol = page.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = token ? `?token=${encodeURIComponent(token)}` : '';
  url.hash = '';
  return url.toString();
}

/**
 * Speaks protocol v1 (docs/protocol.md): JSON text messages, each `batch` header followed by one
 * binary Arrow IPC stream. Reconnects with exponential backoff (0.5 s doubling to 10 s, jittered);
 * the server resends everything on each connection, starting with `hello`.
 */
export function connect(url: string, on: ProtocolHandlers): { close(): void } {
  let socket: WebSocket | undefined;
  let attempt = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;

  const open = (): void => {
    on.state('connecting');
    let pending: BatchHeader | undefined;
    const ws = new WebSocket(url);
    socket = ws;
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (event: MessageEvent) => {
      if (typeof event.data !== 'string') {
        if (pending) on.batch(pending, new Uint8Array(event.data as ArrayBuffer));
        pending = undefined;
        return;
      }
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(event.data) as Record<string, unknown>;
      } catch {
        return;
      }
      switch (msg.type) {
        case 'hello':
          attempt = 0;
          on.state('live');
          on.hello(Array.isArray(msg.runs) ? (msg.runs as WireRun[]) : [], {
            sweep: msg.sweep === true,
          });
          break;
        case 'run':
          if (msg.run && typeof msg.run === 'object') on.run(msg.run as WireRun);
          break;
        case 'batch':
          pending = {
            runId: String(msg.runId),
            rows: Number(msg.rows) || 0,
            missed: Number(msg.missed) || 0,
            history: msg.history === true,
          };
          break;
        case 'end':
          on.end(String(msg.runId));
          break;
        case 'ready':
          on.ready();
          break;
        default:
          break; // pong and anything newer
      }
    };
    ws.onclose = () => {
      if (socket !== ws) return;
      socket = undefined;
      if (closed) return;
      on.state('disconnected');
      const delay = Math.min(10_000, 500 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
      attempt = Math.min(attempt + 1, 5);
      timer = setTimeout(open, delay);
    };
  };

  open();
  return {
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
      socket?.close();
    },
  };
}
