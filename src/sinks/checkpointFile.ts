import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GrngError } from '../errors.js';
import { writeFileAtomically } from './writeFileAtomically.js';

/** The one file of a checkpoint folder; replaced atomically by every save. */
export const CHECKPOINT_FILE = 'checkpoint.grng';
const MAGIC = 'GRNGCKPT';
const FORMAT_VERSION = 1;
/** magic (8) + format version (u32) + header length (u32). */
const PREAMBLE = 16;
/** A header is JSON describing the run and the blobs; anything near this is not ours. */
const MAX_HEADER = 64 << 20;

/** A binary blob of a checkpoint: where its bytes lie in the payload. */
export interface BlobRef {
  readonly dtype: 'float32' | 'int32';
  readonly offset: number;
  readonly length: number;
}

/** A checkpoint as stored: a JSON header (with blob references) and the blobs' bytes. */
export interface CheckpointFile<H> {
  readonly header: H;
  readonly blobs: readonly (Float32Array | Int32Array)[];
}

/**
 * Writes a checkpoint so that a crash at any moment leaves either the previous checkpoint or
 * the new one, never a mix: the bytes go to a temporary file in the same folder, are fsynced,
 * renamed over `checkpoint.grng` (atomic on POSIX), and the folder is fsynced so the rename
 * itself survives a power loss. Layout: "GRNGCKPT", u32 format version, u32 header length,
 * header JSON (with the payload's SHA-256), payload (blobs, 8-byte aligned).
 *
 * @example
 * writeCheckpointFile('runs/ckpt', { header: { step: 99 }, blobs: [new Float32Array(4)] });
 */
export function writeCheckpointFile<H extends object>(
  dir: string,
  checkpoint: CheckpointFile<H>,
): string {
  const refs: BlobRef[] = [];
  let size = 0;
  for (const blob of checkpoint.blobs) {
    refs.push({
      dtype: blob instanceof Int32Array ? 'int32' : 'float32',
      offset: size,
      length: blob.length,
    });
    size += Math.ceil(blob.byteLength / 8) * 8;
  }
  const payload = new Uint8Array(size);
  checkpoint.blobs.forEach((blob, i) =>
    payload.set(new Uint8Array(blob.buffer, blob.byteOffset, blob.byteLength), refs[i]!.offset),
  );
  const sha256 = createHash('sha256').update(payload).digest('hex');
  const header = Buffer.from(
    JSON.stringify({ ...checkpoint.header, blobs: refs, payloadBytes: size, sha256 }),
    'utf8',
  );
  const preamble = Buffer.alloc(PREAMBLE);
  preamble.write(MAGIC, 0, 'latin1');
  preamble.writeUInt32LE(FORMAT_VERSION, 8);
  preamble.writeUInt32LE(header.length, 12);

  const path = join(dir, CHECKPOINT_FILE);
  try {
    mkdirSync(dir, { recursive: true });
    writeFileAtomically(path, [preamble, header, payload]);
  } catch (error) {
    throw new GrngError(
      'invalid-option',
      `cannot write checkpoint ${path}: ${(error as Error).message}`,
      { option: 'checkpointDir', path },
      { cause: error },
    );
  }
  return path;
}

/**
 * Reads and verifies a checkpoint folder: every length is checked against the file before use
 * and the payload against its SHA-256, so a damaged or foreign file is one GrngError naming the
 * file, the byte offset and what was expected — never a crash or a huge allocation.
 *
 * @example
 * const { header, blobs } = readCheckpointFile<{ step: number }>('runs/ckpt');
 */
