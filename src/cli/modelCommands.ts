import { existsSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { withExampleShape, type Dataset } from '../data/dataset.js';
import { readFeatureRows } from '../data/featureRows.js';
import { GrngError, isGrngError } from '../errors.js';
import type { ExportOutput } from '../interop/layersModel.js';
import { saveLayersModel } from '../interop/layersModelFiles.js';
import type { Sequential } from '../nn/sequential.js';
import { evaluateModel, predictClasses, type ModelEvaluation } from '../run/evaluateModel.js';
import { isTextDataset } from '../run/options.js';
import { loadSavedModel, type SavedModel } from '../run/savedModel.js';
import { loadRunDataset } from '../run/train.js';
import { initBackend, type BackendChoice } from '../runtime/backend.js';
import { hasCheckpoint } from '../sinks/checkpointFile.js';
import {
  PREDICTION_FILE_EXTENSIONS,
  predictionsCsv,
  writePredictions,
} from '../sinks/predictionFile.js';
import type { CliIo } from './io.js';

/** Flags every model command shares: which model, which backend. */
interface ModelSource {
  readonly model?: string;
  readonly checkpoint?: string;
  readonly seed?: number;
  readonly backend: BackendChoice;
  readonly wasmThreads?: number;
}

export interface ExportCommandOptions extends ModelSource {
  readonly out: string;
  readonly exportOutput: ExportOutput;
  readonly overwrite?: boolean;
}

export interface EvaluateCommandOptions extends ModelSource {
  /** Default: the checkpoint's dataset, else mnist. */
  readonly dataset?: string;
  readonly inputShape?: number[];
  readonly split: 'test' | 'train';
  readonly batchSize?: number;
  readonly json?: boolean;
}

export interface PredictCommandOptions extends ModelSource {
  readonly input: string;
  readonly out?: string;
  readonly batchSize?: number;
  readonly overwrite?: boolean;
}

/** `grng export`: a checkpoint's (or another model's) weights as a LayersModel folder. */
export async function runExportCommand(options: ExportCommandOptions, io: CliIo): Promise<void> {
  const existing = join(options.out, 'model.json');
  if (existsSync(options.out) && !statSync(options.out).isDirectory())
    throw new GrngError('invalid-option', `--out ${options.out} is a file; it names a folder`, {
      option: 'out',
    });
  if (existsSync(existing) && !options.overwrite)
    throw new GrngError(
      'invalid-option',
      `--out ${options.out} already holds a model (${existing}): replace it with --overwrite, or choose another folder`,
      { option: 'out', path: existing },
    );
  await withSavedModel(options, async ({ model }) => {
    const path = await saveLayersModel(model, options.out, { output: options.exportOutput });
    io.err(
      `grng: wrote ${path} (${model.description}, ${model.size} parameters, predict returns ${options.exportOutput}); load it with tf.loadLayersModel\n`,
    );
  });
}

/**
 * `grng evaluate`: loss, accuracy and (for a classifier) the confusion matrix of a saved model on
 * a dataset's test (or train) split — the split and numbers `train` reports.
 */
export async function runEvaluateCommand(
  options: EvaluateCommandOptions,
  io: CliIo,
): Promise<void> {
  await withSavedModel(options, async ({ model, run }) => {
    const datasetName = options.dataset ?? run?.dataset ?? 'mnist';
    const context = isTextDataset(datasetName) ? tokenContextOf(model, datasetName) : undefined;
    const loaded = await loadRunDataset(
      datasetName,
      run?.synthetic as Parameters<typeof loadRunDataset>[1],
      run?.seed ?? options.seed ?? 1,
      context,
    );
    // A flag that contradicts an image model's shape is a mistake, not a request to reshape.
    if (
      options.inputShape &&
      model.inputShape.length > 1 &&
      options.inputShape.join('x') !== model.inputShape.join('x')
    )
      throw new GrngError(
        'invalid-option',
        `--input-shape ${options.inputShape.join('x')}: model ${model.description} takes examples of shape [${model.inputShape.join(', ')}]`,
        { option: 'inputShape' },
      );
    const data = shapedFor(loaded, model, options.inputShape ?? run?.inputShape);
    if (model.outputs !== data.classes)
      throw new GrngError(
        'invalid-model',
        `model ${model.description} has ${model.outputs} outputs but dataset ${data.name} has ${data.classes} classes${options.dataset === undefined && run === undefined ? ' (mnist is the default: name its dataset with --dataset)' : ''}`,
        { option: options.checkpoint !== undefined ? 'checkpoint' : 'model' },
      );
    const split = options.split === 'train' ? data.train : data.test;
    const result = await evaluateModel(model, split, {
      ...(options.batchSize ? { batchSize: options.batchSize } : {}),
    });
    const text = context !== undefined;
    io.out(formatEvaluation(model, data, options.split, result, text));
    if (options.json)
      io.out(`${JSON.stringify(evaluationJson(model, data, options.split, result, text))}\n`);
  });
}

/**
 * `grng predict`: class probabilities and the predicted class of every row of a CSV or Arrow
 * file, to a file (`--out`, by extension) or as CSV on stdout.
 */
export async function runPredictCommand(options: PredictCommandOptions, io: CliIo): Promise<void> {
  const extension = options.out === undefined ? '.csv' : extname(options.out).toLowerCase();
  if (!(PREDICTION_FILE_EXTENSIONS as readonly string[]).includes(extension))
    throw new GrngError(
      'invalid-option',
      `--out ${options.out} must end in ${PREDICTION_FILE_EXTENSIONS.join(', ')} (the format it is written in)`,
      { option: 'out', value: options.out },
    );
  if (options.out !== undefined && existsSync(options.out) && !options.overwrite)
    throw new GrngError(
      'invalid-option',
      `--out ${options.out} already exists: replace it with --overwrite, or choose another file`,
      { option: 'out', path: options.out },
    );
  await withSavedModel(options, async ({ model }) => {
    const rows = namedByInput(() =>
      readFeatureRows(options.input, { features: model.inputs, shape: model.inputShape }),
    );
    const { probabilities, predicted } = await predictClasses(model, rows.x, rows.n, {
      ...(options.batchSize ? { batchSize: options.batchSize } : {}),
    });
    const predictions = {
      n: rows.n,
      classes: model.outputs,
      probabilities,
      predicted,
      ...(rows.labels ? { labels: rows.labels } : {}),
    };
    if (options.out === undefined) io.out(predictionsCsv(predictions));
    else writePredictions(options.out, predictions);
    const scored = rows.labels
      ? `; accuracy against its label column ${(predicted.filter((p, i) => p === rows.labels![i]).length / rows.n).toFixed(4)}`
      : '';
    io.err(
      `grng: ${rows.n} rows of ${options.input} through ${model.description}${options.out ? ` → ${options.out}` : ''}${scored}\n`,
    );
  });
}

/** A problem inside the input file is said under --input (the reader names file, line, column). */
function namedByInput<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    if (isGrngError(error) && error.context.option === undefined)
      throw new GrngError(
        error.code,
        error.message,
        { ...error.context, option: 'input' },
        {
          cause: error,
        },
      );
    throw error;
  }
}

