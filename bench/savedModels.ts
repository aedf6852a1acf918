/**
 * What using a trained model outside training costs, against baselines measured in the same run:
 * saving and loading a LayersModel, grng's forward pass over a test set against tfjs-layers'
 * `predict` of the exported model (the same network, the same backend), and reading the rows to
 * predict from CSV against Arrow.
 *
 *   npx tsx bench/savedModels.ts [--model cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10] [--rows 10000] [--json]
 */
import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { readFeatureRows } from '../src/data/featureRows.js';
import { loadMnistFull } from '../src/data/imageDatasets.js';
import { withExampleShape } from '../src/data/dataset.js';
import {
  layersModelFiles,
  loadLayersModelFile,
  saveLayersModel,
} from '../src/interop/layersModelFiles.js';
import { buildModel } from '../src/nn/buildModel.js';
import { parseCnnSpec } from '../src/nn/modelSpec.js';
import { predictClasses } from '../src/run/evaluateModel.js';
import { initBackend } from '../src/runtime/backend.js';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1]! : fallback;
};
const spec = flag('--model', 'cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10');
const rows = Number(flag('--rows', '10000'));
const json = args.includes('--json');

const backend = await initBackend('wasm');
const data = withExampleShape(await loadMnistFull(), [28, 28, 1]);
const n = Math.min(rows, data.test.n);
const x = data.test.x.subarray(0, n * 784);
const model = buildModel(parseCnnSpec(spec), { seed: 1, description: spec });
const dir = mkdtempSync(join(tmpdir(), 'grng-bench-saved-'));

const time = async <T>(run: () => Promise<T> | T): Promise<[T, number]> => {
  const started = performance.now();
  const value = await run();
  return [value, performance.now() - started];
};

const [, saveMs] = await time(() => saveLayersModel(model, join(dir, 'model')));
const bytes = statSync(join(dir, 'model', 'weights.bin')).size;
const [loaded, loadMs] = await time(() => loadLayersModelFile(join(dir, 'model')));
loaded.dispose();
const [served, tfjsLoadMs] = await time(() =>
  tf.loadLayersModel(layersModelFiles(join(dir, 'model'))),
);

// Warm both once (kernels, wasm memory), then time a whole pass each, twice, keeping the best.
await predictClasses(model, x.subarray(0, 784 * 64), 64);
const tfjsPredict = async (): Promise<void> => {
  for (let start = 0; start < n; start += 1024) {
    const end = Math.min(n, start + 1024);
    const out = tf.tidy(() =>
      served.predict(tf.tensor(x.subarray(start * 784, end * 784), [end - start, 28, 28, 1])),
    ) as tf.Tensor;
    await out.data();
    out.dispose();
  }
};
await tfjsPredict();
const best = async (run: () => Promise<unknown>): Promise<number> =>
  Math.min((await time(run))[1], (await time(run))[1]);
const grngMs = await best(() => predictClasses(model, x, n));
const tfjsMs = await best(tfjsPredict);

// The same rows as a CSV and as an Arrow file, read as `grng predict --input` reads them.
const columns = Array.from({ length: 784 }, (_, i) => `px${i}`);
const csvPath = join(dir, 'rows.csv');
const lines = [columns.join(',')];
for (let r = 0; r < n; r++) lines.push(Array.from(x.subarray(r * 784, (r + 1) * 784)).join(','));
writeFileSync(csvPath, `${lines.join('\n')}\n`);
const arrowPath = join(dir, 'rows.arrow');
writeFileSync(
  arrowPath,
  tableToIPC(
    tableFromArrays(
      Object.fromEntries(
        columns.map((name, c) => [
          name,
          Float32Array.from({ length: n }, (_, r) => x[r * 784 + c]!),
        ]),
      ),
    ),
    'file',
  ),
);
const [, csvMs] = await time(() => readFeatureRows(csvPath, { features: 784 }));
const [, arrowMs] = await time(() => readFeatureRows(arrowPath, { features: 784 }));

const result = {
  backend: `${backend.name} (${backend.detail})`,
  model: spec,
  parameters: model.size,
  rows: n,
  saveMs,
  weightBytes: bytes,
  loadGrngMs: loadMs,
  loadTfjsMs: tfjsLoadMs,
  forwardGrngMs: grngMs,
  forwardTfjsLayersMs: tfjsMs,
  grngOverTfjsLayers: grngMs / tfjsMs,
  readCsvMs: csvMs,
  readArrowMs: arrowMs,
  csvOverArrow: csvMs / arrowMs,
};
served.dispose();
model.dispose();
rmSync(dir, { recursive: true, force: true });
if (json) console.log(JSON.stringify(result));
else
  console.log(
    [
      `${spec} (${result.parameters} parameters), ${n} MNIST test images, ${result.backend}`,
      `save ${saveMs.toFixed(0)} ms (${(bytes / 2 ** 20).toFixed(2)} MiB of weights), load: grng ${loadMs.toFixed(0)} ms, tf.loadLayersModel ${tfjsLoadMs.toFixed(0)} ms`,
      `forward + softmax of ${n} images: grng ${grngMs.toFixed(0)} ms, tfjs-layers predict ${tfjsMs.toFixed(0)} ms (grng/tfjs ${result.grngOverTfjsLayers.toFixed(2)})`,
      `read ${n}×784 rows: CSV ${csvMs.toFixed(0)} ms, Arrow ${arrowMs.toFixed(0)} ms (CSV/Arrow ${result.csvOverArrow.toFixed(1)})`,
    ].join('\n'),
  );
