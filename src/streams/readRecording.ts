import { readFileSync } from 'node:fs';
import { RecordBatchStreamReader, type RecordBatch, type Schema } from 'apache-arrow';
import { GrngError } from '../errors.js';
import { METRIC_COLUMNS, runOfSchema, type RecordedRun } from '../metrics/schema.js';

/** A recording read back: its run, schema and every complete batch. */
export interface Recording {
  readonly path: string;
  readonly run: RecordedRun;
  readonly schema: Schema;
  readonly batches: RecordBatch[];
  readonly rows: number;
  /** Set when the file ends inside a message (a killed writer): where, and what was missing. */
  readonly truncated?: { readonly offset: number; readonly reason: string };
  /** True when the end-of-stream marker was found (the writer finished). */
  readonly complete: boolean;
}

const CONTINUATION = 0xffffffff;
const MAX_METADATA = 16 << 20;
const HEADER_SCHEMA = 1;
const HEADER_RECORD_BATCH = 3;
const HEADER_NAMES: Record<number, string> = {
  1: 'Schema',
  2: 'DictionaryBatch',
  3: 'RecordBatch',
  4: 'Tensor',
  5: 'SparseTensor',
};

interface Message {
  readonly offset: number;
  readonly end: number;
  readonly headerType: number;
}

/**
 * Reads a metrics recording (Arrow IPC stream). The file is scanned message by message without
 * trusting it: every length is bounds-checked before use, so a damaged file can neither hang the
 * reader nor make it allocate more than the file's size. A file that ends inside a message (a
 * killed writer) is read up to its last complete batch and `truncated` says where it stopped;
 * anything else that is not a grng metrics stream is a GrngError naming the file, the byte
 * offset and what was expected there.
 *
 * @example
 * const rec = readRecording('runs/ring.arrows'); console.log(rec.run.optimizer, rec.rows);
 */
export function readRecording(path: string): Recording {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (error) {
    throw new GrngError(
      'invalid-data',
      `cannot read recording ${path}: ${(error as Error).message}`,
      { path },
      { cause: error },
    );
  }
  return parseRecording(bytes, path);
}

