import { tableFromIPC } from 'apache-arrow';
import type { RecordedRun } from '../metrics/schema.js';

/** One decoded WebSocket frame: every numeric column as float64 with NaN for null. */
export interface DecodedBatch {
  readonly run: RecordedRun | undefined;
  readonly rows: number;
  readonly columns: ReadonlyMap<string, Float64Array>;
}

interface NumericData {
  readonly length: number;
  readonly offset: number;
  readonly nullCount: number;
  readonly values: ArrayLike<number | bigint>;
  readonly nullBitmap: Uint8Array | undefined;
}

/**
 * Decodes a complete Arrow IPC stream (schema with `grng.run` metadata, record batches, end
 * marker). Reads the value buffers and validity bitmaps directly (fast, and nulls are NaN
 * whatever the writer left under them).
 */
export function decodeBatch(bytes: Uint8Array): DecodedBatch {
  const table = tableFromIPC(bytes);
  const rows = table.numRows;
  const columns = new Map<string, Float64Array>();
  for (const field of table.schema.fields) {
    const vector = table.getChild(field.name);
    if (!vector) continue;
    const out = new Float64Array(rows);
    let at = 0;
    for (const chunk of vector.data as unknown as NumericData[]) {
      const { values, offset, length, nullBitmap, nullCount } = chunk;
      if (!values || typeof values.length !== 'number') {
        out.fill(NaN, at, at + length);
      } else {
        const checkNulls = nullCount > 0 && nullBitmap && nullBitmap.length > 0;
        // Fixed-width values are sliced with their Data (values[0] is its row 0); the validity
        // bitmap is not, so its bits start at `offset`.
        for (let i = 0; i < length; i++) {
          const j = offset + i;
          if (checkNulls && ((nullBitmap[j >> 3]! >> (j & 7)) & 1) === 0) out[at + i] = NaN;
          else out[at + i] = Number(values[i]);
        }
      }
      at += length;
    }
    columns.set(field.name, out);
  }
  const text = table.schema.metadata.get('grng.run');
  let run: RecordedRun | undefined;
  if (text) {
    try {
      run = JSON.parse(text) as RecordedRun;
    } catch {
      run = undefined;
    }
  }
  return { run, rows, columns };
}
