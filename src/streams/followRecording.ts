import { closeSync, fstatSync, openSync, readSync, statSync, type Stats } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RecordBatch, Schema } from 'apache-arrow';
import { GrngError, isGrngError } from '../errors.js';
import type { RecordedRun } from '../metrics/schema.js';
import { parseRecording } from './readRecording.js';

/** What following a recording sees, in order: its run, its batches, the writer's end. */
export type FollowEvent =
  /** The schema arrived: the run's description (once per run; not again after a resume). */
  | { readonly type: 'run'; readonly run: RecordedRun; readonly schema: Schema }
  /** A complete record batch, holding only steps after every step yielded before. */
  | { readonly type: 'batch'; readonly batch: RecordBatch }
  /** The end-of-stream marker: the writer finished (with `followResumes`, maybe not for good). */
  | { readonly type: 'end' }
  /** The file was rewritten with another run (a new `--overwrite` run): following ends here. */
  | { readonly type: 'replaced'; readonly run: RecordedRun };

export interface RecordingFollowerOptions {
  /**
   * Keep following after the end-of-stream marker: a run resumed later (a sweep trial promoted
   * to its next rung) reopens the file and appends to it. Default false: the marker ends it.
   */
  readonly followResumes?: boolean;
}

export interface FollowRecordingOptions extends RecordingFollowerOptions {
  /** How often the file is looked at; default 250 ms. */
  readonly pollMs?: number;
  /** Stops following (the iteration ends, without an error). */
  readonly signal?: AbortSignal;
}

/**
 * Follows a recording that another process is writing: yields the run once its schema is
 * there, then every complete record batch as it is appended, and ends after the end-of-stream
 * marker (or when `signal` aborts). Built on {@link RecordingFollower}: only the bytes added
 * since the last look are read, and a message still being written is waited for, never yielded
 * in part. A resumed run (the file rewritten by reopenRecording, then appended to) yields only
 * the steps after those already yielded. A damaged file ends the iteration with its GrngError.
 *
 * @example
 * for await (const event of followRecording('runs/ring.arrows', { signal })) {
 *   if (event.type === 'batch') console.log(event.batch.numRows, 'new rows');
 * }
 */
export async function* followRecording(
  path: string,
  { pollMs = 250, signal, ...options }: FollowRecordingOptions = {},
): AsyncGenerator<FollowEvent, void, undefined> {
  if (!(pollMs > 0))
    throw new GrngError('invalid-option', `pollMs must be > 0, got ${pollMs}`, {
      option: 'pollMs',
      value: pollMs,
    });
  const follower = new RecordingFollower(path, options);
  while (!signal?.aborted) {
    yield* follower.poll();
    if (follower.done) return;
    try {
      await sleep(pollMs, undefined, signal ? { signal } : {});
    } catch {
      return; // aborted while waiting
    }
  }
}

/** Bytes read from the file at once: a large backlog is parsed a slice at a time. */
const CHUNK = 1 << 20;
const CONTINUATION = 0xffffffff;
const MAX_METADATA = 16 << 20;

/**
 * The polling state of one followed recording: `poll()` looks at the file once, synchronously,
 * and returns what is new (a caller following many files polls them in turn from one timer).
 *
 * It holds the schema message and the bytes of a message not yet complete, never the file: each
 * poll reads from where the previous one stopped, so following costs what is appended. The file
 * is known by its identity (device, inode, birth time): a new identity, a file shorter than what
 * was read, or a schema message that changed means the file was rewritten (reopenRecording
 * renames a new file over it; `--overwrite` truncates it), and it is read again from the start,
 * skipping the steps already yielded, so a resumed run neither repeats nor loses a row. The rows
 * a resumed run makes again after its checkpoint are the ones skipped: a follower keeps the rows
 * it saw first, while the file ends up with the recomputed ones (the same run, same seed).
 *
 * @example
 * const follower = new RecordingFollower('runs/ring.arrows');
 * setInterval(() => { for (const event of follower.poll()) console.log(event.type); }, 250);
 */
export class RecordingFollower {
  private readonly followResumes: boolean;
  private identity: string | undefined;
  /** Where the next read starts in the file. */
  private offset = 0;
  private schemaBytes: Uint8Array | undefined;
  /** Bytes after the last complete message (a message being written). */
  private pending: Uint8Array = new Uint8Array(0);
  private currentRun: RecordedRun | undefined;
  private lastYieldedStep = -1;
  private yieldedRows = 0;
  /** The end-of-stream marker was read from the file as it is now. */
  private atEnd = false;
  private stopped = false;

  constructor(
    readonly path: string,
    options: RecordingFollowerOptions = {},
  ) {
    this.followResumes = options.followResumes ?? false;
  }

  /** Following is over: the end-of-stream marker (without followResumes), `replaced`, `close()`. */
  get done(): boolean {
    return this.stopped;
  }

