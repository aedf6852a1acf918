import type { BackendChoice } from '../runtime/backend.js';
import type { Dataset } from '../data/dataset.js';
import type { SyntheticOptions } from '../data/synthetic.js';
import { GrngError, invalidOption } from '../errors.js';
import { existsSync, readFileSync, statSync } from 'node:fs';
import type { KerasMapping } from '../interop/kerasTopology.js';
import { EXPORT_OUTPUTS } from '../interop/layersModel.js';
import { isLayersModelPath, readLayersModelTopology } from '../interop/layersModelFiles.js';
import { parseCnnSpec, parseGptSpec, parseModelJson, type ModelSpec } from '../nn/modelSpec.js';
import { parseModelSpec, type MlpOptions } from '../nn/sequential.js';
import type { Initializer } from '../nn/init.js';
import { DEFAULT_MAX_BAD_STEPS } from '../operators/guardFinite.js';
import { resolveOptimizerOptions, type NamedOptimizerOptions } from '../optim/registry.js';
import { prepareCheckpointDir } from '../sinks/checkpointFile.js';
import { checkBoolean, checkChoice, checkInteger, checkKeys } from '../validate.js';
import { disposeCheckpoint, type Checkpoint, type ResumableOptions } from './checkpoint.js';
import type { RunControl } from './runControl.js';

export interface TrainOptions {
  /**
   * `mnist` (10,000 digits), `mnist-full` (60,000 + 10,000), `fashion-mnist`, `synthetic`,
   * `fortunes` (byte-level text of Debian's fortunes package), `text:PATH` (any file as byte-level
   * text), a folder of idx files, a path to a .csv/.arrow/.arrows/.feather file, or a dataset you
   * built; default mnist. The text datasets need a token model (`gpt:...`).
   */
  readonly dataset?:
    | 'mnist'
    | 'mnist-full'
    | 'fashion-mnist'
    | 'synthetic'
    | 'fortunes'
    | `text:${string}`
    | (string & {})
    | Dataset;
  /**
   * Bytes per window of a text dataset (`fortunes`, `text:PATH`); default and only allowed value:
   * the model's context (the `ctx` of a `gpt:` spec), since its positions are fixed.
   */
  readonly context?: number;
  /**
   * Shape of one example, e.g. [28, 28, 1] for a file of flat 784-pixel rows: batches become
   * [m, ...inputShape]. Its product must be the dataset's features; it replaces the shape the
   * dataset declares (idx images, Arrow metadata `grng.shape`). Default: the dataset's own.
   */
  readonly inputShape?: readonly number[];
  /** Options of the synthetic dataset (seeded by `seed` unless given). */
  readonly synthetic?: SyntheticOptions;
  /**
   * Model: a spec (`mlp:784-256-10`, `cnn:28x28x1-c32k3-p2-d128-10`, `gpt:L2-d128-h4-ctx64`), a
   * JSON model file (`model.json`), MLP options or a {@link ModelSpec}; default an MLP with one
   * hidden layer of 256.
   */
  readonly model?: string | Omit<MlpOptions, 'seed'> | ModelSpec;
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
  /**
   * Evaluate on the test set every N steps (and at every epoch end); default 0 = epoch ends only.
   */
  readonly evalEvery?: number;
  /** Last partial batch of an epoch: keep (default) or drop. */
  readonly partial?: 'keep' | 'drop';
  /** Backend; default auto. */
  readonly backend?: BackendChoice;
  /**
   * Threads of the wasm backend (its multi-threaded SIMD build when > 1); default
   * GRNG_WASM_THREADS, else 1.
   */
  readonly wasmThreads?: number;
  /** Drop optimizer options the optimizer does not take instead of failing (used by compare). */
  readonly lenientOptions?: boolean;
  /** Test accuracy whose first crossing `summary.epochsToTarget` reports. */
  readonly targetAccuracy?: number;
  /** Consecutive non-finite steps (skipped) before the run stops with an error; default 10. */
  readonly maxBadSteps?: number;
  /**
   * Check loss, gradients and updates for NaN/Inf before they touch the parameters; default true.
   */
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
  /**
   * When the run ends (or is stopped through `control`), write the trained model as a
   * TensorFlow.js LayersModel (model.json + weights.bin) into `dir`; `output` as in
   * toLayersModel (default probabilities).
   */
  readonly saveModel?: { readonly dir: string; readonly output?: 'probabilities' | 'logits' };
}

