/**
 * `npm run bench`: every benchmark, each reporting ratios against a baseline measured in the
 * same run, then the figures written into docs/benchmarks.md between the
 * `<!-- bench:begin -->` / `<!-- bench:end -->` markers (the analysis around them is kept).
 *
 *   npm run bench                 # full run (~10 min on the 2-core dev VM)
 *   npm run bench -- --quick      # a smoke run of every benchmark (< 2 min; used by a test)
 *   npm run bench -- --json       # one JSON object with every figure on stdout
 *   npm run bench -- --torch      # also the PyTorch CPU reference (installs python3-torch via apt when root)
 *   npm run bench -- --accuracy   # also the MNIST accuracy table (~2 min)
 *   npm run bench -- --no-write   # do not touch docs/benchmarks.md
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { FASHION_MNIST_DIR } from '../src/data/imageDatasets.js';
import { FORTUNES_DIR } from '../src/data/textDataset.js';
import { renderReport } from './report.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const json = args.includes('--json');
const root = fileURLToPath(new URL('..', import.meta.url));

/** Runs one benchmark in its own process (a fresh tfjs engine each) and parses its JSON line. */
function runBench(file: string, extra: string[] = []): unknown {
  const started = Date.now();
  process.stderr.write(`bench: ${file} ${extra.join(' ')}\n`);
  const out = execFileSync(process.execPath, ['--import', 'tsx', file, ...extra, '--json'], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 26,
  });
  process.stderr.write(`bench: ${file} done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return JSON.parse(out.trim().split('\n').at(-1)!);
}

const q = quick ? ['--quick'] : [];
const started = Date.now();
const results: Record<string, unknown> = {
  machine: {
    cpus: cpus().length,
    cpu: cpus()[0]?.model,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    date: new Date().toISOString(),
    quick,
  },
  // 11 rounds of 60 steps: single 40-step rounds on this VM moved the loss-only ratio by ±0.08.
  pipeline: runBench(
    'bench/pipeline.ts',
    quick ? ['--steps', '10', '--rounds', '3'] : ['--steps', '60', '--rounds', '11'],
  ),
  optimizers: runBench('bench/optimizers.ts', q),
};
// The CNN of issue 11 on Fashion-MNIST (MNIST's 10k digits where the Debian package is missing:
// the step costs the same). Quick runs time only sgd and kfac on it, for a few steps.
const CNN = 'cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10';
const cnnDataset = existsSync(FASHION_MNIST_DIR) ? 'fashion-mnist' : 'mnist';
results.optimizersCnn = runBench('bench/optimizers.ts', [
  '--model',
  CNN,
  '--dataset',
  cnnDataset,
  '--batch',
  '128',
  ...(quick ? ['--steps', '4', '--optimizers', 'sgd,kfac', '--warmup', '1'] : ['--steps', '30']),
]);
// The transformer of issue 12 on fortunes (a Debian package: skipped, and said so, without it),
// measured against AdamW's step.
const GPT = 'gpt:L2-d128-h4-ctx64';
results.optimizersGpt = existsSync(FORTUNES_DIR)
  ? runBench('bench/optimizers.ts', [
      '--model',
      GPT,
      '--dataset',
      'fortunes',
      ...(quick
        ? ['--steps', '3', '--optimizers', 'adamw,kfac', '--warmup', '1']
        : // Past the early refreshes (statistics every step below inverseEvery 20), so the
          // figure is the long-run step: timed steps 40–79.
          [
            '--steps',
            '40',
            '--warmup',
            '40',
            '--optimizers',
            'adamw,kfac,ring,reng,rkalman,sophia,sgd',
          ]),
    ])
  : { model: GPT, skipped: 'needs Debian package fortunes (apt-get install fortunes)' };
if (existsSync(`${root}/bench/scaling.ts`))
  results.scaling = runBench('bench/scaling.ts', [
    ...q,
    '--svg',
    quick ? `${root}/test-artifacts/scaling-quick.svg` : 'docs/scaling.svg',
  ]);
if (existsSync(`${root}/bench/memory.ts`)) results.memory = runBench('bench/memory.ts', q);
if (args.includes('--torch') && existsSync(`${root}/bench/torchReference.ts`)) {
  results.torch = runBench('bench/torchReference.ts', [...q, '--install']);
  // All three PyTorch configurations: its convolutions run on OpenMP threads, so the MLP's
  // reference layout (OpenMP 1) is not PyTorch's fastest here.
  results.torchCnn = runBench('bench/torchReference.ts', [...q, '--model', CNN]);
  if (existsSync(FORTUNES_DIR))
    results.torchGpt = runBench('bench/torchReference.ts', [...q, '--model', GPT]);
}
if (args.includes('--accuracy'))
  results.accuracy = runBench('bench/accuracy.ts', quick ? ['--seeds', '1'] : []);
results.seconds = Math.round((Date.now() - started) / 1000);

if (!args.includes('--no-write') && !quick) {
  const path = `${root}/docs/benchmarks.md`;
  const doc = readFileSync(path, 'utf8');
  const section = `<!-- bench:begin -->\n${renderReport(results)}\n<!-- bench:end -->`;
  const updated = /<!-- bench:begin -->[\s\S]*<!-- bench:end -->/.test(doc)
    ? doc.replace(/<!-- bench:begin -->[\s\S]*<!-- bench:end -->/, section)
    : `${doc.trimEnd()}\n\n${section}\n`;
  writeFileSync(path, updated);
  // Every figure, for re-rendering and for comparing runs.
  writeFileSync(`${root}/docs/benchmarks.json`, `${JSON.stringify(results, null, 1)}\n`);
  process.stderr.write(`bench: wrote docs/benchmarks.md (${results.seconds} s)\n`);
}
if (json) console.log(JSON.stringify(results));
else process.stdout.write(`${renderReport(results)}\n`);
