// Recording durability (issue 6): a recorder killed at any moment leaves a file readable to its
// last complete batch, and a damaged recording — cut, bit-flipped, overwritten, spliced, or with
// absurd length fields — is read partially or rejected with the documented GrngError, never a
// crash, hang or allocation beyond the file's size. Figures: GRNG_LONG_TESTS=1 runs 20 kills of
// the recorder fixture and 8 of a real `grng train`; otherwise 5 and 2.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { tableFromIPC, type RecordBatch } from 'apache-arrow';
import fc from 'fast-check';
import { from, lastValueFrom, timeout, toArray } from 'rxjs';
import seedrandom from 'seedrandom';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { isGrngError, type GrngError } from '../src/errors.js';
import { arrowSink } from '../src/sinks/arrowSink.js';
import { recordBatchToRows, type RecordedRun } from '../src/metrics/schema.js';
import { parseRecording, readRecording, type Recording } from '../src/streams/readRecording.js';
import { replayArrow, type ReplayedRow } from '../src/streams/replayArrow.js';
import type { MetricsRow } from '../src/types.js';
import { fakeMetricsRow } from './fixtures/fakeRuns.js';

const ROOT = new URL('..', import.meta.url).pathname;
const BIN = join(ROOT, 'bin/grng.js');
const LONG = process.env.GRNG_LONG_TESTS === '1';
const FIXTURE_KILLS = LONG ? 20 : 5;
const TRAIN_KILLS = LONG ? 8 : 2;
// Fixed seeds keep a failing case reproducible for whoever sees it; FC_SEED explores others.
const FC_SEED = Number(process.env.FC_SEED ?? 6004);
const CASES = 1000;
const CASE_MS = 200;
const EOS = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
const dir = mkdtempSync(join(tmpdir(), 'grng-durability-'));

// A real collection between measurements, so heap figures are not just garbage not yet freed.
setFlagsFromString('--expose-gc');
const collectGarbage = runInNewContext('gc') as () => void;

// A copy of its own (not a view into Buffer's pool), as the files read back are.
const concatBytes = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));
const escapeRegExp = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const normalise = (row: MetricsRow): unknown => JSON.parse(JSON.stringify(row));
const rowsOf = (batches: readonly RecordBatch[]) =>
  batches.flatMap((b) => recordBatchToRows(b)).map(normalise);
const rowJsonOf = (batches: readonly RecordBatch[]) =>
  batches.flatMap((b) => recordBatchToRows(b)).map((row) => JSON.stringify(row));

// ---------------------------------------------------------------------------------------------
// An independent reading of intact files: where each message starts and ends and where its
// length fields are, by walking the flatbuffers directly (not through the reader under test).

interface Table {
  field(index: number): number | undefined;
  ref(index: number): number | undefined;
}

function flatTable(view: DataView, at: number): Table {
  const vtable = at - view.getInt32(at, true);
  const vtableLength = view.getUint16(vtable, true);
  const field = (index: number): number | undefined => {
    const entry = 4 + 2 * index;
    if (entry >= vtableLength) return undefined;
    const offset = view.getUint16(vtable + entry, true);
    return offset === 0 ? undefined : at + offset;
  };
  const ref = (index: number): number | undefined => {
    const pos = field(index);
    return pos === undefined ? undefined : pos + view.getUint32(pos, true);
  };
  return { field, ref };
}

interface LengthField {
  readonly at: number;
  readonly width: 4 | 8;
  readonly what: string;
}

interface Message {
  readonly kind: 'schema' | 'batch' | 'end';
  readonly offset: number;
  readonly end: number;
  /** Rows of the batches before this message, and in it. */
  readonly rowsBefore: number;
  readonly rows: number;
  readonly lengthFields: readonly LengthField[];
}

function scanIntact(bytes: Uint8Array): Message[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const messages: Message[] = [];
  let offset = 0;
  let rowsBefore = 0;
  while (offset < bytes.length) {
    const metadataLength = view.getInt32(offset + 4, true);
    const fields: LengthField[] = [{ at: offset + 4, width: 4, what: 'metadata length' }];
    if (metadataLength === 0) {
      messages.push({
        kind: 'end',
        offset,
        end: offset + 8,
        rowsBefore,
        rows: 0,
        lengthFields: fields,
      });
      offset += 8;
      continue;
    }
    const metaStart = offset + 8;
    const message = flatTable(view, metaStart + view.getUint32(metaStart, true));
    const bodyAt = message.field(3);
    const bodyLength = bodyAt === undefined ? 0 : Number(view.getBigInt64(bodyAt, true));
    if (bodyAt !== undefined) fields.push({ at: bodyAt, width: 8, what: 'body length' });
    const headerType = view.getUint8(message.field(1)!);
    const header = flatTable(view, message.ref(2)!);
    const vectorFields = (
      vectorAt: number | undefined,
      what: string,
      each: (at: number, i: number) => void,
    ): void => {
      if (vectorAt === undefined) return;
      fields.push({ at: vectorAt, width: 4, what: `${what} count` });
      const n = view.getUint32(vectorAt, true);
      for (let i = 0; i < n; i++) each(vectorAt + 4, i);
    };
    let rows = 0;
    if (headerType === 3) {
      rows = Number(view.getBigInt64(header.field(0)!, true));
      fields.push({ at: header.field(0)!, width: 8, what: 'record batch length' });
      vectorFields(header.ref(1), 'field nodes', (at, i) =>
        fields.push(
          { at: at + 16 * i, width: 8, what: `node ${i} length` },
          { at: at + 16 * i + 8, width: 8, what: `node ${i} null count` },
        ),
      );
      vectorFields(header.ref(2), 'buffers', (at, i) =>
        fields.push(
          { at: at + 16 * i, width: 8, what: `buffer ${i} offset` },
          { at: at + 16 * i + 8, width: 8, what: `buffer ${i} length` },
        ),
      );
    } else {
      const stringLength = (at: number | undefined, what: string) =>
        at !== undefined && fields.push({ at, width: 4, what });
      vectorFields(header.ref(1), 'fields', (at, i) =>
        stringLength(
          flatTable(view, at + 4 * i + view.getUint32(at + 4 * i, true)).ref(0),
          `field ${i} name length`,
        ),
      );
      vectorFields(header.ref(2), 'metadata entries', (at, i) => {
        const entry = flatTable(view, at + 4 * i + view.getUint32(at + 4 * i, true));
        stringLength(entry.ref(0), `metadata key ${i} length`);
        stringLength(entry.ref(1), `metadata value ${i} length`);
      });
    }
    const end = metaStart + metadataLength + bodyLength;
    messages.push({
      kind: headerType === 3 ? 'batch' : 'schema',
      offset,
      end,
      rowsBefore,
      rows,
      lengthFields: fields,
    });
    rowsBefore += rows;
    offset = end;
  }
  return messages;
}