/** Options a resumed run may change; every other one comes from the checkpoint. */
export const RESUME_MAY_CHANGE = [
  'epochs',
  'steps',
  'evalEvery',
  'backend',
  'wasmThreads',
  'targetAccuracy',
  'lenientOptions',
  'guard',
  'control',
  'checkpoint',
  'resume',
  'recording',
  'maxBadSteps',
  'saveModel',
] as const;

const KNOWN = [
  'dataset',
  'context',
  'inputShape',
  'synthetic',
  'model',
  'init',
  'optimizer',
  'optimizerOptions',
  'epochs',
  'steps',
  'batchSize',
  'seed',
  'evalEvery',
  'partial',
  'backend',
  'lenientOptions',
  'targetAccuracy',
  'maxBadSteps',
  'guard',
  'control',
  'checkpoint',
  'resume',
  'recording',
  'wasmThreads',
  'saveModel',
];

/**
 * TrainOptions checked, with their defaults filled in; `options` are the effective ones (a resumed
 * run's are the checkpoint's).
 */
export interface RunSettings {
  readonly options: TrainOptions;
  readonly seed: number;
  readonly epochs: number;
  readonly batchSize: number;
  readonly steps: number | undefined;
  readonly evalEvery: number;
  readonly partial: 'keep' | 'drop';
  readonly maxBadSteps: number;
  readonly guard: boolean;
  readonly checkpoint: { readonly dir: string; readonly every?: number } | undefined;
  readonly optimizerName: string;
  /** The MLP asked for; undefined: the default MLP for the data, or a layered model. */
  readonly model: Omit<MlpOptions, 'seed'> | undefined;
  /**
   * A model of typed layers (a `cnn:` or `gpt:` spec, a JSON model file, a ModelSpec) and how to
   * name it.
   */
  readonly layered:
    | {
        readonly spec: ModelSpec;
        readonly description: string;
        /** The model.json of a TensorFlow.js LayersModel whose weights the model starts from. */
        readonly layersModel?: string;
        /** What the import changed, for people (a Dropout left out, a softmax left to the loss). */
        readonly notes?: readonly string[];
      }
    | undefined;
  /** Window length of a text dataset (the model's context); undefined for other data. */
  readonly context: number | undefined;
}

/**
 * Checks every option before anything slow starts (backend, data): unknown keys, a resumed run's
 * changes against its checkpoint (the checkpoint is disposed when they are refused), numbers,
 * choices, the optimizer's options, the model spec, and that the checkpoint folder can be
 * written (it is created).
 *
 * @example
 * const settings = resolveTrainOptions({ optimizer: 'ring', epochs: 2 }); // settings.batchSize === 128
 */
export function resolveTrainOptions(given: TrainOptions): RunSettings {
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
  const checkpoint =
    options.checkpoint === undefined ? undefined : checkCheckpointOptions(options.checkpoint);
  if (checkpoint && typeof options.dataset === 'object')
    invalidOption(
      'checkpoint',
      'a dataset object',
      'a dataset by name or file (a checkpoint must name the data to resume with); or pass it again to prepareRun with resume',
    );
  if (options.saveModel !== undefined) checkSaveModel(options.saveModel);
  if (checkpoint) checkSerializable('optimizerOptions', options.optimizerOptions);
  if (checkpoint) prepareCheckpointDir(checkpoint.dir);
  const optimizerName = options.optimizer ?? 'adamw';
  resolveOptimizerOptions(optimizerName, options.optimizerOptions, {
    lenient: options.lenientOptions ?? false,
  });
  // A resumed run's checkpoint holds the layout and the weights: the model file it came from
  // may have moved or changed since.
  const layout = resume?.run.layout;
  const { model, layered } =
    layout && typeof options.model === 'string' && isModelFile(options.model)
      ? { model: undefined, layered: { spec: layout, description: options.model } }
      : resolveModel(options.model);
  if (
    options.inputShape !== undefined &&
    (!Array.isArray(options.inputShape) ||
      options.inputShape.length === 0 ||
      !options.inputShape.every((d) => Number.isSafeInteger(d) && d >= 1))
  )
    invalidOption('inputShape', options.inputShape, 'whole numbers ≥ 1, e.g. [28, 28, 1]');
  const context = resolveContext(options, layered);
  return {
    options,
    seed,
    epochs,
    batchSize,
    steps,
    evalEvery,
    partial,
    maxBadSteps,
    guard,
    checkpoint,
    optimizerName,
    model,
    layered,
    context,
  };
}