  /** The run, once its schema has been read. */
  get run(): RecordedRun | undefined {
    return this.currentRun;
  }

  /** Rows yielded so far. */
  get rows(): number {
    return this.yieldedRows;
  }

  /** The last step yielded (−1 before any). */
  get lastStep(): number {
    return this.lastYieldedStep;
  }

  /** Whether the file, as last read, ends with the end-of-stream marker. */
  get ended(): boolean {
    return this.atEnd;
  }

  /** Bytes held for a message not yet complete (bounded by one message plus one read). */
  get bufferedBytes(): number {
    return this.pending.length;
  }

  /** Stops following; later polls return nothing. */
  close(): void {
    this.stopped = true;
    this.pending = new Uint8Array(0);
  }

  /**
   * Looks at the file once and returns what is new. A missing file is not an error (it may not
   * be created yet, or be between a rewrite's steps): nothing is new. A damaged one throws a
   * GrngError naming the file and the byte offset, as readRecording does.
   */
  poll(): FollowEvent[] {
    if (this.stopped) return [];
    let stats: Stats;
    try {
      stats = statSync(this.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw this.cannotRead(error);
    }
    // Nothing changed since the last look: the usual case, one stat and no read.
    if (identityOf(stats) === this.identity && stats.size === this.offset) return [];
    let fd: number;
    try {
      fd = openSync(this.path, 'r');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw this.cannotRead(error);
    }
    try {
      return this.read(fd);
    } finally {
      closeSync(fd);
    }
  }

  private read(fd: number): FollowEvent[] {
    // The identity of what this descriptor reads, not of what the path named a moment before.
    const stats = fstatSync(fd);
    const identity = identityOf(stats);
    if (
      this.identity !== undefined &&
      (identity !== this.identity ||
        stats.size < this.offset ||
        (this.schemaBytes !== undefined && !this.startsWithSchema(fd)))
    )
      this.restart();
    this.identity = identity;
    const events: FollowEvent[] = [];
    while (this.offset < stats.size && !this.stopped) {
      const chunk = new Uint8Array(Math.min(CHUNK, stats.size - this.offset));
      const got = readSync(fd, chunk, 0, chunk.length, this.offset);
      if (got === 0) break;
      this.consume(chunk.subarray(0, got), events);
      this.offset += got;
    }
    return events;
  }

  /** Whether the file still begins with the schema message read before (same run, same file). */
  private startsWithSchema(fd: number): boolean {
    const schema = this.schemaBytes!;
    const head = new Uint8Array(schema.length);
    const got = readSync(fd, head, 0, head.length, 0);
    return got === head.length && head.every((byte, i) => byte === schema[i]);
  }

  /** Reads the file again from its start (it was rewritten); the steps yielded stay yielded. */
  private restart(): void {
    this.offset = 0;
    this.schemaBytes = undefined;
    this.pending = new Uint8Array(0);
    this.atEnd = false;
  }

  /** Parses `chunk` (the next bytes of the file) with what was pending, into events. */
  private consume(chunk: Uint8Array, events: FollowEvent[]): void {
    // Where `pending` starts in the file, for error offsets.
    const pendingAt = this.offset - this.pending.length;
    let bytes = concat([this.pending, chunk]);
    if (this.schemaBytes === undefined) {
      const schemaEnd = schemaMessageEnd(bytes);
      if (schemaEnd === undefined) {
        this.pending = bytes;
        return;
      }
      // Anything malformed (no continuation marker, an invalid length) fails here as
      // readRecording would fail on the file: same message, same offset.
      const head = parseRecording(bytes.subarray(0, Math.min(schemaEnd, bytes.length)), this.path);
      this.schemaBytes = bytes.slice(0, schemaEnd);
      const earlier = this.currentRun;
      if (earlier && earlier.id !== head.run.id) {
        events.push({ type: 'replaced', run: head.run });
        this.close();
        return;
      }
      if (!earlier) {
        this.currentRun = head.run;
        events.push({ type: 'run', run: head.run, schema: head.schema });
      }
      bytes = bytes.subarray(schemaEnd);
      if (bytes.length === 0) {
        this.pending = new Uint8Array(0);
        return;
      }
      return this.consumeMessages(bytes, pendingAt + schemaEnd, events);
    }
    this.consumeMessages(bytes, pendingAt, events);
  }

  /** Parses record batches (and the end marker) from `bytes`, which start at `at` in the file. */
  private consumeMessages(bytes: Uint8Array, at: number, events: FollowEvent[]): void {
    // Only whole messages are parsed: a message still being written costs no decoding, however
    // many looks it takes to arrive. Anything the framing cannot read goes to parseRecording
    // whole, which names the fault.
    const whole = wholeMessagesEnd(bytes);
    if (whole === 0) {
      this.pending = bytes;
      return;
    }
    const schema = this.schemaBytes!;
    const framed = whole === undefined ? bytes : bytes.subarray(0, whole);
    let parsed;
    try {
      parsed = parseRecording(concat([schema, framed]), this.path);
    } catch (error) {
      // parseRecording counts from the start of what it was given: the schema, then `bytes`.
      if (isGrngError(error) && typeof error.context.offset === 'number') {
        const offset = error.context.offset - schema.length + at;
        throw new GrngError(
          'invalid-data',
          error.message.replace(/ at byte \d+$/, ` at byte ${offset}`),
          { ...error.context, offset },
          { cause: error },
        );
      }
      throw error;
    }
    for (const batch of parsed.batches) {
      const fresh = this.unseen(batch);
      if (fresh) events.push({ type: 'batch', batch: fresh });
    }
    const used = parsed.truncated ? parsed.truncated.offset - schema.length : framed.length;
    // A copy: the rest of a large chunk must not stay alive behind a few pending bytes.
    this.pending = bytes.slice(used);
    if (parsed.complete) {
      this.atEnd = true;
      events.push({ type: 'end' });
      if (!this.followResumes) this.close();
    }
  }

  /** The rows of `batch` after the last step yielded (a resumed run repeats some), if any. */
  private unseen(batch: RecordBatch): RecordBatch | undefined {
    if (batch.numRows === 0) return undefined;
    const steps = batch.getChild('step')!;
    let first = 0;
    while (first < batch.numRows && (steps.get(first) as number) <= this.lastYieldedStep)
      first += 1;
    if (first === batch.numRows) return undefined;
    const fresh = first === 0 ? batch : batch.slice(first);
    this.lastYieldedStep = steps.get(batch.numRows - 1) as number;
    this.yieldedRows += fresh.numRows;
    return fresh;
  }

  private cannotRead(error: unknown): GrngError {
    return new GrngError(
      'invalid-data',
      `cannot read recording ${this.path}: ${(error as Error).message}`,
      { path: this.path },
      { cause: error },
    );
  }
}

/**
 * Where the schema message ends once enough bytes are there to tell, or undefined while they
 * are not. A malformed start is reported as "ends here" so that parseRecording names the fault.
 */
function schemaMessageEnd(bytes: Uint8Array): number | undefined {
  if (bytes.length < 8) return undefined;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = view.getInt32(4, true);
  if (view.getUint32(0, true) !== CONTINUATION || length <= 0 || length > MAX_METADATA)
    return bytes.length;
  // Arrow writes a schema message without a body: its metadata is the whole message.
  return bytes.length < 8 + length ? undefined : 8 + length;
}

/**
 * The end of the whole messages at the start of `bytes` (record batches, and an end-of-stream
 * marker with whatever follows it), from their framing alone: the 8-byte prefix, the metadata, and
 * the body length in the metadata's Message table. Undefined when the framing is not that of an
 * Arrow IPC stream (parseRecording then says what is wrong, and where).
 */
function wholeMessagesEnd(bytes: Uint8Array): number | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let offset = 0;
  while (bytes.length - offset >= 8) {
    if (view.getUint32(offset, true) !== CONTINUATION) return undefined;
    const length = view.getInt32(offset + 4, true);
    // The marker ends the stream: anything after it goes to the parser, which refuses it.
    if (length === 0) return bytes.length;
    if (length < 0 || length > MAX_METADATA) return undefined;
    const metaStart = offset + 8;
    if (metaStart + length > bytes.length) break;
    const body = bodyLengthOf(view, metaStart, metaStart + length);
    if (body === undefined) return undefined;
    if (metaStart + length + body > bytes.length) break;
    offset = metaStart + length + body;
  }
  return offset;
}

