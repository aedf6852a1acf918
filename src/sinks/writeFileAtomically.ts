import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/**
 * Replaces `path` with `parts` so that a crash at any moment leaves the old file or the new one,
 * never a mix: the bytes go to a temporary file beside it, are fsynced, and the temporary file is
 * renamed over `path` (atomic on POSIX); the folder is fsynced so the rename survives power loss.
 * The temporary file is removed if anything fails, and the error is rethrown.
 *
 * @example
 * writeFileAtomically('runs/ckpt/checkpoint.grng', [header, payload]);
 */
export function writeFileAtomically(path: string, parts: readonly Uint8Array[]): void {
  const temporary = `${path}.${process.pid}.tmp`;
  try {
    const fd = openSync(temporary, 'w');
    try {
      for (const part of parts) {
        let offset = 0;
        while (offset < part.length) offset += writeSync(fd, part, offset, part.length - offset);
      }
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, path);
  } catch (error) {
    rmSync(temporary, { force: true });
    throw error;
  }
  syncFolder(dirname(path));
}

function syncFolder(dir: string): void {
  let fd: number | undefined;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems cannot fsync a folder; the rename is still atomic there.
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/**
 * Text (UTF-8) written as {@link writeFileAtomically} writes bytes.
 *
 * @example
 * writeTextAtomically('runs/sweeps/a/results.json', JSON.stringify(rows));
 */
export function writeTextAtomically(path: string, text: string): void {
  writeFileAtomically(path, [Buffer.from(text, 'utf8')]);
}