/** Whether a dataset option names byte-level text (`fortunes`, `text:PATH`). */
export function isTextDataset(dataset: TrainOptions['dataset']): boolean {
  return typeof dataset === 'string' && (dataset === 'fortunes' || dataset.startsWith('text:'));
}

/**
 * The positions of a token model (a spec whose first layer is an embedding): its input is one
 * window of token ids; undefined for any other model.
 */
export function tokenContext(spec: ModelSpec | undefined): number | undefined {
  return spec?.layers[0]?.type === 'embedding' && spec.inputShape.length === 1
    ? spec.inputShape[0]
    : undefined;
}

/**
 * The window length of a text dataset: the token model's context. A text dataset without a token
 * model, a context other than the model's, or a context without a text dataset is an error.
 */
function resolveContext(
  options: TrainOptions,
  layered: RunSettings['layered'],
): number | undefined {
  const given =
    options.context === undefined ? undefined : checkInteger('context', options.context, 1);
  const text = isTextDataset(options.dataset);
  if (given !== undefined && !text)
    invalidOption(
      'context',
      given,
      `a text dataset to go with it (fortunes or text:PATH); dataset ${describeDataset(options.dataset)} has its own example shape`,
    );
  if (!text) return undefined;
  const modelContext = tokenContext(layered?.spec);
  if (modelContext === undefined)
    throw new GrngError(
      'invalid-model',
      `dataset ${String(options.dataset)} is byte-level text and needs a token model (an embedding first), e.g. --model gpt:L2-d128-h4-ctx64; got ${layered ? layered.description : typeof options.model === 'string' ? options.model : 'an MLP'}`,
      { option: 'model', dataset: options.dataset },
    );
  if (given !== undefined && given !== modelContext)
    invalidOption(
      'context',
      given,
      `the model's context ${modelContext} (${layered!.description}): its positions are fixed, so the windows are as long; leave it out or change the model's ctx`,
    );
  return modelContext;
}

function describeDataset(dataset: TrainOptions['dataset']): string {
  return typeof dataset === 'object' ? dataset.name : (dataset ?? 'mnist');
}

/**
 * The model option, parsed before anything slow starts: an `mlp:` spec or MLP options, or a
 * layered model from a `cnn:` or `gpt:` spec, a JSON model file (read here; errors name the file)
 * or a ModelSpec.
 *
 * @example
 * resolveModel('gpt:L1-d16-h2-ctx8').layered?.spec.inputShape; // [8]
 */
export function resolveModel(given: TrainOptions['model']): Pick<RunSettings, 'model' | 'layered'> {
  if (given === undefined) return { model: undefined, layered: undefined };
  if (typeof given === 'string') {
    const text = given.trim();
    if (text.startsWith('cnn:'))
      return { model: undefined, layered: { spec: parseCnnSpec(text), description: text } };
    if (text.startsWith('gpt:'))
      return { model: undefined, layered: { spec: parseGptSpec(text), description: text } };
    if (isLayersModelPath(text)) {
      const mapping = readLayersModelTopology(text);
      return {
        model: undefined,
        layered: {
          spec: mapping.spec,
          description: text,
          layersModel: mapping.path,
          notes: importNotes(mapping),
        },
      };
    }
    if (text.endsWith('.json')) {
      let json: string;
      try {
        json = readFileSync(text, 'utf8');
      } catch (error) {
        throw new GrngError(
          'invalid-model',
          `invalid model file ${text}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
          {
            option: 'model',
            path: text,
          },
        );
      }
      return { model: undefined, layered: { spec: parseModelJson(json, text), description: text } };
    }
    return { model: parseModelSpec(text), layered: undefined };
  }
  const layers = (given as { layers?: unknown }).layers;
  if (
    Array.isArray(layers) &&
    layers.every((l) => typeof l === 'object' && l !== null && 'type' in l)
  ) {
    return { model: undefined, layered: { spec: given as ModelSpec, description: 'model' } };
  }
  return { model: given as Omit<MlpOptions, 'seed'>, layered: undefined };
}

/** What importing a LayersModel changed, one line each. */
function importNotes(mapping: KerasMapping): string[] {
  return [
    ...mapping.dropped.map((why) => `left out ${why}`),
    ...(mapping.softmaxOutput
      ? [
          "the final softmax is left to grng's loss (logits come before it); --save-model puts it back",
        ]
      : []),
  ];
}

/** Whether a model option names a file or folder (a model file, a LayersModel), not a spec. */
export function isModelFile(model: string): boolean {
  return !/^(mlp|cnn|gpt):/.test(model.trim());
}

/**
 * The checkpoint's options with the few a resumed run may change; any other difference is an error.
 */
function resumedOptions(checkpoint: Checkpoint, given: TrainOptions): TrainOptions {
  const saved = checkpoint.run;
  const base: Record<string, unknown> = { ...saved };
  for (const [key, value] of Object.entries(given)) {
    if (value === undefined || (RESUME_MAY_CHANGE as readonly string[]).includes(key)) continue;
    if (key === 'dataset' && typeof value === 'object') continue; // the same data passed again
    const before =
      key === 'optimizerOptions'
        ? pick(saved.optimizerOptions, Object.keys(value as object))
        : base[key];
    if (JSON.stringify(before) !== JSON.stringify(value)) {
      throw new GrngError(
        'invalid-option',
        `${key} ${JSON.stringify(value)} differs from the checkpoint's ${JSON.stringify(before)} (${checkpoint.path}); a resumed run keeps its configuration (it may change ${RESUME_MAY_CHANGE.slice(0, 5).join(', ')})`,
        { option: key, path: checkpoint.path },
      );
    }
  }
  const merged: Record<string, unknown> = { ...base };
  for (const key of Object.keys(given))
    if ((given as Record<string, unknown>)[key] !== undefined)
      merged[key] = (given as Record<string, unknown>)[key];
  // Data given as an object stands for the checkpoint's dataset name.
  if (typeof given.dataset !== 'object') merged.dataset = saved.dataset;
  merged.optimizerOptions = saved.optimizerOptions;
  return merged as TrainOptions;
}

function pick(source: Record<string, unknown>, keys: readonly string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, source[k]]));
}

