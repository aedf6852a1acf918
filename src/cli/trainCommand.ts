import type { BackendChoice } from '../backend.js';
import type { Initializer } from '../nn/init.js';
import type { RunSummary } from '../operators/summarize.js';
import type { NamedOptimizerOptions } from '../optim/registry.js';
import { progressBar } from '../sinks/progressBar.js';
import { formatSummaryTable } from '../sinks/summaryTable.js';
import { train, type TrainOptions } from '../train.js';
import type { CliIo } from './program.js';
import { liveSink, withLive, type LiveOptions } from './live.js';
import type { RunHub } from '../sinks/runHub.js';
import { randomUUID } from 'node:crypto';

/** Flags shared by `train` and `compare`, as commander parses them. */
export interface RunCommandOptions extends LiveOptions {
  /** mnist, synthetic, or a dataset file path. */
  readonly dataset: string;
  readonly model?: string;
  readonly epochs: number;
  readonly steps?: number;
  readonly batchSize: number;
  readonly partial: 'keep' | 'drop';
  readonly seed: number;
  readonly init: Initializer;
  readonly evalEvery: number;
  readonly backend: BackendChoice;
  readonly json?: boolean;
  readonly lr?: number;
  readonly momentum?: number;
  readonly nesterov?: boolean;
  readonly weightDecay?: number;
  readonly b1?: number;
  readonly b2?: number;
  readonly eps?: number;
  readonly damping?: number;
  readonly rho?: number;
  readonly klClip?: number;
  readonly fisher?: 'sampled' | 'empirical';
  readonly statsDecay?: number;
  readonly statsEvery?: number;
  readonly inverseEvery?: number;
  readonly newtonTol?: number;
  readonly newtonMaxIters?: number;
  readonly newtonWarmTrials?: number;
  readonly ringNorm?: 'mean' | 'step';
  readonly hvp?: 'double-backprop' | 'finite-difference';
  readonly gamma?: number;
  readonly hessianEvery?: number;
  readonly kalmanRows?: number;
  readonly p0?: number;
  readonly r0?: number;
  readonly fading?: number;
  readonly processNoise?: number;
  readonly betaR?: number;
  readonly rMin?: number;
  readonly pMin?: number;
}

export interface TrainCommandOptions extends RunCommandOptions {
  readonly optimizer: string;
}

export interface CompareCommandOptions extends RunCommandOptions {
  readonly optimizers: string[];
  readonly target: number;
}

/** The fields `train --json` prints, in this order (compare adds the rest of the summary). */
export const JSON_FIELDS = ['optimizer', 'backend', 'dataset', 'steps', 'epochs', 'finalLoss', 'testAccuracy', 'testLoss', 'msPerStep', 'samplesPerSecond', 'meanGradNorm'] as const;

function optimizerOptionsOf(options: RunCommandOptions): NamedOptimizerOptions {
  return dropUndefined({
    learningRate: options.lr,
    momentum: options.momentum,
    nesterov: options.nesterov,
    weightDecay: options.weightDecay,
    b1: options.b1,
    b2: options.b2,
    eps: options.eps,
    damping: options.damping,
    rho: options.rho,
    klClip: options.klClip,
    fisher: options.fisher,
    beta: options.statsDecay,
    statsEvery: options.statsEvery,
    inverseEvery: options.inverseEvery,
    newtonTolerance: options.newtonTol,
    newtonMaxIterations: options.newtonMaxIters,
    newtonWarmTrials: options.newtonWarmTrials,
    ringNorm: options.ringNorm,
    hvp: options.hvp,
    gamma: options.gamma,
    hessianEvery: options.hessianEvery,
    rows: options.kalmanRows,
    p0: options.p0,
    r0: options.r0,
    fading: options.fading,
    processNoise: options.processNoise,
    betaR: options.betaR,
    rMin: options.rMin,
    pMin: options.pMin,
  });
}

function trainOptionsOf(options: RunCommandOptions, optimizer: string, extra: Partial<TrainOptions> = {}): TrainOptions {
  return dropUndefined({
    dataset: options.dataset,
    model: options.model,
    init: options.init,
    optimizer,
    optimizerOptions: optimizerOptionsOf(options),
    epochs: options.epochs,
    steps: options.steps,
    batchSize: options.batchSize,
    partial: options.partial,
    seed: options.seed,
    evalEvery: options.evalEvery,
    backend: options.backend,
    ...extra,
  }) as TrainOptions;
}

async function runOne(trainOptions: TrainOptions, io: CliIo, live: { options: LiveOptions; hub: RunHub | undefined; many: boolean; group?: string }): Promise<RunSummary> {
  return train(trainOptions, (meta) => {
    io.err(`grng: backend ${meta.backend} (${meta.backendDetail}); ${meta.model} (${meta.parameters} parameters) on ${meta.dataset}, ${meta.optimizer} ${JSON.stringify(meta.optimizerOptions)}, ${meta.totalSteps} steps\n`);
    const bar = progressBar({ total: meta.totalSteps, label: meta.optimizer });
    const arrow = liveSink(meta, live.options, live.hub, meta.optimizer, live.many, live.group);
    return arrow ? (rows) => rows.pipe(arrow, bar) : bar;
  });
}

export async function runTrainCommand(options: TrainCommandOptions, io: CliIo): Promise<void> {
  let summary!: RunSummary;
  await withLive(options, io, async (hub) => {
    summary = await runOne(trainOptionsOf(options, options.optimizer), io, { options, hub, many: false });
  });
  const table = formatSummaryTable([summary]);
  if (options.json) {
    io.err(`${table}\n`);
    io.out(`${JSON.stringify(Object.fromEntries(JSON_FIELDS.map((k) => [k, summary[k]])))}\n`);
  } else {
    io.out(`${table}\n`);
  }
}

/**
 * Trains each optimizer in turn with the same seed (so the same initial weights, data order and
 * label samples) and prints one table; options an optimizer does not take are ignored for it.
 */
export async function runCompareCommand(options: CompareCommandOptions, io: CliIo): Promise<void> {
  const summaries: RunSummary[] = [];
  const group = `compare-${randomUUID().slice(0, 8)}`;
  await withLive(options, io, async (hub) => {
    for (const optimizer of options.optimizers) {
      summaries.push(await runOne(trainOptionsOf(options, optimizer, { lenientOptions: true, targetAccuracy: options.target }), io, { options, hub, many: true, group }));
    }
  });
  const table = formatSummaryTable(summaries, { targetAccuracy: options.target });
  if (options.json) {
    io.err(`${table}\n`);
    const fields = [...JSON_FIELDS, 'meanUpdateGradCorrelation', 'epochsToTarget'] as const;
    io.out(`${JSON.stringify(summaries.map((s) => Object.fromEntries(fields.map((k) => [k, s[k]]))))}\n`);
  } else {
    io.out(`${table}\n`);
  }
}

function dropUndefined<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}
