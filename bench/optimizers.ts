/**
 * Optimizer overhead: step time of each optimizer against SGD's, measured in the same run on the
 * same model, data and backend, with a breakdown per pipeline stage so the next bottleneck is
 * visible. Stages are timed by taps between the operators (exact on the synchronous cpu/wasm
 * backends): forward/backward, curvature statistics (fisherScan on ordinary steps), Newton–Schulz
 * refresh (fisherScan on refresh steps, beyond its statistics; amortized over the period),
 * optimizer update, metrics read-back.
 *
 * A gpt: model (with --dataset fortunes) is measured against AdamW's step instead (issue 12's goals:
 * K-FAC and RING ≤ 2.5× AdamW), batch 32 by default.
 *
 *   npx tsx bench/optimizers.ts [--model mlp:784-512-512-10|cnn:...|gpt:...] [--dataset mnist|fashion-mnist|fortunes]
 *                               [--batch 256] [--steps 30]
 *                               [--optimizers sgd,adamw,...] [--inverse auto|newton-schulz|cholesky]
 *                               [--quick] [--json]
 */
import * as tf from '@tensorflow/tfjs';
import { identity, lastValueFrom, tap, toArray } from 'rxjs';
import { initBackend } from '../src/runtime/backend.js';
import { loadMnist } from '../src/data/mnist.js';
import { resolveCurvatureOptions } from '../src/curvature/options.js';
import { modelFamily } from '../src/nn/modelFamily.js';
import { loadFashionMnist } from '../src/data/imageDatasets.js';
import { buildModel } from '../src/nn/buildModel.js';
import { parseCnnSpec, parseGptSpec } from '../src/nn/modelSpec.js';
import { loadFortunes } from '../src/data/textDataset.js';
import { mlp, parseModelSpec } from '../src/nn/sequential.js';
import { fisherScan } from '../src/operators/fisherScan.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { createOptimizer, OPTIMIZERS } from '../src/optim/registry.js';
import { batches } from '../src/streams/batches.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : fallback;
};
const spec = flag('model', quick ? 'mlp:784-128-10' : 'mlp:784-512-512-10');
const language = spec.startsWith('gpt:');
const batchSize = Number(flag('batch', language ? '32' : quick ? '64' : '256'));
/** The step the others are measured against: SGD's, or AdamW's for a transformer. */
const baseline = flag('baseline', language ? 'adamw' : 'sgd');
const steps = Number(flag('steps', quick ? '12' : '30'));
const warmup = Number(flag('warmup', quick ? '2' : '5'));
const names = flag('optimizers', OPTIMIZERS.join(',')).split(',');
/** How the Kronecker-factored optimizers invert their factors (their option `inverse`); default auto. */
const inverse = flag('inverse', 'auto');

const backend = await initBackend(flag('backend', 'wasm'));
const datasetName = flag('dataset', language ? 'fortunes' : 'mnist');
const data =
  datasetName === 'fortunes'
    ? loadFortunes({ context: parseGptSpec(spec).inputShape[0]! })
    : datasetName === 'fashion-mnist'
      ? await loadFashionMnist()
      : await loadMnist();
const makeModel = () =>
  spec.startsWith('cnn:')
    ? buildModel(parseCnnSpec(spec), { seed: 1, description: spec })
    : language
      ? buildModel(parseGptSpec(spec), { seed: 1, description: spec })
      : mlp({ ...parseModelSpec(spec), seed: 1 });

interface Stages {
  forwardBackward: number;
  statistics: number;
  refresh: number;
  update: number;
  metrics: number;
}

