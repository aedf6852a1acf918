import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { readSessions, SESSION_TICK_MS, startSessionClock } from '../src/sweep/sessionClock.js';

describe("a sweep session's clock (sweep-time.json)", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'grng-session-'));
    vi.useFakeTimers({ now: 0, toFake: ['Date', 'setInterval', 'clearInterval'] });
  });
  afterEach(() => {
    vi.useRealTimers();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a session killed without stopping keeps its time to the last tick; the next session adds its own', () => {
    const where = { workers: 2, host: 'vm', cpus: 2 } as const;
    startSessionClock(dir, where);
    expect(readSessions(dir)).toEqual([{ seconds: 0, ...where }]);
    vi.advanceTimersByTime(3 * SESSION_TICK_MS + 4_000);
    // Killed here: its timer dies with its process, and no stop() runs. The file holds the last
    // tick's time, 45 s, not 0 and not nothing.
    vi.clearAllTimers();
    expect(readSessions(dir)).toEqual([{ seconds: 45, ...where }]);
    const resumed = startSessionClock(dir, { ...where, workers: 1 });
    vi.advanceTimersByTime(12_300);
    resumed.stop();
    expect(readSessions(dir)).toEqual([
      { seconds: 45, ...where },
      { seconds: 12.3, ...where, workers: 1 },
    ]);
    // Stopped means stopped: no later tick rewrites it.
    vi.advanceTimersByTime(5 * SESSION_TICK_MS);
    expect(readSessions(dir).at(-1)!.seconds).toBe(12.3);
  });
});
