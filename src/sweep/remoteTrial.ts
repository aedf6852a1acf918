import { createHash } from 'node:crypto';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  openSync,
  readSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { CHECKPOINT_FILE } from '../sinks/checkpointFile.js';
import { runTrial, trialDir, type RunTrialOptions } from './runTrial.js';
import { MAX_CHUNK_BYTES } from './trialFiles.js';
import { LOCK_HEARTBEAT_MS, lockOwnerName } from './trialLock.js';
import type { TrialRequest, TrialResult } from './types.js';

/** Where a sweep's coordinator serves its trial files (`grng sweep --serve --token`), and its token. */
export interface TrialFilesEndpoint {
  readonly url: string;
  readonly token: string;
}

export interface RemoteTrialOptions extends RunTrialOptions {
  /** This machine's folder for the trials it runs (their checkpoint and recording while running). */
  readonly cacheDir: string;
  /** How often the growing recording and new checkpoints go to the coordinator; default 500 ms. */
  readonly syncMs?: number;
}

/**
 * Runs a trial on a machine without the sweep's folder, through the coordinator's trial files
 * (src/sweep/trialFiles.ts): takes the trial's lock there (kept fresh while it runs), returns
 * the coordinator's result if the trial is done, else downloads its checkpoint and recording,
 * runs it here with runTrial, pushes the recording as it grows and every new checkpoint, then
 * uploads the result. The coordinator keeps every file; this machine's copy is removed at the end.
 * A runner that loses the lock (its heartbeat stopped reaching the coordinator for long enough
 * that another runner took the trial over) stops its training process and uploads nothing more.
 *
 * @example
 * await runRemoteTrial(request, { url: 'http://coordinator:8080', token }, { metric: 'testAccuracy', higherIsBetter: true, checkpointEvery: 50, cacheDir: '/tmp/grng-worker' });
 */
