import { createHash } from 'node:crypto';
import {
  appendFileSync,
  closeSync,
  createReadStream,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { CHECKPOINT_FILE, readCheckpointFile } from '../sinks/checkpointFile.js';
import { replyJson } from '../sinks/httpReply.js';
import type { ExtraRoutes } from '../sinks/server.js';
import { writeFileAtomically, writeTextAtomically } from '../sinks/writeFileAtomically.js';
import { resultPath, trialDir } from './runTrial.js';
import { acquireLock, lockHolder, releaseLock, renewLock } from './trialLock.js';

/**
 * The most bytes one upload request carries: recordings and checkpoints travel in chunks, so no
 * request outlasts the server's HTTP deadline on a slow link and a lost one costs one chunk.
 */
export const MAX_CHUNK_BYTES = 8 << 20;
const MAX_RESULT_BYTES = 64 << 10;
const OWNER = /^[A-Za-z0-9._:@-]{1,200}$/;
const TRIAL_PATH =
  /^\/api\/trials\/([0-9a-f]{12})\/(lock|checkpoint|run\.arrows|result-([1-9]\d{0,15})\.json)$/;
/** The staged upload of a checkpoint, beside the trial's checkpoint folder until committed. */
const STAGING = 'checkpoint.upload';

/**
 * The coordinator's side of trials run on machines that do not share its sweep folder: HTTP
 * paths under `/api/trials/ID/` through which a remote runner (src/sweep/remoteTrial.ts) takes
 * the trial's lock, downloads its checkpoint and recording, pushes its recording as it grows
 * (so `grng sweep --serve`'s dashboard, which follows the folder, shows the trial live), uploads
 * its checkpoints and finally its result. The files land exactly where a local runner would put
 * them, so halving, `--resume`, the sweep view and the table do not know the difference.
 *
 * Every write names its `owner` and is refused (409) unless that owner holds the trial's lock:
 * a runner whose lock went stale and was taken over cannot overwrite the new runner's files. The
 * server mounts these paths only with a token (docs/protocol.md, "Trial files").
 *
 * @example
 * await startServer({ hub, token, routes: trialFilesRoutes('runs/sweeps/mnist-lr') });
 */
export function trialFilesRoutes(sweepDir: string): ExtraRoutes {
  let trialIds: Set<string> | undefined;
  const isTrial = (id: string): boolean => {
    trialIds ??= new Set(
      (
        JSON.parse(readFileSync(join(sweepDir, 'sweep.json'), 'utf8')) as {
          trials: { id: string }[];
        }
      ).trials.map((t) => t.id),
    );
    return trialIds.has(id);
  };
  return async (req, res, url) => {
    if (!url.pathname.startsWith('/api/trials/')) return false;
    const match = TRIAL_PATH.exec(url.pathname);
    if (!match) return replyJson(res, 404, { error: 'not a trial file' });
    const [, id, file, budget] = match as unknown as [string, string, string, string | undefined];
    if (!isTrial(id)) return replyJson(res, 404, { error: `no trial ${id} in this sweep` });
    const dir = trialDir(sweepDir, id);
    mkdirSync(dir, { recursive: true });
    const lock = join(dir, 'lock');
    const method = req.method ?? 'GET';
    const owner = url.searchParams.get('owner');
    if (method !== 'GET' && method !== 'HEAD' && (owner === null || !OWNER.test(owner)))
      return replyJson(res, 400, { error: 'owner: missing or not a runner name' });

    if (file === 'lock') {
      if (method === 'POST')
        return acquireLock(lock, owner!)
          ? replyJson(res, 200, { held: true })
          : replyJson(res, 409, { held: false, holder: lockHolder(lock) ?? null });
      if (method === 'DELETE') {
        releaseLock(lock, owner!);
        return replyJson(res, 200, { held: false });
      }
      return notAllowed(res, 'POST, DELETE');
    }

    const path =
      file === 'checkpoint'
        ? join(dir, 'checkpoint', CHECKPOINT_FILE)
        : budget !== undefined
          ? resultPath(sweepDir, id, Number(budget))
          : join(dir, file);
    if (method === 'GET' || method === 'HEAD') return download(res, path, method === 'HEAD');

    // Every write: its runner must hold the lock (and the write keeps the lock fresh).
    if (!renewLock(lock, owner!))
      return replyJson(res, 409, {
        error: `trial ${id}'s lock is not held by ${owner}`,
        holder: lockHolder(lock) ?? null,
      });
    if (budget !== undefined) {
      if (method !== 'PUT') return notAllowed(res, 'GET, HEAD, PUT');
      const body = await readBody(req, res, MAX_RESULT_BYTES);
      if (!body) return true;
      const problem = checkResult(body, id, Number(budget));
      if (problem) return replyJson(res, 400, { error: `result-${budget}.json: ${problem}` });
      writeTextAtomically(path, body.toString('utf8'));
      return replyJson(res, 200, { written: body.byteLength });
    }
    if (file === 'run.arrows') {
      if (method !== 'PUT') return notAllowed(res, 'GET, HEAD, PUT');
      return appendAt(req, res, url, path, (chunk) =>
        // A runner starts over from byte 0 when its recording was rewritten (a resume keeps only
        // the rows up to the checkpoint): replaced whole, as the local rewrite does, so followers
        // see a new file and repeat no row.
        writeFileAtomically(path, [chunk]),
      );
    }
    // The checkpoint: chunks to a staging file, then a commit that checks it whole (size,
    // SHA-256 of the upload, and the checkpoint's own payload digest) before it replaces the
    // trial's checkpoint atomically. A torn upload never becomes the checkpoint a retry resumes.
    const staged = join(dir, STAGING, CHECKPOINT_FILE);
    if (method === 'PUT') {
      mkdirSync(join(dir, STAGING), { recursive: true });
      return appendAt(req, res, url, staged, (chunk) => writeFileAtomically(staged, [chunk]));
    }
    if (method === 'POST') {
      const size = Number(url.searchParams.get('size') ?? NaN);
      const sha256 = url.searchParams.get('sha256') ?? '';
      if (!existsSync(staged))
        return replyJson(res, 409, { error: 'no checkpoint upload to commit' });
      const bytes = readFileSync(staged);
      if (bytes.byteLength !== size || sha256Hex(bytes) !== sha256)
        return replyJson(res, 409, {
          error: `the upload holds ${bytes.byteLength} bytes with another digest than the ${size} announced`,
        });
      try {
        readCheckpointFile(join(dir, STAGING));
      } catch (error) {
        return replyJson(res, 400, { error: `not a grng checkpoint: ${(error as Error).message}` });
      }
      mkdirSync(join(dir, 'checkpoint'), { recursive: true });
      syncFile(staged);
      renameSync(staged, path);
      rmSync(join(dir, STAGING), { recursive: true, force: true });
      return replyJson(res, 200, { committed: size });
    }
    return notAllowed(res, 'GET, HEAD, PUT, POST');
  };
}

/**
 * Writes a chunk at `?offset=`: 0 starts the file anew (`restart`), the file's size appends;
 * any other offset is 409 with the size the file has, so the runner knows where to go on.
 */
async function appendAt(
  req: IncomingMessage,
  res: ServerResponse,
  url: URL,
  path: string,
  restart: (chunk: Buffer) => void,
): Promise<true> {
  const given = url.searchParams.get('offset');
  // Number(null) is 0, which would start the file anew: a missing offset is an error.
  const offset = given === null || !/^\d+$/.test(given) ? -1 : Number(given);
  if (!Number.isSafeInteger(offset) || offset < 0)
    return replyJson(res, 400, { error: 'offset: missing or not a byte position' });
  const size = existsSync(path) ? statSync(path).size : 0;
  if (offset !== 0 && offset !== size)
    return replyJson(res, 409, { error: `offset ${offset} is not the file's end`, size });
  const chunk = await readBody(req, res, MAX_CHUNK_BYTES);
  if (!chunk) return true;
  if (offset === 0) restart(chunk);
  else appendFileSync(path, chunk);
  return replyJson(res, 200, { size: offset + chunk.byteLength });
}

/** The request's body, or undefined after answering 413 when it is over `limit` bytes. */
async function readBody(
  req: IncomingMessage,
  res: ServerResponse,
  limit: number,
): Promise<Buffer | undefined> {
  const declared = Number(req.headers['content-length']);
  if (declared > limit) {
    replyJson(res, 413, { error: `at most ${limit} bytes per request` });
    req.resume();
    return undefined;
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    bytes += chunk.byteLength;
    if (bytes > limit) {
      replyJson(res, 413, { error: `at most ${limit} bytes per request` });
      req.destroy();
      return undefined;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function download(res: ServerResponse, path: string, head: boolean): true {
  let size: number;
  try {
    const stats = statSync(path);
    if (!stats.isFile()) throw new Error('not a file');
    size = stats.size;
  } catch {
    return replyJson(res, 404, { error: 'none yet' });
  }
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': size });
  if (head) res.end();
  else createReadStream(path, { start: 0, end: Math.max(0, size - 1) }).pipe(res);
  return true;
}

/** What is wrong with an uploaded result, if anything: it must be this trial's, at this budget. */
function checkResult(body: Buffer, id: string, budget: number): string | undefined {
  let result: unknown;
  try {
    result = JSON.parse(body.toString('utf8'));
  } catch {
    return 'not JSON';
  }
  if (typeof result !== 'object' || result === null) return 'not an object';
  const r = result as Record<string, unknown>;
  if (r.id !== id) return `its id is ${JSON.stringify(r.id)}, not ${id}`;
  if (r.budget !== budget) return `its budget is ${JSON.stringify(r.budget)}, not ${budget}`;
  if (r.status !== 'done' && r.status !== 'failed') return 'status is not done or failed';
  if (typeof r.steps !== 'number' || typeof r.seconds !== 'number')
    return 'steps or seconds missing';
  return undefined;
}

function notAllowed(res: ServerResponse, allow: string): true {
  res.setHeader('Allow', allow);
  return replyJson(res, 405, { error: `only ${allow}` });
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function syncFile(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
