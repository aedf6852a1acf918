import * as tf from '@tensorflow/tfjs';
import { GrngError } from '../errors.js';
import { tensorsIn } from '../linalg/tree.js';
import type { ModelSpec } from '../nn/modelSpec.js';
import type { ScanState } from '../operators/fisherScan.js';
import type { StateSlot } from '../operators/stateSlot.js';
import { readCheckpointFile, writeCheckpointFile } from '../sinks/checkpointFile.js';
import type { SourceControl, SourcePosition } from '../streams/batches.js';
import type { StepHealth } from '../types.js';
import type { RunControl } from './runControl.js';
import { VERSION } from '../version.js';

/**
 * A state tree in JSON: plain JSON for finite numbers, strings, booleans and null; tagged objects
 * for everything else — tensors and typed arrays by blob index, non-finite numbers, undefined,
 * arrays and objects — so decoding never has to guess.
 */
export type EncodedTree =
  | string
  | number
  | boolean
  | null
  | {
      readonly tensor: number;
      readonly shape: readonly number[];
      readonly dtype: 'float32' | 'int32';
    }
  | { readonly typed: number; readonly dtype: 'float32' | 'int32' }
  | { readonly number: 'NaN' | 'Infinity' | '-Infinity' }
  | { readonly undefined: true }
  | { readonly array: readonly EncodedTree[] }
  | { readonly object: { readonly [key: string]: EncodedTree } };

type Blob = Float32Array | Int32Array;

/**
 * Encodes a state tree (objects, arrays, tensors, typed arrays, numbers...) into JSON plus
 * binary blobs; tensor values are read back asynchronously, so this works on every backend.
 */
export async function encodeTree(
  tree: unknown,
  blobs: Blob[],
  path = 'state',
): Promise<EncodedTree> {
  if (tree instanceof tf.Tensor) {
    if (tree.dtype !== 'float32' && tree.dtype !== 'int32')
      throw new GrngError(
        'internal',
        `cannot checkpoint ${path}: tensors of dtype ${tree.dtype} are not supported`,
        { path },
      );
    blobs.push((await tree.data()) as Blob);
    return { tensor: blobs.length - 1, shape: tree.shape, dtype: tree.dtype };
  }
  if (tree instanceof Float32Array || tree instanceof Int32Array) {
    blobs.push(tree.slice());
    return { typed: blobs.length - 1, dtype: tree instanceof Int32Array ? 'int32' : 'float32' };
  }
  if (tree === undefined) return { undefined: true };
  if (tree === null || typeof tree === 'string' || typeof tree === 'boolean') return tree;
  if (typeof tree === 'number')
    return Number.isFinite(tree)
      ? tree
      : { number: String(tree) as 'NaN' | 'Infinity' | '-Infinity' };
  if (Array.isArray(tree)) {
    const array: EncodedTree[] = [];
    for (let i = 0; i < tree.length; i++)
      array.push(await encodeTree(tree[i], blobs, `${path}[${i}]`));
    return { array };
  }
  if (typeof tree === 'object' && Object.getPrototypeOf(tree) === Object.prototype) {
    const object: Record<string, EncodedTree> = {};
    for (const [key, value] of Object.entries(tree))
      object[key] = await encodeTree(value, blobs, `${path}.${key}`);
    return { object };
  }
  throw new GrngError(
    'internal',
    `cannot checkpoint ${path}: ${typeof tree} values are not supported`,
    { path },
  );
}