// ---------------------------------------------------------------------------------------------
// Intact recordings of different shapes, written by the real sink.

const runOf = (id: string): RecordedRun => ({
  id,
  label: id,
  optimizer: 'ring',
  optimizerOptions: { rho: 0.1 },
  model: 'mlp:4-3',
  dataset: 'synthetic',
  backend: 'cpu',
  seed: 1,
  batchSize: 8,
  totalSteps: 300,
  batchesPerEpoch: 10,
  version: 'test',
  startedAt: '2026-11-28T00:00:00.000Z',
});
const metricsRow = (step: number): MetricsRow => fakeMetricsRow(step, 1000.125);

interface Sample {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly rows: unknown[];
  /** Each row as JSON, for cheap comparisons in thousands of cases. */
  readonly rowJson: string[];
  readonly messages: readonly Message[];
  readonly hasEnd: boolean;
}

const SHAPES = [
  { name: 'r64x16', rows: 64, maxRows: 16, end: true },
  { name: 'r60x7-open', rows: 60, maxRows: 7, end: false },
  { name: 'r1', rows: 1, maxRows: 64, end: true },
  { name: 'r150x64', rows: 150, maxRows: 64, end: true },
  { name: 'r40-open', rows: 40, maxRows: 40, end: false },
] as const;
const samples: Sample[] = [];

