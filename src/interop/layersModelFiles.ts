import * as tf from '@tensorflow/tfjs';
import { mkdirSync, readFileSync, statSync } from 'node:fs';
import { writeFileAtomically } from '../sinks/writeFileAtomically.js';
import { basename, dirname, join, resolve } from 'node:path';
import { GrngError, isGrngError } from '../errors.js';
import type { Sequential } from '../nn/sequential.js';
import { mapKerasTopology, type KerasMapping } from './kerasTopology.js';
import {
  buildMapped,
  loadMappedWeights,
  toLayersModel,
  type GrngExportMetadata,
  type ToLayersModelOptions,
} from './layersModel.js';

/** The weights file an export writes next to model.json. */
const WEIGHTS_FILE = 'weights.bin';

/**
 * The model.json a path names: the path itself when it ends in `.json`, else `model.json` in the
 * folder it names (tfjs's layout).
 */
export function modelJsonPath(path: string): string {
  return path.endsWith('.json') ? path : join(path, 'model.json');
}

/**
 * A tf.io handler for a LayersModel in files, what `tf.io.fileSystem` is in tfjs-node (which
 * does not install offline): `save` writes `model.json` and `weights.bin` into a folder (each
 * atomically: a temporary file renamed into place, weights first, so a reader never sees a
 * model.json whose weights are missing); `load` reads a model.json and every weight file its
 * manifest lists, checking their sizes. Errors name the file.
 *
 * @example
 * await keras.save(layersModelFiles('saved')); const again = await tf.loadLayersModel(layersModelFiles('saved'));
 */
export function layersModelFiles(path: string): tf.io.IOHandler {
  const jsonPath = modelJsonPath(path);
  return {
    async save(artifacts: tf.io.ModelArtifacts): Promise<tf.io.SaveResult> {
      const dir = dirname(jsonPath);
      try {
        mkdirSync(dir, { recursive: true });
      } catch (error) {
        throw fileError(dir, `cannot create the folder (${(error as Error).message})`, error);
      }
      const weights = new Uint8Array(
        artifacts.weightData === undefined
          ? new ArrayBuffer(0)
          : tf.io.CompositeArrayBuffer.join(artifacts.weightData),
      );
      const modelJson: tf.io.ModelJSON = {
        modelTopology: artifacts.modelTopology as object,
        format: artifacts.format ?? 'layers-model',
        generatedBy: artifacts.generatedBy ?? `TensorFlow.js tfjs-layers v${tf.version.tfjs}`,
        convertedBy: `grng`,
        weightsManifest: [{ paths: [WEIGHTS_FILE], weights: artifacts.weightSpecs ?? [] }],
        ...(artifacts.trainingConfig ? { trainingConfig: artifacts.trainingConfig } : {}),
        ...(artifacts.userDefinedMetadata
          ? { userDefinedMetadata: artifacts.userDefinedMetadata }
          : {}),
      };
      writeModelFile(join(dir, WEIGHTS_FILE), weights);
      writeModelFile(jsonPath, new TextEncoder().encode(JSON.stringify(modelJson)));
      return {
        modelArtifactsInfo: {
          dateSaved: new Date(),
          modelTopologyType: 'JSON',
          weightDataBytes: weights.byteLength,
        },
      };
    },
    async load(): Promise<tf.io.ModelArtifacts> {
      const modelJson = readModelJson(jsonPath);
      return tf.io.getModelArtifactsForJSON(modelJson, async (manifest) => {
        const specs = manifest.flatMap((group) => group.weights);
        const parts = manifest.flatMap((group) =>
          group.paths.map((file) => readWeightFile(jsonPath, file)),
        );
        const data = tf.io.CompositeArrayBuffer.join(parts.map((p) => p.buffer as ArrayBuffer));
        const expected = specs.reduce((n, s) => n + weightBytes(s), 0);
        if (data.byteLength !== expected)
          throw fileError(
            jsonPath,
            `lists ${expected} bytes of weights, but its weight files hold ${data.byteLength}`,
          );
        return [specs, data];
      });
    },
  };
}

/**
 * Reads a model.json (or the one in a folder) and maps its topology onto grng's layers, without
 * touching its weights (so it runs before any backend starts): what `--model` checks up front.
 *
 * @example
 * const { spec } = readLayersModelTopology('saved');
 */
export function readLayersModelTopology(path: string): KerasMapping & {
  readonly path: string;
  /** What grng wrote about the model when it exported it; undefined for other files. */
  readonly exported?: GrngExportMetadata;
} {
  const jsonPath = modelJsonPath(path);
  const modelJson = readModelJson(jsonPath);
  const exported = (modelJson.userDefinedMetadata as { grng?: GrngExportMetadata } | undefined)
    ?.grng;
  return {
    ...mapKerasTopology(modelJson.modelTopology, jsonPath),
    path: jsonPath,
    ...(exported && typeof exported.model === 'string' ? { exported } : {}),
  };
}

/**
 * Loads a LayersModel from files as a grng model: the topology is mapped first (clear errors for
 * what grng cannot compute), then tfjs loads the weights.
 *
 * @example
 * const model = await loadLayersModelFile('saved/model.json');
 */