/** The inverse of {@link encodeTree}; tensors it creates belong to the caller. */
export function decodeTree(encoded: EncodedTree, blobs: readonly Blob[], path = 'state'): unknown {
  const fail = (what: string): never => {
    throw new GrngError('invalid-data', `checkpoint state ${path}: ${what}`, {
      option: 'resume',
      path,
    });
  };
  const blob = (index: unknown, dtype: unknown): Blob => {
    const b = typeof index === 'number' ? blobs[index] : undefined;
    if (!b || (dtype === 'int32') !== b instanceof Int32Array)
      return fail(`blob ${String(index)} is missing or not ${String(dtype)}`);
    return b;
  };
  if (encoded === null || typeof encoded !== 'object') return encoded;
  if ('tensor' in encoded) {
    const data = blob(encoded.tensor, encoded.dtype);
    const size = encoded.shape.reduce((n, d) => n * d, 1);
    if (!encoded.shape.every((d) => Number.isInteger(d) && d >= 0) || size !== data.length)
      fail(`shape [${encoded.shape.join(', ')}] does not fit ${data.length} values`);
    return tf.tensor(data, [...encoded.shape], encoded.dtype);
  }
  if ('typed' in encoded) return blob(encoded.typed, encoded.dtype).slice();
  if ('number' in encoded) return Number(encoded.number);
  if ('undefined' in encoded) return undefined;
  if ('array' in encoded && Array.isArray(encoded.array))
    return encoded.array.map((e, i) => decodeTree(e, blobs, `${path}[${i}]`));
  if ('object' in encoded && typeof encoded.object === 'object' && encoded.object !== null) {
    return Object.fromEntries(
      Object.entries(encoded.object).map(([k, e]) => [k, decodeTree(e, blobs, `${path}.${k}`)]),
    );
  }
  return fail(`unknown entry ${JSON.stringify(encoded).slice(0, 80)}`);
}

/** The training options a checkpoint carries, so `--resume` rebuilds the same run. */
export interface ResumableOptions {
  readonly dataset: string;
  /** Window length of a text dataset. */
  readonly context?: number;
  readonly synthetic?: Record<string, unknown>;
  readonly inputShape?: readonly number[];
  readonly model: string | Record<string, unknown>;
  /**
   * The model's layer layout, every default explicit (see modelLayout): evaluate, export, generate
   * and resume rebuild the model from it, without the model file it may have come from. Absent in
   * checkpoints written before grng 0.1's issue 13; `model` then rebuilds it.
   */
  readonly layout?: ModelSpec;
  readonly init?: string;
  readonly optimizer: string;
  readonly optimizerOptions: Record<string, unknown>;
  readonly epochs: number;
  readonly steps?: number;
  readonly batchSize: number;
  readonly seed: number;
  readonly evalEvery: number;
  readonly partial: 'keep' | 'drop';
  readonly maxBadSteps: number;
}

/** Everything a checkpoint holds, decoded: tensors are live and belong to the caller. */
export interface Checkpoint {
  /** The file it was read from (or written to). */
  readonly path: string;
  /** The last step completed before it was written. */
  readonly step: number;
  readonly reason: 'periodic' | 'stop' | 'end';
  readonly createdAt: string;
  readonly grngVersion: string;
  readonly backend: string;
  readonly run: ResumableOptions;
  /** Where the batch source continues. */
  readonly position: SourcePosition;
  /** Milliseconds of training before the checkpoint (the resumed run's clock continues from it). */
  readonly wallMs: number;
  /** The run's recording, which a resumed run appends to. */
  readonly recording?: { readonly path: string; readonly runId: string };
  readonly params: Record<string, tf.Tensor>;
  /**
   * Optimizer state, fisherScan state and the skipped-step record, as their operators keep them.
   */
  readonly optimizer: unknown;
  readonly curvature: unknown;
  readonly health:
    | {
        consecutive: number;
        total: number;
        dampingBoost: number;
        lastBadStep: number;
        refreshDue: boolean;
      }
    | undefined;
}

interface Header {
  readonly format: 'grng-checkpoint';
  readonly grngVersion: string;
  readonly createdAt: string;
  readonly backend: string;
  readonly step: number;
  readonly reason: Checkpoint['reason'];
  readonly run: ResumableOptions;
  readonly position: {
    step: number;
    epoch: number;
    index: number;
    rngState: object;
    order: EncodedTree;
  };
  readonly wallMs: number;
  readonly recording?: { path: string; runId: string };
  readonly state: EncodedTree;
}

/** What {@link saveCheckpoint} writes: live state, read (not disposed) while the pipeline waits. */
export type CheckpointContent = Omit<Checkpoint, 'path' | 'createdAt' | 'grngVersion'>;

/**
 * Writes the complete state of a run between two steps, atomically (see writeCheckpointFile).
 *
 * @example
 * await saveCheckpoint('runs/ckpt', content);
 */