export async function runRemoteTrial(
  request: TrialRequest,
  endpoint: TrialFilesEndpoint,
  options: RemoteTrialOptions,
): Promise<TrialResult> {
  const { trial, steps } = request;
  const files = new TrialFilesClient(endpoint, trial.id, lockOwnerName());
  for (;;) {
    const done = await files.result(steps);
    if (done) return done;
    if (await files.lock()) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  // A folder of its own per coordinator and sweep: two sweeps' trials never share files here.
  const localSweep = join(
    options.cacheDir,
    createHash('sha256').update(`${endpoint.url}\n${request.sweepDir}`).digest('hex').slice(0, 12),
  );
  const dir = trialDir(localSweep, trial.id);
  let child: number | undefined;
  let lost = false;
  const stopTraining = (): void => {
    lost = true;
    if (child === undefined) return;
    try {
      process.kill(child, 'SIGTERM'); // it stops with a checkpoint, which is not uploaded
    } catch {
      // Already gone.
    }
  };
  const heartbeat = setInterval(() => {
    files.lock().then(
      (held) => held || stopTraining(),
      () => undefined, // unreachable for now: the coordinator decides when the lock is stale
    );
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  const sync = new FolderSync(files, dir, stopTraining);
  try {
    // The coordinator's files are the trial's: whatever an earlier attempt left here is not.
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(join(dir, 'checkpoint'), { recursive: true });
    await sync.download();
    if (lost) throw new Error(`trial ${trial.id}: another runner took its lock over`);
    const ticker = setInterval(() => sync.tick(), options.syncMs ?? 500);
    let result: TrialResult;
    try {
      result = await runTrial(
        { ...request, sweepDir: localSweep },
        {
          ...options,
          onChild: (pid) => {
            child = pid;
            options.onChild?.(pid);
          },
        },
      );
    } catch (error) {
      if (lost) throw new Error(`trial ${trial.id}: another runner took its lock over`);
      throw error;
    } finally {
      clearInterval(ticker);
      // What was made up to now reaches the coordinator even when the run was stopped, so the
      // runner that takes it over resumes from the last checkpoint.
      if (!lost && !sync.lost) await sync.flush();
    }
    if (lost || sync.lost) throw new Error(`trial ${trial.id}: another runner took its lock over`);
    await files.putResult(result);
    return result;
  } finally {
    clearInterval(heartbeat);
    await files.unlock().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The coordinator's files of one trial, as one runner (`owner`) sees them. */
class TrialFilesClient {
  private readonly base: string;

  constructor(
    private readonly endpoint: TrialFilesEndpoint,
    readonly trialId: string,
    readonly owner: string,
  ) {
    this.base = `${endpoint.url.replace(/\/+$/, '')}/api/trials/${trialId}/`;
  }

  async lock(): Promise<boolean> {
    const res = await this.call('POST', 'lock');
    if (res.status === 409) return false;
    await this.ok(res, 'lock');
    return true;
  }

  async unlock(): Promise<void> {
    await this.ok(await this.call('DELETE', 'lock'), 'lock');
  }

  async result(budget: number): Promise<TrialResult | undefined> {
    const bytes = await this.get(`result-${budget}.json`);
    return bytes ? (JSON.parse(Buffer.from(bytes).toString('utf8')) as TrialResult) : undefined;
  }

  async putResult(result: TrialResult): Promise<void> {
    const name = `result-${result.budget}.json`;
    await this.ok(await this.call('PUT', name, {}, Buffer.from(JSON.stringify(result))), name);
  }

  /** The file's bytes, or undefined when the coordinator has none yet. */
  async get(
    file: 'run.arrows' | 'checkpoint' | `result-${number}.json`,
  ): Promise<Uint8Array | undefined> {
    const res = await this.call('GET', file);
    if (res.status === 404) return undefined;
    await this.ok(res, file);
    return new Uint8Array(await res.arrayBuffer());
  }

  /** Writes bytes at an offset; the coordinator's file size when it is not there (409). */
  /**
   * Writes bytes at an offset: the new size, or 'elsewhere' when the coordinator's file does not
   * end there, or 'lost' when another runner holds the lock now.
   */
  async putAt(
    file: 'run.arrows' | 'checkpoint',
    offset: number,
    bytes: Uint8Array,
  ): Promise<number | 'elsewhere' | 'lost'> {
    const res = await this.call('PUT', file, { offset: String(offset) }, bytes);
    if (res.status === 409)
      return ((await res.json()) as { size?: number }).size === undefined ? 'lost' : 'elsewhere';
    await this.ok(res, file);
    return offset + bytes.byteLength;
  }

  /** Commits the uploaded checkpoint: 'lost' when another runner holds the lock now. */
  async commitCheckpoint(size: number, sha256: string): Promise<'committed' | 'lost'> {
    const res = await this.call('POST', 'checkpoint', { size: String(size), sha256 });
    if (res.status === 409 && 'holder' in ((await res.clone().json()) as object)) return 'lost';
    await this.ok(res, 'checkpoint');
    return 'committed';
  }

  private async call(
    method: string,
    file: string,
    query: Record<string, string> = {},
    body?: Uint8Array,
  ): Promise<Response> {
    const url = new URL(file, this.base);
    url.searchParams.set('owner', this.owner);
    for (const [key, value] of Object.entries(query)) url.searchParams.set(key, value);
    try {
      return await fetch(url, {
        method,
        headers: { Authorization: `Bearer ${this.endpoint.token}` },
        ...(body ? { body } : {}),
      });
    } catch (error) {
      const cause = (error as { cause?: Error }).cause?.message ?? (error as Error).message;
      throw new Error(
        `the sweep's coordinator at ${this.endpoint.url} cannot be reached (${cause})`,
      );
    }
  }

  private async ok(res: Response, file: string): Promise<void> {
    if (res.ok) return;
    const said = (await res.text()).slice(0, 300);
    if (res.status === 401)
      throw new Error(
        `the sweep's coordinator at ${this.endpoint.url} refused the token (HTTP 401): give grng worker the token grng sweep was started with`,
      );
    throw new Error(`${this.base}${file}: HTTP ${res.status}: ${said}`);
  }
}

/**
 * Keeps the coordinator's copy of a running trial's recording and checkpoint up to date: the
 * recording's new bytes are appended (from byte 0 again when the file was rewritten, which a
 * resume does), a checkpoint that changed is uploaded whole and committed.
 */
class FolderSync {
  /** The recording as the coordinator has it: the local file's identity and bytes sent. */
  private recording = { identity: '', offset: 0 };
  private checkpointVersion = '';
  private running: Promise<void> = Promise.resolve();
  /** Set when the coordinator refused a write because another runner holds the lock. */
  lost = false;

  constructor(
    private readonly files: TrialFilesClient,
    private readonly dir: string,
    /** Told once when a write was refused because another runner holds the lock now. */
    private readonly onLost: () => void,
  ) {}

  private lose(): void {
    if (!this.lost) this.onLost();
    this.lost = true;
  }

  private get recordingPath(): string {
    return join(this.dir, 'run.arrows');
  }

  private get checkpointPath(): string {
    return join(this.dir, 'checkpoint', CHECKPOINT_FILE);
  }

  /** The coordinator's checkpoint and recording, written here before the run starts. */
  async download(): Promise<void> {
    const checkpoint = await this.files.get('checkpoint');
    if (checkpoint) {
      writeFileSync(this.checkpointPath, checkpoint);
      this.checkpointVersion = version(this.checkpointPath);
    }
    const recording = await this.files.get('run.arrows');
    if (recording) {
      writeFileSync(this.recordingPath, recording);
      const stats = statSync(this.recordingPath);
      this.recording = { identity: `${stats.dev}:${stats.ino}`, offset: stats.size };
    }
  }

  /** One round in the background; rounds never overlap, and a failed one is tried next time. */
  tick(): void {
    // A failed round (the coordinator unreachable for a moment) is simply tried again.
    this.running = this.running.then(() => this.round().catch(() => undefined));
  }

  /** The last round, after the one in progress; its error is thrown. */
  async flush(): Promise<void> {
    await this.running;
    await this.round();
  }

  private async round(): Promise<void> {
    if (this.lost) return;
    // The checkpoint is pinned before the recording is read: the trial appends a step's rows
    // before it checkpoints that step, so the recording sent after the pin covers the pinned
    // checkpoint. Read the other way round, a checkpoint written between the two reads went up
    // ahead of its rows, and a runner killed then left a resume point past the coordinator's
    // recording: the next runner resumed from it, and the rows between were never recorded.
    const checkpoint = this.openCheckpoint();
    try {
      await this.pushRecording();
      if (checkpoint !== undefined && !this.lost) await this.pushCheckpoint(checkpoint);
    } finally {
      if (checkpoint !== undefined) closeSync(checkpoint);
    }
  }

  private openCheckpoint(): number | undefined {
    try {
      return openSync(this.checkpointPath, 'r');
    } catch {
      return undefined; // none yet
    }
  }

  private async pushRecording(): Promise<void> {
    let fd: number;
    try {
      fd = openSync(this.recordingPath, 'r');
    } catch {
      return; // not started yet
    }
    try {
      const stats = fstatSync(fd);
      const identity = `${stats.dev}:${stats.ino}`;
      if (identity !== this.recording.identity || stats.size < this.recording.offset)
        this.recording = { identity, offset: 0 };
      let restarted = false;
      while (this.recording.offset < stats.size) {
        const bytes = readChunk(fd, this.recording.offset, stats.size);
        const next = await this.files.putAt('run.arrows', this.recording.offset, bytes);
        if (next === 'lost') return this.lose();
        if (next === 'elsewhere') {
          // The coordinator's copy is not what this runner sent (another runner wrote it):
          // send the whole file again, once per round.
          if (restarted) throw new Error('the coordinator keeps refusing the recording');
          restarted = true;
          this.recording.offset = 0;
          continue;
        }
        this.recording.offset = next;
      }
    } finally {
      closeSync(fd);
    }
  }

  private async pushCheckpoint(fd: number): Promise<void> {
    // The descriptor pins one version: a checkpoint written meanwhile is renamed over the path
    // and goes next round.
    const stats = fstatSync(fd);
    const current = `${stats.ino}:${stats.size}:${stats.mtimeMs}`;
    if (current === this.checkpointVersion || stats.size === 0) return;
    const digest = createHash('sha256');
    let offset = 0;
    while (offset < stats.size) {
      const bytes = readChunk(fd, offset, stats.size);
      digest.update(bytes);
      const next = await this.files.putAt('checkpoint', offset, bytes);
      if (next === 'lost') return this.lose();
      if (next === 'elsewhere') throw new Error('the checkpoint upload was interleaved');
      offset = next;
    }
    if ((await this.files.commitCheckpoint(stats.size, digest.digest('hex'))) === 'lost')
      return this.lose();
    this.checkpointVersion = current;
  }
}

function readChunk(fd: number, offset: number, size: number): Buffer {
  const bytes = Buffer.alloc(Math.min(MAX_CHUNK_BYTES, size - offset));
  let read = 0;
  while (read < bytes.length) {
    const n = readSync(fd, bytes, read, bytes.length - read, offset + read);
    if (n === 0) break;
    read += n;
  }
  return bytes.subarray(0, read);
}

function version(path: string): string {
  const stats = statSync(path);
  return `${stats.ino}:${stats.size}:${stats.mtimeMs}`;
}