export function readCheckpointFile<H>(dir: string): CheckpointFile<H> & { readonly path: string } {
  const path = join(dir, CHECKPOINT_FILE);
  const fail = (offset: number, message: string): never => {
    throw new GrngError('invalid-data', `checkpoint ${path}: ${message} at byte ${offset}`, {
      option: 'resume',
      path,
      offset,
    });
  };
  let bytes: Buffer;
  try {
    if (statSync(dir).isFile()) throw new Error('is a file, expected the checkpoint folder');
    bytes = readFileSync(path);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? `no checkpoint there (${CHECKPOINT_FILE} not found)`
        : (error as Error).message;
    throw new GrngError(
      'invalid-option',
      `cannot read checkpoint folder ${dir}: ${why}`,
      { option: 'resume', path },
      { cause: error },
    );
  }
  if (bytes.length < PREAMBLE)
    fail(0, `file of ${bytes.length} bytes is too short for a checkpoint`);
  if (bytes.toString('latin1', 0, 8) !== MAGIC) fail(0, `expected the magic "${MAGIC}"`);
  const version = bytes.readUInt32LE(8);
  if (version !== FORMAT_VERSION)
    fail(
      8,
      `format version ${version} is not supported (this grng reads version ${FORMAT_VERSION})`,
    );
  const headerLength = bytes.readUInt32LE(12);
  if (headerLength > MAX_HEADER || PREAMBLE + headerLength > bytes.length)
    fail(12, `header length ${headerLength} runs past the end of the file (${bytes.length} bytes)`);
  let header: H & { blobs?: unknown; payloadBytes?: unknown; sha256?: unknown };
  try {
    header = JSON.parse(bytes.toString('utf8', PREAMBLE, PREAMBLE + headerLength)) as typeof header;
  } catch (error) {
    return fail(PREAMBLE, `header is not valid JSON (${(error as Error).message})`);
  }
  const payloadStart = PREAMBLE + headerLength;
  const payload = bytes.subarray(payloadStart);
  if (
    typeof header !== 'object' ||
    header === null ||
    !Array.isArray(header.blobs) ||
    header.payloadBytes !== payload.length
  ) {
    fail(
      payloadStart,
      `expected ${String((header as { payloadBytes?: unknown } | null)?.payloadBytes)} payload bytes and the blob list, found ${payload.length} bytes`,
    );
  }
  const sha256 = createHash('sha256').update(payload).digest('hex');
  if (sha256 !== header.sha256)
    fail(payloadStart, 'payload does not match its SHA-256 (the file is damaged)');
  const blobs = (header.blobs as unknown[]).map((ref, i) => {
    const { dtype, offset, length } = (ref ?? {}) as Partial<BlobRef>;
    const ok =
      (dtype === 'float32' || dtype === 'int32') &&
      Number.isInteger(offset) &&
      Number.isInteger(length) &&
      offset! >= 0 &&
      length! >= 0 &&
      offset! % 4 === 0 &&
      offset! + length! * 4 <= payload.length;
    if (!ok)
      fail(
        payloadStart,
        `blob ${i} ${JSON.stringify(ref)} does not fit the ${payload.length}-byte payload`,
      );
    // Copy: the file buffer's alignment is not guaranteed for typed-array views.
    const copy = payload.buffer.slice(
      payload.byteOffset + offset!,
      payload.byteOffset + offset! + length! * 4,
    );
    return dtype === 'int32' ? new Int32Array(copy) : new Float32Array(copy);
  });
  return { header: header as H, blobs, path };
}

/**
 * Checks, before training starts, that checkpoints can be written to `dir` (created if missing),
 * so a bad folder is an error now rather than after the first epoch.
 *
 * @example
 * prepareCheckpointDir('runs/ckpt');
 */
export function prepareCheckpointDir(dir: string): void {
  const fail = (why: string, cause?: unknown): never => {
    throw new GrngError(
      'invalid-option',
      `invalid --checkpoint-dir ${JSON.stringify(dir)}: ${why}`,
      { option: 'checkpointDir', path: dir },
      { cause },
    );
  };
  if (dir.trim() === '') fail('expected a folder path');
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    fail(
      (error as NodeJS.ErrnoException).code === 'EEXIST'
        ? 'it is a file, expected a folder'
        : (error as Error).message,
      error,
    );
  }
  if (!statSync(dir).isDirectory()) fail('it is a file, expected a folder');
}

/** True when `dir` holds a checkpoint (so starting a new run there would replace it). */
export function hasCheckpoint(dir: string): boolean {
  try {
    return statSync(join(dir, CHECKPOINT_FILE)).isFile();
  } catch {
    return false;
  }
}