/** Checks the model flags, starts the backend, loads the model, runs `use`, disposes the model. */
async function withSavedModel(
  options: ModelSource,
  use: (saved: SavedModel) => Promise<void>,
): Promise<void> {
  if (options.checkpoint !== undefined) checkCheckpointDir(options.checkpoint);
  await initBackend(
    options.backend,
    options.wasmThreads === undefined ? {} : { wasmThreads: options.wasmThreads },
  );
  let saved: SavedModel;
  try {
    saved = await loadSavedModel({
      model: options.model,
      checkpoint: options.checkpoint,
      ...(options.seed !== undefined ? { seed: options.seed } : {}),
    });
  } catch (error) {
    const flag = options.checkpoint !== undefined ? '--checkpoint' : '--model';
    const value = options.checkpoint ?? options.model;
    if (
      isGrngError(error) &&
      value !== undefined &&
      !error.message.includes(value) &&
      !(options.model !== undefined && options.checkpoint !== undefined)
    )
      throw new GrngError(
        error.code,
        `${flag} ${value}: ${error.message}`,
        { ...error.context },
        { cause: error },
      );
    throw error;
  }
  try {
    await use(saved);
  } finally {
    saved.model.dispose();
  }
}

/** The checkpoint flag names a folder that holds one (said before any backend starts). */
export function checkCheckpointDir(dir: string): void {
  if (!existsSync(dir) || !statSync(dir).isDirectory())
    throw new GrngError(
      'invalid-option',
      `--checkpoint ${dir}: no such folder (a folder written by grng train --checkpoint-dir)`,
      { option: 'checkpoint', path: dir },
    );
  if (!hasCheckpoint(dir))
    throw new GrngError(
      'invalid-option',
      `--checkpoint ${dir}: the folder holds no checkpoint (grng train --checkpoint-dir writes one)`,
      { option: 'checkpoint', path: dir },
    );
}

