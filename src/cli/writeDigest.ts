import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { sweepDigest, type SweepData } from '../report/sweepData.js';
import { writeTextAtomically } from '../sinks/writeFileAtomically.js';

/**
 * Writes a sweep's digest (report/sweepData.ts) to `path` unless the same text is there, as both
 * `grng sweep` (at a report sweep's end) and `grng report` (on reading a folder) do; true when
 * it wrote.
 *
 * @example
 * if (writeDigest(sweep, digestPath(configPath, sweep.config.name))) console.log('digest written');
 */
export function writeDigest(sweep: SweepData, path: string): boolean {
  const text = sweepDigest(sweep);
  if (existsSync(path) && readFileSync(path, 'utf8') === text) return false;
  mkdirSync(dirname(path), { recursive: true });
  writeTextAtomically(path, text);
  return true;
}