export async function saveCheckpoint(dir: string, content: CheckpointContent): Promise<string> {
  const blobs: Blob[] = [];
  const { order, rngState, step, epoch, index } = content.position;
  const state = await encodeTree(
    {
      params: content.params,
      optimizer: content.optimizer,
      curvature: content.curvature,
      health: content.health,
    },
    blobs,
  );
  const header: Header = {
    format: 'grng-checkpoint',
    grngVersion: VERSION,
    createdAt: new Date().toISOString(),
    backend: content.backend,
    step: content.step,
    reason: content.reason,
    run: content.run,
    position: { step, epoch, index, rngState, order: await encodeTree(order, blobs) },
    wallMs: content.wallMs,
    ...(content.recording ? { recording: content.recording } : {}),
    state,
  };
  return writeCheckpointFile(dir, { header, blobs });
}

/**
 * Reads a checkpoint folder written by {@link saveCheckpoint}: verified byte by byte, then
 * decoded into live tensors (dispose them, or hand them to `prepareRun({ resume })`, which does).
 *
 * @example
 * const checkpoint = loadCheckpoint('runs/ckpt'); console.log(checkpoint.step);
 */
export function loadCheckpoint(dir: string): Checkpoint {
  const file = readCheckpointFile<Header>(dir);
  const h = file.header;
  const fail = (what: string): never => {
    throw new GrngError('invalid-data', `checkpoint ${file.path}: ${what}`, {
      option: 'resume',
      path: file.path,
    });
  };
  if (h.format !== 'grng-checkpoint')
    fail(`format is ${JSON.stringify(h.format)}, expected "grng-checkpoint"`);
  if (!Number.isInteger(h.step) || h.step < 0)
    fail(`step ${JSON.stringify(h.step)} is not a step index`);
  if (typeof h.run !== 'object' || h.run === null || typeof h.run.optimizer !== 'string')
    fail('the run options are missing');
  const p = h.position as Partial<Header['position']> | undefined;
  if (
    !p ||
    !Number.isInteger(p.step) ||
    !Number.isInteger(p.epoch) ||
    !Number.isInteger(p.index) ||
    typeof p.rngState !== 'object' ||
    p.rngState === null
  )
    fail('the data-order position is missing or damaged');
  const order = decodeTree(p!.order as EncodedTree, file.blobs, 'position.order');
  if (!(order instanceof Int32Array)) fail('the data order is missing');
  const state = decodeTree(h.state, file.blobs) as {
    params?: Record<string, tf.Tensor>;
    optimizer?: unknown;
    curvature?: unknown;
    health?: Checkpoint['health'];
  };
  if (!state || typeof state.params !== 'object') fail('the parameters are missing');
  return {
    path: file.path,
    step: h.step,
    reason: h.reason,
    createdAt: h.createdAt,
    grngVersion: h.grngVersion,
    backend: h.backend,
    run: h.run,
    position: {
      step: p!.step!,
      epoch: p!.epoch!,
      index: p!.index!,
      rngState: p!.rngState!,
      order: order as Int32Array,
    },
    wallMs: typeof h.wallMs === 'number' ? h.wallMs : 0,
    ...(h.recording ? { recording: h.recording } : {}),
    params: state.params!,
    optimizer: state.optimizer,
    curvature: state.curvature,
    health: state.health,
  };
}

/** Disposes the tensors of a loaded checkpoint that nobody took over. */
export function disposeCheckpoint(checkpoint: Checkpoint): void {
  tf.dispose(
    tensorsIn([checkpoint.params, checkpoint.optimizer, checkpoint.curvature]).filter(
      (t) => !t.isDisposed,
    ),
  );
}

/** The live state of a run that a checkpoint saves and a resumed run puts back. */
export interface RunState {
  readonly params: Readonly<Record<string, tf.Variable>>;
  readonly slots: {
    readonly optimizer: StateSlot<unknown>;
    readonly curvature: StateSlot<ScanState>;
  };
  readonly health: StepHealth;
}

/**
 * Puts a checkpoint's parameters and operator states into a freshly built run (before its first
 * step): the parameters are assigned and the checkpoint's copies disposed, the optimizer and
 * curvature states go into their slots (which take them over), the health record is copied.
 * A checkpoint at or past the run's last step, or one of another model, is an error.
 *
 * @example
 * restoreCheckpoint(loadCheckpoint('runs/ckpt'), { params: model.params, slots, health }, totalSteps);
 */