beforeAll(async () => {
  for (const shape of SHAPES) {
    const path = join(dir, `${shape.name}.arrows`);
    const data = Array.from({ length: shape.rows }, (_, i) => metricsRow(i));
    await lastValueFrom(
      from(data).pipe(
        arrowSink(runOf(shape.name), {
          record: path,
          batching: { maxRows: shape.maxRows, maxMs: 10_000 },
        }),
        toArray(),
      ),
    );
    const written = readFileSync(path);
    // A recording without its end marker is what a killed writer leaves on a message boundary.
    const bytes = Uint8Array.from(
      shape.end ? written : written.subarray(0, written.length - EOS.length),
    );
    const rec = parseRecording(bytes, shape.name);
    const rows = rowsOf(rec.batches);
    // The samples themselves are checked against what was written and against apache-arrow.
    expect(rows).toEqual(data.map(normalise));
    expect(tableFromIPC(shape.end ? bytes : concatBytes(bytes, EOS)).numRows).toBe(shape.rows);
    const messages = scanIntact(bytes);
    expect(messages.filter((m) => m.kind === 'batch')).toHaveLength(
      Math.ceil(shape.rows / shape.maxRows),
    );
    // fast-check prints a counterexample's sample by name, not its bytes.
    samples.push({
      name: shape.name,
      bytes,
      rows,
      rowJson: rowJsonOf(rec.batches),
      messages,
      hasEnd: shape.end,
      [fc.toStringMethod]: () => shape.name,
    } as Sample);
  }
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sampleArb = fc.nat({ max: SHAPES.length - 1 }).map((i) => samples[i]!);

// ---------------------------------------------------------------------------------------------
// The oracle every damaged file is judged by.

interface Figures {
  cases: number;
  partial: number;
  errors: number;
  maxMs: number;
  maxArrayBufferGrowth: number;
}
const newFigures = (): Figures => ({
  cases: 0,
  partial: 0,
  errors: 0,
  maxMs: 0,
  maxArrayBufferGrowth: 0,
});
const figures: Record<string, Figures> = {};

/** The message of an intact sample that holds byte `at` (the end marker past the end). */
const messageStartAt = (sample: Sample, at: number): number =>
  sample.messages.filter((m) => m.offset <= at).at(-1)?.offset ?? 0;
/** Rows of the batches that end at or before byte `at` — untouched by damage from `at` on. */
const rowsIntactBefore = (sample: Sample, at: number): number =>
  sample.messages.filter((m) => m.kind === 'batch' && m.end <= at).reduce((n, m) => n + m.rows, 0);

function expectDocumentedError(error: unknown, name: string): number {
  expect(isGrngError(error), `${String(error)}`).toBe(true);
  const grng = error as GrngError;
  expect(grng.code).toBe('invalid-data');
  const match = new RegExp(`^${escapeRegExp(name)}: .* at byte (\\d+)$`).exec(grng.message);
  expect(match, grng.message).not.toBeNull();
  expect(grng.context.offset).toBe(Number(match![1]));
  return Number(match![1]);
}

/** Every ArrayBuffer the decoded batches hold; none may be larger than the file they came from. */
function heldBuffers(batches: readonly RecordBatch[]): ArrayBufferLike[] {
  const buffers = new Set<ArrayBufferLike>();
  for (const batch of batches) {
    for (const child of batch.data.children) {
      for (const array of [child.values, child.nullBitmap, child.valueOffsets] as Array<
        (ArrayLike<unknown> & { buffer?: ArrayBufferLike }) | undefined
      >) {
        if (array?.buffer) buffers.add(array.buffer);
      }
    }
  }
  return [...buffers];
}

interface Judged {
  readonly rec?: Recording;
  readonly errorOffset?: number;
  /** The rows read, as JSON. */
  readonly rows?: string[];
}

/**
 * Parses damaged bytes of `sample`, whose bytes before `firstDamaged` are intact, and checks the
 * contract: a partial read whose rows begin with every untouched batch (and, unless the damage
 * may add rows, no more rows than the original), or the documented error at or after the
 * damaged message; within CASE_MS; holding no buffer larger than the file.
 */
function judge(
  figure: Figures,
  sample: Sample,
  damaged: Uint8Array,
  firstDamaged: number,
  { mayAddRows = false } = {},
): Judged {
  figure.cases += 1;
  const baseline = process.memoryUsage().arrayBuffers;
  const started = performance.now();
  let rec: Recording | undefined;
  let error: unknown;
  try {
    rec = parseRecording(damaged, sample.name);
  } catch (caught) {
    error = caught;
  }
  let ms = performance.now() - started;
  // A slow case is timed again (twice at most) and its fastest time counts: a parse that is slow
  // by nature is slow every time, while a GC pause or a busy CPU hits one timing (a CI run that
  // shared the two cores measured one case at 785 ms; the slowest of 1,000 takes ~20 ms alone).
  for (let retry = 0; retry < 2 && ms >= CASE_MS; retry++) {
    const again = performance.now();
    try {
      parseRecording(damaged, sample.name);
    } catch {
      // the same outcome as above; only the time is wanted
    }
    ms = Math.min(ms, performance.now() - again);
  }
  figure.maxMs = Math.max(figure.maxMs, ms);
  figure.maxArrayBufferGrowth = Math.max(
    figure.maxArrayBufferGrowth,
    process.memoryUsage().arrayBuffers - baseline,
  );
  expect(ms).toBeLessThan(CASE_MS);
  if (!rec) {
    figure.errors += 1;
    const offset = expectDocumentedError(error, sample.name);
    expect(offset).toBeLessThanOrEqual(damaged.length);
    expect(offset).toBeGreaterThanOrEqual(messageStartAt(sample, firstDamaged));
    return { errorOffset: offset };
  }
  figure.partial += 1;
  expect(Math.max(0, ...heldBuffers(rec.batches).map((b) => b.byteLength))).toBeLessThanOrEqual(
    damaged.length + EOS.length,
  );
  const decoded = rec.batches.flatMap((b) => recordBatchToRows(b));
  expect(decoded).toHaveLength(rec.rows);
  if (!mayAddRows) expect(rec.rows).toBeLessThanOrEqual(sample.rows.length);
  // What replay and the summary table rely on: a run description and plain numbers.
  expect(typeof rec.run.label).toBe('string');
  const notANumber = decoded
    .flatMap((row) => [
      row.step,
      row.epoch,
      row.wallMs,
      row.stepMs,
      row.samples,
      row.loss,
      row.accuracy,
      row.gradNorm,
      row.testLoss,
      row.testAccuracy,
      ...Object.values(row.diagnostics),
    ])
    .find((v) => v !== null && typeof v !== 'number');
  expect(notANumber).toBeUndefined();
  const rows = decoded.map((row) => JSON.stringify(row));
  const intact = rowsIntactBefore(sample, firstDamaged);
  const firstChanged = rows.slice(0, intact).findIndex((row, i) => row !== sample.rowJson[i]);
  expect(firstChanged, `row ${firstChanged} of the untouched batches changed`).toBe(-1);
  return { rec, rows };
}

/** Runs a property with heap and ArrayBuffer growth measured around it (after a real GC). */
function assertBounded<Ts>(name: string, property: fc.IRawProperty<Ts>, numRuns = CASES): Figures {
  const figure = (figures[name] = newFigures());
  collectGarbage();
  const before = process.memoryUsage();
  void fc.assert(property, { numRuns, seed: FC_SEED });
  collectGarbage();
  const after = process.memoryUsage();
  expect(figure.cases).toBeGreaterThanOrEqual(numRuns);
  expect(after.heapUsed - before.heapUsed).toBeLessThan(16 << 20);
  expect(after.arrayBuffers - before.arrayBuffers).toBeLessThan(16 << 20);
  // Transient buffers of one case (the file, one message at a time) stay far below this.
  expect(figure.maxArrayBufferGrowth).toBeLessThan(64 << 20);
  console.log(
    `${name}: ${figure.cases} cases, ${figure.partial} partial reads, ${figure.errors} documented errors, slowest ${figure.maxMs.toFixed(1)} ms, peak ArrayBuffer growth ${(figure.maxArrayBufferGrowth / 1024).toFixed(0)} KiB, heap growth after GC ${((after.heapUsed - before.heapUsed) / 1024).toFixed(0)} KiB`,
  );
  return figure;
}

// ---------------------------------------------------------------------------------------------

describe('damaged recordings: partial read or the documented error (fast-check)', () => {
  it(`random truncation of ${SHAPES.length} recordings reads exactly the complete batches before the cut`, () => {
    const figure = assertBounded(
      'truncation',
      fc.property(sampleArb, fc.nat(), (sample, n) => {
        const cut = n % (sample.bytes.length + 1);
        const { rec } = judge(figures.truncation!, sample, sample.bytes.subarray(0, cut), cut);
        const schemaEnd = sample.messages[0]!.end;
        if (!rec) {
          expect(cut).toBeLessThan(schemaEnd);
          return;
        }
        expect(cut).toBeGreaterThanOrEqual(schemaEnd);
        expect(rec.rows).toBe(rowsIntactBefore(sample, cut));
        const onBoundary = sample.messages.some((m) => m.end === cut);
        expect(rec.truncated === undefined).toBe(onBoundary);
        if (rec.truncated)
          expect(rec.truncated.offset).toBe(
            sample.messages.filter((m) => m.end <= cut).at(-1)!.end,
          );
        expect(rec.complete).toBe(sample.hasEnd && cut === sample.bytes.length);
      }),
    );
    expect(figure.partial).toBeGreaterThan(CASES / 2);
  });

  it('bit flips (1 to 8 bits)', () => {
    const figure = assertBounded(
      'bit flips',
      fc.property(
        sampleArb,
        fc.array(fc.record({ at: fc.nat(), bit: fc.nat(7) }), { minLength: 1, maxLength: 8 }),
        (sample, flips) => {
          const damaged = Uint8Array.from(sample.bytes);
          const positions = flips.map(({ at }) => at % damaged.length);
          flips.forEach(({ bit }, i) => (damaged[positions[i]!]! ^= 1 << bit));
          judge(figures['bit flips']!, sample, damaged, Math.min(...positions));
        },
      ),
    );
    expect(figure.errors).toBeGreaterThan(0);
    expect(figure.partial).toBeGreaterThan(0);
  });

  it('byte ranges overwritten with random garbage', () => {
    const figure = assertBounded(
      'garbage',
      fc.property(
        sampleArb,
        fc.nat(),
        fc.uint8Array({ minLength: 1, maxLength: 512 }),
        (sample, n, garbage) => {
          const damaged = Uint8Array.from(sample.bytes);
          const at = n % damaged.length;
          damaged.set(garbage.subarray(0, damaged.length - at), at);
          judge(figures.garbage!, sample, damaged, at);
        },
      ),
    );
    expect(figure.errors).toBeGreaterThan(0);
    expect(figure.partial).toBeGreaterThan(0);
  });

  it('two recordings concatenated (cut anywhere in the second): the first read whole, or the error at the seam', () => {
    assertBounded(
      'concatenated',
      fc.property(sampleArb, sampleArb, fc.nat(), (first, second, n) => {
        const cut = n % (second.bytes.length + 1);
        const spliced = concatBytes(first.bytes, second.bytes.subarray(0, cut));
        const { rec, errorOffset } = judge(
          figures.concatenated!,
          first,
          spliced,
          first.bytes.length,
        );
        if (cut === 0 || (!first.hasEnd && cut < second.messages[0]!.end)) {
          // Nothing, or only a cut-off header, after the first recording: read as it was.
          expect(rec?.rows).toBe(first.rows.length);
          expect(rec!.truncated === undefined).toBe(cut === 0);
          return;
        }
        // After an end marker nothing may follow; without one, a second schema is no batch.
        expect(errorOffset).toBe(first.bytes.length);
      }),
    );
  });

  it('a record batch duplicated at any message boundary is read as written', () => {
    assertBounded(
      'duplicated batch',
      fc.property(sampleArb, fc.nat(), fc.nat(), (sample, k, j) => {
        const batches = sample.messages.filter((m) => m.kind === 'batch');
        const copy = batches[k % batches.length]!;
        // Insert before any batch or before the end (marker) of the stream.
        const boundaries = [
          ...batches.map((m) => m.offset),
          sample.messages.at(-1)!.kind === 'end'
            ? sample.messages.at(-1)!.offset
            : sample.bytes.length,
        ];
        const at = boundaries[j % boundaries.length]!;
        const spliced = concatBytes(
          sample.bytes.subarray(0, at),
          sample.bytes.subarray(copy.offset, copy.end),
          sample.bytes.subarray(at),
        );
        const { rows } = judge(figures['duplicated batch']!, sample, spliced, at, {
          mayAddRows: true,
        });
        // Arrow IPC has no sequence numbers: a structurally valid duplicate cannot be told apart.
        const before = rowsIntactBefore(sample, at);
        expect(rows).toEqual([
          ...sample.rowJson.slice(0, before),
          ...sample.rowJson.slice(copy.rowsBefore, copy.rowsBefore + copy.rows),
          ...sample.rowJson.slice(before),
        ]);
      }),
    );
  });

  const kindOf = (what: string): string => what.replace(/\d+/g, 'N');
  const HUGE_32 = [
    0x7fffffff, 0xfffffffe, 0xffffffff, 0x80000000, 0x7ffffff8, 0x00fffff8, 0xfffffff8,
  ];
  const HUGE_64 = [
    0x7fffffffn,
    0xfffffffen,
    0x7fffffffffffffffn,
    -1n,
    -8n,
    -(1n << 63n),
    1n << 53n,
    1n << 40n,
  ];

  it(`length fields set to huge or negative values (${HUGE_32.length} 32-bit and ${HUGE_64.length} 64-bit values)`, () => {
    const hits = new Map<string, number>();
    const figure = assertBounded(
      'huge lengths',
      fc.property(
        sampleArb,
        fc.nat(),
        fc.nat(),
        fc.nat(),
        fc.boolean(),
        (sample, m, f, v, anySlot) => {
          const message = sample.messages[m % sample.messages.length]!;
          let field: LengthField;
          if (anySlot && message.kind !== 'end') {
            // Any aligned slot of the metadata, whatever it holds: offsets, counts, lengths.
            const slots =
              new DataView(sample.bytes.buffer, sample.bytes.byteOffset).getInt32(
                message.offset + 4,
                true,
              ) / 4;
            field = { at: message.offset + 8 + 4 * (f % slots), width: 4, what: 'metadata slot' };
          } else {
            // A kind of field first (so the two buffer counts are as likely as 48 buffer lengths).
            const kinds = [...new Set(message.lengthFields.map((l) => kindOf(l.what)))];
            const ofKind = message.lengthFields.filter(
              (l) => kindOf(l.what) === kinds[f % kinds.length],
            );
            field = ofKind[Math.floor(f / kinds.length) % ofKind.length]!;
          }
          hits.set(kindOf(field.what), (hits.get(kindOf(field.what)) ?? 0) + 1);
          const damaged = Uint8Array.from(sample.bytes);
          const view = new DataView(damaged.buffer);
          if (field.width === 4) view.setUint32(field.at, HUGE_32[v % HUGE_32.length]!, true);
          else view.setBigInt64(field.at, HUGE_64[v % HUGE_64.length]!, true);
          judge(figures['huge lengths']!, sample, damaged, field.at);
        },
      ),
    );
    console.log(
      `huge lengths: fields hit ${[...hits].map(([what, n]) => `${what} ×${n}`).join(', ')}`,
    );
    expect(figure.errors).toBeGreaterThan(CASES / 2);
    for (const what of [
      'metadata length',
      'body length',
      'record batch length',
      'field nodes count',
      'buffers count',
      'node N length',
      'buffer N length',
      'buffer N offset',
      'fields count',
      'metadata value N length',
    ])
      expect(hits.get(what), what).toBeGreaterThan(0);
  });
});

// ---------------------------------------------------------------------------------------------

const damaged = (description: string, bytes: Uint8Array) => ({
  bytes,
  [fc.toStringMethod]: () => description,
});

/** One damaged copy of a sample, any of the kinds above. */
const damageArb = fc.oneof(
  fc
    .tuple(sampleArb, fc.nat())
    .map(([sample, n]) =>
      damaged(
        `${sample.name} cut at ${n % (sample.bytes.length + 1)}`,
        sample.bytes.subarray(0, n % (sample.bytes.length + 1)),
      ),
    ),
  fc
    .tuple(sampleArb, fc.array(fc.tuple(fc.nat(), fc.nat(7)), { minLength: 1, maxLength: 8 }))
    .map(([sample, flips]) => {
      const bytes = Uint8Array.from(sample.bytes);
      for (const [at, bit] of flips) bytes[at % bytes.length]! ^= 1 << bit;
      return damaged(
        `${sample.name} with bits flipped at ${flips.map(([at, bit]) => `${at % bytes.length}.${bit}`).join(', ')}`,
        bytes,
      );
    }),
  fc
    .tuple(sampleArb, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 256 }))
    .map(([sample, n, garbage]) => {
      const bytes = Uint8Array.from(sample.bytes);
      const at = n % bytes.length;
      bytes.set(garbage.subarray(0, bytes.length - at), at);
      return damaged(
        `${sample.name} overwritten at ${at} with ${Buffer.from(garbage).toString('hex')}`,
        bytes,
      );
    }),
  fc.tuple(sampleArb, fc.nat(), fc.nat()).map(([sample, f, v]) => {
    const fields = sample.messages.flatMap((m) => m.lengthFields);
    const field = fields[f % fields.length]!;
    const bytes = Uint8Array.from(sample.bytes);
    const view = new DataView(bytes.buffer);
    const value =
      field.width === 4
        ? [0x7fffffff, 0xfffffffe, 0xffffffff][v % 3]!
        : [0x7fffffffn, -1n, 0x7fffffffffffffffn][v % 3]!;
    if (typeof value === 'number') view.setUint32(field.at, value, true);
    else view.setBigInt64(field.at, value, true);
    return damaged(`${sample.name} with ${field.what} at ${field.at} set to ${value}`, bytes);
  }),
);

