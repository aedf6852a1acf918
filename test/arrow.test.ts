import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC as flechetteFromIPC } from '@uwdata/flechette';
import { tableFromIPC } from 'apache-arrow';
import fc from 'fast-check';
import { from, lastValueFrom, throwError, concat, toArray } from 'rxjs';
import { describe, expect, it } from 'vitest';
import { isGrngError } from '../src/errors.js';
import { arrowSink } from '../src/sinks/arrowSink.js';
import { metricsSchema, recordBatchToRows, type RecordedRun } from '../src/metrics/schema.js';
import { parseRecording, readRecording } from '../src/streams/readRecording.js';
import { replayArrow } from '../src/streams/replayArrow.js';
import type { MetricsRow } from '../src/types.js';
import { fakeMetricsRow } from './fixtures/fakeRuns.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-arrow-'));
const run = (id: string, extra: Partial<RecordedRun> = {}): RecordedRun => ({
  id,
  label: id,
  optimizer: 'ring',
  optimizerOptions: { rho: 0.1 },
  model: 'mlp:4-3',
  dataset: 'synthetic',
  backend: 'cpu',
  seed: 1,
  batchSize: 8,
  totalSteps: 100,
  batchesPerEpoch: 10,
  version: 'test',
  startedAt: '2026-11-28T00:00:00.000Z',
  ...extra,
});
const row = fakeMetricsRow;
const rows = (n: number, wallOffset = 0) => Array.from({ length: n }, (_, i) => row(i, wallOffset));

async function record(path: string, data: MetricsRow[], r = run('r1')): Promise<void> {
  await lastValueFrom(
    from(data).pipe(
      arrowSink(r, { record: path, batching: { maxRows: 16, maxMs: 1000 } }),
      toArray(),
    ),
  );
}

const normalise = (r: MetricsRow) => JSON.parse(JSON.stringify(r));

