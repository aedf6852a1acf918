import * as tf from '@tensorflow/tfjs';
import { identity, lastValueFrom, type MonoTypeOperatorFunction, type Observable } from 'rxjs';
import { initBackend, type BackendChoice } from './backend.js';
import type { Dataset } from './data/dataset.js';
import { loadMnist } from './data/mnist.js';
import { syntheticDataset, type SyntheticOptions } from './data/synthetic.js';
import { GrngError } from './errors.js';
import { mlp, parseModelSpec, type MlpOptions, type Sequential } from './nn/sequential.js';
import type { Initializer } from './nn/init.js';
import { evaluate } from './operators/evaluate.js';
import { forwardBackward } from './operators/forwardBackward.js';
import { metrics } from './operators/metrics.js';
import { summarize, type RunSummary } from './operators/summarize.js';
import { update } from './operators/update.js';
import { acceptsOption, createOptimizer, resolveOptimizerOptions, type NamedOptimizer, type NamedOptimizerOptions, type OptimizerName } from './optim/registry.js';
import { fisherScan } from './operators/fisherScan.js';
import { batches, batchesPerEpoch } from './streams/batches.js';
import type { MetricsRow } from './types.js';
import { checkChoice, checkInteger, checkKeys } from './validate.js';

export interface TrainOptions {
  /** `mnist`, `synthetic` or a dataset you built; default mnist. */
  readonly dataset?: 'mnist' | 'synthetic' | Dataset;
  /** Options of the synthetic dataset (seeded by `seed` unless given). */
  readonly synthetic?: SyntheticOptions;
  /** Model spec (`mlp:784-256-10`) or options; default an MLP with one hidden layer of 256. */
  readonly model?: string | Omit<MlpOptions, 'seed'>;
  /** Weight initialisation; default torch (PyTorch's nn.Linear: U(±1/√fanIn)). */
  readonly init?: Initializer;
  /** Optimizer by name; default adamw. */
  readonly optimizer?: string;
  /** Its options (defaults per optimizer, see optimizerDefaults). */
  readonly optimizerOptions?: NamedOptimizerOptions;
  readonly epochs?: number;
  readonly steps?: number;
  readonly batchSize?: number;
  /** Seed of initial weights and data order; default 1. */
  readonly seed?: number;
  /** Evaluate on the test set every N steps (and at every epoch end); default 0 = epoch ends only. */
  readonly evalEvery?: number;
  /** Last partial batch of an epoch: keep (default) or drop. */
  readonly partial?: 'keep' | 'drop';
  /** Backend; default auto. */
  readonly backend?: BackendChoice;
  /** Drop optimizer options the optimizer does not take instead of failing (used by compare). */
  readonly lenientOptions?: boolean;
  /** Test accuracy whose first crossing `summary.epochsToTarget` reports. */
  readonly targetAccuracy?: number;
}

/** Everything a run is made of, ready to subscribe; call `dispose` when done with the model. */
export interface PreparedRun {
  readonly rows: Observable<MetricsRow>;
  readonly model: Sequential;
  readonly data: Dataset;
  readonly meta: RunMetadata;
  dispose(): void;
}

/** Self-describing facts of a run (printed, and recorded with the metrics). */
export interface RunMetadata {
  readonly optimizer: string;
  readonly optimizerOptions: NamedOptimizerOptions;
  readonly model: string;
  readonly parameters: number;
  readonly dataset: string;
  readonly datasetDescription: string;
  readonly backend: string;
  readonly backendDetail: string;
  readonly seed: number;
  readonly batchSize: number;
  readonly epochs: number;
  readonly totalSteps: number;
  readonly batchesPerEpoch: number;
}

const KNOWN = ['dataset', 'synthetic', 'model', 'init', 'optimizer', 'optimizerOptions', 'epochs', 'steps', 'batchSize', 'seed', 'evalEvery', 'partial', 'backend', 'lenientOptions', 'targetAccuracy'];

/**
 * Validates options, starts the backend, loads the data, builds the model and optimizer, and
 * composes the pipeline batches → forwardBackward → update → evaluate → metrics.
 *
 * @example
 * const run = await prepareRun({ dataset: 'mnist', optimizer: 'adamw', epochs: 1 });
 * run.rows.subscribe((row) => console.log(row.step, row.loss));
 */
