import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, type MonoTypeOperatorFunction, type Observable } from 'rxjs';
import { initBackend } from '../runtime/backend.js';
import { statSync } from 'node:fs';
import { exampleShape, validateDataset, withExampleShape, type Dataset } from '../data/dataset.js';
import { loadDatasetFile } from '../data/fileDataset.js';
import { loadIdxDataset } from '../data/idx.js';
import { loadFashionMnist, loadMnistFull } from '../data/imageDatasets.js';
import { loadMnist } from '../data/mnist.js';
import { loadFortunes, loadTextDataset } from '../data/textDataset.js';
import { syntheticDataset, type SyntheticOptions } from '../data/synthetic.js';
import { GrngError } from '../errors.js';
import { buildModel as buildModelFromSpec } from '../nn/buildModel.js';
import { loadLayersModelWeights, saveLayersModel } from '../interop/layersModelFiles.js';
import { modelLayout } from '../nn/modelLayout.js';
import type { ModelSpec } from '../nn/modelSpec.js';
import { mlp, parseModelSpec, type MlpOptions, type Sequential } from '../nn/sequential.js';
import type { ScanState } from '../operators/fisherScan.js';
import { stepHealth } from '../operators/guardFinite.js';
import { StateSlot } from '../operators/stateSlot.js';
import {
  acceptsOption,
  createOptimizer,
  type NamedOptimizer,
  type NamedOptimizerOptions,
  type OptimizerName,
} from '../optim/registry.js';
import { summarize, type RunSummary } from '../sinks/summarize.js';
import { batches, batchesPerEpoch } from '../streams/batches.js';
import { tensorsIn } from '../linalg/tree.js';
import type { MetricsRow } from '../types.js';
import {
  disposeCheckpoint,
  restoreCheckpoint,
  runSourceControl,
  type RunState,
} from './checkpoint.js';
import {
  resolveTrainOptions,
  resumableOptions,
  type RunSettings,
  type TrainOptions,
} from './options.js';
import { trainingPipeline } from './pipeline.js';

export type { TrainOptions } from './options.js';

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
  /** Parameter groups: group name → parameter keys (see NamedOptimizer.groups). */
  readonly groups: Readonly<Record<string, readonly string[]>>;
  readonly model: string;
  /** Labels per example: 1 for a classifier, the context for a language model. */
  readonly labelsPerExample: number;
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
  /** What building the model changed of the model asked for (an imported Dropout left out). */
  readonly modelNotes?: readonly string[];
}

/**
 * Validates options, starts the backend, loads the data, builds the model and optimizer, and
 * composes batches (with the resume and checkpoint hooks) → {@link trainingPipeline}.
 *
 * @example
 * const run = await prepareRun({ dataset: 'mnist', optimizer: 'adamw', epochs: 1 });
 * run.rows.subscribe((row) => console.log(row.step, row.loss));
 */
