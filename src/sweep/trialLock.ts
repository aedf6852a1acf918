import { readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * A lock not touched for this long belongs to a runner that died (its machine, its process).
 * GRNG_TRIAL_LOCK_STALE_MS shortens it, so tests of a killed worker need not wait 30 s.
 */
export const STALE_LOCK_MS =
  Number(process.env.GRNG_TRIAL_LOCK_STALE_MS) > 0
    ? Number(process.env.GRNG_TRIAL_LOCK_STALE_MS)
    : 30_000;
/** Several heartbeats per stale period, so a live runner's lock never looks stale. */
export const LOCK_HEARTBEAT_MS = Math.min(5_000, STALE_LOCK_MS / 3);

/** A lock holder's name: host, process and a start time, so two runs of one process differ. */
export function lockOwnerName(): string {
  return `${hostname()}:${process.pid}:${Date.now()}`;
}

/**
 * Takes the lock file at `path` for `owner`: created exclusively (two runners never both get it),
 * or renewed when `owner` already holds it, or taken over when its holder has not touched it for
 * STALE_LOCK_MS. False while another owner holds a fresh one. The same rule serves a runner on
 * this machine (the file in the shared sweep folder) and the coordinator answering runners on
 * other machines (src/sweep/trialFiles.ts), so both kinds can meet on one trial.
 *
 * @example
 * if (acquireLock('trials/3f2a9c1b0d4e/lock', lockOwnerName())) runIt();
 */
export function acquireLock(path: string, owner: string): boolean {
  try {
    writeFileSync(path, owner, { flag: 'wx' });
    return true;
  } catch {
    if (renewLock(path, owner)) return true;
    let age: number;
    try {
      age = Date.now() - statSync(path).mtimeMs;
    } catch {
      return false; // released just now: the next round takes it
    }
    if (age < STALE_LOCK_MS) return false;
    rmSync(path, { force: true });
    try {
      writeFileSync(path, owner, { flag: 'wx' });
      return true;
    } catch {
      return false; // another runner took it over first
    }
  }
}

/** Touches the lock if `owner` holds it; false when it is gone or another owner's. */
export function renewLock(path: string, owner: string): boolean {
  if (lockHolder(path) !== owner) return false;
  const now = new Date();
  try {
    utimesSync(path, now, now);
    return true;
  } catch {
    return false;
  }
}

/** Removes the lock if `owner` holds it (a lock taken over by another runner is left alone). */
export function releaseLock(path: string, owner: string): void {
  if (lockHolder(path) === owner) rmSync(path, { force: true });
}

/** Who holds the lock now, if anyone. */
export function lockHolder(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * Takes the lock for this process and keeps it fresh with a heartbeat until the returned
 * release is called; undefined while another runner holds a fresh one.
 */
export function holdLock(path: string): (() => void) | undefined {
  const owner = lockOwnerName();
  if (!acquireLock(path, owner)) return undefined;
  const heartbeat = setInterval(() => {
    // False when a runner took it over: this runner's result still counts (same run).
    renewLock(path, owner);
  }, LOCK_HEARTBEAT_MS);
  heartbeat.unref();
  return () => {
    clearInterval(heartbeat);
    releaseLock(path, owner);
  };
}
