import * as tf from '@tensorflow/tfjs';
import { identity, lastValueFrom, type MonoTypeOperatorFunction, type Observable } from 'rxjs';
import { initBackend, type BackendChoice } from '../runtime/backend.js';
import { validateDataset, type Dataset } from '../data/dataset.js';
import { loadDatasetFile } from '../data/fileDataset.js';
import { loadMnist } from '../data/mnist.js';
import { syntheticDataset, type SyntheticOptions } from '../data/synthetic.js';
import { GrngError, invalidOption } from '../errors.js';
import { mlp, parseModelSpec, type MlpOptions, type Sequential } from '../nn/sequential.js';
import type { Initializer } from '../nn/init.js';
import { evaluate } from '../operators/evaluate.js';
import { forwardBackward } from '../operators/forwardBackward.js';
import { metrics } from '../operators/metrics.js';
import { summarize, type RunSummary } from '../sinks/summarize.js';
import { update } from '../operators/update.js';
import { acceptsOption, createOptimizer, resolveOptimizerOptions, type NamedOptimizer, type NamedOptimizerOptions, type OptimizerName } from '../optim/registry.js';
import { fisherScan } from '../operators/fisherScan.js';
import { batches, batchesPerEpoch } from '../streams/batches.js';
import type { MetricsRow, StepHealth } from '../types.js';
import { checkBoolean, checkChoice, checkInteger, checkKeys } from '../validate.js';
import { disposeCheckpoint, saveCheckpoint, type Checkpoint, type ResumableOptions } from './checkpoint.js';
import { DEFAULT_MAX_BAD_STEPS, guardFinite, stepHealth } from '../operators/guardFinite.js';
import { StateSlot } from '../operators/stateSlot.js';
import { prepareCheckpointDir } from '../sinks/checkpointFile.js';
import { tensorsIn } from '../linalg/tree.js';
import type { ScanState } from '../operators/fisherScan.js';
import type { RunControl } from './runControl.js';
import type { SourceControl, SourcePosition } from '../streams/batches.js';

export interface TrainOptions {
  /** `mnist`, `synthetic`, a path to a .csv/.arrow/.arrows/.feather file, or a dataset you built; default mnist. */
  readonly dataset?: 'mnist' | 'synthetic' | (string & {}) | Dataset;
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
  /** Threads of the wasm backend (its multi-threaded SIMD build when > 1); default GRNG_WASM_THREADS, else 1. */
  readonly wasmThreads?: number;
  /** Drop optimizer options the optimizer does not take instead of failing (used by compare). */
  readonly lenientOptions?: boolean;
  /** Test accuracy whose first crossing `summary.epochsToTarget` reports. */
  readonly targetAccuracy?: number;
  /** Consecutive non-finite steps (skipped) before the run stops with an error; default 10. */
  readonly maxBadSteps?: number;
  /** Check loss, gradients and updates for NaN/Inf before they touch the parameters; default true. */
  readonly guard?: boolean;
  /** Stop requests and sink flushes from outside the pipeline (signal handlers). */
  readonly control?: RunControl;
  /**
   * Write the complete state to `dir` every `every` steps (default: every epoch), when the run
   * ends and when it is stopped through `control`.
   */
  readonly checkpoint?: { readonly dir: string; readonly every?: number };
  /** Continue a checkpointed run (see loadCheckpoint); its tensors are taken over. */
  readonly resume?: Checkpoint;
  /** The run's recording and id, noted in checkpoints so a resumed run appends to it. */
  readonly recording?: { readonly path: string; readonly runId: string };
}

/** Options a resumed run may change; every other one comes from the checkpoint. */
const RESUME_MAY_CHANGE = ['epochs', 'steps', 'evalEvery', 'backend', 'wasmThreads', 'targetAccuracy', 'lenientOptions', 'guard', 'control', 'checkpoint', 'resume', 'recording', 'maxBadSteps'] as const;

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
  /** The first step this process runs (> 0 for a resumed run). */
  readonly startStep: number;
  /** The checkpoint a resumed run continues. */
  readonly resumedFrom?: string;
}