describe('damaged recordings through replayArrow and the replay command', () => {
  it('replayArrow (as fast as possible) ends synchronously: every row of the partial read, or the error before any row', () => {
    const path = join(dir, 'replayed.arrows');
    const figure = (figures.replayArrow = newFigures());
    collectGarbage();
    const before = process.memoryUsage();
    fc.assert(
      fc.property(damageArb, ({ bytes }) => {
        figure.cases += 1;
        writeFileSync(path, bytes);
        const rows: ReplayedRow[] = [];
        const warnings: string[] = [];
        let outcome: 'complete' | 'error' | undefined;
        let error: unknown;
        const started = performance.now();
        // At full speed the replay runs inside subscribe: an unfinished one here would be a hang.
        replayArrow(path, { onWarning: (message) => warnings.push(message) }).subscribe({
          next: (row) => rows.push(row),
          error: (caught: unknown) => {
            outcome = 'error';
            error = caught;
          },
          complete: () => (outcome = 'complete'),
        });
        const ms = performance.now() - started;
        figure.maxMs = Math.max(figure.maxMs, ms);
        expect(ms).toBeLessThan(CASE_MS);
        expect(outcome).toBeDefined();
        if (outcome === 'error') {
          figure.errors += 1;
          expectDocumentedError(error, path);
          expect(rows).toHaveLength(0);
          return;
        }
        figure.partial += 1;
        const rec = readRecording(path);
        expect(rows).toHaveLength(rec.rows);
        expect(warnings).toHaveLength(rec.truncated ? 1 : 0);
        if (rec.truncated)
          expect(warnings[0]).toMatch(
            new RegExp(
              `^${escapeRegExp(path)}: truncated at byte ${rec.truncated.offset} \\(.+\\); read ${rec.rows} rows up to the last complete batch$`,
            ),
          );
      }),
      { numRuns: CASES, seed: FC_SEED },
    );
    collectGarbage();
    const after = process.memoryUsage();
    expect(after.heapUsed - before.heapUsed).toBeLessThan(16 << 20);
    console.log(
      `replayArrow: ${figure.cases} cases, ${figure.partial} replayed, ${figure.errors} documented errors, slowest ${figure.maxMs.toFixed(1)} ms`,
    );
    expect(figure.partial).toBeGreaterThan(0);
    expect(figure.errors).toBeGreaterThan(0);
  });

  it('`grng replay --summary` (in-process): exit 0 with the table, or exit 2 with one line naming file and byte', async () => {
    const path = join(dir, 'cli-replayed.arrows');
    const figure = (figures['replay command'] = newFigures());
    await fc.assert(
      fc.asyncProperty(damageArb, async ({ bytes }) => {
        figure.cases += 1;
        writeFileSync(path, bytes);
        let out = '';
        let err = '';
        const started = performance.now();
        const code = await main(['replay', path, '--summary'], {
          out: (t) => void (out += t),
          err: (t) => void (err += t),
          isTTY: false,
        });
        figure.maxMs = Math.max(figure.maxMs, performance.now() - started);
        const lines = err.split('\n').filter(Boolean);
        if (code === 0) {
          figure.partial += 1;
          expect(out).toMatch(/^optimizer +backend/);
          expect(lines.length).toBeLessThanOrEqual(1);
          if (lines[0])
            expect(lines[0]).toMatch(
              new RegExp(`^grng: warning: ${escapeRegExp(path)}: truncated at byte \\d+`),
            );
          return;
        }
        figure.errors += 1;
        expect(code, err).toBe(2);
        expect(out).toBe('');
        expect(lines).toHaveLength(1);
        expect(lines[0]).toMatch(new RegExp(`^grng: ${escapeRegExp(path)}: .* at byte \\d+$`));
      }),
      { numRuns: CASES, seed: FC_SEED },
    );
    console.log(
      `replay command (in-process): ${figure.cases} cases, ${figure.partial} exit 0, ${figure.errors} exit 2, slowest ${figure.maxMs.toFixed(1)} ms`,
    );
    expect(figure.partial).toBeGreaterThan(0);
    expect(figure.errors).toBeGreaterThan(0);
  }, 120_000);

  it('the grng replay process on a few damaged files: exit code and one clear line', async () => {
    const intact = samples.find((s) => s.name === 'r64x16')!;
    const batches = intact.messages.filter((m) => m.kind === 'batch');
    const withLength = (bytes: Uint8Array, at: number, value: number): Uint8Array => {
      const copy = Uint8Array.from(bytes);
      new DataView(copy.buffer).setUint32(at, value, true);
      return copy;
    };
    const cases: Array<{ name: string; bytes: Uint8Array; code: number; line: RegExp }> = [
      {
        name: 'empty',
        bytes: new Uint8Array(0),
        code: 2,
        line: /^grng: .*empty\.arrows: empty file, expected an Arrow IPC stream \(schema message\) at byte 0$/,
      },
      {
        name: 'schema-cut',
        bytes: intact.bytes.subarray(0, 100),
        code: 2,
        line: /^grng: .*schema-cut\.arrows: file ends inside the schema message .* at byte 0$/,
      },
      {
        name: 'batch-cut',
        bytes: intact.bytes.subarray(0, batches[2]!.offset + 40),
        code: 0,
        line: new RegExp(
          `^grng: warning: .*batch-cut\\.arrows: truncated at byte ${batches[2]!.offset} .* read 32 rows up to the last complete batch$`,
        ),
      },
      {
        name: 'no-continuation',
        bytes: withLength(intact.bytes, batches[1]!.offset, 0x12345678),
        code: 2,
        line: new RegExp(
          `^grng: .*no-continuation\\.arrows: expected the Arrow IPC continuation marker 0xFFFFFFFF, found 0x12345678 at byte ${batches[1]!.offset}$`,
        ),
      },
      {
        name: 'huge-metadata',
        bytes: withLength(intact.bytes, batches[1]!.offset + 4, 0x7fffffff),
        code: 2,
        line: new RegExp(
          `^grng: .*huge-metadata\\.arrows: invalid message metadata length 2147483647 .* at byte ${batches[1]!.offset + 4}$`,
        ),
      },
      {
        name: 'concatenated',
        bytes: concatBytes(intact.bytes, intact.bytes),
        code: 2,
        line: new RegExp(
          `^grng: .*concatenated\\.arrows: ${intact.bytes.length} bytes after the end-of-stream marker at byte ${intact.bytes.length}$`,
        ),
      },
      {
        name: 'not-arrow',
        bytes: new TextEncoder().encode('{"step": 0, "loss": 1}\n'),
        code: 2,
        line: /^grng: .*not-arrow\.arrows: expected the Arrow IPC continuation marker 0xFFFFFFFF, found 0x7473227b at byte 0$/,
      },
    ];
    for (const c of cases) writeFileSync(join(dir, `${c.name}.arrows`), c.bytes);
    // Two processes at a time: each spends most of a second starting up.
    const results: Array<Awaited<ReturnType<typeof runCli>>> = [];
    for (let i = 0; i < cases.length; i += 2)
      results.push(
        ...(await Promise.all(
          cases
            .slice(i, i + 2)
            .map((c) => runCli(['replay', join(dir, `${c.name}.arrows`), '--summary'])),
        )),
      );
    for (const [i, c] of cases.entries()) {
      const result = results[i]!;
      expect(result.code, `${c.name}: ${result.stderr}`).toBe(c.code);
      const lines = result.stderr.split('\n').filter(Boolean);
      expect(lines, c.name).toHaveLength(1);
      expect(lines[0]).toMatch(c.line);
      if (c.code === 0) expect(result.stdout).toMatch(/^optimizer +backend/);
    }
    console.log(`grng replay process: ${cases.length} damaged files`);
  }, 60_000);
});

