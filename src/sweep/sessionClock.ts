import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeTextAtomically } from '../sinks/writeFileAtomically.js';

/** One `grng sweep` session in sweep-time.json: its wall clock and where it ran. */
export interface SweepSession {
  readonly seconds: number;
  readonly workers: number | 'queue';
  readonly host: string;
  readonly cpus: number;
  /**
   * The processor's model name; absent in sessions recorded before it was (hosts can share a
   * name: two machines called "vm", of 2 and 16 cores, ran the report's sweeps).
   */
  readonly cpu?: string;
  /** How `seconds` was measured, when not by the session itself (e.g. from trial file times). */
  readonly measured?: string;
}

export const SESSION_FILE = 'sweep-time.json';

/** How often a running session's entry is rewritten: what a killed session's time can miss. */
export const SESSION_TICK_MS = 15_000;

/** The sessions a sweep folder records (none when the file is absent). */
export function readSessions(dir: string): SweepSession[] {
  const path = join(dir, SESSION_FILE);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as SweepSession[]) : [];
}

/**
 * Adds this session to the sweep folder's sweep-time.json at once and keeps its seconds current
 * every {@link SESSION_TICK_MS}, so a report can say what a sweep cost even when a session ends by
 * a signal or a crash (a sweep stopped and resumed over days adds up its sessions, not the days).
 * `stop()` writes the final time.
 *
 * @example
 * const clock = startSessionClock(dir, { workers: 2, host: hostname(), cpus: 2 });
 * try { await run(); } finally { clock.stop(); }
 */
export function startSessionClock(
  dir: string,
  where: Omit<SweepSession, 'seconds' | 'measured'>,
): { stop(): void } {
  const started = Date.now();
  const earlier = readSessions(dir);
  const write = (): void => {
    const seconds = Math.round((Date.now() - started) / 100) / 10;
    writeTextAtomically(
      join(dir, SESSION_FILE),
      `${JSON.stringify([...earlier, { seconds, ...where }], null, 2)}\n`,
    );
  };
  write();
  const timer = setInterval(write, SESSION_TICK_MS);
  // A ticking clock must not keep a finished command alive.
  timer.unref();
  return {
    stop(): void {
      clearInterval(timer);
      write();
    },
  };
}
