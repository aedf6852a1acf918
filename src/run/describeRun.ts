import { randomUUID } from 'node:crypto';
import * as tf from '@tensorflow/tfjs';
import { labelsPerExample, type Dataset } from '../data/dataset.js';
import type { RecordedRun } from '../metrics/schema.js';
import type { Sequential } from '../nn/sequential.js';
import { activeBackend } from '../runtime/backend.js';
import { batchesPerEpoch, type BatchOptions } from '../streams/batches.js';
import { VERSION } from '../version.js';

/** What a hand-composed pipeline knows about its run: the parts it was built from. */
export interface PipelineRunFacts {
  /** The optimizer's name, e.g. `ring` (the transform itself does not know it). */
  readonly optimizer: string;
  /** The options it was built with, as recorded; default none. */
  readonly optimizerOptions?: object;
  /** The model trained (its description, e.g. `mlp:784-256-10`, is recorded), or a description. */
  readonly model: Pick<Sequential, 'description'> | string;
  /** The dataset whose train split feeds `batches` (its name and size are recorded). */
  readonly data: Pick<Dataset, 'name' | 'train'>;
  /** The options given to `batches`: batch size, epochs, steps, seed, partial. */
  readonly batches: Omit<BatchOptions, 'control'>;
  /** The backend; default the one `initBackend` started (else tfjs's current one). */
  readonly backend?: string;
}

/** A prepared run's metadata (`prepareRun(...).meta`, or the one `train`'s sink gets). */
type PreparedRunFacts = Pick<
  RecordedRun,
  | 'optimizer'
  | 'model'
  | 'dataset'
  | 'backend'
  | 'seed'
  | 'batchSize'
  | 'totalSteps'
  | 'batchesPerEpoch'
  | 'labelsPerExample'
> & { readonly optimizerOptions: object };

/** How a run is named in recordings and dashboards. */
export interface RunNaming {
  /** The legend label; default the optimizer's name. */
  readonly label?: string;
  /** Unique id; default the label and 8 random hex digits. */
  readonly id?: string;
  /** The group a run belongs to (runs compared together). */
  readonly group?: string;
}

/**
 * The self-description a recording or a dashboard carries (`metricsSchema(run)`, `arrowSink(run,
 * ...)`), from what a pipeline was built with: the step counts follow from the data and the
 * batch options exactly as `batches` counts them; id, label, version and start time are filled
 * in. It also takes a prepared run's `meta`.
 *
 * @example
 * const run = describeRun({ optimizer: 'ring', model, data, batches: { batchSize: 128, epochs: 2 } });
 * rows$.pipe(arrowSink(run, { record: 'runs/ring.arrows' }));
 */
export function describeRun(
  facts: PipelineRunFacts | PreparedRunFacts,
  naming: RunNaming = {},
): RecordedRun {
  const described = 'batches' in facts ? fromPipeline(facts) : facts;
  const label = naming.label ?? described.optimizer;
  return {
    id: naming.id ?? `${label}-${randomUUID().slice(0, 8)}`,
    label,
    optimizer: described.optimizer,
    optimizerOptions: { ...described.optimizerOptions } as Record<string, unknown>,
    model: described.model,
    dataset: described.dataset,
    backend: described.backend,
    seed: described.seed,
    batchSize: described.batchSize,
    totalSteps: described.totalSteps,
    batchesPerEpoch: described.batchesPerEpoch,
    ...(described.labelsPerExample === undefined
      ? {}
      : { labelsPerExample: described.labelsPerExample }),
    version: VERSION,
    startedAt: new Date().toISOString(),
    ...(naming.group ? { group: naming.group } : {}),
  };
}

function fromPipeline(facts: PipelineRunFacts): PreparedRunFacts {
  const { batchSize, epochs = 1, steps, seed = 1, partial = 'keep' } = facts.batches;
  const perEpoch = batchesPerEpoch(facts.data.train.n, batchSize, partial);
  return {
    optimizer: facts.optimizer,
    optimizerOptions: facts.optimizerOptions ?? {},
    model: typeof facts.model === 'string' ? facts.model : facts.model.description,
    dataset: facts.data.name,
    backend: facts.backend ?? activeBackend()?.name ?? tf.getBackend(),
    // batches' own defaults (seed 1, one epoch, keep the partial batch), so the counts agree.
    seed,
    batchSize,
    totalSteps: Math.min(steps ?? Infinity, perEpoch * epochs),
    batchesPerEpoch: perEpoch,
    labelsPerExample: labelsPerExample(facts.data.train),
  };
}
