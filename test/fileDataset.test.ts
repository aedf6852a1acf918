import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Dictionary,
  Field,
  FixedSizeList,
  Float32,
  Float64,
  Int32,
  Int64,
  Int8,
  makeData,
  makeVector,
  RecordBatch,
  Schema,
  Table,
  tableToIPC,
  Utf8,
  vectorFromArray,
} from 'apache-arrow';
import { errorOf } from './helpers.js';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { cliMessage } from '../src/cli/optionFlags.js';
import { exampleShape, parseShape, withExampleShape } from '../src/data/dataset.js';
import { loadDatasetFile } from '../src/data/fileDataset.js';
import { GrngError, isGrngError } from '../src/errors.js';
import { loadCheckpoint } from '../src/run/checkpoint.js';
import { prepareRun, train } from '../src/run/train.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-files-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

async function cli(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, {
    out: (t) => void (out += t),
    err: (t) => void (err += t),
    isTTY: false,
  });
  return { code, out, err };
}

/** Two well separated blobs per class, in rows of `label,a,b`. */
function blobRows(perClass: number, classes = 3): string[] {
  const rows: string[] = [];
  for (let i = 0; i < perClass; i++) {
    for (let c = 0; c < classes; c++)
      rows.push(
        `${c},${(c * 3 + Math.sin(i) * 0.5).toFixed(4)},${(-c * 2 + Math.cos(i * 1.7) * 0.5).toFixed(4)}`,
      );
  }
  return rows;
}

const arrowBytes = (table: Table, format: 'file' | 'stream' = 'file'): Uint8Array =>
  tableToIPC(table, format);

/** The table with schema metadata, as pyarrow's `schema.with_metadata` writes it. */
function withMetadata(table: Table, metadata: Record<string, string>): Table {
  const schema = new Schema(table.schema.fields, new Map(Object.entries(metadata)));
  return new Table(
    schema,
    table.batches.map((batch) => new RecordBatch(schema, batch.data)),
  );
}

function listFeatures(
  rows: number[][],
  type: Float32 | Float64 = new Float32(),
): ReturnType<typeof makeVector> {
  const width = rows[0]!.length;
  const child = makeData({
    type,
    length: rows.length * width,
    data: (type instanceof Float64 ? Float64Array : Float32Array).from(rows.flat()),
  });
  return makeVector(
    makeData({
      type: new FixedSizeList(width, new Field('item', type, true)),
      length: rows.length,
      child,
      nullCount: 0,
    }),
  );
}

/**
 * Bad files: what the file holds, what the one line must say (API message and CLI line alike),
 * and the context the GrngError carries. Every case runs through loadDatasetFile and through
 * `grng train --dataset FILE`.
 */
interface BadFile {
  readonly name: string;
  readonly content: string | Uint8Array | (() => string);
  readonly message: RegExp;
  readonly context?: Record<string, unknown>;
}

