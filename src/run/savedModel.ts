import { GrngError, isGrngError } from '../errors.js';
import { isLayersModelPath, loadLayersModelFile } from '../interop/layersModelFiles.js';
import { buildModel } from '../nn/buildModel.js';
import type { Initializer } from '../nn/init.js';
import { mlp, type Sequential } from '../nn/sequential.js';
import { disposeCheckpoint, loadCheckpoint, type ResumableOptions } from './checkpoint.js';
import { resolveModel } from './options.js';

/** A trained model and, from a checkpoint, the run that trained it. */
export interface SavedModel {
  readonly model: Sequential;
  /** The checkpoint's run options (dataset, context, input shape…); undefined for a model file. */
  readonly run?: ResumableOptions;
}

/**
 * Rebuilds the model of a checkpoint with its trained parameters (the optimizer state is dropped):
 * from the layer layout the checkpoint carries, so nothing but the checkpoint is needed; a
 * checkpoint written before layouts were saved is rebuilt from its model option (a spec, or the
 * model file it names). Errors name the checkpoint. Dispose the model when done.
 *
 * @example
 * const { model, run } = savedModelFromCheckpoint('runs/ckpt'); console.log(run?.dataset); model.dispose();
 */
export function savedModelFromCheckpoint(dir: string): SavedModel & { run: ResumableOptions } {
  const checkpoint = loadCheckpoint(dir);
  try {
    const run = checkpoint.run;
    const description = typeof run.model === 'string' ? run.model : 'model';
    const init = run.init ? { init: run.init as Initializer } : {};
    let model: Sequential;
    if (run.layout) {
      model = buildModel(run.layout, { seed: run.seed, description, ...init });
    } else {
      const resolved = resolveModel(run.model as Parameters<typeof resolveModel>[0]);
      if (resolved.layered) {
        model = buildModel(resolved.layered.spec, { seed: run.seed, description, ...init });
      } else {
        const options = resolved.model!;
        model = mlp({
          ...options,
          ...(run.inputShape ? { inputShape: run.inputShape } : {}),
          seed: run.seed,
          ...init,
        });
      }
    }
    try {
      model.load(checkpoint.params);
    } catch (error) {
      model.dispose();
      throw isGrngError(error)
        ? new GrngError(
            'invalid-data',
            `checkpoint ${checkpoint.path}: ${error.message}`,
            { option: 'checkpoint', path: checkpoint.path },
            { cause: error },
          )
        : error;
    }
    return { model, run };
  } finally {
    disposeCheckpoint(checkpoint);
  }
}

/**
 * A model to evaluate, predict with or export: `checkpoint` (a training checkpoint folder) or
 * `model` — a TensorFlow.js LayersModel (a folder with model.json, or the model.json), or an
 * untrained spec (`mlp:…`, `cnn:…`, `gpt:…`, a grng JSON model file, seeded by `seed`). Exactly
 * one of the two. Dispose the model when done.
 *
 * @example
 * const { model } = await loadSavedModel({ model: 'exported' });
 */
export async function loadSavedModel({
  model,
  checkpoint,
  seed = 1,
  init,
}: {
  model?: string | undefined;
  checkpoint?: string | undefined;
  /** Seed and initialiser of an untrained spec (a saved model keeps its weights). */
  seed?: number;
  init?: Initializer;
}): Promise<SavedModel> {
  if ((model === undefined) === (checkpoint === undefined))
    throw new GrngError(
      'invalid-option',
      '--model DIR (a saved LayersModel) or --checkpoint DIR (a training checkpoint) names the model: give one of them',
      { option: 'model' },
    );
  if (checkpoint !== undefined) return savedModelFromCheckpoint(checkpoint);
  if (isLayersModelPath(model!)) return { model: await loadLayersModelFile(model!) };
  const resolved = resolveModel(model!);
  const initOption = init ? { init } : {};
  if (resolved.layered)
    return {
      model: buildModel(resolved.layered.spec, { seed, description: model!, ...initOption }),
    };
  return { model: mlp({ ...resolved.model!, seed, ...initOption }) };
}