describe('paced replay of damaged wall times', () => {
  it('a wall time made NaN, ±Infinity or negative by damage does not stall a paced replay', async () => {
    const sample = samples.find((s) => s.name === 'r64x16')!;
    const at = Buffer.from(sample.bytes).indexOf(
      Buffer.from(new Float64Array([metricsRow(5).wallMs]).buffer),
    );
    expect(at).toBeGreaterThan(0);
    const path = join(dir, 'paced.arrows');
    for (const value of [NaN, Infinity, -Infinity, -1e300, -1]) {
      const bytes = Uint8Array.from(sample.bytes);
      new DataView(bytes.buffer).setFloat64(at, value, true);
      writeFileSync(path, bytes);
      const started = performance.now();
      // 64 rows over 630 recorded ms at 100× take about 6 ms; before the fix NaN never finished.
      const replayed = await lastValueFrom(
        replayArrow(path, { speed: 100 }).pipe(toArray(), timeout(5000)),
      );
      expect(performance.now() - started).toBeLessThan(1000);
      expect(replayed.map((r) => r.row.step)).toEqual(Array.from({ length: 64 }, (_, i) => i));
      expect(Object.is(replayed[5]!.row.wallMs, value)).toBe(true);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// SIGKILL at random moments.

async function runCli(
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += String(d)));
  child.stderr.on('data', (d) => (stderr += String(d)));
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { code, stdout, stderr };
}

/** Resolves with the first line of `stream` that matches, or undefined when the child exits first. */
function lineMatching(
  child: ChildProcess,
  stream: 'stdout' | 'stderr',
  pattern: RegExp,
): Promise<RegExpExecArray | undefined> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (data: Buffer): void => {
      text += String(data);
      for (const line of text.split('\n')) {
        const match = pattern.exec(line);
        if (match) {
          child[stream]!.off('data', onData);
          resolve(match);
          return;
        }
      }
    };
    child[stream]!.on('data', onData);
    child.once('exit', () => resolve(undefined));
  });
}