const CSV_CASES: BadFile[] = [
  { name: 'empty.csv', content: '', message: /is empty \(0 bytes\)/, context: { offset: 0 } },
  {
    name: 'blank-lines.csv',
    content: '\n\r\n\n',
    message: /has no header row \(only blank lines\)/,
  },
  { name: 'bom-only.csv', content: '\ufeff', message: /has no header row/ },
  {
    name: 'header-only.csv',
    content: 'label,a,b\n',
    message: /line 1, byte 0: the file has a header but no data rows/,
    context: { line: 1 },
  },
  {
    name: 'header-only-crlf-bom.csv',
    content: '\ufefflabel,a,b\r\n\r\n',
    message: /line 1, byte 3: the file has a header but no data rows/,
  },
  {
    name: 'no-label.csv',
    content: 'a,b\n1,2\n',
    message: /line 1, byte 0: the header has no "label" column \(columns: "a", "b"\)/,
  },
  {
    name: 'label-only.csv',
    content: 'label\n0\n1\n',
    message: /the header has no feature columns besides "label"/,
  },
  {
    name: 'duplicate.csv',
    content: 'label,a,a\n0,1,2\n',
    message:
      /line 1, column 3 \("a"\), byte 8: the header names column "a" twice \(also column 2\)/,
    context: { column: 'a', offset: 8 },
  },
  {
    name: 'empty-name.csv',
    content: 'label,a,\n0,1,2\n',
    message: /column 3 \(""\), byte 8: the header has an empty column name/,
  },
  {
    name: 'ragged-short.csv',
    content: 'label,a,b\n0,1,2\n1,3\n',
    message: /line 3, byte 16: 2 cells, but the header has 3 columns/,
    context: { line: 3, offset: 16 },
  },
  {
    name: 'ragged-long.csv',
    content: 'label,a,b\n0,1,2\n1,3,4,5\n',
    message: /line 3, byte 16: 4 cells, but the header has 3 columns/,
  },
  {
    name: 'ragged-crlf.csv',
    content: 'label,a,b\r\n0,1,2\r\n1,3\r\n',
    message: /line 3, byte 18: 2 cells, but the header has 3 columns/,
  },
  {
    name: 'non-numeric.csv',
    content: 'label,a,b\n0,1,2\n1,3,abc\n',
    message: /line 3, column 3 \("b"\), byte 20: "abc" is not a number/,
    context: { line: 3, column: 'b', offset: 20 },
  },
  {
    name: 'hex.csv',
    content: 'label,a\n0,0x10\n1,2\n',
    message: /line 2, column 2 \("a"\), byte 10: "0x10" is not a number/,
  },
  {
    name: 'empty-cell.csv',
    content: 'label,a,b\n0,,2\n1,1,2\n',
    message: /line 2, column 2 \("a"\), byte 12: the cell is empty/,
  },
  {
    name: 'nan.csv',
    content: 'label,a\n0,1\n1,NaN\n',
    message:
      /line 3, column 2 \("a"\), byte 14: NaN is not a finite number \(features must be finite\)/,
  },
  {
    name: 'inf.csv',
    content: 'label,a\n0,-inf\n1,1\n',
    message: /line 2, column 2 \("a"\), byte 10: -inf is not a finite number/,
  },
  {
    name: 'infinity.csv',
    content: 'label,a\n0,1\n1,Infinity\n',
    message: /Infinity is not a finite number/,
  },
  {
    name: 'overflow.csv',
    content: 'label,a\n0,1e39\n1,1\n',
    message: /line 2, column 2 \("a"\), byte 10: 1e39 does not fit in a 32-bit float/,
  },
  {
    name: 'float-label.csv',
    content: 'label,a\n0,1\n1.5,2\n',
    message: /line 3, column 1 \("label"\), byte 12: label 1.5 is not an integer/,
    context: { column: 'label', line: 3 },
  },
  {
    name: 'negative-label.csv',
    content: 'label,a\n0,1\n-1,2\n',
    message: /line 3, column 1 \("label"\), byte 12: label -1 is negative/,
  },
  {
    name: 'word-label.csv',
    content: 'a,label\n1,cat\n2,dog\n',
    message: /line 2, column 2 \("label"\), byte 10: label "cat" is not a number/,
  },
  {
    name: 'empty-label.csv',
    content: 'label,a\n0,1\n,2\n',
    message: /line 3, column 1 \("label"\), byte 12: the label is empty/,
  },
  {
    name: 'huge-label.csv',
    content: 'label,a\n0,1\n99999999999,2\n',
    message: /label 99999999999 is too large/,
  },
  {
    name: 'single-class.csv',
    content: 'label,a\n3,1\n3,2\n3,5\n',
    message: /every one of its 3 rows has label 3; a classifier needs at least 2 classes/,
  },
  {
    name: 'unclosed-quote.csv',
    content: 'label,a\n0,1\n1,"2\n',
    message: /line 3, byte 14: a quoted cell opened here is never closed/,
  },
  {
    name: 'after-quote.csv',
    content: 'label,a\n0,"1"x\n1,2\n',
    message: /line 2, byte 13: unexpected "x" after the closing quote/,
  },
  {
    name: 'bad-utf8.csv',
    content: Buffer.concat([
      Buffer.from('label,a\n0,1\n1,'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('\n'),
    ]),
    message: /line 3, byte 14: the cell is not valid UTF-8/,
  },
  {
    name: 'split-value.csv',
    content: 'label,a,split\n0,1,train\n1,2,validation\n',
    message: /line 3, column 3 \("split"\), byte 28: split "validation" is neither train nor test/,
  },
  {
    name: 'split-no-test.csv',
    content: 'label,a,split\n0,1,train\n1,2,train\n',
    message: /the test split is empty/,
  },
  { name: 'too-few-rows.csv', content: 'label,a\n0,1\n1,2\n', message: /the test split is empty/ },
];

const ARROW_CASES: BadFile[] = [
  { name: 'empty.arrow', content: new Uint8Array(0), message: /is empty \(0 bytes\)/ },
  {
    name: 'text.arrow',
    content: 'label,a\n0,1\n',
    message:
      /is not Arrow IPC: expected the file magic "ARROW1" or a stream's continuation marker 0xFFFFFFFF at byte 0, found 0x6c616265/,
    context: { offset: 0 },
  },
  {
    name: 'v1.feather',
    content: Buffer.concat([Buffer.from('FEA1'), Buffer.alloc(60)]),
    message: /is Feather v1 \(magic "FEA1" at byte 0\)/,
  },
  {
    name: 'truncated.arrow',
    content: () => 'truncated',
    message: /is truncated: an Arrow IPC file ends with "ARROW1", not found at byte \d+/,
  },
  {
    name: 'truncated.arrows',
    content: () => 'truncated-stream',
    message: /cannot be read as Arrow IPC stream/,
  },
  {
    name: 'no-label.arrow',
    content: arrowBytes(new Table({ a: vectorFromArray([1, 2], new Float32()) })),
    message: /has no "label" column \(columns: "a"\)/,
  },
  {
    name: 'shape-text.arrow',
    content: arrowBytes(
      withMetadata(
        new Table({
          label: vectorFromArray([0, 1], new Int32()),
          a: vectorFromArray([1, 2], new Float32()),
        }),
        { 'grng.shape': '1 by 1' },
      ),
    ),
    message:
      /schema metadata grng\.shape "1 by 1" is not a shape \(expected e\.g\. "28x28x1": whole numbers ≥ 1 joined by x\)/,
    context: { metadata: 'grng.shape' },
  },
  {
    name: 'shape-product.arrows',
    content: arrowBytes(
      withMetadata(
        new Table({
          label: vectorFromArray([0, 1], new Int32()),
          features: listFeatures([
            [1, 2, 3],
            [4, 5, 6],
          ]),
        }),
        { 'grng.shape': '2x2x1' },
      ),
      'stream',
    ),
    message:
      /schema metadata grng\.shape "2x2x1" holds 4 values, but the file has 3 features per row/,
  },
  {
    name: 'float-label.arrow',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([0, 1], new Float64()),
        a: vectorFromArray([1, 2], new Float32()),
      }),
    ),
    message: /column "label" is Float64, expected an integer type/,
    context: { column: 'label' },
  },
  {
    name: 'negative-label.arrows',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([0, 1, -2], new Int32()),
        a: vectorFromArray([1, 2, 3], new Float32()),
      }),
      'stream',
    ),
    message: /row 2, column "label": label -2 is negative/,
    context: { row: 2 },
  },
  {
    name: 'null-label.arrow',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([0, null, 1], new Int32()),
        a: vectorFromArray([1, 2, 3], new Float32()),
      }),
    ),
    message: /row 1, column "label": the label is null/,
  },
  {
    name: 'null-feature.arrow',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([0, 1, 1], new Int8()),
        a: vectorFromArray([1, null, 3], new Float32()),
      }),
    ),
    message: /row 1, column "a": the value is null/,
    context: { row: 1, column: 'a' },
  },
  {
    name: 'nan-feature.arrow',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([0, 1, 1], new Int8()),
        a: vectorFromArray([1, 2, NaN], new Float64()),
      }),
    ),
    message: /row 2, column "a": NaN is not a finite 32-bit float/,
  },
  {
    name: 'inf-list.arrow',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([0, 1], new Int8()),
        features: listFeatures([
          [1, 2],
          [3, Infinity],
        ]),
      }),
    ),
    message: /row 1, column "features\[1\]": Infinity is not a finite 32-bit float/,
  },
  {
    name: 'string-feature.arrow',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([0, 1], new Int8()),
        a: vectorFromArray(['x', 'y'], new Utf8()),
      }),
    ),
    message: /column "a" is Utf8; feature columns must be numeric/,
  },
  {
    name: 'no-rows.arrow',
    content: arrowBytes(
      new Table({ label: vectorFromArray([], new Int32()), a: vectorFromArray([], new Float32()) }),
    ),
    message: /has no rows/,
  },
  {
    name: 'single-class.arrow',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([1, 1], new Int32()),
        a: vectorFromArray([1, 2], new Float32()),
      }),
    ),
    message: /every one of its 2 rows has label 1/,
  },
  {
    name: 'split-value.arrow',
    content: arrowBytes(
      new Table({
        label: vectorFromArray([0, 1], new Int32()),
        a: vectorFromArray([1, 2], new Float32()),
        split: vectorFromArray(['train', 'dev'], new Utf8()),
      }),
    ),
    message: /row 1, column "split": "dev" is neither train nor test/,
  },
];

