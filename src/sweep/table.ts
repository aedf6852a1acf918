import { Float64, Table, tableToIPC, Utf8, vectorFromArray } from 'apache-arrow';
import type { SweepRow } from './halving.js';

/** One trial as the sweep table has it: flat, JSON, CSV and Arrow alike. */
export type SweepRecord = Readonly<Record<string, string | number | null>>;

/** The columns of the table: trial, the varied settings, then the outcome. */
export interface SweepTable {
  readonly settings: readonly string[];
  readonly records: readonly SweepRecord[];
}

const OUTCOME = [
  'status',
  'steps',
  'metric',
  'best',
  'testAccuracy',
  'testLoss',
  'finalLoss',
  'seconds',
  'stepsPerSecond',
] as const;

/**
 * The sweep table: one record per trial (in the config's order) with its id, every varied
 * setting (optimizer, the axes, seed; blank where a trial's optimizer has no such axis), its status
 * and the numbers of its last run: the metric at the last evaluation, its best, time and steps per
 * second.
 *
 * @example
 * const { records } = sweepTable(rows);
 */
export function sweepTable(rows: readonly SweepRow[]): SweepTable {
  const settings = [...new Set(rows.flatMap((row) => Object.keys(row.trial.settings)))];
  // The seed last among the settings, as people read a table: configuration, then repetition.
  settings.sort((a, b) => Number(a === 'seed') - Number(b === 'seed'));
  const records = rows.map((row) => {
    const record: Record<string, string | number | null> = { trial: row.trial.id };
    for (const key of settings) {
      const value = row.trial.settings[key];
      record[key] = value === undefined ? null : typeof value === 'boolean' ? String(value) : value;
    }
    const r = row.result;
    Object.assign(record, {
      status: row.status === 'stopped' ? `stopped at ${row.rung}` : row.status,
      steps: r.steps,
      metric: r.metric,
      best: r.best,
      testAccuracy: r.testAccuracy,
      testLoss: r.testLoss,
      finalLoss: r.finalLoss,
      seconds: round(r.seconds, 2),
      stepsPerSecond: round(r.stepsPerSecond, 2),
      ...(r.error ? { error: r.error } : {}),
    });
    return record;
  });
  return { settings, records };
}

/** The table for the terminal: aligned columns, the metric named in its header. */
export function formatSweepTable(table: SweepTable, metric: string): string {
  const outcome: ReadonlyArray<[string, string, (v: number) => string]> = [
    ['steps', 'steps', String],
    [metric, 'metric', fixed4],
    [`best ${metric}`, 'best', fixed4],
    ['s', 'seconds', (v) => v.toFixed(1)],
    ['steps/s', 'stepsPerSecond', (v) => v.toFixed(1)],
  ];
  const header = ['trial', ...table.settings, 'status', ...outcome.map(([h]) => h)];
  const show = (value: string | number | null | undefined): string =>
    value === null || value === undefined ? '–' : String(value);
  const cells = [
    header,
    ...table.records.map((record) => [
      show(record.trial),
      // Settings as the config wrote them (0.0003, not 3.00e-4).
      ...table.settings.map((key) => show(record[key])),
      show(record.status),
      ...outcome.map(([, key, format]) => {
        const value = record[key];
        return typeof value === 'number' ? format(value) : show(value);
      }),
    ]),
  ];
  const widths = header.map((_, c) => Math.max(...cells.map((row) => row[c]!.length)));
  const line = (row: readonly string[]): string =>
    row
      .map((v, c) => v.padEnd(widths[c]!))
      .join('  ')
      .trimEnd();
  return `${[line(cells[0]!), widths.map((w) => '─'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n')}\n`;
}

function fixed4(value: number): string {
  return Math.abs(value) < 1e-3 && value !== 0 ? value.toExponential(2) : value.toFixed(4);
}

/** The table as CSV: a header, then one line per trial; text quoted where it must be. */
export function sweepTableCsv(table: SweepTable): string {
  const columns = columnsOf(table);
  const quote = (value: string | number | null | undefined): string => {
    if (value === null || value === undefined) return '';
    const text = String(value);
    return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  return (
    [
      columns.join(','),
      ...table.records.map((r) => columns.map((c) => quote(r[c])).join(',')),
    ].join('\n') + '\n'
  );
}

/** The table as an Arrow IPC file: numbers as Float64 columns (null where absent), text as Utf8. */
export function sweepTableArrow(table: SweepTable): Uint8Array {
  const columns = columnsOf(table);
  const vectors = Object.fromEntries(
    columns.map((column) => {
      const values = table.records.map((r) => r[column] ?? null);
      const numeric = values.every((v) => v === null || typeof v === 'number');
      return [
        column,
        numeric
          ? vectorFromArray(values as (number | null)[], new Float64())
          : vectorFromArray(
              values.map((v) => (v === null ? null : String(v))),
              new Utf8(),
            ),
      ];
    }),
  );
  return tableToIPC(new Table(vectors), 'file');
}

function columnsOf(table: SweepTable): string[] {
  const hasError = table.records.some((r) => r.error !== undefined);
  return ['trial', ...table.settings, ...OUTCOME, ...(hasError ? ['error'] : [])];
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}
