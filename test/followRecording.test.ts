// Following a recording that another process is writing (src/streams/followRecording.ts), and
// `grng serve DIR` / followFolder built on it: rows reach the follower exactly once, in order,
// whole batches only, across a resume that rewrites the file; the server shows live runs and
// files created after it started.
import { spawn, type ChildProcess } from 'node:child_process';
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromIPC, type RecordBatch, type Schema } from 'apache-arrow';
import seedrandom from 'seedrandom';
import { Subject, type Subscription } from 'rxjs';
import { afterAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { main } from '../src/cli/main.js';
import { followFolder } from '../src/cli/followFolder.js';
import { isGrngError } from '../src/errors.js';
import { metricsSchema, rowsToRecordBatch } from '../src/metrics/schema.js';
import { encodeStream } from '../src/sinks/encodeStream.js';
import { encodeMessages, END_OF_STREAM, recordArrow } from '../src/sinks/recordArrow.js';
import { reopenRecording } from '../src/sinks/reopenRecording.js';
import { RunHub } from '../src/sinks/runHub.js';
import {
  followRecording,
  RecordingFollower,
  type FollowEvent,
} from '../src/streams/followRecording.js';
import { readRecording } from '../src/streams/readRecording.js';
import { FULL_RUN } from '../src/sweep/halving.js';
import { fakeMetricsRow, fakeRecordedRun } from './fixtures/fakeRuns.js';

const root = new URL('..', import.meta.url).pathname;
const top = mkdtempSync(join(tmpdir(), 'grng-follow-'));
let fileCount = 0;
const freshPath = (name = 'run'): string => join(top, `${name}-${(fileCount += 1)}.arrows`);

afterAll(() => rmSync(top, { recursive: true, force: true }));

const schemaOf = (id: string): Schema => metricsSchema(fakeRecordedRun(id));
const batchOf = (schema: Schema, from: number, count: number): RecordBatch =>
  rowsToRecordBatch(
    schema,
    Array.from({ length: count }, (_, i) => fakeMetricsRow(from + i)),
  );

/** Every step of the batch events, in order. */
function stepsOf(events: readonly FollowEvent[]): number[] {
  return events.flatMap((e) =>
    e.type === 'batch' ? Array.from(e.batch.getChild('step')!.toArray() as Int32Array) : [],
  );
}
const range = (from: number, to: number): number[] =>
  Array.from({ length: to - from }, (_, i) => from + i);

/** The real recorder, driven by hand: each `write` is one synchronous append, as in training. */
function recorder(
  path: string,
  schema: Schema,
  options: { append?: boolean } = {},
): { write(from: number, count: number): void; finish(): void } {
  const batches = new Subject<RecordBatch>();
  const subscription: Subscription = batches
    .pipe(recordArrow(path, options.append ? { append: true } : { overwrite: true }))
    .subscribe();
  return {
    write: (from, count) => batches.next(batchOf(schema, from, count)),
    finish: () => {
      batches.complete();
      subscription.unsubscribe();
    },
  };
}

describe('RecordingFollower', () => {
  it('yields the run, then exactly the rows written, in order, none twice, then the end', () => {
    const path = freshPath();
    const schema = schemaOf('slow');
    const follower = new RecordingFollower(path);
    expect(follower.poll()).toEqual([]); // no file yet
    const writer = recorder(path, schema);
    expect(follower.poll()).toEqual([]); // created, nothing written yet
    const events: FollowEvent[] = [];
    let next = 0;
    for (const count of [1, 7, 3, 16, 2]) {
      writer.write(next, count);
      next += count;
      const seen = follower.poll();
      events.push(...seen);
      expect(stepsOf(events)).toEqual(range(0, next));
      expect(follower.poll()).toEqual([]); // nothing new: nothing again
    }
    writer.finish();
    events.push(...follower.poll());
    expect(events[0]).toMatchObject({ type: 'run', run: { id: 'slow' } });
    expect(events.filter((e) => e.type === 'run')).toHaveLength(1);
    expect(events.at(-1)).toEqual({ type: 'end' });
    expect(stepsOf(events)).toEqual(range(0, 29));
    expect(follower.done).toBe(true);
    expect(follower.rows).toBe(29);
    // The rows are the ones written, value for value.
    const losses = events.flatMap((e) =>
      e.type === 'batch' ? Array.from(e.batch.getChild('loss')!.toArray() as Float64Array) : [],
    );
    expect(losses).toEqual(range(0, 29).map((s) => fakeMetricsRow(s).loss));
  });

  it('a batch written in two halves is yielded once, whole, when its second half arrives', () => {
    const schema = schemaOf('halves');
    const head = encodeMessages(batchOf(schema, 0, 4), true);
    const second = encodeMessages(batchOf(schema, 4, 6), false);
    // Every cut: inside the 8-byte prefix, the metadata, the body, and one byte short.
    const cuts = [1, 4, 7, 8, 9, 64, Math.floor(second.length / 2), second.length - 1];
    for (const cut of cuts) {
      const path = freshPath('halves');
      writeFileSync(path, head);
      const follower = new RecordingFollower(path);
      expect(stepsOf(follower.poll())).toEqual(range(0, 4));
      appendFileSync(path, second.subarray(0, cut));
      expect(follower.poll(), `cut at ${cut}`).toEqual([]);
      expect(follower.bufferedBytes).toBe(cut); // the half, and nothing more, is held
      appendFileSync(path, second.subarray(cut));
      const events = follower.poll();
      expect(events, `cut at ${cut}`).toHaveLength(1);
      expect(stepsOf(events)).toEqual(range(4, 10));
      expect(follower.bufferedBytes).toBe(0);
      appendFileSync(path, END_OF_STREAM.subarray(0, 5));
      expect(follower.poll()).toEqual([]);
      appendFileSync(path, END_OF_STREAM.subarray(5));
      expect(follower.poll()).toEqual([{ type: 'end' }]);
    }
    // The schema itself in two halves: the run is announced once it is whole.
    const path = freshPath('schema-halves');
    writeFileSync(path, head.subarray(0, 100));
    const follower = new RecordingFollower(path);
    expect(follower.poll()).toEqual([]);
    appendFileSync(path, head.subarray(100));
    const events = follower.poll();
    expect(events.map((e) => e.type)).toEqual(['run', 'batch']);
  });

  it('any cutting of a stream into appends yields the same rows (60 random cuttings)', () => {
    const schema = schemaOf('random-cuts');
    const batches = [1, 5, 2, 9, 3, 1, 12].reduce<RecordBatch[]>((all, count) => {
      const from = all.reduce((n, b) => n + b.numRows, 0);
      return [...all, batchOf(schema, from, count)];
    }, []);
    const bytes = Uint8Array.from([
      ...batches.flatMap((b, i) => [...encodeMessages(b, i === 0)]),
      ...END_OF_STREAM,
    ]);
    const random = seedrandom('follow');
    let largestHeld = 0;
    for (let round = 0; round < 60; round++) {
      const path = freshPath('cuts');
      writeFileSync(path, new Uint8Array(0));
      const follower = new RecordingFollower(path);
      const events: FollowEvent[] = [];
      for (let at = 0; at < bytes.length;) {
        const size = 1 + Math.floor(random() * (round % 2 === 0 ? 120 : 1500));
        appendFileSync(path, bytes.subarray(at, at + size));
        at += size;
        events.push(...follower.poll());
        largestHeld = Math.max(largestHeld, follower.bufferedBytes);
      }
      expect(stepsOf(events)).toEqual(range(0, 33));
      expect(events.map((e) => e.type).filter((t) => t !== 'batch')).toEqual(['run', 'end']);
      rmSync(path);
    }
    // Only a message being written is ever held, never the file.
    const schemaMessage =
      encodeMessages(batches[0]!, true).length - encodeMessages(batches[0]!, false).length;
    const largestMessage = Math.max(
      schemaMessage,
      ...batches.map((b) => encodeMessages(b, false).length),
    );
    expect(largestHeld).toBeLessThan(largestMessage + 1500);
    expect(largestHeld).toBeLessThan(bytes.length);
  });

  it('a resumed run (reopenRecording, then appending) neither repeats nor loses a row', () => {
    const schema = schemaOf('resumed');
    for (const pollBetween of [true, false]) {
      const path = freshPath('resumed');
      // A writer killed mid-batch: rows 0..29 whole, 30..39 torn, no end marker.
      writeFileSync(path, encodeMessages(batchOf(schema, 0, 10), true));
      for (const from of [10, 20])
        appendFileSync(path, encodeMessages(batchOf(schema, from, 10), false));
      const torn = encodeMessages(batchOf(schema, 30, 10), false);
      appendFileSync(path, torn.subarray(0, torn.length / 2));
      const follower = new RecordingFollower(path);
      const events = follower.poll();
      expect(stepsOf(events)).toEqual(range(0, 30));
      const inode = statSync(path).ino;
      // Resumed from the checkpoint at step 19: rows after it are made again, then new ones.
      const reopened = reopenRecording(path, 19);
      expect(reopened.lastStep).toBe(19);
      expect(statSync(path).ino).not.toBe(inode); // rewritten by rename
      if (pollBetween) events.push(...follower.poll());
      const writer = recorder(path, schema, { append: true });
      for (const [from, count] of [
        [20, 7],
        [27, 8],
        [35, 9],
        [44, 6],
      ] as const) {
        writer.write(from, count);
        if (pollBetween) events.push(...follower.poll());
      }
      writer.finish();
      events.push(...follower.poll());
      expect(stepsOf(events), `polling between: ${pollBetween}`).toEqual(range(0, 50));
      expect(events.filter((e) => e.type === 'run')).toHaveLength(1);
      expect(events.at(-1)).toEqual({ type: 'end' });
      // And the file says the same.
      expect(
        readRecording(path).batches.flatMap((b) => Array.from(b.getChild('step')!.toArray())),
      ).toEqual(range(0, 50));
    }
  });

  it('with followResumes, a run continued after its end marker (a promoted trial) goes on', () => {
    const schema = schemaOf('promoted');
    const path = freshPath('promoted');
    const writer = recorder(path, schema);
    writer.write(0, 30);
    writer.finish();
    const once = new RecordingFollower(path);
    const following = new RecordingFollower(path, { followResumes: true });
    expect(once.poll().at(-1)).toEqual({ type: 'end' });
    expect(once.done).toBe(true);
    const events = following.poll();
    expect(events.at(-1)).toEqual({ type: 'end' });
    expect(following.done).toBe(false);
    expect(following.ended).toBe(true);
    reopenRecording(path, 29);
    const next = recorder(path, schema, { append: true });
    next.write(30, 15);
    events.push(...following.poll());
    next.write(45, 15);
    next.finish();
    events.push(...following.poll());
    expect(stepsOf(events)).toEqual(range(0, 60));
    expect(events.map((e) => e.type).filter((t) => t !== 'batch')).toEqual(['run', 'end', 'end']);
    expect(once.poll()).toEqual([]);
  });

  it('a file rewritten with another run is reported as replaced, and following ends', () => {
    const path = freshPath('replaced');
    const first = recorder(path, schemaOf('first'));
    first.write(0, 20);
    first.finish();
    const follower = new RecordingFollower(path, { followResumes: true });
    expect(stepsOf(follower.poll())).toEqual(range(0, 20));
    // `--overwrite`: the same file truncated and written again, with more bytes than before.
    const second = recorder(path, schemaOf('second'));
    second.write(0, 40);
    const events = follower.poll();
    expect(events).toEqual([{ type: 'replaced', run: fakeRecordedRun('second') }]);
    expect(follower.done).toBe(true);
    second.finish();
  });

  it('damage after the schema is one GrngError naming the file and the byte in the file', () => {
    const schema = schemaOf('damaged');
    const path = freshPath('damaged');
    const head = encodeMessages(batchOf(schema, 0, 5), true);
    writeFileSync(path, head);
    const follower = new RecordingFollower(path);
    expect(stepsOf(follower.poll())).toEqual(range(0, 5));
    appendFileSync(path, encodeMessages(batchOf(schema, 5, 5), false));
    appendFileSync(path, Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]));
    const at = statSync(path).size - 10;
    let error: unknown;
    try {
      follower.poll();
    } catch (e) {
      error = e;
    }
    expect(isGrngError(error)).toBe(true);
    expect((error as Error).message).toBe(
      `${path}: expected the Arrow IPC continuation marker 0xFFFFFFFF, found 0x04030201 at byte ${at}`,
    );
    // readRecording says the same of the whole file.
    expect(() => readRecording(path)).toThrow((error as Error).message);
    // Bytes after the end-of-stream marker are refused too, as readRecording refuses them.
    const after = freshPath('after-end');
    writeFileSync(after, Uint8Array.from([...head, ...END_OF_STREAM, 1, 2, 3]));
    expect(() => new RecordingFollower(after).poll()).toThrow(
      `${after}: 3 bytes after the end-of-stream marker at byte ${head.length + 8}`,
    );
    expect(() => readRecording(after)).toThrow(/3 bytes after the end-of-stream marker/);
  });
});