export async function prepareRun(options: TrainOptions = {}): Promise<PreparedRun> {
  checkKeys('train', options, KNOWN);
  const seed = checkInteger('seed', options.seed ?? 1, 0);
  const epochs = checkInteger('epochs', options.epochs ?? 1, 1);
  const batchSize = checkInteger('batchSize', options.batchSize ?? 128, 1);
  const steps = options.steps === undefined ? undefined : checkInteger('steps', options.steps, 1);
  const evalEvery = checkInteger('evalEvery', options.evalEvery ?? 0, 0);
  const partial = checkChoice('partial', options.partial ?? 'keep', ['keep', 'drop'] as const);
  const optimizerName = options.optimizer ?? 'adamw';
  // Validate the optimizer's options before any slow set-up.
  resolveOptimizerOptions(optimizerName, options.optimizerOptions, { lenient: options.lenientOptions ?? false });
  const backend = await initBackend(options.backend ?? 'auto');
  const data = await loadDataset(options.dataset ?? 'mnist', options.synthetic, seed);
  const modelOptions = typeof options.model === 'string' || options.model === undefined ? parseModelSpec(options.model ?? `mlp:${data.features}-256-${data.classes}`) : options.model;
  if (modelOptions.inputs !== data.features) {
    throw new GrngError('invalid-model', `model ${describe(modelOptions)} takes ${modelOptions.inputs} inputs but dataset ${data.name} has ${data.features} features`, { option: 'model' });
  }
  const outputs = modelOptions.layers[modelOptions.layers.length - 1]?.units;
  if (outputs !== data.classes) {
    throw new GrngError('invalid-model', `model ${describe(modelOptions)} has ${outputs} outputs but dataset ${data.name} has ${data.classes} classes`, { option: 'model' });
  }
  const model = mlp({ ...modelOptions, seed, ...(options.init ? { init: options.init } : {}) });
  let optimizer: NamedOptimizer;
  try {
    const given = { ...options.optimizerOptions };
    if (given.seed === undefined && acceptsOption(optimizerName as OptimizerName, 'seed')) (given as { seed?: number }).seed = seed;
    optimizer = createOptimizer(optimizerName, model, given, { lenient: options.lenientOptions ?? false });
  } catch (error) {
    model.dispose();
    throw error;
  }
  const perEpoch = batchesPerEpoch(data.train.n, batchSize, partial);
  const curvature = optimizer.curvature;
  const rows = batches(data.train, { batchSize, epochs, seed, partial, ...(steps ? { steps } : {}) }).pipe(
    forwardBackward(model, { signals: optimizer.needsSignals }),
    curvature ? fisherScan(model, curvature.damping, curvature.options) : identity,
    update(model, optimizer.transform),
    evaluate(model, data.test, { every: evalEvery }),
    metrics(),
  );
  const meta: RunMetadata = {
    optimizer: optimizerName,
    optimizerOptions: optimizer.options,
    model: model.description,
    parameters: model.size,
    dataset: data.name,
    datasetDescription: data.description,
    backend: backend.name,
    backendDetail: backend.detail,
    seed,
    batchSize,
    epochs,
    totalSteps: Math.min(steps ?? Infinity, perEpoch * epochs),
    batchesPerEpoch: perEpoch,
  };
  return { rows, model, data, meta, dispose: () => model.dispose() };
}

/**
 * Trains to the end and returns the summary. `sink` can tap the rows on the way (a progress
 * bar, a recorder).
 *
 * @example
 * const summary = await train({ dataset: 'synthetic', optimizer: 'sgd', epochs: 3 });
 */
export async function train(options: TrainOptions = {}, sink?: (meta: RunMetadata) => MonoTypeOperatorFunction<MetricsRow>): Promise<RunSummary & { meta: RunMetadata }> {
  const run = await prepareRun(options);
  try {
    const rows = sink ? run.rows.pipe(sink(run.meta)) : run.rows;
    const summary = await lastValueFrom(rows.pipe(summarize({ optimizer: run.meta.optimizer, backend: run.meta.backend, dataset: run.meta.dataset, batchesPerEpoch: run.meta.batchesPerEpoch, ...(options.targetAccuracy !== undefined ? { targetAccuracy: options.targetAccuracy } : {}) })));
    return { ...summary, meta: run.meta };
  } finally {
    run.dispose();
  }
}

async function loadDataset(dataset: 'mnist' | 'synthetic' | Dataset, synthetic: SyntheticOptions | undefined, seed: number): Promise<Dataset> {
  if (typeof dataset === 'object') return dataset;
  if (dataset === 'mnist') return loadMnist();
  if (dataset === 'synthetic') return syntheticDataset({ seed, ...synthetic });
  return checkChoice('dataset', dataset, ['mnist', 'synthetic'] as const) as never;
}

function describe(options: MlpOptions | Omit<MlpOptions, 'seed'>): string {
  return `mlp:${[options.inputs, ...options.layers.map((l) => l.units)].join('-')}`;
}

/** Number of live tensors, for leak checks in tests and benchmarks. */
export function liveTensors(): number {
  return tf.memory().numTensors;
}