function checkCheckpointOptions(value: { readonly dir: string; readonly every?: number }): {
  dir: string;
  every?: number;
} {
  checkKeys('checkpoint', value, ['dir', 'every']);
  const { dir, every } = value as { dir?: unknown; every?: unknown };
  if (typeof dir !== 'string' || dir.length === 0)
    invalidOption('checkpoint.dir', dir, 'a folder path');
  return {
    dir,
    ...(every !== undefined ? { every: checkInteger('checkpoint.every', every, 1) } : {}),
  };
}

function checkSaveModel(value: NonNullable<TrainOptions['saveModel']>): void {
  checkKeys('saveModel', value, ['dir', 'output']);
  if (typeof value.dir !== 'string' || value.dir.trim() === '')
    invalidOption('saveModel.dir', value.dir, 'a folder path');
  if (existsSync(value.dir) && !statSync(value.dir).isDirectory())
    invalidOption('saveModel.dir', value.dir, 'a folder (this is a file)');
  if (value.output !== undefined) checkChoice('saveModel.output', value.output, EXPORT_OUTPUTS);
}

function checkSerializable(option: string, value: unknown): void {
  const bad = Object.entries((value ?? {}) as Record<string, unknown>).find(
    ([, v]) => typeof v === 'function',
  );
  if (bad)
    invalidOption(
      `${option}.${bad[0]}`,
      bad[1],
      'a number when checkpointing (a schedule function cannot be saved in a checkpoint)',
    );
}

/**
 * What a checkpoint keeps of the options, so `resume` rebuilds the same run: a dataset object is
 * kept by its name, the model as asked for (or the default MLP for the data), the optimizer's
 * options as resolved.
 */
export function resumableOptions(
  settings: RunSettings,
  data: { readonly features: number; readonly classes: number },
  optimizerOptions: NamedOptimizerOptions,
  layout?: ModelSpec,
): ResumableOptions {
  const { options } = settings;
  return {
    dataset:
      typeof options.dataset === 'object' ? options.dataset.name : (options.dataset ?? 'mnist'),
    ...(settings.context !== undefined ? { context: settings.context } : {}),
    ...(options.synthetic ? { synthetic: { ...options.synthetic } } : {}),
    ...(options.inputShape ? { inputShape: [...options.inputShape] } : {}),
    model:
      typeof options.model === 'object'
        ? { ...options.model }
        : (options.model ?? `mlp:${data.features}-256-${data.classes}`),
    ...(layout ? { layout } : {}),
    ...(options.init ? { init: options.init } : {}),
    optimizer: settings.optimizerName,
    optimizerOptions: { ...optimizerOptions } as Record<string, unknown>,
    epochs: settings.epochs,
    ...(settings.steps ? { steps: settings.steps } : {}),
    batchSize: settings.batchSize,
    seed: settings.seed,
    evalEvery: settings.evalEvery,
    partial: settings.partial,
    maxBadSteps: settings.maxBadSteps,
  };
}