describe('followRecording (async iterable)', () => {
  it('follows a writer on a timer to its end; an abort ends an unfinished one quietly', async () => {
    const schema = schemaOf('timed');
    const path = freshPath('timed');
    const writer = recorder(path, schema);
    let next = 0;
    const timer = setInterval(() => {
      if (next >= 60) {
        clearInterval(timer);
        writer.finish();
        return;
      }
      writer.write(next, 6);
      next += 6;
    }, 15);
    const events: FollowEvent[] = [];
    for await (const event of followRecording(path, { pollMs: 5 })) events.push(event);
    expect(stepsOf(events)).toEqual(range(0, 60));
    expect(events[0]!.type).toBe('run');
    expect(events.at(-1)).toEqual({ type: 'end' });

    const unfinished = freshPath('unfinished');
    const stalled = recorder(unfinished, schema);
    stalled.write(0, 3);
    const stop = new AbortController();
    const seen: FollowEvent[] = [];
    const following = (async () => {
      for await (const event of followRecording(unfinished, { pollMs: 5, signal: stop.signal }))
        seen.push(event);
    })();
    await until(() => seen.length === 2, 'the run and its first batch');
    stop.abort();
    await following;
    expect(stepsOf(seen)).toEqual([0, 1, 2]);
    stalled.finish();
  });
});

