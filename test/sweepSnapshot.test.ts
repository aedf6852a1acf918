// sweepSnapshot (src/sweep/snapshot.ts): the dashboard's view of a sweep folder, built here by
// hand: sweep.json, result files, locks fresh and stale, recordings, results.json at the end.
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { metricsSchema, rowsToRecordBatch } from '../src/metrics/schema.js';
import { encodeMessages } from '../src/sinks/recordArrow.js';
import { encodeStream } from '../src/sinks/encodeStream.js';
import { FULL_RUN } from '../src/sweep/halving.js';
import { STALE_LOCK_MS } from '../src/sweep/trialLock.js';
import { sweepSnapshot } from '../src/sweep/snapshot.js';
import type { TrialResult } from '../src/sweep/types.js';
import { fakeMetricsRow, fakeRecordedRun } from './fixtures/fakeRuns.js';

const top = mkdtempSync(join(tmpdir(), 'grng-sweep-snapshot-'));
afterAll(() => rmSync(top, { recursive: true, force: true }));

const TRIALS = [
  { id: 'aaaaaaaaaaaa', settings: { seed: 1, optimizer: 'sgd', lr: 0.1 } },
  { id: 'bbbbbbbbbbbb', settings: { seed: 1, optimizer: 'sgd', lr: 0.01 } },
  { id: 'cccccccccccc', settings: { seed: 1, optimizer: 'ring', damping: 0.001 } },
  { id: 'dddddddddddd', settings: { seed: 2, optimizer: 'ring', damping: 0.001 } },
  { id: 'eeeeeeeeeeee', settings: { seed: 2, optimizer: 'sgd', lr: 0.1 } },
  { id: 'ffffffffffff', settings: { seed: 2, optimizer: 'sgd', lr: 0.01 } },
];

function sweepFolder(): string {
  const dir = mkdtempSync(join(top, 'sweep-'));
  writeFileSync(
    join(dir, 'sweep.json'),
    JSON.stringify({
      config: {
        name: 'mnist-lr',
        base: { dataset: 'synthetic' },
        metric: { name: 'testAccuracy', higherIsBetter: true },
        halving: { rungs: [20], reduction: 2 },
        checkpointEvery: 10,
      },
      trials: TRIALS.map((t) => ({ ...t, options: { dataset: 'synthetic', ...t.settings } })),
    }),
  );
  return dir;
}

const trialDir = (dir: string, id: string): string => {
  const path = join(dir, 'trials', id);
  mkdirSync(path, { recursive: true });
  return path;
};

function result(dir: string, id: string, budget: number, fields: Partial<TrialResult> = {}): void {
  const value: TrialResult = {
    id,
    status: 'done',
    steps: Math.min(budget, 60),
    budget,
    metric: 0.5,
    best: 0.6,
    testAccuracy: 0.5,
    testLoss: 1,
    finalLoss: 1,
    seconds: 2,
    stepsPerSecond: 10,
    ranBy: 'host:1',
    ...fields,
  };
  writeFileSync(join(trialDir(dir, id), `result-${budget}.json`), JSON.stringify(value));
}

function lock(dir: string, id: string, ageMs = 0): void {
  const path = join(trialDir(dir, id), 'lock');
  writeFileSync(path, 'host:1:0');
  const at = new Date(Date.now() - ageMs);
  utimesSync(path, at, at);
}