/** A text dataset's windows are the token model's positions. */
function tokenContextOf(model: Sequential, dataset: string): number {
  if (model.layers[0]?.kind !== 'embedding')
    throw new GrngError(
      'invalid-model',
      `dataset ${dataset} is byte-level text; model ${model.description} is not a token model`,
      { option: 'dataset' },
    );
  return model.inputShape[0]!;
}

/**
 * The data seen in the model's example shape when only the shape differs (a flat MLP on image
 * rows, or an --input-shape); a different size is left for evaluateModel to name.
 */
function shapedFor(
  data: Dataset,
  model: Sequential,
  inputShape: readonly number[] | undefined,
): Dataset {
  const shaped = inputShape ? withExampleShape(data, inputShape) : data;
  const wanted = model.inputShape;
  const size = wanted.reduce((n, d) => n * d, 1);
  return size === shaped.features && model.labelsPerExample === 1
    ? withExampleShape(shaped, wanted)
    : shaped;
}

function formatEvaluation(
  model: Sequential,
  data: Dataset,
  split: string,
  result: ModelEvaluation,
  text: boolean,
): string {
  const lines = [
    `${model.description} on ${data.name} (${split} split, ${result.examples} examples${text ? `, ${result.labels} tokens` : ''})`,
    `loss      ${result.loss.toFixed(4)}${text ? ` nats per token, ${(result.loss / Math.LN2).toFixed(4)} bits per character` : ''}`,
    `accuracy  ${result.accuracy.toFixed(4)}${text ? ' (next token)' : ''}`,
  ];
  if (result.confusion) {
    lines.push('', 'confusion matrix (rows: true class, columns: predicted class)');
    lines.push(...confusionTable(result.confusion, result.classes));
  }
  return `${lines.join('\n')}\n`;
}

/** The matrix with class headers, right-aligned, and each row's recall at the end. */
function confusionTable(confusion: Int32Array, classes: number): string[] {
  const cells = Array.from({ length: classes }, (_, t) =>
    Array.from({ length: classes }, (_, p) => String(confusion[t * classes + p])),
  );
  const width = Math.max(String(classes - 1).length, ...cells.flat().map((cell) => cell.length));
  const head = ' '.repeat(String(classes - 1).length) + ' │ ';
  const header = `${head}${Array.from({ length: classes }, (_, c) => String(c).padStart(width)).join(' ')} │ recall`;
  const rows = cells.map((row, t) => {
    const total = row.reduce((n, cell) => n + Number(cell), 0);
    const recall = total === 0 ? '–' : (Number(row[t]) / total).toFixed(3);
    return `${String(t).padStart(String(classes - 1).length)} │ ${row.map((cell) => cell.padStart(width)).join(' ')} │ ${recall}`;
  });
  return [header, '─'.repeat(header.length), ...rows];
}

function evaluationJson(
  model: Sequential,
  data: Dataset,
  split: string,
  result: ModelEvaluation,
  text: boolean,
): object {
  return {
    model: model.description,
    dataset: data.name,
    split,
    examples: result.examples,
    loss: result.loss,
    accuracy: result.accuracy,
    ...(text ? { tokens: result.labels, bitsPerCharacter: result.loss / Math.LN2 } : {}),
    ...(result.confusion
      ? {
          confusion: Array.from({ length: result.classes }, (_, t) =>
            Array.from(result.confusion!.subarray(t * result.classes, (t + 1) * result.classes)),
          ),
        }
      : {}),
  };
}