/** {@link readRecording} on bytes already in memory (`path` names them in errors). */
export function parseRecording(bytes: Uint8Array, path: string): Recording {
  const fail = (offset: number, message: string): never => {
    throw new GrngError('invalid-data', `${path}: ${message} at byte ${offset}`, { path, offset });
  };
  if (bytes.length === 0) fail(0, 'empty file, expected an Arrow IPC stream (schema message)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const messages: Message[] = [];
  let truncated: { offset: number; reason: string } | undefined;
  let complete = false;
  let offset = 0;
  while (offset < bytes.length) {
    if (bytes.length - offset < 8) {
      truncated = {
        offset,
        reason: `${bytes.length - offset} bytes of a message header (8 expected)`,
      };
      break;
    }
    if (view.getUint32(offset, true) !== CONTINUATION)
      fail(
        offset,
        `expected the Arrow IPC continuation marker 0xFFFFFFFF, found 0x${view.getUint32(offset, true).toString(16).padStart(8, '0')}`,
      );
    const metadataLength = view.getInt32(offset + 4, true);
    if (metadataLength === 0) {
      complete = true;
      offset += 8;
      break;
    }
    if (metadataLength < 0 || metadataLength > MAX_METADATA || metadataLength % 8 !== 0)
      fail(
        offset + 4,
        `invalid message metadata length ${metadataLength} (expected a positive multiple of 8 up to ${MAX_METADATA})`,
      );
    const metaStart = offset + 8;
    if (metaStart + metadataLength > bytes.length) {
      truncated = {
        offset,
        reason: `message metadata of ${metadataLength} bytes cut off after ${bytes.length - metaStart}`,
      };
      break;
    }
    const { headerType, bodyLength } = readMessageHeader(view, metaStart, metadataLength, fail);
    if (messages.length === 0 && headerType !== HEADER_SCHEMA)
      fail(
        offset,
        `expected a Schema message first, found ${HEADER_NAMES[headerType] ?? `header type ${headerType}`}`,
      );
    if (messages.length > 0 && headerType !== HEADER_RECORD_BATCH)
      fail(
        offset,
        `expected a RecordBatch message, found ${HEADER_NAMES[headerType] ?? `header type ${headerType}`}`,
      );
    const end = metaStart + metadataLength + bodyLength;
    if (end > bytes.length) {
      truncated = {
        offset,
        reason: `record batch body of ${bodyLength} bytes cut off after ${bytes.length - metaStart - metadataLength}`,
      };
      break;
    }
    messages.push({ offset, end, headerType });
    offset = end;
  }
  if (complete && offset < bytes.length)
    fail(offset, `${bytes.length - offset} bytes after the end-of-stream marker`);
  if (messages.length === 0)
    fail(
      0,
      truncated ? `file ends inside the schema message (${truncated.reason})` : 'no schema message',
    );

  const schemaMessage = bytes.subarray(0, messages[0]!.end);
  let schema: Schema;
  try {
    schema = RecordBatchStreamReader.from(concat([schemaMessage, EOS])).open().schema;
  } catch (error) {
    return fail(0, `the schema message cannot be decoded (${(error as Error).message})`);
  }
  const run = runOfSchema(schema);
  if (!run) fail(0, 'not a grng metrics recording: the schema has no grng.run metadata');
  const names = schema.fields.map((f) => f.name);
  const missing = METRIC_COLUMNS.map((c) => c.name).filter((n) => !names.includes(n));
  if (missing.length > 0) fail(0, `the schema lacks the metric columns ${missing.join(', ')}`);
  // Replay and the summary table use these values as they are: a damaged but still well-formed
  // schema (a flipped bit in a type or a JSON key) must stop here, not as a TypeError later.
  for (const column of METRIC_COLUMNS) {
    const type = String(schema.fields.find((f) => f.name === column.name)!.type);
    const expected = column.type === 'int' ? 'Int32' : 'Float64';
    if (type !== expected)
      fail(0, `the metric column ${column.name} has type ${type}, expected ${expected}`);
  }
  const wrongRunField = Object.entries(RUN_FIELD_TYPES).find(([key, type]) => {
    const value = (run as unknown as Record<string, unknown>)[key];
    return OPTIONAL_RUN_FIELDS.has(key)
      ? value !== undefined && typeof value !== type
      : typeof value !== type || value === null;
  });
  if (wrongRunField)
    fail(0, `the grng.run metadata has no ${wrongRunField[1]} ${wrongRunField[0]}`);

  const batches: RecordBatch[] = [];
  for (const message of messages.slice(1)) {
    try {
      const reader = RecordBatchStreamReader.from(
        concat([schemaMessage, bytes.subarray(message.offset, message.end), EOS]),
      );
      for (const batch of reader) batches.push(batch);
    } catch (error) {
      fail(message.offset, `record batch cannot be decoded (${(error as Error).message})`);
    }
  }
  return {
    path,
    run: run!,
    schema,
    batches,
    rows: batches.reduce((n, b) => n + b.numRows, 0),
    ...(truncated ? { truncated } : {}),
    complete,
  };
}

const EOS = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

/** Fields a recording may lack: `group`, and `labelsPerExample` (recordings from before it). */
const OPTIONAL_RUN_FIELDS: ReadonlySet<string> = new Set(['group', 'labelsPerExample']);

/** The `typeof` of every RecordedRun field (those of OPTIONAL_RUN_FIELDS may be absent). */
const RUN_FIELD_TYPES: Record<keyof RecordedRun, 'string' | 'number' | 'object'> = {
  id: 'string',
  label: 'string',
  optimizer: 'string',
  optimizerOptions: 'object',
  model: 'string',
  dataset: 'string',
  backend: 'string',
  seed: 'number',
  batchSize: 'number',
  totalSteps: 'number',
  batchesPerEpoch: 'number',
  version: 'string',
  startedAt: 'string',
  group: 'string',
  labelsPerExample: 'number',
};

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

type Fail = (offset: number, what: string) => never;

/**
 * A flatbuffer table inside [start, end) of the file, read with every offset bounds-checked:
 * `field(i, size)` is the absolute position of field i (undefined when absent). `from` is where
 * the reference to the table is stored: errors name that byte, since `at` may lie past the file.
 */
function table(
  view: DataView,
  start: number,
  end: number,
  at: number,
  fail: Fail,
  from = at,
): {
  field(index: number, size: number): number | undefined;
  ref(index: number): number | undefined;
} {
  const inside = (pos: number, size: number): boolean => pos >= start && pos + size <= end;
  if (!inside(at, 4)) fail(from, 'message metadata table offset points outside the metadata');
  const vtableAt = at - view.getInt32(at, true);
  if (!inside(vtableAt, 4)) fail(at, 'message metadata vtable offset points outside the metadata');
  const vtableLength = view.getUint16(vtableAt, true);
  if (vtableLength < 4 || vtableLength % 2 !== 0 || !inside(vtableAt, vtableLength))
    fail(vtableAt, `invalid message vtable length ${vtableLength}`);
  const field = (index: number, size: number): number | undefined => {
    const entry = 4 + 2 * index;
    if (entry + 2 > vtableLength) return undefined;
    const offset = view.getUint16(vtableAt + entry, true);
    if (offset === 0) return undefined;
    if (!inside(at + offset, size))
      fail(vtableAt + entry, 'message field offset points outside the metadata');
    return at + offset;
  };
  // Tables and vectors are referenced by an unsigned offset relative to the field itself.
  const ref = (index: number): number | undefined => {
    const pos = field(index, 4);
    if (pos === undefined) return undefined;
    const target = pos + view.getUint32(pos, true);
    if (!inside(target, 4)) fail(pos, 'message reference points outside the metadata');
    return target;
  };
  return { field, ref };
}

/**
 * The Message fields the scan needs (header type, body length) and, for a record batch, a check
 * of its header against the body and the schema before any decoder sees it: row count, one
 * field node per column, two buffers per column, every buffer inside the body, no compression.
 * A flipped bit there would otherwise make the decoder allocate for billions of rows.
 */
function readMessageHeader(
  view: DataView,
  start: number,
  length: number,
  fail: Fail,
  columns = METRIC_COLUMNS.length,
): { headerType: number; bodyLength: number } {
  const end = start + length;
  const message = table(view, start, end, start + view.getUint32(start, true), fail, start);
  // Message: 0 version (short), 1 header_type (ubyte), 2 header (table), 3 bodyLength (long).
  const typeAt = message.field(1, 1);
  const headerType = typeAt === undefined ? 0 : view.getUint8(typeAt);
  const lengthAt = message.field(3, 8);
  const bodyLength = lengthAt === undefined ? 0 : Number(view.getBigInt64(lengthAt, true));
  if (!Number.isSafeInteger(bodyLength) || bodyLength < 0 || bodyLength % 8 !== 0)
    fail(lengthAt ?? start, `invalid message body length ${bodyLength}`);
  if (headerType === HEADER_SCHEMA) {
    checkSchemaHeader(view, start, end, message.ref(2), fail, columns);
    return { headerType, bodyLength };
  }
  if (headerType !== HEADER_RECORD_BATCH) return { headerType, bodyLength };
  const headerAt = message.ref(2);
  if (headerAt === undefined) return fail(start, 'record batch message without a header');
  // RecordBatch: 0 length (long), 1 nodes [FieldNode{length, null_count}], 2 buffers
  // [Buffer{offset, length}], 3 compression.
  const batch = table(view, start, end, headerAt, fail);
  const rowsAt = batch.field(0, 8);
  const rows = rowsAt === undefined ? 0 : Number(view.getBigInt64(rowsAt, true));
  // Every metric column stores at least 4 bytes per row, so the body bounds the row count.
  if (!Number.isSafeInteger(rows) || rows < 0 || rows * 4 > bodyLength)
    fail(
      rowsAt ?? headerAt,
      `invalid record batch length ${rows} for a body of ${bodyLength} bytes`,
    );
  if (batch.field(3, 4) !== undefined)
    fail(headerAt, 'compressed record batches are not expected in a grng recording');
  const vector = (index: number, what: string, count: number): number => {
    const at = batch.ref(index);
    if (at === undefined) return fail(headerAt, `record batch without ${what}`);
    const n = view.getUint32(at, true);
    if (n !== count || at + 4 + n * 16 > end)
      fail(at, `record batch has ${n} ${what}, expected ${count}`);
    return at + 4;
  };
  const nodes = vector(1, 'field nodes', columns);
  for (let i = 0; i < columns; i++) {
    const nodeLength = Number(view.getBigInt64(nodes + 16 * i, true));
    const nulls = Number(view.getBigInt64(nodes + 16 * i + 8, true));
    if (nodeLength !== rows || nulls < 0 || nulls > rows)
      fail(
        nodes + 16 * i,
        `field node ${i} has length ${nodeLength} and ${nulls} nulls in a batch of ${rows} rows`,
      );
  }
  const buffers = vector(2, 'buffers', 2 * columns);
  for (let i = 0; i < 2 * columns; i++) {
    const offset = Number(view.getBigInt64(buffers + 16 * i, true));
    const size = Number(view.getBigInt64(buffers + 16 * i + 8, true));
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(size) ||
      offset < 0 ||
      size < 0 ||
      offset + size > bodyLength
    )
      fail(
        buffers + 16 * i,
        `buffer ${i} (offset ${offset}, length ${size}) lies outside the body of ${bodyLength} bytes`,
      );
  }
  return { headerType, bodyLength };
}