describe('sweepSnapshot', () => {
  it('is undefined for a folder without sweep.json', () => {
    expect(sweepSnapshot(mkdtempSync(join(top, 'plain-')))).toBeUndefined();
  });

  it('reads each trial: pending, running (fresh lock), done at its rung, failed; run ids from recordings', () => {
    const dir = sweepFolder();
    const startedAt = Date.now();
    // aaaa: both rungs done (the whole run).
    result(dir, 'aaaaaaaaaaaa', 20, { steps: 20, metric: 0.4 });
    result(dir, 'aaaaaaaaaaaa', FULL_RUN, { steps: 60, metric: 0.9, best: 0.92, seconds: 6 });
    // bbbb: rung 20 done, now promoted and running (a fresh lock), its recording being written.
    result(dir, 'bbbbbbbbbbbb', 20, { steps: 20, metric: 0.7 });
    lock(dir, 'bbbbbbbbbbbb');
    const schema = metricsSchema(fakeRecordedRun('run-b'));
    const rows = Array.from({ length: 30 }, (_, i) => fakeMetricsRow(i));
    writeFileSync(
      join(trialDir(dir, 'bbbbbbbbbbbb'), 'run.arrows'),
      encodeMessages(rowsToRecordBatch(schema, rows), true),
    );
    // cccc: failed at rung 20.
    result(dir, 'cccccccccccc', 20, {
      status: 'failed',
      steps: 0,
      metric: null,
      best: null,
      error: 'grng: loss is NaN at step 3',
    });
    // dddd: nothing yet but a stale lock (its runner died), and a recording with half a schema.
    lock(dir, 'dddddddddddd', 2 * STALE_LOCK_MS);
    writeFileSync(
      join(trialDir(dir, 'dddddddddddd'), 'run.arrows'),
      encodeMessages(rowsToRecordBatch(schema, rows), true).subarray(0, 50),
    );
    // eeee: rung 20 done, waiting for the rung's promotions; ffff: nothing at all.
    result(dir, 'eeeeeeeeeeee', 20, { steps: 20, metric: 0.3 });
    writeFileSync(
      join(trialDir(dir, 'eeeeeeeeeeee'), 'run.arrows'),
      encodeStream([rowsToRecordBatch(metricsSchema(fakeRecordedRun('run-e')), rows)]),
    );

    const snapshot = sweepSnapshot(dir)!;
    expect(snapshot.name).toBe('mnist-lr');
    expect(snapshot.metric).toBe('testAccuracy');
    expect(snapshot.higherIsBetter).toBe(true);
    expect(snapshot.settings).toEqual(['optimizer', 'lr', 'damping', 'seed']);
    const brief = snapshot.trials.map((t) => [t.trial.slice(0, 4), t.status, t.rung, t.runId]);
    expect(brief).toEqual([
      ['aaaa', 'done', FULL_RUN, null],
      ['bbbb', 'running', 20, 'run-b'],
      ['cccc', 'failed', 20, null],
      ['dddd', 'pending', null, null],
      ['eeee', 'done', 20, 'run-e'],
      ['ffff', 'pending', null, null],
    ]);
    expect(snapshot.trials[0]).toEqual({
      trial: 'aaaaaaaaaaaa',
      runId: null,
      status: 'done',
      rung: FULL_RUN,
      settings: { seed: 1, optimizer: 'sgd', lr: 0.1 },
      steps: 60,
      metric: 0.9,
      best: 0.92,
      seconds: 6,
      stepsPerSecond: 10,
    });
    // A running trial shows its previous rung's numbers.
    expect(snapshot.trials[1]).toMatchObject({ steps: 20, metric: 0.7 });
    expect(snapshot.trials[2]).toMatchObject({
      metric: null,
      best: null,
      error: 'grng: loss is NaN at step 3',
    });
    expect(snapshot.trials[3]).toMatchObject({
      steps: null,
      metric: null,
      best: null,
      seconds: null,
      stepsPerSecond: null,
    });
    expect('error' in snapshot.trials[0]!).toBe(false);
    // Fresh each call: the lock released, bbbb's rung-2 result is read.
    result(dir, 'bbbbbbbbbbbb', FULL_RUN, { steps: 60, metric: 0.95 });
    rmSync(join(trialDir(dir, 'bbbbbbbbbbbb'), 'lock'));
    expect(sweepSnapshot(dir)!.trials[1]).toMatchObject({
      status: 'done',
      rung: FULL_RUN,
      metric: 0.95,
    });
    expect(Date.now() - startedAt).toBeLessThan(2_000);
  });

  it('once the sweep is finished, results.json says which trials were stopped at a rung', () => {
    const dir = sweepFolder();
    for (const t of TRIALS) result(dir, t.id, 20, { steps: 20 });
    for (const t of TRIALS.slice(0, 2)) result(dir, t.id, FULL_RUN, { steps: 60 });
    writeFileSync(
      join(dir, 'results.json'),
      JSON.stringify(
        TRIALS.map((t, i) => ({
          trial: t.id,
          status: i < 2 ? 'done' : i === 5 ? 'failed' : 'stopped at 20',
        })),
      ),
    );
    const snapshot = sweepSnapshot(dir)!;
    expect(snapshot.trials.map((t) => [t.status, t.rung, t.steps])).toEqual([
      ['done', FULL_RUN, 60],
      ['done', FULL_RUN, 60],
      ['stopped', 20, 20],
      ['stopped', 20, 20],
      ['stopped', 20, 20],
      ['failed', 20, 20],
    ]);
  });

  it('a damaged sweep.json is one clear error naming the file', () => {
    const dir = mkdtempSync(join(top, 'damaged-'));
    writeFileSync(join(dir, 'sweep.json'), '{"config": ');
    expect(() => sweepSnapshot(dir)).toThrow(/sweep\.json: not JSON/);
    writeFileSync(join(dir, 'sweep.json'), '{"config": {}, "trials": []}');
    expect(() => sweepSnapshot(dir)).toThrow(/sweep\.json: not a sweep file/);
  });
});