export function restoreCheckpoint(
  checkpoint: Checkpoint,
  state: RunState,
  totalSteps: number,
): void {
  if (checkpoint.position.step >= totalSteps) {
    throw new GrngError(
      'invalid-option',
      `checkpoint ${checkpoint.path} is at step ${checkpoint.step}, the run's last step (${totalSteps} steps); raise --steps or --epochs to continue`,
      { option: 'resume', path: checkpoint.path },
    );
  }
  const params = state.params;
  const names = Object.keys(params);
  const saved = Object.keys(checkpoint.params);
  if (names.join() !== saved.join())
    throw new GrngError(
      'invalid-data',
      `checkpoint ${checkpoint.path} has parameters ${saved.join(', ')}, the model ${names.join(', ')}`,
      { option: 'resume' },
    );
  for (const name of names) {
    const p = params[name]!;
    const value = checkpoint.params[name]!;
    if (p.shape.join() !== value.shape.join())
      throw new GrngError(
        'invalid-data',
        `checkpoint ${checkpoint.path}: ${name} has shape [${value.shape.join(', ')}], the model [${p.shape.join(', ')}]`,
        { option: 'resume', parameter: name },
      );
  }
  for (const name of names) {
    params[name]!.assign(checkpoint.params[name]!);
    checkpoint.params[name]!.dispose();
  }
  if (checkpoint.optimizer !== undefined) state.slots.optimizer.set(checkpoint.optimizer);
  if (checkpoint.curvature !== undefined)
    state.slots.curvature.set(checkpoint.curvature as ScanState);
  if (checkpoint.health) Object.assign(state.health, checkpoint.health);
}

/** Where and what {@link runSourceControl} checkpoints. */
export interface CheckpointPlan {
  readonly dir: string;
  /** Write every this many steps (and at the end, and on a stop request). */
  readonly every: number;
  readonly backend: string;
  /** The options that rebuild the run on resume. */
  readonly run: ResumableOptions;
  readonly recording?: { readonly path: string; readonly runId: string };
  readonly state: RunState;
}

/**
 * How a run steers its batch source: a resumed run starts where its checkpoint stood; between
 * steps a stop request from `control` completes the source, and checkpoints are written every
 * `plan.every` steps, at the end and when stopped. The wall clock a checkpoint records counts
 * from this call (plus the resumed run's time).
 *
 * @example
 * batches(data.train, { batchSize, control: runSourceControl({ control, checkpoint: plan }) });
 */
export function runSourceControl({
  control,
  checkpoint,
  resume,
}: {
  readonly control?: RunControl | undefined;
  readonly checkpoint?: CheckpointPlan | undefined;
  readonly resume?: Checkpoint | undefined;
}): SourceControl {
  const started = performance.now();
  const save = async (
    plan: CheckpointPlan,
    step: number,
    position: SourcePosition,
    reason: Checkpoint['reason'],
  ): Promise<void> => {
    // The recording must hold every row the checkpoint covers: a resumed run appends after them.
    control?.flush();
    const { health, slots, params } = plan.state;
    await saveCheckpoint(plan.dir, {
      step: step - 1,
      reason,
      backend: plan.backend,
      run: plan.run,
      position,
      wallMs: (resume?.wallMs ?? 0) + performance.now() - started,
      ...(plan.recording ? { recording: plan.recording } : {}),
      params,
      optimizer: slots.optimizer.get(),
      curvature: slots.curvature.get(),
      health: {
        consecutive: health.consecutive,
        total: health.total,
        dampingBoost: health.dampingBoost,
        lastBadStep: health.lastBadStep,
        refreshDue: health.refreshDue,
      },
    });
  };
  return {
    ...(resume ? { start: resume.position } : {}),
    ...(control || checkpoint
      ? {
          between: async ({ step, last, position }): Promise<boolean> => {
            const stop = control?.stopRequested ?? false;
            if (checkpoint && (stop || last || step % checkpoint.every === 0))
              await save(
                checkpoint,
                step,
                position(),
                stop && !last ? 'stop' : last ? 'end' : 'periodic',
              );
            return stop;
          },
        }
      : {}),
  };
}
