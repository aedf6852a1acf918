import type { BackendChoice } from '../backend.js';
import type { Initializer } from '../nn/init.js';
import type { NamedOptimizerOptions } from '../optim/registry.js';
import { progressBar } from '../sinks/progressBar.js';
import { formatSummaryTable } from '../sinks/summaryTable.js';
import { train } from '../train.js';
import type { CliIo } from './program.js';

export interface TrainCommandOptions {
  readonly dataset: 'mnist' | 'synthetic';
  readonly model?: string;
  readonly optimizer: string;
  readonly lr?: number;
  readonly momentum?: number;
  readonly nesterov?: boolean;
  readonly weightDecay?: number;
  readonly b1?: number;
  readonly b2?: number;
  readonly eps?: number;
  readonly epochs: number;
  readonly steps?: number;
  readonly batchSize: number;
  readonly partial: 'keep' | 'drop';
  readonly seed: number;
  readonly init: Initializer;
  readonly evalEvery: number;
  readonly backend: BackendChoice;
  readonly json?: boolean;
}

/** The fields `train --json` prints, in this order. */
export const JSON_FIELDS = ['optimizer', 'backend', 'dataset', 'steps', 'epochs', 'finalLoss', 'testAccuracy', 'testLoss', 'msPerStep', 'samplesPerSecond', 'meanGradNorm'] as const;

export async function runTrainCommand(options: TrainCommandOptions, io: CliIo): Promise<void> {
  const optimizerOptions: NamedOptimizerOptions = dropUndefined({
    learningRate: options.lr,
    momentum: options.momentum,
    nesterov: options.nesterov,
    weightDecay: options.weightDecay,
    b1: options.b1,
    b2: options.b2,
    eps: options.eps,
  });
  const summary = await train(
    dropUndefined({
      dataset: options.dataset,
      model: options.model,
      init: options.init,
      optimizer: options.optimizer,
      optimizerOptions,
      epochs: options.epochs,
      steps: options.steps,
      batchSize: options.batchSize,
      partial: options.partial,
      seed: options.seed,
      evalEvery: options.evalEvery,
      backend: options.backend,
    }),
    (meta) => {
      io.err(`grng: backend ${meta.backend} (${meta.backendDetail}); ${meta.model} (${meta.parameters} parameters) on ${meta.dataset}, ${meta.optimizer} ${JSON.stringify(meta.optimizerOptions)}, ${meta.totalSteps} steps\n`);
      return progressBar({ total: meta.totalSteps, label: meta.optimizer });
    },
  );
  const table = formatSummaryTable([summary]);
  if (options.json) {
    io.err(`${table}\n`);
    io.out(`${JSON.stringify(Object.fromEntries(JSON_FIELDS.map((k) => [k, summary[k]])))}\n`);
  } else {
    io.out(`${table}\n`);
  }
}

function dropUndefined<T extends object>(value: T): { [K in keyof T]: Exclude<T[K], undefined> } {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as { [K in keyof T]: Exclude<T[K], undefined> };
}