export async function prepareRun(given: TrainOptions = {}): Promise<PreparedRun> {
  const settings = resolveTrainOptions(given);
  const { options, seed, epochs, batchSize, steps, partial, checkpoint, optimizerName } = settings;
  const resume = given.resume;
  const backend = await initBackend(
    options.backend ?? 'auto',
    options.wasmThreads === undefined ? {} : { wasmThreads: options.wasmThreads },
  );
  const loaded = await loadRunDataset(
    options.dataset ?? 'mnist',
    options.synthetic,
    seed,
    settings.context,
  );
  const data = options.inputShape
    ? withExampleShape(loaded, options.inputShape)
    : flatForModel(loaded, settings.layered?.spec);
  const model = buildModel(settings, data);
  if (settings.layered?.layersModel)
    await startFromLayersModel(model, settings.layered.layersModel, resume === undefined);
  let optimizer: NamedOptimizer;
  try {
    const given = { ...options.optimizerOptions };
    if (given.seed === undefined && acceptsOption(optimizerName as OptimizerName, 'seed'))
      (given as { seed?: number }).seed = seed;
    optimizer = createOptimizer(optimizerName, model, given, {
      lenient: options.lenientOptions ?? false,
    });
  } catch (error) {
    model.dispose();
    throw error;
  }
  const perEpoch = batchesPerEpoch(data.train.n, batchSize, partial);
  const totalSteps = Math.min(steps ?? Infinity, perEpoch * epochs);
  const state: RunState = {
    params: model.params,
    slots: {
      optimizer: new StateSlot<unknown>('optimizer'),
      curvature: new StateSlot<ScanState>('curvature'),
    },
    health: stepHealth({ maxBadSteps: settings.maxBadSteps }),
  };
  if (resume) {
    try {
      restoreCheckpoint(resume, state, totalSteps);
    } catch (error) {
      model.dispose();
      disposeCheckpoint(resume);
      throw error;
    }
  }
  const control = runSourceControl({
    control: options.control,
    resume,
    checkpoint: checkpoint && {
      dir: checkpoint.dir,
      every: checkpoint.every ?? perEpoch,
      backend: backend.name,
      run: resumableOptions(settings, data, optimizer.options, modelLayout(model)),
      ...(options.recording ? { recording: options.recording } : {}),
      state,
    },
  });
  const rows = batches(data.train, {
    batchSize,
    epochs,
    seed,
    partial,
    ...(steps ? { steps } : {}),
    control,
  }).pipe(
    trainingPipeline(model, optimizer, {
      test: data.test,
      evalEvery: settings.evalEvery,
      guard: settings.guard,
      health: state.health,
      state: state.slots,
      ...(resume ? { metrics: { wallOffsetMs: resume.wallMs } } : {}),
    }),
  );
  const meta: RunMetadata = {
    optimizer: optimizerName,
    optimizerOptions: optimizer.options,
    groups: optimizer.groups,
    model: model.description,
    labelsPerExample: model.labelsPerExample,
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
    ...(settings.layered?.notes?.length ? { modelNotes: settings.layered.notes } : {}),
  };
  const dispose = (): void => {
    for (const slot of [state.slots.optimizer, state.slots.curvature] as StateSlot<unknown>[])
      slot.discard((tree) => tf.dispose(tensorsIn(tree)));
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
export async function train(
  options: TrainOptions = {},
  sink?: (meta: RunMetadata) => MonoTypeOperatorFunction<MetricsRow>,
): Promise<RunSummary & { meta: RunMetadata }> {
  const run = await prepareRun(options);
  try {
    const rows = sink ? run.rows.pipe(sink(run.meta)) : run.rows;
    const summary = await lastValueFrom(
      rows.pipe(
        summarize({
          optimizer: run.meta.optimizer,
          backend: run.meta.backend,
          dataset: run.meta.dataset,
          batchesPerEpoch: run.meta.batchesPerEpoch,
          ...(options.targetAccuracy !== undefined
            ? { targetAccuracy: options.targetAccuracy }
            : {}),
        }),
      ),
    );
    if (options.saveModel)
      await saveLayersModel(run.model, options.saveModel.dir, {
        ...(options.saveModel.output ? { output: options.saveModel.output } : {}),
      });
    return { ...summary, meta: run.meta };
  } finally {
    run.dispose();
  }
}

/**
 * The model asked for (or the default MLP for the data), checked against the data's features and
 * classes.
 */
function buildModel(settings: RunSettings, data: Dataset): Sequential {
  if (settings.layered) return buildLayeredModel(settings, settings.layered, data);
  const modelOptions = settings.model ?? parseModelSpec(`mlp:${data.features}-256-${data.classes}`);
  if (modelOptions.inputs !== data.features) {
    throw new GrngError(
      'invalid-model',
      `model ${describe(modelOptions)} takes ${modelOptions.inputs} inputs but dataset ${data.name} has ${data.features} features (e.g. mlp:${data.features}-256-${data.classes} fits it)`,
      { option: 'model', value: describe(modelOptions) },
    );
  }
  const outputs = modelOptions.layers[modelOptions.layers.length - 1]?.units;
  if (outputs !== data.classes) {
    throw new GrngError(
      'invalid-model',
      `model ${describe(modelOptions)} has ${outputs} outputs but dataset ${data.name} has ${data.classes} classes (e.g. mlp:${data.features}-256-${data.classes} fits it)`,
      { option: 'model', value: describe(modelOptions) },
    );
  }
  // Image data ([28, 28, 1] examples) feeds an MLP through a flatten layer.
  const dataShape = exampleShape(data.train);
  const inputShape = modelOptions.inputShape ?? (dataShape.length > 1 ? dataShape : undefined);
  if (inputShape && inputShape.join() !== dataShape.join()) {
    throw new GrngError(
      'invalid-model',
      `model ${describe(modelOptions)} takes examples of shape [${inputShape.join(', ')}] but dataset ${data.name} has [${dataShape.join(', ')}] (--input-shape / inputShape sets the data's)`,
      { option: 'model', value: describe(modelOptions) },
    );
  }
  const init = settings.options.init;
  return mlp({
    ...modelOptions,
    ...(inputShape ? { inputShape } : {}),
    seed: settings.seed,
    ...(init ? { init } : {}),
  });
}

/**
 * The dataset a run option names (see TrainOptions.dataset): a dataset object is validated, a
 * name or path loaded; `context` is a text dataset's window length.
 *
 * @example
 * const data = await loadRunDataset('mnist', undefined, 1, undefined);
 */
export async function loadRunDataset(
  dataset: string | Dataset,
  synthetic: SyntheticOptions | undefined,
  seed: number,
  context: number | undefined,
): Promise<Dataset> {
  if (typeof dataset === 'object' && dataset !== null) return validateDataset(dataset);
  // resolveTrainOptions set the context of a text dataset from the model's.
  if (dataset === 'fortunes') return loadFortunes({ context: context! });
  if (dataset.startsWith('text:')) {
    const path = dataset.slice('text:'.length);
    if (path === '')
      throw new GrngError('invalid-data', `dataset "text:" names no file (text:PATH)`, {
        option: 'dataset',
      });
    return loadTextDataset(path, { context: context! });
  }
  if (dataset === 'mnist') return loadMnist();
  if (dataset === 'mnist-full') return loadMnistFull();
  if (dataset === 'fashion-mnist') return loadFashionMnist();
  if (dataset === 'synthetic') return syntheticDataset({ seed, ...synthetic });
  if (isFolder(dataset)) return loadIdxDataset(dataset);
  // Any other string is a file the user made; loadDatasetFile names a non-file clearly.
  return loadDatasetFile(dataset);
}

function isFolder(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/** A model of typed layers (cnn:, JSON, ModelSpec), checked against the data's example shape and classes. */
function buildLayeredModel(
  settings: RunSettings,
  { spec, description }: { readonly spec: ModelSpec; readonly description: string },
  data: Dataset,
): Sequential {
  const dataShape = exampleShape(data.train);
  if (spec.inputShape.join() !== dataShape.join()) {
    const hint =
      dataShape.length === 1
        ? ` (a flat dataset takes a shape with --input-shape ${spec.inputShape.join('x')})`
        : '';
    throw new GrngError(
      'invalid-model',
      `model ${description} takes examples of shape [${spec.inputShape.join(', ')}] but dataset ${data.name} has [${dataShape.join(', ')}]${hint}`,
      { option: 'model', value: description },
    );
  }
  const last = spec.layers.at(-1);
  const outputs = last?.type === 'dense' ? last.units : undefined;
  if (outputs !== data.classes) {
    throw new GrngError(
      'invalid-model',
      `model ${description} has ${outputs} outputs but dataset ${data.name} has ${data.classes} classes`,
      {
        option: 'model',
        value: description,
      },
    );
  }
  // A token model reads the same symbols it predicts: an embedding with fewer rows than the data's
  // classes would look up no row for the larger ids (a one-hot of an id past the table is all
  // zeros) and train on silently wrong inputs.
  const first = spec.layers[0];
  if (first?.type === 'embedding' && first.vocabulary < data.classes)
    throw new GrngError(
      'invalid-model',
      `model ${description} embeds a vocabulary of ${first.vocabulary} but dataset ${data.name} has ${data.classes} token values`,
      { option: 'model', value: description },
    );
  const init = settings.options.init;
  return buildModelFromSpec(spec, { seed: settings.seed, description, ...(init ? { init } : {}) });
}

/**
 * Image data seen as flat rows when a layered model takes flat rows of the same size (a Keras MLP
 * over [784] trained on [28, 28, 1] digits): the rows are the same, row-major, as a flatten layer
 * would make them.
 */
function flatForModel(data: Dataset, spec: ModelSpec | undefined): Dataset {
  const shape = exampleShape(data.train);
  if (!spec || spec.inputShape.length !== 1 || shape.length === 1) return data;
  return spec.inputShape[0] === data.features ? withExampleShape(data, spec.inputShape) : data;
}

/**
 * Puts a LayersModel's weights into the freshly built model (which has its layout). A resumed run
 * skips it: its checkpoint's weights replace them anyway.
 */
async function startFromLayersModel(
  model: Sequential,
  path: string,
  needed: boolean,
): Promise<void> {
  if (!needed) return;
  try {
    await loadLayersModelWeights(model, path);
  } catch (error) {
    model.dispose();
    throw error;
  }
}

function describe(options: MlpOptions | Omit<MlpOptions, 'seed'>): string {
  return `mlp:${[options.inputs, ...options.layers.map((l) => l.units)].join('-')}`;
}

/** Number of live tensors, for leak checks in tests and benchmarks. */
export function liveTensors(): number {
  return tf.memory().numTensors;
}