// ---- followFolder and `grng serve DIR` ----------------------------------------------------------

async function until(predicate: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms: ${what}`);
    await new Promise((done) => setTimeout(done, 10));
  }
}

/** A `ws` client that keeps every protocol message: texts, and the steps of each batch. */
function client(url: string): Promise<{
  ws: WebSocket;
  texts: Array<Record<string, unknown>>;
  steps: Map<string, number[]>;
}> {
  const ws = new WebSocket(url);
  const texts: Array<Record<string, unknown>> = [];
  const steps = new Map<string, number[]>();
  let batchOfRun: string | undefined;
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary) {
      const message = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
      texts.push(message);
      if (message.type === 'batch') batchOfRun = message.runId as string;
      return;
    }
    const got = Array.from(tableFromIPC(data).getChild('step')?.toArray() ?? []) as number[];
    steps.set(batchOfRun!, [...(steps.get(batchOfRun!) ?? []), ...got]);
  });
  return new Promise((done, fail) => {
    ws.once('open', () => done({ ws, texts, steps }));
    ws.once('error', fail);
  });
}

/** A recording written by another process, a batch per line on its stdin, `end` to finish. */
function childRecorder(
  path: string,
  id: string,
): { child: ChildProcess; write(line: string): Promise<void> } {
  const code = `
    import { createInterface } from 'node:readline';
    import { Subject } from 'rxjs';
    import { recordArrow } from './src/sinks/recordArrow.ts';
    import { metricsSchema, rowsToRecordBatch } from './src/metrics/schema.ts';
    import { fakeMetricsRow, fakeRecordedRun } from './test/fixtures/fakeRuns.ts';
    const [path, id] = process.argv.slice(-2);
    const schema = metricsSchema(fakeRecordedRun(id));
    const batches = new Subject();
    batches.pipe(recordArrow(path)).subscribe();
    let next = 0;
    for await (const line of createInterface({ input: process.stdin })) {
      if (line === 'end') { batches.complete(); console.log('done'); break; }
      const rows = Array.from({ length: Number(line) }, (_, i) => fakeMetricsRow(next + i));
      batches.next(rowsToRecordBatch(schema, rows));
      next += rows.length;
      console.log('wrote ' + next);
    }`;
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', code, path, id],
    { cwd: root, stdio: ['pipe', 'pipe', 'inherit'] },
  );
  let out = '';
  child.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  return {
    child,
    async write(line) {
      const lines = out.split('\n').length;
      child.stdin!.write(`${line}\n`);
      await until(() => out.split('\n').length > lines, `the child to write ${line}`, 30_000);
    },
  };
}

describe('grng serve DIR (in-process, a real WebSocket client)', () => {
  it('shows a run another process is still recording, live, and a file created after it started', async () => {
    const dir = mkdtempSync(join(top, 'serve-'));
    writeFileSync(
      join(dir, 'done.arrows'),
      encodeStream([batchOf(schemaOf('done'), 0, 12)], schemaOf('done')),
    );
    const writer = childRecorder(join(dir, 'live.arrows'), 'live');
    await writer.write('10');

    let err = '';
    const started = Date.now();
    const exit = main(['serve', dir, '--port', '0'], {
      out: () => undefined,
      err: (t) => void (err += t),
      isTTY: false,
    });
    await until(() => /recording\(s\) from/.test(err), 'the recordings to load');
    expect(err).toMatch(/grng: 2 recording\(s\) from/);
    expect(err).toMatch(/following .*live\.arrows live \(10 rows so far/);
    const port = Number(/dashboard at http:\/\/127\.0\.0\.1:(\d+)\//.exec(err)![1]);
    const { ws, texts, steps } = await client(`ws://127.0.0.1:${port}/ws`);
    await until(() => texts.some((t) => t.type === 'ready'), 'ready');
    const hello = texts[0] as {
      type: string;
      runs: Array<{ id: string; rows: number; finished: boolean }>;
    };
    expect(hello.type).toBe('hello');
    expect(hello.runs.map(({ id, rows, finished }) => ({ id, rows, finished }))).toEqual([
      { id: 'done', rows: 12, finished: true },
      { id: 'live', rows: 10, finished: false },
    ]);
    expect(steps.get('done')).toEqual(range(0, 12));
    expect(steps.get('live')).toEqual(range(0, 10));
    const endOf = (id: string): boolean => texts.some((t) => t.type === 'end' && t.runId === id);
    expect(endOf('done')).toBe(true);
    expect(endOf('live')).toBe(false);

    // Rows the other process writes now reach the client as live batches.
    await writer.write('5');
    await until(() => steps.get('live')!.length === 15, 'rows 10..14 live');
    await writer.write('7');
    await until(() => steps.get('live')!.length === 22, 'rows 15..21 live');
    expect(steps.get('live')).toEqual(range(0, 22));
    const live = texts.filter((t) => t.type === 'batch' && t.runId === 'live' && !t.history);
    expect(live.length).toBeGreaterThanOrEqual(2);

    // A file that appears after the server started: run, its rows, its end.
    writeFileSync(
      join(dir, 'later.arrows'),
      encodeStream([batchOf(schemaOf('later'), 0, 8)], schemaOf('later')),
    );
    await until(() => endOf('later'), 'the later run to arrive whole');
    expect(steps.get('later')).toEqual(range(0, 8));
    const order = texts
      .filter((t) => t.runId === 'later' || (t.run as { id?: string })?.id === 'later')
      .map((t) => t.type);
    expect(order[0]).toBe('run');
    expect(order.at(-1)).toBe('end');

    // The other process finishes: the live run ends, with every row once.
    await writer.write('end');
    await until(() => endOf('live'), 'the live run to end');
    expect(steps.get('live')).toEqual(range(0, 22));
    const runs = (await (await fetch(`http://127.0.0.1:${port}/api/runs`)).json()) as Array<{
      id: string;
      rows: number;
      finished: boolean;
    }>;
    expect(runs.map(({ id, rows, finished }) => ({ id, rows, finished }))).toEqual([
      { id: 'done', rows: 12, finished: true },
      { id: 'live', rows: 22, finished: true },
      { id: 'later', rows: 8, finished: true },
    ]);
    // Finished now: its download is the recording file itself.
    const download = Buffer.from(
      await (await fetch(`http://127.0.0.1:${port}/runs/live.arrows`)).arrayBuffer(),
    );
    expect(download.equals(readFileSync(join(dir, 'live.arrows')))).toBe(true);

    ws.close();
    await until(() => /keeps serving/.test(err), 'the serve command to keep serving');
    process.emit('SIGINT', 'SIGINT');
    expect(await exit).toBe(0);
    console.log(
      `grng serve DIR followed a live recording and a new file in ${Date.now() - started} ms`,
    );
  }, 60_000);
});