const KNOWN = ['dataset', 'synthetic', 'model', 'init', 'optimizer', 'optimizerOptions', 'epochs', 'steps', 'batchSize', 'seed', 'evalEvery', 'partial', 'backend', 'lenientOptions', 'targetAccuracy', 'maxBadSteps', 'guard', 'control', 'checkpoint', 'resume', 'recording', 'wasmThreads'];

/**
 * Validates options, starts the backend, loads the data, builds the model and optimizer, and
 * composes the pipeline batches → forwardBackward → update → evaluate → metrics.
 *
 * @example
 * const run = await prepareRun({ dataset: 'mnist', optimizer: 'adamw', epochs: 1 });
 * run.rows.subscribe((row) => console.log(row.step, row.loss));
 */
export async function prepareRun(given: TrainOptions = {}): Promise<PreparedRun> {
  checkKeys('train', given, KNOWN);
  const resume = given.resume;
  let options: TrainOptions;
  try {
    options = resume ? resumedOptions(resume, given) : given;
  } catch (error) {
    if (resume) disposeCheckpoint(resume);
    throw error;
  }
  const seed = checkInteger('seed', options.seed ?? 1, 0);
  const epochs = checkInteger('epochs', options.epochs ?? 1, 1);
  const batchSize = checkInteger('batchSize', options.batchSize ?? 128, 1);
  const steps = options.steps === undefined ? undefined : checkInteger('steps', options.steps, 1);
  const evalEvery = checkInteger('evalEvery', options.evalEvery ?? 0, 0);
  const partial = checkChoice('partial', options.partial ?? 'keep', ['keep', 'drop'] as const);
  const maxBadSteps = checkInteger('maxBadSteps', options.maxBadSteps ?? DEFAULT_MAX_BAD_STEPS, 1);
  const guard = checkBoolean('guard', options.guard ?? true);
  const checkpoint = options.checkpoint === undefined ? undefined : checkCheckpointOptions(options.checkpoint);
  if (checkpoint && typeof options.dataset === 'object') invalidOption('checkpoint', 'a dataset object', "a dataset by name or file (a checkpoint must name the data to resume with); or pass it again to prepareRun with resume");
  if (checkpoint) checkSerializable('optimizerOptions', options.optimizerOptions);
  if (checkpoint) prepareCheckpointDir(checkpoint.dir);
  const optimizerName = options.optimizer ?? 'adamw';
  // Validate the optimizer's options before any slow set-up.
  resolveOptimizerOptions(optimizerName, options.optimizerOptions, { lenient: options.lenientOptions ?? false });
  // A malformed spec is known before the backend starts and the data loads.
  const givenModel = typeof options.model === 'string' ? parseModelSpec(options.model) : options.model;
  const backend = await initBackend(options.backend ?? 'auto', options.wasmThreads === undefined ? {} : { wasmThreads: options.wasmThreads });
  const data = await loadDataset(options.dataset ?? 'mnist', options.synthetic, seed);
  const modelOptions = givenModel ?? parseModelSpec(`mlp:${data.features}-256-${data.classes}`);
  if (modelOptions.inputs !== data.features) {
    throw new GrngError('invalid-model', `model ${describe(modelOptions)} takes ${modelOptions.inputs} inputs but dataset ${data.name} has ${data.features} features (e.g. mlp:${data.features}-256-${data.classes} fits it)`, { option: 'model', value: describe(modelOptions) });
  }
  const outputs = modelOptions.layers[modelOptions.layers.length - 1]?.units;
  if (outputs !== data.classes) {
    throw new GrngError('invalid-model', `model ${describe(modelOptions)} has ${outputs} outputs but dataset ${data.name} has ${data.classes} classes (e.g. mlp:${data.features}-256-${data.classes} fits it)`, { option: 'model', value: describe(modelOptions) });
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
  const totalSteps = Math.min(steps ?? Infinity, perEpoch * epochs);
  const curvature = optimizer.curvature;
  const health = stepHealth({ maxBadSteps });
  const slots = { optimizer: new StateSlot<unknown>('optimizer'), curvature: new StateSlot<ScanState>('curvature') };
  if (resume) {
    try {
      restoreState(resume, model, slots, health, totalSteps);
    } catch (error) {
      model.dispose();
      disposeCheckpoint(resume);
      throw error;
    }
  }
  const control = options.control;
  const started = performance.now();
  const resumable: ResumableOptions = {
    dataset: typeof options.dataset === 'object' ? options.dataset.name : (options.dataset ?? 'mnist'),
    ...(options.synthetic ? { synthetic: { ...options.synthetic } } : {}),
    model: typeof options.model === 'object' ? { ...options.model } : (options.model ?? `mlp:${data.features}-256-${data.classes}`),
    ...(options.init ? { init: options.init } : {}),
    optimizer: optimizerName,
    optimizerOptions: { ...optimizer.options } as Record<string, unknown>,
    epochs,
    ...(steps ? { steps } : {}),
    batchSize,
    seed,
    evalEvery,
    partial,
    maxBadSteps,
  };
  const save = async (step: number, position: SourcePosition, reason: Checkpoint['reason']): Promise<void> => {
    // The recording must hold every row the checkpoint covers: a resumed run appends after them.
    control?.flush();
    await saveCheckpoint(checkpoint!.dir, {
      step: step - 1,
      reason,
      backend: backend.name,
      run: resumable,
      position,
      wallMs: (resume?.wallMs ?? 0) + performance.now() - started,
      ...(options.recording ? { recording: options.recording } : {}),
      params: model.params,
      optimizer: slots.optimizer.get(),
      curvature: slots.curvature.get(),
      health: { consecutive: health.consecutive, total: health.total, dampingBoost: health.dampingBoost, lastBadStep: health.lastBadStep, refreshDue: health.refreshDue },
    });
  };
  const every = checkpoint?.every ?? perEpoch;
  const sourceControl: SourceControl = {
    ...(resume ? { start: resume.position } : {}),
    ...(control || checkpoint
      ? {
          between: async ({ step, last, position }): Promise<boolean> => {
            const stop = control?.stopRequested ?? false;
            if (checkpoint && (stop || last || step % every === 0)) await save(step, position(), stop && !last ? 'stop' : last ? 'end' : 'periodic');
            return stop;
          },
        }
      : {}),
  };
  const rows = batches(data.train, { batchSize, epochs, seed, partial, ...(steps ? { steps } : {}), control: sourceControl }).pipe(
    forwardBackward(model, { signals: optimizer.needsSignals }),
    // fisherScan folds the gradients' signals into its factors, so a bad step must be caught
    // before it (guardFinite, a read-back of its own); without it update's guard checks loss,
    // gradients and update in one read-back.
    guard && curvature ? guardFinite(health) : identity,
    curvature ? fisherScan(model, curvature.damping, curvature.options, { health, state: slots.curvature }) : identity,
    update(model, optimizer.transform, { ...(guard ? { guard: health, checkGradients: !curvature } : {}), state: slots.optimizer }),
    evaluate(model, data.test, { every: evalEvery }),
    metrics({ health, ...(resume ? { wallOffsetMs: resume.wallMs } : {}) }),
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
    totalSteps,
    batchesPerEpoch: perEpoch,
    startStep: resume ? resume.position.step : 0,
    ...(resume ? { resumedFrom: resume.path } : {}),
  };
  const dispose = (): void => {
    for (const slot of [slots.optimizer, slots.curvature] as StateSlot<unknown>[]) slot.discard((state) => tf.dispose(tensorsIn(state)));
    model.dispose();
  };
  return { rows, model, data, meta, dispose };
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

/** The checkpoint's options with the few a resumed run may change; any other difference is an error. */
function resumedOptions(checkpoint: Checkpoint, given: TrainOptions): TrainOptions {
  const saved = checkpoint.run;
  const base: Record<string, unknown> = { ...saved };
  for (const [key, value] of Object.entries(given)) {
    if (value === undefined || (RESUME_MAY_CHANGE as readonly string[]).includes(key)) continue;
    if (key === 'dataset' && typeof value === 'object') continue; // the same data passed again
    const before = key === 'optimizerOptions' ? pick(saved.optimizerOptions, Object.keys(value as object)) : base[key];
    if (JSON.stringify(before) !== JSON.stringify(value)) {
      throw new GrngError('invalid-option', `${key} ${JSON.stringify(value)} differs from the checkpoint's ${JSON.stringify(before)} (${checkpoint.path}); a resumed run keeps its configuration (it may change ${RESUME_MAY_CHANGE.slice(0, 5).join(', ')})`, { option: key, path: checkpoint.path });
    }
  }
  const merged: Record<string, unknown> = { ...base };
  for (const key of Object.keys(given)) if ((given as Record<string, unknown>)[key] !== undefined) merged[key] = (given as Record<string, unknown>)[key];
  // Data given as an object stands for the checkpoint's dataset name.
  if (typeof given.dataset !== 'object') merged.dataset = saved.dataset;
  merged.optimizerOptions = saved.optimizerOptions;
  return merged as TrainOptions;
}

function pick(source: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, source[k]]));
}