/** Message.bodyLength (field 3) of the flatbuffer in [start, end); undefined if out of bounds. */
function bodyLengthOf(view: DataView, start: number, end: number): number | undefined {
  const inside = (at: number, size: number): boolean => at >= start && at + size <= end;
  if (!inside(start, 4)) return undefined;
  const table = start + view.getUint32(start, true);
  if (!inside(table, 4)) return undefined;
  const vtable = table - view.getInt32(table, true);
  if (!inside(vtable, 4)) return undefined;
  const vtableLength = view.getUint16(vtable, true);
  if (vtableLength < 12) return 0; // no bodyLength field: no body
  if (!inside(vtable, 12)) return undefined;
  const field = view.getUint16(vtable + 10, true);
  if (field === 0) return 0;
  if (!inside(table + field, 8)) return undefined;
  const body = Number(view.getBigInt64(table + field, true));
  return Number.isSafeInteger(body) && body >= 0 ? body : undefined;
}

function identityOf(stats: Stats): string {
  return `${stats.dev}:${stats.ino}:${stats.birthtimeMs}`;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const nonEmpty = parts.filter((p) => p.length > 0);
  if (nonEmpty.length === 1) return nonEmpty[0]!;
  const out = new Uint8Array(nonEmpty.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of nonEmpty) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