describe('followFolder on a sweep folder', () => {
  it('serves trial recordings too, and ends a trial run only when the trial will not run again', async () => {
    const dir = mkdtempSync(join(top, 'sweep-'));
    const trial = (id: string): string => join(dir, 'trials', id);
    writeFileSync(
      join(dir, 'sweep.json'),
      JSON.stringify({
        config: {
          name: 's',
          metric: { name: 'testAccuracy', higherIsBetter: true },
          halving: { rungs: [20], reduction: 2 },
        },
        trials: [
          { id: 'aaaa', settings: { optimizer: 'sgd', seed: 1 }, options: {} },
          { id: 'bbbb', settings: { optimizer: 'sgd', seed: 2 }, options: {} },
        ],
      }),
    );
    const result = (id: string, budget: number, steps: number): void =>
      writeFileSync(
        join(trial(id), `result-${budget}.json`),
        JSON.stringify({
          id,
          status: 'done',
          steps,
          budget,
          metric: 0.5,
          best: 0.6,
          seconds: 1,
          stepsPerSecond: 20,
          ranBy: 'test',
        }),
      );
    // Trial aaaa has run its first rung (its recording ended there); bbbb is still running it.
    for (const id of ['aaaa', 'bbbb']) mkdirSync(trial(id), { recursive: true });
    const a = recorder(join(trial('aaaa'), 'run.arrows'), schemaOf('run-a'));
    a.write(0, 20);
    a.finish();
    result('aaaa', 20, 20);
    const b = recorder(join(trial('bbbb'), 'run.arrows'), schemaOf('run-b'));
    b.write(0, 10);
    writeFileSync(join(trial('bbbb'), 'lock'), 'test');

    const hub = new RunHub();
    const stop = new AbortController();
    const warnings: string[] = [];
    const following = followFolder(dir, hub, {
      signal: stop.signal,
      warn: (m) => warnings.push(m),
      pollMs: 10,
    });
    await following.ready;
    expect(hub.runs().map((r) => [r.run.id, r.rows, r.finished])).toEqual([
      ['run-a', 20, false], // ended its rung, may be promoted: still live
      ['run-b', 10, false],
    ]);
    // aaaa is promoted: its recording is reopened and continued; the same run goes on.
    reopenRecording(join(trial('aaaa'), 'run.arrows'), 19);
    const a2 = recorder(join(trial('aaaa'), 'run.arrows'), schemaOf('run-a'), { append: true });
    a2.write(20, 15);
    await until(() => hub.run('run-a')!.rows === 35, 'trial aaaa promoted, live');
    a2.finish();
    result('aaaa', FULL_RUN, 35);
    await until(() => hub.run('run-a')!.finished, 'trial aaaa to end after its whole run');
    // bbbb finishes its rung and is not promoted: its run ends when the sweep does.
    b.write(10, 10);
    b.finish();
    rmSync(join(trial('bbbb'), 'lock'));
    result('bbbb', 20, 20);
    await until(() => hub.run('run-b')!.rows === 20, 'the rest of bbbb');
    await new Promise((done) => setTimeout(done, 100));
    expect(hub.run('run-b')!.finished).toBe(false);
    writeFileSync(
      join(dir, 'results.json'),
      JSON.stringify([{ trial: 'bbbb', status: 'stopped at 20' }]),
    );
    await until(() => hub.run('run-b')!.finished, 'trial bbbb to end with the sweep');
    expect(
      hub.run('run-a')!.batches.flatMap((x) => Array.from(x.getChild('step')!.toArray())),
    ).toEqual(range(0, 35));
    expect(warnings).toEqual([]);
    stop.abort();
    await following.done;
  });
});