async function kill(child: ChildProcess): Promise<void> {
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

type Outcome = 'absent' | 'empty' | 'schema cut' | 'whole batches' | 'cut batch';

/**
 * The documented result of killing a recorder: no file or an empty one when killed before the
 * first batch was written (`grng replay` then exits 2 naming the file); a schema message cut off
 * (only when killed inside the very first write) is the same kind of error; otherwise every
 * complete batch, steps consecutive from 0, no end marker, and `grng replay --summary` exits 0.
 */
async function expectReadableToLastCompleteBatch(
  path: string,
  label: string,
): Promise<{ outcome: Outcome; rows: number }> {
  const replay = await runCli(['replay', path, '--summary']);
  const errorLines = replay.stderr.split('\n').filter(Boolean);
  if (!existsSync(path)) {
    expect(replay.code).toBe(2);
    expect(errorLines).toEqual([expect.stringMatching(/^grng: cannot read recording .*ENOENT/)]);
    return { outcome: 'absent', rows: 0 };
  }
  const bytes = readFileSync(path);
  let rec: Recording;
  try {
    rec = parseRecording(bytes, path);
  } catch (error) {
    expectDocumentedError(error, path);
    const message = (error as Error).message;
    if (bytes.length === 0)
      expect(message).toMatch(
        /: empty file, expected an Arrow IPC stream \(schema message\) at byte 0$/,
      );
    else {
      expect(message).toMatch(/: file ends inside the schema message \(.*\) at byte 0$/);
      expect(
        bytes.length < 8 ||
          bytes.length < 8 + new DataView(bytes.buffer, bytes.byteOffset).getInt32(4, true),
      ).toBe(true);
    }
    expect(replay.code).toBe(2);
    expect(errorLines).toEqual([`grng: ${message}`]);
    return { outcome: bytes.length === 0 ? 'empty' : 'schema cut', rows: 0 };
  }
  expect(rec.complete).toBe(false);
  const steps = rec.batches.flatMap((b) => recordBatchToRows(b)).map((r) => r.step);
  expect(steps).toEqual(steps.map((_, i) => i));
  // apache-arrow, given the bytes up to the last complete message, sees the same rows.
  const wholeMessages = rec.truncated?.offset ?? bytes.length;
  const independent = tableFromIPC(concatBytes(bytes.subarray(0, wholeMessages), EOS));
  expect(independent.numRows).toBe(rec.rows);
  expect(Array.from(independent.getChild('step')!.toArray() as Int32Array)).toEqual(steps);
  expect(replay.code, replay.stderr).toBe(0);
  if (rec.truncated)
    expect(errorLines).toEqual([
      expect.stringMatching(
        new RegExp(
          `^grng: warning: ${escapeRegExp(path)}: truncated at byte ${rec.truncated.offset} .*; read ${rec.rows} rows up to the last complete batch$`,
        ),
      ),
    ]);
  else expect(errorLines).toEqual([]);
  const summaryRow = replay.stdout.split('\n').find((line) => line.startsWith(`${label} `));
  // A run with no complete batch has no row to summarise.
  if (rec.rows === 0) expect(summaryRow).toBeUndefined();
  else expect(summaryRow!.trim().split(/ {2,}/)[3]).toBe(String(rec.rows));
  return { outcome: rec.truncated ? 'cut batch' : 'whole batches', rows: rec.rows };
}

type Moment = 'before start' | 'around the first write' | 'mid-write' | 'running';
const MOMENTS: readonly Moment[] = [
  'before start',
  'around the first write',
  'mid-write',
  'running',
  'running',
];

/**
 * Checks of killed recordings, one at a time, each running while the next child is killed (a
 * check spawns `grng replay`, which takes about a second to start).
 */
function checkQueue(): { add(check: () => Promise<void>): void; done(): Promise<void> } {
  let last: Promise<void> = Promise.resolve();
  return {
    add(check) {
      last = last.then(check);
      // Reported by done(); this only keeps a failure from counting as unhandled meanwhile.
      last.catch(() => undefined);
    },
    done: () => last,
  };
}

function tally(
  results: Array<{ moment: Moment; outcome: Outcome; rows: number; delayMs: number }>,
): string {
  const counts = new Map<string, number>();
  for (const r of results)
    counts.set(`${r.moment} → ${r.outcome}`, (counts.get(`${r.moment} → ${r.outcome}`) ?? 0) + 1);
  return `${[...counts].map(([k, n]) => `${k} ×${n}`).join('; ')}; rows ${Math.min(...results.map((r) => r.rows))}–${Math.max(...results.map((r) => r.rows))}`;
}

describe('SIGKILL at random moments', () => {
  it(`the recorder fixture, ${FIXTURE_KILLS} kills: readable to the last complete batch`, async () => {
    const random = seedrandom('grng recording durability');
    const checks = checkQueue();
    const results: Array<{ moment: Moment; outcome: Outcome; rows: number; delayMs: number }> = [];
    const started = performance.now();
    for (let attempt = 0; attempt < FIXTURE_KILLS; attempt++) {
      const moment = MOMENTS[attempt % MOMENTS.length]!;
      const path = join(dir, `killed-fixture-${attempt}.arrows`);
      let delayMs = 0;
      if (moment === 'mid-write') {
        // The write the child stops inside, and how much of it reaches the file: any later write;
        // then (with GRNG_LONG_TESTS) the first write — schema and first batch in one — cut early
        // (inside the schema) and cut late (inside the first batch).
        const midWrite = Math.floor(attempt / MOMENTS.length);
        const [write, fraction] =
          midWrite === 1
            ? [1, random() * 0.2]
            : midWrite === 2
              ? [1, 0.9 + random() * 0.1]
              : [2 + Math.floor(random() * 12), random()];
        const child = spawn(
          process.execPath,
          [
            '--import',
            'tsx',
            'test/fixtures/recordStalledMidWrite.ts',
            path,
            String(write),
            String(fraction),
          ],
          { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
        );
        const stalled = await lineMatching(child, 'stdout', /^stalled (\d+) (\d+) (\d+)$/);
        expect(stalled).toBeDefined();
        await kill(child);
        const [wholeWrites, partial] = [Number(stalled![1]), Number(stalled![2])];
        const bytes = readFileSync(path);
        expect(bytes.length).toBe(wholeWrites + partial);
        const schemaLength = bytes.length < 8 ? Infinity : 8 + bytes.readInt32LE(4);
        checks.add(async () => {
          const result = await expectReadableToLastCompleteBatch(path, 'killed');
          // Every write before the stalled one is whole: all of their rows, none of the cut one.
          if (wholeWrites > 0) {
            expect(result.outcome).toBe('cut batch');
            expect(readRecording(path).truncated!.offset).toBe(wholeWrites);
            expect(result.rows).toBe(
              tableFromIPC(concatBytes(bytes.subarray(0, wholeWrites), EOS)).numRows,
            );
          } else {
            expect(result.outcome).toBe(bytes.length < schemaLength ? 'schema cut' : 'cut batch');
            expect(result.rows).toBe(0);
          }
          results.push({ moment, ...result, delayMs });
        });
        continue;
      }
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', 'test/fixtures/recordForever.ts', path],
        { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] },
      );
      if (moment === 'before start') {
        // Anywhere in the child's start-up (about a second): usually before the file exists.
        delayMs = Math.floor(random() * 900);
        await sleep(delayMs);
      } else {
        const ready = await lineMatching(child, 'stdout', /^started$/);
        expect(ready).toBeDefined();
        // The file is open once "started" is printed; the first batch is written within ~8 ms.
        delayMs =
          moment === 'around the first write'
            ? Math.floor(random() * 8)
            : 10 + Math.floor(random() * 600);
        await sleep(delayMs);
      }
      await kill(child);
      checks.add(async () => {
        const result = await expectReadableToLastCompleteBatch(path, 'killed');
        if (moment !== 'before start') expect(result.outcome).not.toBe('absent');
        results.push({ moment, ...result, delayMs });
      });
    }
    await checks.done();
    console.log(
      `recorder fixture: ${results.length} SIGKILLs in ${((performance.now() - started) / 1000).toFixed(1)} s — ${tally(results)}`,
    );
    expect(
      results.filter((r) => r.outcome === 'whole batches' || r.outcome === 'cut batch').length,
    ).toBeGreaterThanOrEqual(Math.ceil(FIXTURE_KILLS / 2));
  }, 300_000);

  it(`a real \`grng train --record\`, ${TRAIN_KILLS} kills: readable to the last complete batch`, async () => {
    const random = seedrandom('grng train killed');
    const checks = checkQueue();
    const results: Array<{ moment: Moment; outcome: Outcome; rows: number; delayMs: number }> = [];
    const started = performance.now();
    const trainMoments: readonly Moment[] =
      TRAIN_KILLS <= 2
        ? ['running', 'around the first write']
        : ['before start', 'around the first write', 'running', 'running'];
    for (let attempt = 0; attempt < TRAIN_KILLS; attempt++) {
      const moment = trainMoments[attempt % trainMoments.length]!;
      const path = join(dir, `killed-train-${attempt}.arrows`);
      const child = spawn(
        process.execPath,
        [
          BIN,
          'train',
          '--dataset',
          'synthetic',
          '--backend',
          'cpu',
          '--epochs',
          '1000',
          '--record',
          path,
        ],
        { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let delayMs: number;
      if (moment === 'before start') {
        // Anywhere in start-up (about a second before training): usually before the file exists.
        delayMs = Math.floor(random() * 1000);
        await sleep(delayMs);
      } else {
        // This line comes as training starts; the recording is opened then, its first batch
        // written about 250 ms after the first step (the batching deadline).
        const ready = await lineMatching(child, 'stderr', /^grng: backend /);
        expect(ready).toBeDefined();
        delayMs =
          moment === 'around the first write'
            ? Math.floor(random() * 600)
            : 700 + Math.floor(random() * 2000);
        await sleep(delayMs);
      }
      await kill(child);
      checks.add(async () => {
        const result = await expectReadableToLastCompleteBatch(path, 'adamw');
        results.push({ moment, ...result, delayMs });
      });
    }
    await checks.done();
    console.log(
      `grng train: ${results.length} SIGKILLs in ${((performance.now() - started) / 1000).toFixed(1)} s — ${tally(results)}`,
    );
    expect(results.some((r) => r.rows > 0)).toBe(true);
  }, 300_000);
});