/**
 * Structural check of the schema message before the decoder walks it: the metric columns as
 * flat fields (no children, short names) and a few metadata entries, every count and string
 * inside the metadata. Decoders trust these counts, so a flipped bit could otherwise make them
 * loop or allocate without bound.
 */
function checkSchemaHeader(
  view: DataView,
  start: number,
  end: number,
  schemaAt: number | undefined,
  fail: Fail,
  columns: number,
): void {
  if (schemaAt === undefined) return fail(start, 'schema message without a schema');
  const schema = table(view, start, end, schemaAt, fail);
  const vectorOf = (at: number | undefined, what: string, max: number): number[] => {
    if (at === undefined) return [];
    const n = view.getUint32(at, true);
    if (n > max || at + 4 + 4 * n > end)
      fail(at, `schema has ${n} ${what} (at most ${max} expected)`);
    return Array.from({ length: n }, (_, i) => at + 4 + 4 * i);
  };
  // A vector slot holds the offset of its table, relative to the slot.
  const tableAt = (slot: number): ReturnType<typeof table> =>
    table(view, start, end, slot + view.getUint32(slot, true), fail, slot);
  const string = (at: number | undefined, what: string, max: number): void => {
    if (at === undefined) return;
    const n = view.getUint32(at, true);
    if (n > max || at + 4 + n > end)
      fail(at, `${what} of ${n} bytes does not fit in the schema message`);
  };
  const fields = vectorOf(schema.ref(1), 'fields', columns);
  if (fields.length !== columns)
    fail(schemaAt, `schema has ${fields.length} fields, expected the ${columns} metric columns`);
  for (const slot of fields) {
    const field = tableAt(slot);
    string(field.ref(0), 'a field name', 64);
    if (vectorOf(field.ref(5), 'children', 0).length > 0 || field.ref(4) !== undefined)
      fail(slot, 'metric columns have no children or dictionaries');
    vectorOf(field.ref(6), 'field metadata entries', 0);
  }
  for (const slot of vectorOf(schema.ref(2), 'metadata entries', 16)) {
    const entry = tableAt(slot);
    string(entry.ref(0), 'a metadata key', 256);
    string(entry.ref(1), 'a metadata value', end - start);
  }
}