async function measure(
  name: string,
): Promise<{ msPerStep: number; stages: Stages; refreshSteps: number }> {
  const model = makeModel();
  const optimizer = createOptimizer(
    name,
    model,
    ['kfac', 'ring', 'reng'].includes(name) ? { inverse: inverse as 'auto' } : {},
  );
  const inverseEvery = optimizer.curvature
    ? resolveCurvatureOptions(optimizer.curvature.options, modelFamily(model)).inverseEvery
    : 10;
  const marks = { start: 0, fb: 0, curvature: 0, update: 0, refreshed: false };
  const perStep: Array<{
    step: number;
    refreshed: boolean;
    total: number;
    fb: number;
    curvature: number;
    update: number;
    metrics: number;
  }> = [];
  const now = (): number => performance.now();
  await lastValueFrom(
    batches(data.train, { batchSize, epochs: 100, steps: warmup + steps, seed: 1 }).pipe(
      tap(() => (marks.start = now())),
      forwardBackward(model, { signals: optimizer.needsSignals }),
      tap(() => (marks.fb = now())),
      optimizer.curvature
        ? fisherScan(model, optimizer.curvature.damping, optimizer.curvature.options)
        : identity,
      tap((step) => {
        marks.curvature = now();
        // Early refreshes (earlyRefresh: doubling) are not on the inverseEvery grid.
        marks.refreshed = step.curvature?.refreshed === true;
      }),
      update(model, optimizer.transform),
      tap(() => (marks.update = now())),
      metrics(),
      tap((row) => {
        const end = now();
        perStep.push({
          step: row.step,
          refreshed: marks.refreshed,
          total: end - marks.start,
          fb: marks.fb - marks.start,
          curvature: marks.curvature - marks.fb,
          update: marks.update - marks.curvature,
          metrics: end - marks.update,
        });
      }),
      toArray(),
    ),
  );
  model.dispose();
  const timed = perStep.filter((s) => s.step >= warmup);
  const mean = (xs: number[]): number =>
    xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
  const refreshing = timed.filter((s) => s.refreshed);
  const ordinary = timed.filter((s) => !refreshing.includes(s));
  const statistics = mean(ordinary.map((s) => s.curvature));
  // A refresh step's fisherScan time beyond ordinary statistics, spread over its period.
  const refresh = refreshing.length
    ? Math.max(0, mean(refreshing.map((s) => s.curvature)) - statistics) / inverseEvery
    : 0;
  return {
    msPerStep: mean(timed.map((s) => s.total)),
    refreshSteps: refreshing.length,
    stages: {
      forwardBackward: mean(timed.map((s) => s.fb)),
      statistics,
      refresh,
      update: mean(timed.map((s) => s.update)),
      metrics: mean(timed.map((s) => s.metrics)),
    },
  };
}

const results: Record<
  string,
  Awaited<ReturnType<typeof measure>> & { overSgd?: number; overBaseline: number }
> = {};
const base = await measure(baseline);
for (const name of names) {
  const r = name === baseline ? base : await measure(name);
  const over = r.msPerStep / base.msPerStep;
  results[name] = { ...r, overBaseline: over, ...(baseline === 'sgd' ? { overSgd: over } : {}) };
}
// The MLP's goals (performance issue), the CNN's (issue 11) as multiples of the SGD step, and the
// transformer's (issue 12) as multiples of the AdamW step.
const goals: Record<string, number> = language
  ? { kfac: 2.5, ring: 2.5 }
  : spec.startsWith('cnn:')
    ? { kfac: 2, ring: 2, rkalman: 2, reng: 3, sophia: 1.2 }
    : { kfac: 1.5, ring: 1.5, rkalman: 1.5, reng: 2.5, sophia: 1.2 };
const out = {
  backend: backend.name,
  model: spec,
  batchSize,
  steps,
  warmup,
  inverse,
  baseline,
  results,
  goals,
  tensors: tf.memory().numTensors,
};
if (args.includes('--json')) console.log(JSON.stringify(out));
else {
  console.log(
    `backend ${backend.name}, ${spec}, batch ${batchSize}, ${steps} timed steps (after ${warmup}); ms/step and stages (ms)`,
  );
  console.log(
    `optimizer  ms/step  ×${baseline === 'sgd' ? 'SGD' : 'AdamW'}${baseline === 'sgd' ? ' ' : ''}  goal   fwd/bwd  stats  refresh  update  metrics`,
  );
  for (const [name, r] of Object.entries(results)) {
    const s = r.stages;
    console.log(
      `${name.padEnd(9)} ${r.msPerStep.toFixed(1).padStart(8)} ${r.overBaseline.toFixed(2).padStart(5)} ${(goals[name] ? `≤${goals[name]}` : '').padStart(6)} ${s.forwardBackward.toFixed(1).padStart(8)} ${s.statistics.toFixed(1).padStart(6)} ${s.refresh.toFixed(1).padStart(8)} ${s.update.toFixed(1).padStart(7)} ${s.metrics.toFixed(1).padStart(8)}`,
    );
  }
}