export async function loadLayersModelFile(
  path: string,
  { description }: { description?: string } = {},
): Promise<Sequential> {
  const mapping = readLayersModelTopology(path);
  const named = mapping.exported ? `${path} (${mapping.exported.model})` : path;
  return withKerasModel(mapping.path, (keras) =>
    buildMapped(mapping, description ?? named, mapping.path, (name) =>
      keras.getLayer(name).getWeights(),
    ),
  );
}

/**
 * Loads a LayersModel file's weights into a grng model already built from its layout (what
 * `--model DIR` trains from), without building a second model to copy them from.
 *
 * @example
 * await loadLayersModelWeights(model, 'saved');
 */
export async function loadLayersModelWeights(model: Sequential, path: string): Promise<void> {
  const mapping = readLayersModelTopology(path);
  await withKerasModel(mapping.path, (keras) =>
    loadMappedWeights(model, mapping, mapping.path, (name) => keras.getLayer(name).getWeights()),
  );
}

/** Runs `use` on the LayersModel tfjs loads from a model.json, disposed afterwards. */
async function withKerasModel<T>(jsonPath: string, use: (keras: tf.LayersModel) => T): Promise<T> {
  let keras: tf.LayersModel;
  try {
    keras = await tf.loadLayersModel(layersModelFiles(jsonPath));
  } catch (error) {
    // tfjs's own loader says `Shape mismatch: [6,4] vs. [4,6]` with no file; name it.
    if (isGrngError(error)) throw error;
    throw fileError(
      jsonPath,
      `cannot be loaded by tfjs (${(error as Error).message}): its weights manifest does not fit its layers`,
      error,
    );
  }
  try {
    return use(keras);
  } finally {
    keras.dispose();
  }
}

/**
 * Writes a grng model as a TensorFlow.js LayersModel (model.json + weights.bin) into a folder,
 * loadable with `tf.loadLayersModel` (see toLayersModel for the layers and `output`).
 *
 * @example
 * await saveLayersModel(model, 'saved'); // then, anywhere: tf.loadLayersModel('file://saved/model.json') (tfjs-node) or layersModelFiles('saved')
 */
export async function saveLayersModel(
  model: Sequential,
  dir: string,
  options: ToLayersModelOptions = {},
): Promise<string> {
  const keras = toLayersModel(model, options);
  try {
    await keras.save(layersModelFiles(dir));
  } finally {
    keras.dispose();
  }
  return modelJsonPath(dir);
}

/** Whether `path` is a LayersModel: a folder with a model.json, or a .json with a modelTopology. */
export function isLayersModelPath(path: string): boolean {
  try {
    if (statSync(path).isDirectory()) return statSync(join(path, 'model.json')).isFile();
    if (!path.endsWith('.json')) return false;
    const text = readFileSync(path, 'utf8');
    return /"modelTopology"\s*:/.test(text);
  } catch {
    return false;
  }
}

function readModelJson(jsonPath: string): tf.io.ModelJSON {
  let text: string;
  try {
    text = readFileSync(jsonPath, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw fileError(
      jsonPath,
      code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? (error as Error).message})`,
      error,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw fileError(jsonPath, `is not JSON (${(error as Error).message})`, error);
  }
  const json = value as Partial<tf.io.ModelJSON>;
  if (typeof json !== 'object' || json === null || typeof json.modelTopology !== 'object')
    throw fileError(jsonPath, 'has no modelTopology: not a TensorFlow.js LayersModel file');
  if (!Array.isArray(json.weightsManifest))
    throw fileError(jsonPath, 'has no weightsManifest: a LayersModel file lists its weight files');
  return json as tf.io.ModelJSON;
}

function readWeightFile(jsonPath: string, file: string): Uint8Array {
  // A manifest path is relative to model.json and stays in its folder.
  const dir = resolve(dirname(jsonPath));
  const full = resolve(dir, file);
  if (!full.startsWith(dir + '/') || basename(full) === '')
    throw fileError(jsonPath, `lists the weight file ${JSON.stringify(file)} outside its folder`);
  try {
    return new Uint8Array(readFileSync(full));
  } catch (error) {
    throw fileError(
      jsonPath,
      `lists the weight file ${file}, which cannot be read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
      error,
    );
  }
}

/** Bytes one manifest entry takes (quantized entries by their stored type). */
function weightBytes(spec: tf.io.WeightsManifestEntry): number {
  const size = spec.shape.reduce((n, d) => n * d, 1);
  const quantized = spec.quantization?.dtype;
  const bytes = quantized === 'uint8' ? 1 : quantized ? 2 : spec.dtype === 'bool' ? 1 : 4;
  return size * bytes;
}

/** writeFileAtomically (temporary file, fsync, rename), its failure named as a model file's. */
function writeModelFile(path: string, bytes: Uint8Array): void {
  try {
    writeFileAtomically(path, [bytes]);
  } catch (error) {
    throw fileError(path, `cannot be written (${(error as Error).message})`, error);
  }
}

function fileError(path: string, problem: string, cause?: unknown): GrngError {
  return new GrngError(
    'invalid-data',
    `LayersModel file ${path} ${problem}`,
    { option: 'model', file: path },
    cause === undefined ? undefined : { cause },
  );
}
