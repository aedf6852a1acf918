import * as tf from '@tensorflow/tfjs';
import { lastValueFrom, toArray } from 'rxjs';
import { initBackend } from '../src/backend.js';
import { loadMnist } from '../src/data/mnist.js';
import { syntheticDataset } from '../src/data/synthetic.js';
import { mlp } from '../src/nn/sequential.js';
import { evaluate } from '../src/operators/evaluate.js';
import { forwardBackward } from '../src/operators/forwardBackward.js';
import { metrics } from '../src/operators/metrics.js';
import { update } from '../src/operators/update.js';
import { sophia } from '../src/optim/sophia.js';
import { rkalman } from '../src/optim/rkalman.js';

const [which = 'sophia', epochsArg = '2', seedArg = '1', extra = '{}'] = process.argv.slice(2);
await initBackend(process.env.BACKEND ?? 'wasm');
const data = process.env.SYN ? syntheticDataset({ features: 8, classes: 3, train: 256, test: 64, seed: 2 }) : await loadMnist();
const seed = Number(seedArg);
const model = mlp({ inputs: data.features, layers: [{ units: process.env.SYN ? 16 : 256 }, { units: data.classes }], seed });
const opts = JSON.parse(extra);
const opt = which === 'sophia' ? sophia({ model, ...opts }) : rkalman(opts);
const { batches } = await import('../src/streams/batches.js');
const t0 = performance.now();
const rows = await lastValueFrom(batches(data.train, { batchSize: Number(process.env.BS ?? 128), epochs: Number(epochsArg), seed }).pipe(
  forwardBackward(model, { signals: which !== 'sophia' }), update(model, opt), evaluate(model, data.test), metrics(), toArray()));
const ms = performance.now() - t0;
const evals = rows.filter((r) => r.testAccuracy !== null);
for (const r of rows.filter((r, i) => i % 10 === 0 || i === rows.length - 1)) if (process.env.VERBOSE) console.log(r.step, r.loss.toFixed(4), JSON.stringify(r.diagnostics));
console.log(which, extra, 'seed', seed, 'test acc', evals.map((r) => r.testAccuracy!.toFixed(4)).join(' '), 'final loss', rows.at(-1)!.loss.toFixed(4), 'ms/step', (ms / rows.length).toFixed(1), 'median stepMs', rows.map(r=>r.stepMs).sort((a,b)=>a-b)[rows.length>>1].toFixed(1), 'diag', JSON.stringify(rows.at(-1)!.diagnostics), 'tensors', tf.memory().numTensors);
