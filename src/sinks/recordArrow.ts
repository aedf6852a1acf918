import { closeSync, fstatSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { RecordBatchStreamWriter, type RecordBatch } from 'apache-arrow';
import { Observable, type MonoTypeOperatorFunction } from 'rxjs';
import { GrngError } from '../errors.js';
import { checkBoolean, checkKeys } from '../validate.js';

export interface RecordArrowOptions {
  /** Replace an existing file; default false (an existing recording is an error). */
  readonly overwrite?: boolean;
  /** fsync after every batch (survives power loss, not only a killed process); default false. */
  readonly fsync?: boolean;
  /**
   * Append record batches to an existing stream that has its schema and no end-of-stream
   * marker (see reopenRecording); default false.
   */
  readonly append?: boolean;
}

/** Arrow IPC end-of-stream marker: continuation token, zero metadata length. */
export const END_OF_STREAM = Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

/**
 * Records record batches to an Arrow IPC *stream* file (`.arrows`) as they pass: the schema and
 * each batch are written with one synchronous write as soon as the batch exists, so a killed
 * process leaves a file readable up to its last complete batch (the OS has the bytes); the
 * end-of-stream marker is written on completion (and on error, after the batches so far).
 * Batches pass through unchanged. The file is created when the stream is subscribed; an existing
 * file is an error unless `overwrite`.
 *
 * @example
 * rows$.pipe(toRecordBatches(schema), recordArrow('runs/ring.arrows')).subscribe();
 */
export function recordArrow(
  path: string,
  options: RecordArrowOptions = {},
): MonoTypeOperatorFunction<RecordBatch> {
  checkKeys('recordArrow', options, ['overwrite', 'fsync', 'append']);
  const append = checkBoolean('append', options.append ?? false);
  const overwrite = checkBoolean('overwrite', options.overwrite ?? false);
  const durable = checkBoolean('fsync', options.fsync ?? false);
  return (source) =>
    new Observable<RecordBatch>((subscriber) => {
      let fd: number;
      let position = 0;
      try {
        mkdirSync(dirname(path), { recursive: true });
        fd = openSync(path, append ? 'r+' : overwrite ? 'w' : 'wx');
        if (append) position = fstatSync(fd).size;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        subscriber.error(
          new GrngError(
            'invalid-option',
            code === 'EEXIST'
              ? `recording ${path} already exists (choose another name, or overwrite it explicitly)`
              : `cannot create recording ${path}: ${(error as Error).message}`,
            { option: 'record', path },
            { cause: error },
          ),
        );
        return;
      }
      let schemaWritten = append;
      let closed = false;
      const write = (bytes: Uint8Array): void => {
        let offset = 0;
        while (offset < bytes.length) {
          const written = writeSync(fd, bytes, offset, bytes.length - offset, position);
          offset += written;
          position += written;
        }
        if (durable) fsyncSync(fd);
      };
      const finish = (): void => {
        if (closed) return;
        closed = true;
        try {
          write(END_OF_STREAM);
        } finally {
          closeSync(fd);
        }
      };
      const subscription = source.subscribe({
        next(batch) {
          try {
            write(encodeMessages(batch, !schemaWritten));
            schemaWritten = true;
          } catch (error) {
            subscriber.error(
              new GrngError(
                'internal',
                `cannot write recording ${path}: ${(error as Error).message}`,
                { path },
                { cause: error },
              ),
            );
            return;
          }
          subscriber.next(batch);
        },
        error(error: unknown) {
          finish();
          subscriber.error(error);
        },
        complete() {
          try {
            finish();
          } catch (error) {
            subscriber.error(
              new GrngError(
                'internal',
                `cannot finish recording ${path}: ${(error as Error).message}`,
                { path },
                { cause: error },
              ),
            );
            return;
          }
          subscriber.complete();
        },
      });
      return () => {
        subscription.unsubscribe();
        if (!closed) {
          try {
            finish();
          } catch {
            // Teardown must not throw; the batches written so far are already on disk.
          }
        }
      };
    });
}

/**
 * The IPC messages of one batch: with the schema message first when `withSchema`, and without
 * the end-of-stream marker, so consecutive calls append to one stream.
 */
export function encodeMessages(batch: RecordBatch, withSchema: boolean): Uint8Array {
  const full = RecordBatchStreamWriter.writeAll([batch]).toUint8Array(true);
  const body = full.subarray(0, full.length - END_OF_STREAM.length);
  if (withSchema) return body;
  // The schema message is the first one: continuation (4 bytes), length (4), metadata, no body.
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const schemaLength = 8 + view.getInt32(4, true);
  return body.subarray(schemaLength);
}