/** Puts a checkpoint's parameters and operator states into a freshly built run. */
function restoreState(checkpoint: Checkpoint, model: Sequential, slots: { optimizer: StateSlot<unknown>; curvature: StateSlot<ScanState> }, health: StepHealth, totalSteps: number): void {
  if (checkpoint.position.step >= totalSteps) {
    throw new GrngError('invalid-option', `checkpoint ${checkpoint.path} is at step ${checkpoint.step}, the run's last step (${totalSteps} steps); raise --steps or --epochs to continue`, { option: 'resume', path: checkpoint.path });
  }
  const names = Object.keys(model.params);
  const saved = Object.keys(checkpoint.params);
  if (names.join() !== saved.join()) throw new GrngError('invalid-data', `checkpoint ${checkpoint.path} has parameters ${saved.join(', ')}, the model ${names.join(', ')}`, { option: 'resume' });
  for (const name of names) {
    const p = model.params[name]!;
    const value = checkpoint.params[name]!;
    if (p.shape.join() !== value.shape.join()) throw new GrngError('invalid-data', `checkpoint ${checkpoint.path}: ${name} has shape [${value.shape.join(', ')}], the model [${p.shape.join(', ')}]`, { option: 'resume', parameter: name });
  }
  for (const name of names) {
    model.params[name]!.assign(checkpoint.params[name]!);
    checkpoint.params[name]!.dispose();
  }
  if (checkpoint.optimizer !== undefined) slots.optimizer.set(checkpoint.optimizer);
  if (checkpoint.curvature !== undefined) slots.curvature.set(checkpoint.curvature as ScanState);
  if (checkpoint.health) Object.assign(health, checkpoint.health);
}

