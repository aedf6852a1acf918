import {
  DataType,
  makeData,
  RecordBatch,
  RecordBatchStreamWriter,
  Struct,
  type Data,
  type Schema,
} from 'apache-arrow';

type TypedArray =
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | Float32Array
  | Float64Array
  | BigInt64Array
  | BigUint64Array;
import { GrngError } from '../errors.js';

/**
 * Encodes record batches of one stream (one schema) as a complete, self-contained Arrow IPC
 * stream: schema message with its metadata, the rows, end-of-stream marker. Any Arrow reader
 * decodes the bytes alone. Batches are first merged into one (see {@link concatBatches}): many
 * small batches would otherwise cost a message header each (2000 one-row batches of the metrics
 * schema encode to 3 MB in 300 ms; merged, to 0.37 MB in 1 ms).
 *
 * `schema` is needed only when `batches` is empty (the stream then holds the schema alone).
 *
 * @example
 * const bytes = encodeStream([rowsToRecordBatch(schema, rows)]);
 * tableFromIPC(bytes).numRows === rows.length;
 */
export function encodeStream(batches: readonly RecordBatch[], schema?: Schema): Uint8Array {
  if (batches.length === 0) {
    if (!schema) throw new GrngError('internal', 'encodeStream: no batches and no schema to write');
    return RecordBatchStreamWriter.writeAll([emptyBatch(schema)]).toUint8Array(true);
  }
  return RecordBatchStreamWriter.writeAll(concatBatches(batches)).toUint8Array(true);
}

/**
 * Merges batches of one schema into a single batch by copying column values and validity bits
 * (fixed-width numeric columns: every column of the metrics schema). When a column has another
 * type the batches are returned unchanged, which is still a valid stream, only larger.
 */
export function concatBatches(batches: readonly RecordBatch[]): RecordBatch[] {
  if (batches.length <= 1) return [...batches];
  const schema = batches[0]!.schema;
  const names = schema.fields.map((f) => f.name);
  for (const b of batches) {
    if (
      b.schema.fields.length !== names.length ||
      b.schema.fields.some((f, i) => f.name !== names[i])
    ) {
      throw new GrngError('internal', 'encodeStream: batches of different schemas in one stream', {
        fields: names,
      });
    }
  }
  if (!schema.fields.every((f) => isFixedWidthNumeric(f.type))) return [...batches];
  const length = batches.reduce((n, b) => n + b.numRows, 0);
  const children: Data[] = schema.fields.map((field, column) => {
    const type = field.type as DataType;
    const values = new (type.ArrayType as new (n: number) => TypedArray)(length);
    const valid = new Uint8Array(Math.ceil(length / 8));
    let nulls = 0;
    let at = 0;
    for (const batch of batches) {
      const data = batch.data.children[column]!;
      const n = data.length;
      // Fixed-width values are sliced with their Data (values[0] is row 0); the validity bitmap
      // is not, so its bits start at data.offset.
      const part = data.values as TypedArray;
      if (n <= 16) for (let i = 0; i < n; i++) (values as unknown as unknown[])[at + i] = part[i];
      else
        (values as { set(a: ArrayLike<number | bigint>, offset: number): void }).set(
          part.subarray(0, n) as ArrayLike<number | bigint>,
          at,
        );
      const partNulls = data.nullCount;
      const bitmap = data.nullBitmap;
      if (partNulls === 0 || !bitmap || bitmap.length === 0) {
        for (let i = 0; i < n; i++) valid[(at + i) >> 3]! |= 1 << ((at + i) & 7);
      } else if (partNulls < n) {
        for (let i = 0, pos = data.offset; i < n; i++, pos++) {
          if ((bitmap[pos >> 3]! & (1 << (pos & 7))) !== 0)
            valid[(at + i) >> 3]! |= 1 << ((at + i) & 7);
          else nulls += 1;
        }
      } else nulls += n;
      at += n;
    }
    return makeData({
      type,
      length,
      nullCount: nulls,
      data: values,
      ...(nulls > 0 ? { nullBitmap: valid } : {}),
    } as never) as Data;
  });
  const struct = makeData({ type: new Struct(schema.fields), length, nullCount: 0, children });
  return [new RecordBatch(schema, struct)];
}

function isFixedWidthNumeric(type: DataType): boolean {
  return (DataType.isInt(type) || DataType.isFloat(type)) && typeof type.ArrayType === 'function';
}

/** A zero-row batch of `schema` (so a stream can carry the schema and no rows). */
function emptyBatch(schema: Schema): RecordBatch {
  const children = schema.fields.map(
    (f) => makeData({ type: f.type as DataType, length: 0, nullCount: 0 } as never) as Data,
  );
  return new RecordBatch(
    schema,
    makeData({ type: new Struct(schema.fields), length: 0, nullCount: 0, children }),
  );
}
