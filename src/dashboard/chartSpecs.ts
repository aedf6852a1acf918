// What the dashboard charts, without the DOM (so node tests can read it too).

/** One line per run of a chart: a column, named in the legend after the run's label. */
export interface ChartLine {
  readonly column: string;
  /** Appended to the run's label in the legend (lines of one run share its colour). */
  readonly label: string;
  /** Dash pattern (canvas setLineDash), to tell a run's lines apart. */
  readonly dash?: readonly number[];
}

export interface ChartSpec {
  /** The chart's id (`#chart-<key>`), and the metrics column drawn unless `lines` is given. */
  readonly key: string;
  readonly title: string;
  /** Whether the log-scale toggle applies (quantities that are positive by nature). */
  readonly log: boolean;
  /**
   * Shown as soon as there is a run, even before it has a value (the others appear with their first
   * value).
   */
  readonly always?: boolean;
  /** Several columns per run (default: the column `key` alone). */
  readonly lines?: readonly ChartLine[];
}

/** One chart per quantity, in display order. */
export const CHARTS: readonly ChartSpec[] = [
  // Only language-model runs have these columns (see DERIVED_COLUMNS), so only they show it.
  {
    key: 'bitsPerCharacter',
    title: 'Bits per character (loss ÷ ln 2; test dashed)',
    log: true,
    lines: [
      { column: 'bitsPerCharacter', label: 'train' },
      { column: 'testBitsPerCharacter', label: 'test', dash: [6, 4] },
    ],
  },
  { key: 'loss', title: 'Train loss', log: true, always: true },
  { key: 'accuracy', title: 'Batch accuracy', log: false, always: true },
  { key: 'testLoss', title: 'Test loss', log: true },
  { key: 'testAccuracy', title: 'Test accuracy', log: false },
  { key: 'gradNorm', title: '‖g‖ gradient norm', log: true },
  { key: 'learningRate', title: 'Learning rate', log: true },
  { key: 'damping', title: 'Damping', log: true },
  { key: 'updateNorm', title: '‖Δθ‖ update norm', log: true },
  { key: 'updateGradCorrelation', title: 'corr(update, −g)', log: false },
  { key: 'newtonIterations', title: 'Newton iterations', log: false },
  { key: 'newtonResidual', title: 'Newton residual', log: true },
  { key: 'klClip', title: 'KL clip scale', log: false },
  { key: 'winRate', title: 'Win rate (unclipped share)', log: false },
  { key: 'kalmanTraceP', title: 'Kalman tr(P)', log: true },
  { key: 'kalmanNoise', title: 'Kalman noise r', log: true },
  { key: 'kalmanInnovationNorm', title: 'Kalman ‖innovation‖', log: true },
  { key: 'hgNorm', title: '‖Hg‖', log: true },
  { key: 'skippedSteps', title: 'Skipped steps', log: false },
];

/** The columns a chart draws for each run. */
export function linesOf(spec: ChartSpec): readonly ChartLine[] {
  return spec.lines ?? [{ column: spec.key, label: '' }];
}
