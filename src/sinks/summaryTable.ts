import type { RunSummary } from './summarize.js';

/** A plain-text table of run summaries, one row per run, for the terminal. */
export function formatSummaryTable(
  summaries: readonly RunSummary[],
  { targetAccuracy }: { targetAccuracy?: number } = {},
): string {
  const columns: Array<[string, (s: RunSummary) => string]> = [
    ['optimizer', (s) => s.optimizer],
    ['backend', (s) => s.backend],
    ['dataset', (s) => s.dataset],
    ['steps', (s) => String(s.steps)],
    ['epochs', (s) => String(s.epochs)],
    ['final loss', (s) => fixed(s.finalLoss, 4)],
    ['test loss', (s) => fixed(s.testLoss, 4)],
    ['test acc', (s) => fixed(s.testAccuracy, 4)],
    ['ms/step', (s) => fixed(s.msPerStep, 2)],
    ['samples/s', (s) => fixed(s.samplesPerSecond, 0)],
    ['mean ‖g‖', (s) => fixed(s.meanGradNorm, 4)],
  ];
  if (targetAccuracy !== undefined) {
    columns.push(
      [`epochs→${targetAccuracy}`, (s) => fixed(s.epochsToTarget, 2)],
      [`s→${targetAccuracy}`, (s) => fixed(s.secondsToTarget, 1)],
      ['corr(u,−g)', (s) => fixed(s.meanUpdateGradCorrelation, 3)],
    );
  }
  const cells = [columns.map(([h]) => h), ...summaries.map((s) => columns.map(([, f]) => f(s)))];
  const widths = columns.map((_, c) => Math.max(...cells.map((row) => row[c]!.length)));
  const line = (row: string[]): string =>
    row.map((cell, c) => (c < 3 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  return [
    line(cells[0]!),
    widths.map((w) => '─'.repeat(w)).join('  '),
    ...cells.slice(1).map(line),
  ].join('\n');
}

function fixed(value: number | null, digits: number): string {
  return value === null || !Number.isFinite(value) ? '-' : value.toFixed(digits);
}