const PATH_CASES: Array<{ path: string; message: RegExp; cli?: RegExp }> = [
  { path: join(dir, 'missing.csv'), message: /dataset file .*missing\.csv does not exist/ },
  {
    path: join(dir, 'folder.arrow'),
    message:
      /dataset file .*folder\.arrow is a directory, expected a file \(a folder of idx files is read by loadIdxDataset/,
    // --dataset reads a folder as idx files (test/data.idx.test.ts).
    cli: /^grng: --dataset: idx folder .*folder\.arrow lacks train images: train-images-idx3-ubyte\[\.gz\];.*\(it is empty\)$/,
  },
  {
    path: join(dir, 'data.json'),
    message:
      /invalid dataset: ".*data\.json" has the unknown extension "\.json" \(expected mnist, mnist-full, fashion-mnist, synthetic, a folder of idx files or a path to a \.csv, \.arrow, \.arrows, \.feather file\)/,
  },
  {
    path: 'cifar10',
    message:
      /invalid dataset: "cifar10" is none of mnist, mnist-full, fashion-mnist, synthetic, a folder or a file name with an extension/,
  },
];
mkdirSync(join(dir, 'folder.arrow'));
file('data.json', '{}');

function materialise(bad: BadFile): string {
  if (typeof bad.content !== 'function') return file(bad.name, bad.content);
  const whole = new Table({
    label: vectorFromArray([0, 1, 0, 1], new Int32()),
    a: vectorFromArray([1, 2, 3, 4], new Float32()),
  });
  const bytes =
    bad.content() === 'truncated' ? arrowBytes(whole, 'file') : arrowBytes(whole, 'stream');
  return file(bad.name, bytes.subarray(0, bytes.length - 40));
}

describe('loadDatasetFile: bad files are one GrngError naming file, place and problem', () => {
  for (const bad of [...CSV_CASES, ...ARROW_CASES]) {
    it(bad.name, async () => {
      const path = materialise(bad);
      const error = errorOf(() => loadDatasetFile(path));
      expect(error.code).toMatch(/invalid-data|invalid-option/);
      expect(error.message).toContain(path);
      expect(error.message).toMatch(bad.message);
      expect(error.message).not.toContain('\n');
      if (bad.context) expect(error.context).toMatchObject(bad.context);

      const result = await cli(['train', '--dataset', path, '--backend', 'wasm', '--steps', '1']);
      expect(result.code).toBe(2);
      expect(result.out).toBe('');
      expect(result.err.split('\n').filter(Boolean)).toEqual([`grng: ${error.message}`]);
    });
  }

  for (const { path, message, cli: cliError } of PATH_CASES) {
    it(`path ${path.replace(dir, '<tmp>')}`, async () => {
      const error = errorOf(() => loadDatasetFile(path));
      expect(error.code).toBe('invalid-option');
      expect(error.context).toMatchObject({ option: 'dataset', value: path });
      expect(error.message).toMatch(message);
      const result = await cli(['train', '--dataset', path, '--backend', 'wasm', '--steps', '1']);
      expect(result.code).toBe(2);
      expect(result.out).toBe('');
      const lines = result.err.split('\n').filter(Boolean);
      if (cliError) expect(lines).toEqual([expect.stringMatching(cliError)]);
      else expect(lines).toEqual([`grng: ${cliMessage(error)}`]);
      expect(cliMessage(error)).toContain('--dataset');
    });
  }
});

describe('loadDatasetFile: good files', () => {
  it('reads a CSV with BOM, CRLF, quotes, blank lines and the label anywhere; per-class last 20% are test', () => {
    const rows = [
      '"b ""quoted"" name",label,a',
      '1.5,0,2',
      '',
      '"-2e-1",1,"3"',
      ' 4 , 2 , .5 ',
      '1,0,1',
      '2,1,2',
      '3,2,3',
      '4,0,4',
      '5,1,5',
      '6,2,6',
      '7,0,7',
    ];
    const path = file('good.csv', `\ufeff${rows.join('\r\n')}\r\n\r\n`);
    const data = loadDatasetFile(path);
    expect(data.features).toBe(2);
    expect(data.classes).toBe(3);
    // Class 0 has 4 rows (1 test), class 1 has 3 (1 test), class 2 has 3 (1 test).
    expect([data.train.n, data.test.n]).toEqual([7, 3]);
    expect(Array.from(data.train.x.subarray(0, 6))).toEqual([1.5, 2, Math.fround(-0.2), 3, 4, 0.5]);
    expect(Array.from(data.train.y)).toEqual([0, 1, 2, 0, 1, 2, 0]);
    expect(Array.from(data.test.y)).toEqual([1, 2, 0]);
    expect(Array.from(data.test.x)).toEqual([5, 5, 6, 6, 7, 7]);
    expect(data.description).toMatch(
      /2 features \(b "quoted" name,a\), 3 classes, per class the last ceil\(20%\) in file order are test: 7 train \/ 3 test/,
    );
  });

  it('reads quoted cells with commas and line breaks and counts lines across them', () => {
    const path = file(
      'multiline.csv',
      'label,a,note\n0,1,"x, y"\n1,2,"two\nlines"\n0,3,z\n1,4,"q"\n0,5,w\n',
    );
    // The note column is a feature: "x, y" is not a number, and the line is the record's first.
    expect(errorOf(() => loadDatasetFile(path)).message).toMatch(
      /line 2, column 3 \("note"\), byte 17: "x, y" is not a number/,
    );
    // A line break inside quotes moves the line count on: the bad record after it is line 5.
    const after = file('multiline2.csv', 'label,a,b\n0,1,"2"\n1,"3\n",4\n1,x,4\n');
    expect(errorOf(() => loadDatasetFile(after)).message).toMatch(
      /line 5, column 2 \("a"\), byte 29: "x" is not a number/,
    );
  });

  it('uses a split column and accepts lone-CR line ends', () => {
    const path = file(
      'split.csv',
      'a,label,split\r1,0,train\r2,1,TEST\r3,1,train\r4,0,test\r5,0, train \r',
    );
    const data = loadDatasetFile(path);
    expect([data.train.n, data.test.n]).toEqual([3, 2]);
    expect(Array.from(data.test.x)).toEqual([2, 4]);
    expect(data.description).toMatch(/split column: 3 train \/ 2 test/);
  });

  it('reads Arrow IPC files and streams: numeric columns, Int64 labels, FixedSizeList features, dictionary split', () => {
    const numeric = new Table({
      a: vectorFromArray([1, 2, 3, 4, 5, 6], new Float64()),
      label: vectorFromArray([0n, 1n, 0n, 1n, 0n, 1n], new Int64()),
      b: vectorFromArray([6, 5, 4, 3, 2, 1], new Int32()),
    });
    for (const [name, format] of [
      ['n.arrow', 'file'],
      ['n.feather', 'file'],
      ['n.arrows', 'stream'],
      ['stream-in-file-ext.arrow', 'stream'],
    ] as const) {
      const data = loadDatasetFile(file(name, arrowBytes(numeric, format)));
      expect([data.features, data.classes, data.train.n, data.test.n]).toEqual([2, 2, 4, 2]);
      expect(Array.from(data.test.x)).toEqual([5, 2, 6, 1]);
    }
    const split = vectorFromArray(
      ['train', 'test', 'train', 'train'],
      new Dictionary(new Utf8(), new Int32()),
    );
    const listed = new Table({
      label: vectorFromArray([0, 1, 2, 1], new Int8()),
      features: listFeatures(
        [
          [1, 2, 3],
          [4, 5, 6],
          [7, 8, 9],
          [10, 11, 12],
        ],
        new Float64(),
      ),
      split,
    });
    const data = loadDatasetFile(file('list.arrows', arrowBytes(listed, 'stream')));
    expect([data.features, data.classes, data.train.n, data.test.n]).toEqual([3, 3, 3, 1]);
    expect(Array.from(data.test.x)).toEqual([4, 5, 6]);
    expect(data.description).toMatch(/features\[3\]/);
  });

  it('trains from a CSV file through the CLI and from an Arrow file through the API', async () => {
    const csv = file('blobs.csv', `label,a,b\n${blobRows(60).join('\n')}\n`);
    const result = await cli([
      'train',
      '--dataset',
      csv,
      '--model',
      'mlp:2-16-3',
      '--optimizer',
      'adamw',
      '--lr',
      '0.01',
      '--epochs',
      '15',
      '--batch-size',
      '32',
      '--backend',
      'wasm',
      '--json',
    ]);
    expect(result.code, result.err).toBe(0);
    const summary = JSON.parse(result.out.trim().split('\n').at(-1)!);
    expect(summary.dataset).toBe(csv);
    expect(summary.testAccuracy).toBeGreaterThan(0.95);

    const rows = blobRows(60).map((line) => line.split(',').map(Number));
    const table = new Table({
      label: vectorFromArray(
        rows.map((r) => r[0]!),
        new Int32(),
      ),
      features: listFeatures(rows.map((r) => r.slice(1))),
    });
    const arrow = file('blobs.arrow', arrowBytes(table));
    const fromArrow = await train({
      dataset: arrow,
      model: 'mlp:2-16-3',
      optimizer: 'adamw',
      optimizerOptions: { learningRate: 0.01 },
      epochs: 15,
      batchSize: 32,
      backend: 'wasm',
    });
    expect(fromArrow.testAccuracy).toBeGreaterThan(0.95);
    expect(fromArrow.meta.datasetDescription).toMatch(/144 train \/ 36 test/);
  });

  it('names a model that does not fit the file', async () => {
    const csv = file('fit.csv', `label,a,b\n${blobRows(10).join('\n')}\n`);
    const result = await cli([
      'train',
      '--dataset',
      csv,
      '--model',
      'mlp:2-8-10',
      '--backend',
      'wasm',
    ]);
    expect(result.code).toBe(2);
    expect(result.err).toBe(
      `grng: --model: model mlp:2-8-10 has 10 outputs but dataset ${csv} has 3 classes (e.g. mlp:2-256-3 fits it)\n`,
    );
  });
});

describe('datasets built in code', () => {
  it('are validated by train(): labels out of range, NaN features, wrong shapes, not a dataset', async () => {
    const split = (x: number[], y: number[]) => ({
      x: Float32Array.from(x),
      y: Int32Array.from(y),
      n: y.length,
    });
    const good = {
      name: 'mine',
      features: 2,
      classes: 2,
      train: split([0, 1, 1, 0], [0, 1]),
      test: split([1, 1], [1]),
      description: 'two rows',
    };
    const cases: Array<[unknown, RegExp]> = [
      [
        { ...good, train: split([0, 1, 1, 0], [0, 2]) },
        /dataset mine: train row 1 has label 2, outside \[0, 2\)/,
      ],
      [
        { ...good, train: split([0, NaN, 1, 0], [0, 1]) },
        /dataset mine: train row 0 feature 1 is NaN/,
      ],
      [
        { ...good, test: split([1, 1, 1], [1]) },
        /dataset mine: the test split has 3 feature values, expected 1×2 = 2/,
      ],
      [
        { ...good, train: { x: [0, 1], y: [0], n: 1 } },
        /dataset mine: the train split must be \{ x: Float32Array, y: Int32Array, n: integer \}/,
      ],
      [{ ...good, classes: 1 }, /dataset mine: classes must be an integer ≥ 2, got 1/],
    ];
    for (const [dataset, message] of cases) {
      const error = await train({
        dataset: dataset as never,
        model: 'mlp:2-2',
        steps: 1,
        backend: 'wasm',
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isGrngError(error)).toBe(true);
      expect((error as GrngError).code).toBe('invalid-data');
      expect((error as Error).message).toMatch(message);
    }
  });
});

describe('example shapes of file datasets (--input-shape, inputShape, Arrow metadata grng.shape)', () => {
  /** 2×2 "images" of two classes (bright top row or bright bottom row), 10 per class. */
  const imageRows = (): string[] => {
    const rows = ['label,p0,p1,p2,p3'];
    for (let i = 0; i < 10; i++) {
      const noise = ((i * 7) % 5) / 50;
      rows.push(`0,${0.9 - noise},${0.8 + noise},${0.1 + noise},${0.2 - noise}`);
      rows.push(`1,${0.1 + noise},${0.2 - noise},${0.9 - noise},${0.8 + noise}`);
    }
    return rows;
  };
  const csv = file('images.csv', imageRows().join('\n'));

  it('parseShape reads 28x28x1 (x, × or commas); anything else is undefined', () => {
    expect(parseShape('28x28x1')).toEqual([28, 28, 1]);
    expect(parseShape(' 28 × 28 ')).toEqual([28, 28]);
    expect(parseShape('3,32,32')).toEqual([3, 32, 32]);
    expect(parseShape('784')).toEqual([784]);
    for (const bad of ['', 'x', '28x', '28x0', '-1x4', '2.5x2', '28x28x1x', 'abc', '01x2'])
      expect(parseShape(bad), bad).toBeUndefined();
  });

  it('withExampleShape keeps the rows and checks the product against the features, naming the option', () => {
    const data = loadDatasetFile(csv);
    expect(exampleShape(data.train)).toEqual([4]);
    const images = withExampleShape(data, [2, 2, 1]);
    expect(images.train.shape).toEqual([2, 2, 1]);
    expect(images.test.shape).toEqual([2, 2, 1]);
    expect(images.train.x).toBe(data.train.x);
    const error = errorOf(() => withExampleShape(data, [3, 3]));
    expect(error.message).toMatch(
      /^invalid inputShape: 3x3 holds 9 values, but dataset .*images\.csv has 4 features per example$/,
    );
    expect(error.context).toMatchObject({ option: 'inputShape' });
    expect(cliMessage(error)).toMatch(/^invalid --input-shape: 3x3 holds 9 values/);
    expect(errorOf(() => withExampleShape(data, [2, 0, 2])).message).toMatch(
      /invalid inputShape: \[2,0,2\] \(expected whole numbers ≥ 1/,
    );
  });

  it('an Arrow file declares its shape in the schema metadata grng.shape; inputShape replaces it', async () => {
    const rows = Array.from({ length: 12 }, (_, i) => [i % 2, (i % 3) / 3, 0.5, 1 - (i % 2)]);
    const table = withMetadata(
      new Table({
        label: vectorFromArray(
          rows.map((_, i) => i % 2),
          new Int32(),
        ),
        features: listFeatures(rows),
      }),
      { 'grng.shape': '2x2x1', other: 'kept out of the way' },
    );
    const path = file('images.arrow', arrowBytes(table));
    const data = loadDatasetFile(path);
    expect(data.train.shape).toEqual([2, 2, 1]);
    expect(data.test.shape).toEqual([2, 2, 1]);
    expect(data.description).toMatch(/4 features \(features\[4\], examples 2x2x1 by grng\.shape\)/);

    const declared = await prepareRun({ dataset: path, steps: 1, backend: 'wasm' });
    expect(declared.model.inputShape).toEqual([2, 2, 1]);
    expect(declared.model.layers[0]!.kind).toBe('flatten');
    declared.dispose();
    const flat = await prepareRun({ dataset: path, inputShape: [4], steps: 1, backend: 'wasm' });
    expect(flat.data.train.shape).toEqual([4]);
    expect(flat.model.inputShape).toEqual([4]);
    expect(flat.model.layers[0]!.kind).toBe('dense');
    flat.dispose();
  });

  it('train({ inputShape }) gives a CSV of pixel rows image batches; the MLP flattens them and learns', async () => {
    const summary = await train({
      dataset: csv,
      inputShape: [2, 2, 1],
      model: 'mlp:4-8-2',
      optimizer: 'adamw',
      optimizerOptions: { learningRate: 0.05 },
      batchSize: 4,
      epochs: 10,
      backend: 'wasm',
    });
    expect(summary.testAccuracy).toBe(1);
  });

  it('a model whose input shape differs from the data is refused before training, naming both', async () => {
    const error = await prepareRun({
      dataset: csv,
      inputShape: [2, 2, 1],
      model: { inputs: 4, inputShape: [1, 4], layers: [{ units: 2 }] },
      backend: 'wasm',
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isGrngError(error)).toBe(true);
    expect((error as Error).message).toMatch(
      /model mlp:4-2 takes examples of shape \[1, 4\] but dataset .*images\.csv has \[2, 2, 1\]/,
    );
    const bad = await prepareRun({ dataset: csv, inputShape: [0, 4] as never }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((bad as Error).message).toMatch(
      /^invalid inputShape: \[0,4\] \(expected whole numbers ≥ 1/,
    );
  });

  it('--input-shape on the CLI: trains; a wrong product or a bad shape is one line with status 2', async () => {
    const good = await cli([
      'train',
      '--dataset',
      csv,
      '--input-shape',
      '2x2x1',
      '--steps',
      '2',
      '--json',
    ]);
    expect(good.code, good.err).toBe(0);
    expect(JSON.parse(good.out.trim().split('\n').pop()!)).toMatchObject({ steps: 2 });
    const product = await cli(['train', '--dataset', csv, '--input-shape', '3x3', '--steps', '1']);
    expect(product.code).toBe(2);
    expect(product.err.trim()).toMatch(
      /^grng: invalid --input-shape: 3x3 holds 9 values, but dataset .*images\.csv has 4 features per example$/,
    );
    const text = await cli(['train', '--dataset', csv, '--input-shape', '2by2', '--steps', '1']);
    expect(text.code).toBe(2);
    expect(text.err).toMatch(
      /--input-shape must be whole numbers ≥ 1 joined by x, e\.g\. 28x28x1, got "2by2"/,
    );
  });

  it('a checkpoint keeps the shape: the resumed run has it, and a different one is refused', async () => {
    const ckpt = join(dir, 'shape-ckpt');
    await train({
      dataset: csv,
      inputShape: [2, 2, 1],
      model: 'mlp:4-8-2',
      steps: 4,
      epochs: 3,
      batchSize: 4,
      checkpoint: { dir: ckpt, every: 2 },
      backend: 'wasm',
    });
    const resumed = await prepareRun({ resume: loadCheckpoint(ckpt), steps: 6 });
    expect(resumed.data.train.shape).toEqual([2, 2, 1]);
    expect(resumed.model.inputShape).toEqual([2, 2, 1]);
    resumed.dispose();
    const changed = await prepareRun({
      resume: loadCheckpoint(ckpt),
      inputShape: [4],
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((changed as Error).message).toMatch(
      /^inputShape \[4\] differs from the checkpoint's \[2,2,1\]/,
    );
  });
});