function checkCheckpointOptions(value: { readonly dir: string; readonly every?: number }): { dir: string; every?: number } {
  checkKeys('checkpoint', value, ['dir', 'every']);
  const { dir, every } = value as { dir?: unknown; every?: unknown };
  if (typeof dir !== 'string' || dir.length === 0) invalidOption('checkpoint.dir', dir, 'a folder path');
  return { dir, ...(every !== undefined ? { every: checkInteger('checkpoint.every', every, 1) } : {}) };
}

function checkSerializable(option: string, value: unknown): void {
  const bad = Object.entries((value ?? {}) as Record<string, unknown>).find(([, v]) => typeof v === 'function');
  if (bad) invalidOption(`${option}.${bad[0]}`, bad[1], 'a number when checkpointing (a schedule function cannot be saved in a checkpoint)');
}

async function loadDataset(dataset: string | Dataset, synthetic: SyntheticOptions | undefined, seed: number): Promise<Dataset> {
  if (typeof dataset === 'object' && dataset !== null) return validateDataset(dataset);
  if (dataset === 'mnist') return loadMnist();
  if (dataset === 'synthetic') return syntheticDataset({ seed, ...synthetic });
  // Any other string is a file the user made; loadDatasetFile names a non-file clearly.
  return loadDatasetFile(dataset);
}

function describe(options: MlpOptions | Omit<MlpOptions, 'seed'>): string {
  return `mlp:${[options.inputs, ...options.layers.map((l) => l.units)].join('-')}`;
}

/** Number of live tensors, for leak checks in tests and benchmarks. */
export function liveTensors(): number {
  return tf.memory().numTensors;
}
