import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { GrngError } from '../errors.js';
import { ablation, comparison, type Ablation, type Comparison } from '../report/analysis.js';
import { renderSvg } from '../report/charts.js';
import { renderReport } from '../report/markdown.js';
import { digestPath, loadDigest, loadSweep, type SweepData } from '../report/sweepData.js';
import { writeTextAtomically } from '../sinks/writeFileAtomically.js';
import { expandTrials, parseSweepConfig, type SweepConfig } from '../sweep/config.js';
import type { CliIo } from './io.js';
import { writeDigest } from './writeDigest.js';

export interface ReportCommandOptions {
  /** Where the sweeps' folders are: RUNS/NAME for each config (grng sweep's default). */
  readonly runs: string;
  readonly out: string;
  /** Folder of the SVG plots; default beside --out, named after it (docs/results/). */
  readonly plots?: string;
  /** Run (or finish, with --resume) every sweep that has no results yet, first. */
  readonly run?: boolean;
}

/** Runs one sweep config into a folder (the sweep command), for --run. */
export type SweepRunner = (config: string, out: string, resume: boolean) => Promise<void>;

/**
 * `grng report CONFIG.json…`: reads each config's sweep (RUNS/NAME; with --run, runs the ones
 * not finished first), and writes the report (docs/results.md by default) and its SVG plots.
 * Configs whose `report.kind` is "comparison" become model-family sections and feed the claims
 * table; "ablation" configs become ablation sections.
 */
export async function runReportCommand(
  configs: readonly string[],
  options: ReportCommandOptions,
  io: CliIo,
  runSweep: SweepRunner,
): Promise<void> {
  const parsed = configs.map((path) => {
    const config = readConfig(path);
    return { path, config, digest: digestPath(path, config.name) };
  });
  for (const { path, config } of parsed)
    if (!config.report)
      throw new GrngError(
        'invalid-option',
        `report: ${path} has no "report" block saying whether it is a comparison or an ablation`,
        { option: 'config', path },
      );
  if (options.run)
    for (const { path, config, digest } of parsed) {
      const dir = join(options.runs, config.name);
      if (existsSync(join(dir, 'results.json'))) continue;
      if (!existsSync(join(dir, 'sweep.json')) && existsSync(digest)) continue;
      io.err(`grng: report: running sweep ${config.name} (${path})\n`);
      await runSweep(path, dir, existsSync(join(dir, 'sweep.json')));
    }
  for (const { path, config, digest } of parsed)
    if (!existsSync(join(options.runs, config.name, 'sweep.json')) && !existsSync(digest))
      throw new GrngError(
        'invalid-option',
        `report: --runs ${options.runs} holds no sweep ${config.name} (${path}) and there is no digest ${digest}: run grng sweep ${path}, or grng report with --run`,
        { option: 'runs', path: join(options.runs, config.name) },
      );
  const comparisons: Comparison[] = [];
  const ablations: Ablation[] = [];
  for (const { path, config, digest } of parsed) {
    // A sweep's folder, where there is one, is read and its digest rewritten; else the committed
    // digest stands in for it (sweepData.ts says why).
    const dir = join(options.runs, config.name);
    let sweep: SweepData;
    if (existsSync(join(dir, 'sweep.json'))) {
      sweep = loadSweep(dir, path, expandTrials(config));
      if (writeDigest(sweep, digest)) io.err(`grng: report: ${digest} written from ${dir}\n`);
    } else sweep = loadDigest(digest, path, config);
    if (config.report!.kind === 'comparison') comparisons.push(comparison(sweep));
    else ablations.push(ablation(sweep));
  }
  const plots = options.plots ?? join(dirname(options.out), 'results');
  const command = `grng report ${configs.join(' ')}${options.runs === join('runs', 'sweeps') ? '' : ` --runs ${options.runs}`} --out ${options.out}`;
  // Configs beside the given ones that are not in this report: said at its top, so a partial
  // report does not pass for the whole.
  const given = new Set(configs.map((c) => resolve(c)));
  const left = [...new Set(configs.map((c) => dirname(resolve(c))))].flatMap((folder) =>
    readdirSync(folder)
      .sort()
      .filter((name) => name.endsWith('.json') && !given.has(join(folder, name)))
      .filter((name) => {
        try {
          return readConfig(join(folder, name)).report !== undefined;
        } catch {
          return false;
        }
      })
      .map((name) => relative(process.cwd(), join(folder, name))),
  );
  const { markdown, charts } = renderReport(comparisons, ablations, {
    left,
    command,
    plotDir: relative(dirname(resolve(options.out)), resolve(plots)) || '.',
  });
  mkdirSync(plots, { recursive: true });
  for (const chart of charts)
    writeTextAtomically(join(plots, chart.file), `${await renderSvg(chart.spec)}\n`);
  mkdirSync(dirname(options.out), { recursive: true });
  writeTextAtomically(options.out, markdown);
  io.err(
    `grng: report: ${comparisons.length} model famil${comparisons.length === 1 ? 'y' : 'ies'}, ${ablations.length} ablation${ablations.length === 1 ? '' : 's'}; ${options.out} and ${charts.length} plots in ${plots}\n`,
  );
}

function readConfig(path: string): SweepConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw new GrngError(
      'invalid-option',
      `report: sweep config ${path} cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
      { option: 'config', path },
    );
  }
  return parseSweepConfig(text, path);
}
