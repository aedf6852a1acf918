import type { RecordBatch, Schema } from 'apache-arrow';
import { GrngError } from '../errors.js';
import { readRecording } from '../streams/readRecording.js';
import type { RecordedRun } from '../metrics/schema.js';
import { rowsToRecordBatch } from '../metrics/schema.js';
import { encodeMessages } from './recordArrow.js';
import { writeFileAtomically } from './writeFileAtomically.js';

/** A recording made ready for a resumed run to append to. */
export interface ReopenedRecording {
  readonly run: RecordedRun;
  readonly schema: Schema;
  /** The batches kept (steps ≤ the checkpoint's), for a dashboard's history. */
  readonly batches: RecordBatch[];
  readonly rows: number;
  /** The last step the recording now holds (−1 when none). */
  readonly lastStep: number;
}

/**
 * Prepares a run's recording for `--resume`: keeps the rows up to the checkpoint's step (rows
 * after it were made by the interrupted process and are made again), drops a torn tail and the
 * end-of-stream marker, and rewrites the file atomically (temporary file, fsync, rename), so
 * that recordArrow({ append: true }) continues the same stream with the same run id.
 *
 * @example
 * const rec = reopenRecording('runs/ring.arrows', checkpoint.step);
 */
export function reopenRecording(path: string, throughStep: number): ReopenedRecording {
  const recording = readRecording(path);
  const kept: RecordBatch[] = [];
  let rows = 0;
  let lastStep = -1;
  for (const batch of recording.batches) {
    // A recording reopened before starts with an empty batch (the schema's carrier, below):
    // stopping at it lost every row on the second resume.
    if (batch.numRows === 0) continue;
    const steps = batch.getChild('step')!;
    let keep = 0;
    while (keep < batch.numRows && (steps.get(keep) as number) <= throughStep) keep += 1;
    if (keep === 0) break;
    kept.push(keep === batch.numRows ? batch : batch.slice(0, keep));
    rows += keep;
    lastStep = steps.get(keep - 1) as number;
    if (keep < batch.numRows) break;
  }
  try {
    // The schema message (with the run's metadata) first, through an empty batch of it.
    writeFileAtomically(path, [
      encodeMessages(rowsToRecordBatch(recording.schema, []), true),
      ...kept.map((b) => encodeMessages(b, false)),
    ]);
  } catch (error) {
    throw new GrngError(
      'invalid-option',
      `cannot reopen recording ${path} to append: ${(error as Error).message}`,
      { option: 'record', path },
      { cause: error },
    );
  }
  return { run: recording.run, schema: recording.schema, batches: kept, rows, lastStep };
}
