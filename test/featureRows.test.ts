import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Field,
  FixedSizeList,
  Float32,
  Float64,
  Int32,
  makeData,
  makeVector,
  Table,
  tableFromArrays,
  tableFromIPC,
  tableToIPC,
  Utf8,
  vectorFromArray,
} from 'apache-arrow';
import { errorOf } from './helpers.js';
import { afterAll, describe, expect, it } from 'vitest';
import { readFeatureRows } from '../src/data/featureRows.js';
import { predictionsCsv, writePredictions, type Predictions } from '../src/sinks/predictionFile.js';

const dir = mkdtempSync(join(tmpdir(), 'grng-feature-rows-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Uint8Array): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

/** A FixedSizeList<Float32> column of the given rows, as pyarrow writes a features column. */
function listColumn(rows: number[][]): ReturnType<typeof makeVector> {
  const width = rows[0]!.length;
  const child = makeData({
    type: new Float32(),
    length: rows.length * width,
    data: Float32Array.from(rows.flat()),
  });
  return makeVector(
    makeData({
      type: new FixedSizeList(width, new Field('item', new Float32(), true)),
      length: rows.length,
      child,
      nullCount: 0,
    }),
  );
}

const f32 = (values: number[]): number[] => values.map((v) => Math.fround(v));

describe('readFeatureRows: good files', () => {
  it('reads a CSV of features only, exact to float32, with no labels', () => {
    const path = file('plain.csv', 'a,b,c\n0.1,-2.5e-3,1e30\n"4",5 , .5\n');
    const rows = readFeatureRows(path, { features: 3 });
    expect([rows.n, rows.features]).toEqual([2, 3]);
    expect(rows.columns).toEqual(['a', 'b', 'c']);
    expect(Array.from(rows.x)).toEqual(f32([0.1, -2.5e-3, 1e30, 4, 5, 0.5]));
    expect(rows.labels).toBeUndefined();
    expect(rows.description).toBe(`file ${path}: 2 rows of 3 features (a,b,c), no labels`);
  });

  it('keeps a label column wherever it is and ignores a split column, whatever its values', () => {
    const path = file('labelled.csv', 'a,split,label,b\n1,train,2,3\n4,dev,0,5\n6,,1,7\n');
    const rows = readFeatureRows(path, { features: 2, shape: [2] });
    expect(rows.columns).toEqual(['a', 'b']);
    expect(Array.from(rows.x)).toEqual([1, 3, 4, 5, 6, 7]);
    expect(Array.from(rows.labels!)).toEqual([2, 0, 1]);
    expect(rows.description).toMatch(/3 rows of 2 features \(a,b\), with labels$/);
  });

  it('reads Arrow IPC files (.arrow, .feather) and streams (.arrows) exactly, label and split as in CSV', () => {
    const a = Float32Array.from([0.1, 0.2, 0.3]);
    const b = Float64Array.from([1e-7, -3.25, 7]);
    const table = tableFromArrays({
      a,
      label: Int32Array.from([1, 0, 1]),
      b,
      split: ['x', 'y', 'z'],
    });
    for (const [name, format] of [
      ['cols.arrow', 'file'],
      ['cols.feather', 'file'],
      ['cols.arrows', 'stream'],
    ] as const) {
      const rows = readFeatureRows(file(name, tableToIPC(table, format)), { features: 2 });
      expect(rows.columns).toEqual(['a', 'b']);
      expect(Array.from(rows.x)).toEqual([a[0], f32([1e-7])[0], a[1], -3.25, a[2], 7]);
      expect(Array.from(rows.labels!)).toEqual([1, 0, 1]);
    }
    const unlabelled = tableFromArrays({ only: Float32Array.from([5, 6]) });
    const rows = readFeatureRows(file('unlabelled.arrow', tableToIPC(unlabelled)), {
      features: 1,
    });
    expect([rows.n, rows.labels]).toEqual([2, undefined]);
  });

  it('reads one FixedSizeList<number> column named features', () => {
    const values = [
      [0.5, 0.25, 0.125, 1],
      [0.1, 0.2, 0.3, 0.4],
    ];
    const table = new Table({
      label: vectorFromArray([3, 4], new Int32()),
      features: listColumn(values),
    });
    const path = file('list.arrows', tableToIPC(table, 'stream'));
    const rows = readFeatureRows(path, { features: 4, shape: [2, 2, 1] });
    expect([rows.n, rows.features]).toEqual([2, 4]);
    expect(rows.columns).toEqual(['features']);
    expect(Array.from(rows.x)).toEqual(f32(values.flat()));
    expect(Array.from(rows.labels!)).toEqual([3, 4]);
    expect(rows.description).toMatch(/2 rows of 4 features \(features\[4\]\), with labels$/);
  });
});

/** A bad input: its content, what the one-line message must say, the context it must carry. */
interface BadInput {
  readonly name: string;
  readonly content: string | Uint8Array;
  readonly features?: number;
  readonly shape?: readonly number[];
  readonly message: RegExp;
  readonly context?: Record<string, unknown>;
}

const BAD_INPUTS: BadInput[] = [
  { name: 'empty.csv', content: '', message: /is empty \(0 bytes\)/, context: { offset: 0 } },
  {
    name: 'fewer-features.csv',
    content: 'a,b,c,label\n1,2,3,0\n',
    features: 4,
    shape: [2, 2, 1],
    message:
      /has 3 feature columns \("a" … "c"\), but the model takes 4 values per example \(shape \[2, 2, 1\]\)$/,
    context: { features: 3, expected: 4 },
  },
  {
    name: 'more-features.csv',
    content: 'x,y\n1,2\n',
    features: 1,
    message: /has 2 feature columns \("x", "y"\), but the model takes 1 values per example$/,
  },
  {
    name: 'non-numeric.csv',
    content: 'a,b\n1,2\n3,abc\n',
    features: 2,
    message: /line 3, column 2 \("b"\), byte 10: "abc" is not a number/,
    context: { line: 3, column: 'b', offset: 10 },
  },
  {
    name: 'nan.csv',
    content: 'label,a\n0,NaN\n',
    features: 1,
    message: /line 2, column 2 \("a"\), byte 10: NaN is not a finite number/,
    context: { line: 2, column: 'a', offset: 10 },
  },
  {
    name: 'infinite.csv',
    content: 'a\n1e39\n',
    features: 1,
    message: /line 2, column 1 \("a"\), byte 2: 1e39 does not fit in a 32-bit float/,
  },
  {
    name: 'too-few.csv',
    content: 'a,b,c\n1,2,3\n4,5\n',
    features: 3,
    message: /line 3, byte 12: 2 cells, but the header has 3 columns/,
    context: { line: 3, offset: 12 },
  },
  {
    name: 'too-many.csv',
    content: 'a,b\r\n1,2,3\r\n',
    features: 2,
    message: /line 2, byte 5: 3 cells, but the header has 2 columns/,
  },
  {
    name: 'header-only.csv',
    content: 'a,b\n',
    features: 2,
    message: /line 1, byte 0: the file has a header but no data rows/,
  },
  {
    name: 'negative-label.csv',
    content: 'a,label\n1,-1\n',
    features: 1,
    message: /line 2, column 2 \("label"\), byte 10: label -1 is negative/,
  },
  {
    name: 'labels-only.csv',
    content: 'label,split\n1,train\n',
    message: /line 1, byte 0: the header has no feature columns \(columns: "label", "split"\)/,
  },
  {
    name: 'wrong-list.arrow',
    content: tableToIPC(new Table({ features: listColumn([[1, 2, 3]]) })),
    features: 4,
    shape: [2, 2],
    message:
      /: column "features" is a fixed-size list of 3 values, but the model takes 4 values per example \(shape \[2, 2\]\)$/,
    context: { column: 'features', listSize: 3, expected: 4 },
  },
  {
    name: 'wrong-columns.arrows',
    content: tableToIPC(
      tableFromArrays({
        f0: Float32Array.of(1),
        f1: Float32Array.of(2),
        f2: Float32Array.of(3),
        f3: Float32Array.of(4),
        label: Int32Array.of(0),
      }),
      'stream',
    ),
    features: 784,
    shape: [28, 28, 1],
    message:
      /has 4 feature columns \("f0" … "f3"\), but the model takes 784 values per example \(shape \[28, 28, 1\]\)$/,
  },
  {
    name: 'null-feature.arrow',
    content: tableToIPC(
      new Table({
        a: vectorFromArray([1, null, 3], new Float64()),
      }),
    ),
    features: 1,
    message: /: row 1, column "a": the value is null/,
    context: { row: 1, column: 'a' },
  },
  {
    name: 'nan-list.arrow',
    content: tableToIPC(new Table({ features: listColumn([[1], [NaN]]) })),
    features: 1,
    message: /: row 1, column "features\[0\]": NaN is not a finite 32-bit float/,
    context: { row: 1, column: 'features[0]' },
  },
  {
    name: 'string-feature.arrow',
    content: tableToIPC(new Table({ a: vectorFromArray(['x'], new Utf8()) })),
    message: /: column "a" is Utf8; feature columns must be numeric/,
    context: { column: 'a' },
  },
  {
    name: 'no-rows.arrow',
    content: tableToIPC(new Table({ a: vectorFromArray([], new Float32()) })),
    message: /has no rows \(columns: a\)/,
  },
  {
    name: 'float-label.arrow',
    content: tableToIPC(
      new Table({
        a: vectorFromArray([1], new Float32()),
        label: vectorFromArray([0.5], new Float64()),
      }),
    ),
    message: /column "label" is Float64, expected an integer type/,
  },
  {
    name: 'text.arrow',
    content: 'a,b\n1,2\n',
    message: /is not Arrow IPC: expected the file magic "ARROW1"/,
  },
];

describe('readFeatureRows: bad files are one GrngError naming the file and the place', () => {
  for (const bad of BAD_INPUTS) {
    it(bad.name, () => {
      const path = file(bad.name, bad.content);
      const expectation = { features: bad.features ?? 1, ...(bad.shape && { shape: bad.shape }) };
      const error = errorOf(() => readFeatureRows(path, expectation));
      expect(error.code).toBe('invalid-data');
      expect(error.message.startsWith(`input file ${path}`), error.message).toBe(true);
      expect(error.message).toMatch(bad.message);
      expect(error.message).not.toContain('\n');
      expect(error.context).toMatchObject({ file: path, ...bad.context });
    });
  }

  it('a missing file, a folder and an unknown extension name the input option', () => {
    const missing = errorOf(() => readFeatureRows(join(dir, 'missing.csv'), { features: 1 }));
    expect(missing.code).toBe('invalid-option');
    expect(missing.message).toBe(`input file ${join(dir, 'missing.csv')} does not exist`);
    expect(missing.context).toMatchObject({ option: 'input', file: join(dir, 'missing.csv') });

    mkdirSync(join(dir, 'folder.csv'));
    expect(errorOf(() => readFeatureRows(join(dir, 'folder.csv'), { features: 1 })).message).toBe(
      `input file ${join(dir, 'folder.csv')} is a directory, expected a file`,
    );

    const json = file('rows.json', '{}');
    const unknown = errorOf(() => readFeatureRows(json, { features: 1 }));
    expect(unknown.code).toBe('invalid-option');
    expect(unknown.message).toBe(
      `invalid input: ${JSON.stringify(json)} has the unknown extension ".json" (expected a .csv, .arrow, .arrows, .feather file)`,
    );
    expect(unknown.context).toMatchObject({ option: 'input', value: json });
    expect(errorOf(() => readFeatureRows('rows', { features: 1 })).message).toMatch(
      /^invalid input: "rows" has no extension/,
    );
  });

  it('refuses an expectation that is not one', () => {
    const path = file('ok.csv', 'a\n1\n');
    expect(errorOf(() => readFeatureRows(path, { features: 0 })).message).toMatch(
      /^invalid features: 0 \(expected an integer ≥ 1/,
    );
    expect(errorOf(() => readFeatureRows(path, { features: 4, shape: [3] })).message).toMatch(
      /^invalid shape: \[3\] \(expected whole numbers ≥ 1 whose product is features = 4\)/,
    );
  });
});

/** Predictions of 3 classes for 4 rows, with probabilities that need all 9 digits and fewer. */
function samplePredictions(withLabels: boolean): Predictions {
  const probabilities = Float32Array.from([
    0.1,
    0.2,
    0.7,
    1 / 3,
    1 / 3,
    1 / 3,
    0,
    1,
    0,
    1.4e-45,
    0.123456789,
    0.876543211,
  ]);
  return {
    n: 4,
    classes: 3,
    probabilities,
    predicted: Int32Array.from([2, 0, 1, 2]),
    ...(withLabels ? { labels: Int32Array.from([2, 1, 1, 0]) } : {}),
  };
}

const bitsOf = (values: Float32Array): number[] =>
  Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length));

describe('writePredictions / predictionsCsv', () => {
  it('CSV: row, label, predicted, p0 … in order; probabilities read back bit-identical', () => {
    const p = samplePredictions(true);
    const path = join(dir, 'out', 'predictions.csv');
    writePredictions(path, p);
    const text = readFileSync(path, 'utf8');
    expect(text).toBe(predictionsCsv(p));
    const [header, ...lines] = text.trimEnd().split('\n');
    expect(header).toBe('row,label,predicted,p0,p1,p2');
    expect(lines[0]).toBe('0,2,2,0.1,0.2,0.7');
    const cells = lines.map((line) => line.split(','));
    expect(cells.map((c) => Number(c[0]))).toEqual([0, 1, 2, 3]);
    expect(cells.map((c) => Number(c[1]))).toEqual([2, 1, 1, 0]);
    expect(cells.map((c) => Number(c[2]))).toEqual([2, 0, 1, 2]);
    const read = Float32Array.from(cells.flatMap((c) => c.slice(3).map(Number)));
    expect(bitsOf(read)).toEqual(bitsOf(p.probabilities));
    expect(readdirSync(join(dir, 'out'))).toEqual(['predictions.csv']);
  });

  it('CSV without labels has no label column', () => {
    const text = predictionsCsv(samplePredictions(false));
    expect(text.split('\n')[0]).toBe('row,predicted,p0,p1,p2');
    expect(text.split('\n')[1]).toBe('0,2,0.1,0.2,0.7');
  });

  it('.arrow (IPC file) and .arrows (IPC stream): Int32 row/label/predicted, Float32 probabilities', () => {
    for (const [name, withLabels] of [
      ['p.arrow', true],
      ['p.arrows', false],
    ] as const) {
      const p = samplePredictions(withLabels);
      const path = join(dir, name);
      writePredictions(path, p);
      const bytes = readFileSync(path);
      const isFile = bytes.subarray(0, 6).toString('latin1') === 'ARROW1';
      expect(isFile).toBe(name === 'p.arrow');
      const table = tableFromIPC(bytes);
      const names = table.schema.fields.map((f) => f.name);
      expect(names).toEqual([
        'row',
        ...(withLabels ? ['label'] : []),
        'predicted',
        'p0',
        'p1',
        'p2',
      ]);
      for (const field of table.schema.fields)
        expect(String(field.type)).toBe(
          field.name.startsWith('p') && field.name !== 'predicted' ? 'Float32' : 'Int32',
        );
      expect(Array.from(table.getChild('row')!.toArray() as Int32Array)).toEqual([0, 1, 2, 3]);
      expect(table.getChild('predicted')!.toArray()).toEqual(p.predicted);
      if (withLabels) expect(table.getChild('label')!.toArray()).toEqual(p.labels);
      const read = new Float32Array(p.n * p.classes);
      for (let c = 0; c < p.classes; c++) {
        const column = table.getChild(`p${c}`)!.toArray() as Float32Array;
        column.forEach((v, row) => (read[row * p.classes + c] = v));
      }
      expect(bitsOf(read)).toEqual(bitsOf(p.probabilities));
    }
  });

  it('replaces an existing file whole, and leaves it untouched when the new predictions are bad', () => {
    const path = join(dir, 'replace', 'p.csv');
    writePredictions(path, samplePredictions(false));
    writePredictions(path, samplePredictions(true));
    const before = readFileSync(path, 'utf8');
    expect(before.split('\n')[0]).toBe('row,label,predicted,p0,p1,p2');
    const bad = { ...samplePredictions(true), probabilities: new Float32Array(5) };
    expect(errorOf(() => writePredictions(path, bad)).message).toMatch(
      /^predictions: probabilities must be a Float32Array of n×classes = 4×3 = 12 values, got a Float32Array of 5$/,
    );
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(readdirSync(join(dir, 'replace'))).toEqual(['p.csv']);
  });

  it('a bad extension, a folder or an unwritable place is an error naming out and the path', () => {
    const json = join(dir, 'p.json');
    const extension = errorOf(() => writePredictions(json, samplePredictions(false)));
    expect(extension.code).toBe('invalid-option');
    expect(extension.message).toBe(
      `invalid out: ${JSON.stringify(json)} has the extension ".json" (expected a file name ending in .csv, .arrow, .arrows)`,
    );
    expect(extension.context).toMatchObject({ option: 'out', value: json });

    const folder = join(dir, 'taken.csv');
    mkdirSync(folder);
    const isFolder = errorOf(() => writePredictions(folder, samplePredictions(false)));
    expect(isFolder.message).toBe(
      `cannot write predictions to ${folder}: it is a folder (give a file name, e.g. predictions.csv)`,
    );
    expect(isFolder.context).toMatchObject({ option: 'out', path: folder });

    const plain = file('plain-file', 'x');
    const under = join(plain, 'p.csv');
    const unwritable = errorOf(() => writePredictions(under, samplePredictions(false)));
    expect(unwritable.message).toBe(
      `cannot write predictions to ${under}: its folder ${plain} is a file, or lies under one`,
    );
    expect(readdirSync(dir).filter((name) => name.endsWith('.tmp'))).toEqual([]);
  });
});
