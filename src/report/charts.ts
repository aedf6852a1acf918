import type { TopLevelSpec } from 'vega-lite';
import type { Configuration } from './analysis.js';

/** One chart of the report: its file name (no folder) and Vega-Lite spec. */
export interface ChartSpec {
  readonly file: string;
  readonly title: string;
  readonly spec: TopLevelSpec;
}

/** The same colour for an optimizer in every chart (Tableau 10, as the dashboard's palette order). */
const OPTIMIZER_COLOURS: Record<string, string> = {
  sgd: '#4e79a7',
  adamw: '#f28e2b',
  sophia: '#59a14f',
  kfac: '#e15759',
  ring: '#b07aa1',
  reng: '#76b7b2',
  rkalman: '#edc948',
};

const WIDTH = 460;
const HEIGHT = 260;

interface Line {
  readonly series: string;
  readonly seed: number;
  readonly x: number;
  readonly y: number;
}

function colourScale(series: readonly string[], byOptimizer: boolean): object {
  if (!byOptimizer) return { scheme: 'tableau10' };
  return {
    domain: [...series],
    range: series.map((s) => OPTIMIZER_COLOURS[s.split(' ')[0]!] ?? '#999999'),
  };
}

/**
 * Mean over seeds as a line with a ±1 standard-deviation band, per series (Vega-Lite's errorband
 * with extent stdev), from the points of every seed at the same x.
 */
export function bandChart(
  file: string,
  title: string,
  points: readonly Line[],
  axes: { x: string; y: string; yLog?: boolean; series: string },
  byOptimizer: boolean,
): ChartSpec {
  const series = [...new Set(points.map((p) => p.series))];
  const colour = {
    field: 'series',
    type: 'nominal' as const,
    title: axes.series,
    sort: series,
    scale: colourScale(series, byOptimizer),
  };
  const x = { field: 'x', type: 'quantitative' as const, title: axes.x };
  const yScale = axes.yLog ? { type: 'log' as const } : { zero: false };
  return chartOf(file, title, points, {
    layer: [
      {
        mark: { type: 'errorband', extent: 'stdev', opacity: 0.25 },
        encoding: {
          x,
          y: { field: 'y', type: 'quantitative', title: axes.y, scale: yScale },
          color: colour,
        },
      },
      {
        mark: { type: 'line', strokeWidth: 1.5 },
        encoding: {
          x,
          y: {
            aggregate: 'mean',
            field: 'y',
            type: 'quantitative',
            title: axes.y,
            scale: yScale,
          },
          color: colour,
        },
      },
    ],
  });
}

/** Every seed's curve as its own thin line (x differs between seeds, e.g. seconds). */
export function seedLinesChart(
  file: string,
  title: string,
  points: readonly Line[],
  axes: { x: string; y: string; series: string },
): ChartSpec {
  const series = [...new Set(points.map((p) => p.series))];
  return chartOf(file, title, points, {
    mark: { type: 'line', strokeWidth: 1, opacity: 0.8 },
    encoding: {
      x: { field: 'x', type: 'quantitative', title: axes.x },
      y: { field: 'y', type: 'quantitative', title: axes.y, scale: { zero: false } },
      color: {
        field: 'series',
        type: 'nominal',
        title: axes.series,
        sort: series,
        scale: colourScale(series, true),
      },
      detail: { field: 'seed', type: 'nominal' },
    },
  });
}

/** A chart of its own size, title and data: the rest of the Vega-Lite spec is `view`. */
function chartOf(
  file: string,
  title: string,
  points: readonly Line[],
  view: Record<string, unknown>,
): ChartSpec {
  return {
    file,
    title,
    spec: {
      $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
      title,
      width: WIDTH,
      height: HEIGHT,
      data: { values: points as unknown as Record<string, unknown>[] },
      ...view,
    } as TopLevelSpec,
  };
}

/** The evaluation curve of each configuration's seeds, against epochs or training seconds. */
export function evalPoints(
  configs: readonly Configuration[],
  x: 'epoch' | 'seconds',
  name: (c: Configuration) => string,
): Line[] {
  return configs.flatMap((c) =>
    c.seeds.flatMap((s) =>
      s.evals.map((e) => ({ series: name(c), seed: s.trial.seed, x: round(e[x]), y: e.value })),
    ),
  );
}

/** Binned per-step quantities (training loss, ‖g‖) of each configuration's seeds. */
export function binnedPoints(
  configs: readonly Configuration[],
  quantity: 'loss' | 'gradNorm',
  name: (c: Configuration) => string,
): Line[] {
  return configs.flatMap((c) =>
    c.seeds.flatMap((s) =>
      s.binned
        .filter((b) => b[quantity] !== null && Number.isFinite(b[quantity]) && b[quantity]! > 0)
        .map((b) => ({ series: name(c), seed: s.trial.seed, x: round(b.epoch), y: b[quantity]! })),
    ),
  );
}

/** Four decimals of x, so seeds' points at the same evaluation share an x exactly. */
function round(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}

/**
 * Renders a spec to SVG with Vega (no browser, no canvas: text is measured by Vega's estimate).
 * Vega and Vega-Lite load only here, so the rest of grng starts without them.
 */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const [vega, vegaLite] = await Promise.all([import('vega'), import('vega-lite')]);
  const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