describe('Arrow recordings', () => {
  it('round-trip rows exactly, readable by apache-arrow and by flechette', async () => {
    const path = join(dir, 'roundtrip.arrows');
    const data = rows(100);
    await record(path, data);
    const rec = readRecording(path);
    expect(rec.complete).toBe(true);
    expect(rec.truncated).toBeUndefined();
    expect(rec.run).toEqual(run('r1'));
    expect(rec.batches).toHaveLength(Math.ceil(100 / 16));
    expect(rec.batches.flatMap((b) => recordBatchToRows(b)).map(normalise)).toEqual(
      data.map(normalise),
    );
    const bytes = readFileSync(path);
    const arrowTable = tableFromIPC(bytes);
    expect(arrowTable.numRows).toBe(100);
    const flechette = flechetteFromIPC(bytes, { useProxy: false } as never);
    expect(flechette.numRows).toBe(100);
    const flat = flechette.toArray() as Array<Record<string, unknown>>;
    expect(flat[42]).toMatchObject({
      step: 42,
      loss: data[42]!.loss,
      damping: data[42]!.diagnostics.damping,
      testAccuracy: null,
    });
    expect(flat[49]).toMatchObject({ testAccuracy: 0.8, testLoss: 0.5 });
    expect(JSON.parse(flechette.schema.metadata!.get('grng.run')!)).toEqual(run('r1'));
  });

  it('never overwrites a recording unless asked', async () => {
    const path = join(dir, 'exists.arrows');
    await record(path, rows(3));
    const before = readFileSync(path);
    let error: unknown;
    await record(path, rows(5)).catch((e) => (error = e));
    expect(isGrngError(error) && /already exists/.test((error as Error).message)).toBe(true);
    expect(readFileSync(path)).toEqual(before);
    await lastValueFrom(
      from(rows(5)).pipe(arrowSink(run('r1'), { record: path, overwrite: true }), toArray()),
    );
    expect(readRecording(path).rows).toBe(5);
  });

  it('keeps what was recorded when the run fails', async () => {
    const path = join(dir, 'failed.arrows');
    let error: unknown;
    await lastValueFrom(
      concat(
        from(rows(20)),
        throwError(() => new Error('boom')),
      ).pipe(arrowSink(run('r1'), { record: path, batching: { maxRows: 8 } }), toArray()),
    ).catch((e) => (error = e));
    expect((error as Error).message).toBe('boom');
    const rec = readRecording(path);
    expect(rec.rows).toBe(20);
    expect(rec.complete).toBe(true);
  });

  it('reads a truncated file up to its last complete batch, at every cut point', async () => {
    const path = join(dir, 'cut.arrows');
    await record(path, rows(64));
    const bytes = readFileSync(path);
    const schemaEnd = 8 + new DataView(bytes.buffer, bytes.byteOffset).getInt32(4, true);
    let partial = 0;
    for (let cut = 1; cut < bytes.length; cut++) {
      let rec;
      try {
        rec = parseRecording(bytes.subarray(0, cut), 'cut');
      } catch (error) {
        // Only a cut inside the schema message may fail, and with the documented error.
        expect(isGrngError(error)).toBe(true);
        expect((error as Error).message).toMatch(/cut: .* at byte \d+/);
        expect(cut).toBeLessThan(schemaEnd);
        continue;
      }
      partial += 1;
      expect(rec.rows).toBeLessThanOrEqual(64);
      expect(rec.rows % 16).toBe(0);
      if (cut < bytes.length - 8) expect(rec.complete).toBe(false);
    }
    expect(partial).toBeGreaterThan(bytes.length / 2);
  });

  it('bit flips give a partial read or the documented error, never a crash or hang', async () => {
    const path = join(dir, 'flip.arrows');
    await record(path, rows(48));
    const bytes = readFileSync(path);
    fc.assert(
      fc.property(
        fc.array(fc.record({ at: fc.nat(bytes.length - 1), bit: fc.nat(7) }), {
          minLength: 1,
          maxLength: 4,
        }),
        (flips) => {
          const damaged = Uint8Array.from(bytes);
          for (const { at, bit } of flips) damaged[at]! ^= 1 << bit;
          try {
            const rec = parseRecording(damaged, 'flip');
            expect(rec.rows).toBeLessThanOrEqual(48);
          } catch (error) {
            expect(isGrngError(error)).toBe(true);
            expect((error as Error).message).toMatch(/^flip: .* at byte \d+$/);
          }
        },
      ),
      { numRuns: 1000 },
    );
  });

  it('rejects files that are not grng recordings, naming file, offset and expectation', () => {
    const json = join(dir, 'not-arrow.arrows');
    writeFileSync(json, '{"hello": "world"}');
    expect(() => readRecording(json)).toThrow(
      /not-arrow.arrows: expected the Arrow IPC continuation marker 0xFFFFFFFF, found 0x[0-9a-f]{8} at byte 0/,
    );
    const empty = join(dir, 'empty.arrows');
    writeFileSync(empty, '');
    expect(() => readRecording(empty)).toThrow(/empty file/);
    expect(() => readRecording(join(dir, 'missing.arrows'))).toThrow(/cannot read recording/);
  });

  it('survives SIGKILL of the recording process: readable up to the last complete batch', async () => {
    for (let attempt = 0; attempt < 3; attempt++) {
      const path = join(dir, `killed-${attempt}.arrows`);
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', 'test/fixtures/recordForever.ts', path],
        { cwd: new URL('..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      await new Promise<void>((resolve) => child.stdout!.once('data', () => resolve()));
      await new Promise((r) => setTimeout(r, 150 + attempt * 120));
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      expect(existsSync(path) && statSync(path).size > 0).toBe(true);
      const rec = readRecording(path);
      expect(rec.complete).toBe(false);
      expect(rec.rows).toBeGreaterThan(0);
      const steps = rec.batches.flatMap((b) => recordBatchToRows(b)).map((r) => r.step);
      expect(steps).toEqual(steps.map((_, i) => i));
    }
  });
});

describe('replayArrow', () => {
  it('merges several recordings in wall-time order, as fast as possible', async () => {
    const a = join(dir, 'a.arrows');
    const b = join(dir, 'b.arrows');
    await record(a, rows(30), run('a'));
    await record(b, rows(30, 5), run('b'));
    const replayed = await lastValueFrom(replayArrow([a, b]).pipe(toArray()));
    expect(replayed).toHaveLength(60);
    expect(replayed.map((r) => r.run.id).slice(0, 4)).toEqual(['a', 'b', 'a', 'b']);
    const walls = replayed.map((r) => r.row.wallMs);
    expect(walls).toEqual([...walls].sort((x, y) => x - y));
  });

  it('keeps the recorded pace × speed', async () => {
    const path = join(dir, 'paced.arrows');
    await record(path, rows(31)); // 0 … 300 ms of recorded time
    const started = performance.now();
    await lastValueFrom(replayArrow(path, { speed: 2 }).pipe(toArray()));
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThan(130);
    expect(elapsed).toBeLessThan(1000);
  });

  it('warns about a truncated tail and fails on a corrupt file before any row', async () => {
    const path = join(dir, 'truncated.arrows');
    await record(path, rows(40));
    const bytes = readFileSync(path);
    writeFileSync(path, bytes.subarray(0, bytes.length - 30));
    const warnings: string[] = [];
    const replayed = await lastValueFrom(
      replayArrow(path, { onWarning: (m) => warnings.push(m) }).pipe(toArray()),
    );
    expect(replayed.length).toBe(32);
    expect(warnings[0]).toMatch(/truncated at byte \d+ .* read 32 rows/);
    const bad = join(dir, 'bad.arrows');
    writeFileSync(bad, 'garbage!garbage!');
    const seen: unknown[] = [];
    let error: unknown;
    await lastValueFrom(replayArrow([path, bad]).pipe(toArray())).then(
      (r) => seen.push(...r),
      (e) => (error = e),
    );
    expect(seen).toHaveLength(0);
    expect(isGrngError(error) && /bad.arrows: .* at byte 0/.test((error as Error).message)).toBe(
      true,
    );
  });
});
