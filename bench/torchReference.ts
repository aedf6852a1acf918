/**
 * CPU throughput against PyTorch (performance issue, item 3): the same MLP training step in
 * PyTorch (bench/torch_step.py, Debian's python3-torch) and in grng (the code path of
 * bench/pipeline.ts), on the same machine in the same run, and the ratio grng/PyTorch.
 *
 *   npx tsx bench/torchReference.ts [--quick] [--json] [--install] [--threads N]
 *                                   [--only-best] [--batch 128] [--hidden 512,512]
 *                                   [--model cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10]
 *                                   [--steps 40] [--rounds 5]
 *
 * The step on both sides: a batch of rows from a shuffled host array → forward → softmax
 * cross-entropy → backward → SGD (η = 0.05, no momentum) → one read-back of loss and accuracy;
 * float32, batch 128, 784-512-512-10 (relu). grng's figure is
 * `batches → forwardBackward → update(sgd) → metrics({ norms: false })` on the wasm backend (the
 * bare tfjs loop of bench/pipeline.ts is timed alongside). PyTorch runs three times, one process
 * each, before grng (never concurrently): the reference with all cores (`--threads`, default all)
 * given to OpenBLAS and torch's own OpenMP pool at 1 thread (its fastest layout here); with one
 * thread in all (tfjs-wasm runs single-threaded in Node); and out of the box (OpenMP pool and
 * OpenBLAS both at all cores, which oversubscribes them: see bench/torch_step.py).
 * `--only-best` runs the reference only. Each figure is the median ms/step over rounds.
 *
 * `--install` (the bench's optional reference step; root only): installs Debian's python3-torch
 * and libopenblas0-pthread (so torch does not run on the reference BLAS) with apt-get from the
 * configured Debian sources. Without torch the row is skipped: one line
 * `PyTorch reference skipped: <reason>` (on stderr with --json, where stdout is
 * `{"skipped": "<reason>"}`), exit status 0. `--quick`: 10 steps × 3 rounds (well under 30 s).
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : fallback;
};
const json = args.includes('--json');
const quick = args.includes('--quick');
const install = args.includes('--install');
const onlyBest = args.includes('--only-best');
const python = flag('python', '/usr/bin/python3');
const threads = Number(flag('threads', String(availableParallelism())));
/** `--model gpt:…` times that transformer's AdamW step on fortunes bytes (issue 12), batch 32. */
const gptSpec = flag('model', '').startsWith('gpt:') ? flag('model', '') : undefined;
const batchSize = Number(flag('batch', gptSpec ? '32' : '128'));
const hidden = flag('hidden', '512,512');
const steps = Number(flag('steps', quick ? '10' : '40'));
const rounds = Number(flag('rounds', quick ? '3' : '5'));
const warmup = quick ? 30 : 60; // grng: wasm code and caches settle within ~0.5 s (≈ 20 steps)
const lr = 0.05;
/** `--model cnn:…` times that CNN on both sides instead of the MLP of `--hidden`. */
const cnnSpec = flag('model', '').startsWith('cnn:') ? flag('model', '') : undefined;
const spec =
  cnnSpec ??
  gptSpec ??
  `mlp:784-${hidden
    .split(',')
    .map((h) => h.trim())
    .join('-')}-10`;
const script = join(dirname(fileURLToPath(import.meta.url)), 'torch_step.py');
const PACKAGES = ['python3-torch', 'libopenblas0-pthread'];

for (const [name, value] of Object.entries({ threads, batch: batchSize, steps, rounds })) {
  if (!Number.isInteger(value) || value < 1)
    fail(`--${name} must be an integer ≥ 1, got ${flag(name, '?')}`);
}
if (!/^\d+(,\d+)*$/.test(hidden.replace(/\s/g, '')))
  fail(`--hidden must be comma-separated widths like 512,512, got ${hidden}`);

function fail(message: string): never {
  console.error(`torchReference: ${message}`);
  process.exit(2);
}

function skip(reason: string): never {
  const line = `PyTorch reference skipped: ${reason}`;
  if (json) {
    console.error(line);
    console.log(JSON.stringify({ skipped: reason }));
  } else console.log(line);
  process.exit(0);
}

/** Last non-empty line of a stream. */
function lastLine(text: string | null | undefined): string {
  return (text ?? '').trim().split('\n').filter(Boolean).at(-1) ?? '';
}

/** The last line, trimmed to something readable in a one-line message. */
function tail(text: string | null | undefined): string {
  const line = lastLine(text);
  return line.length > 200 ? `${line.slice(0, 200)}…` : line;
}

function why(result: SpawnSyncReturns<string>, what: string): string {
  if (result.error)
    return `${what}: ${(result.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'not found' : result.error.message}`;
  if (result.signal) return `${what}: killed by ${result.signal}`;
  return `${what} exited with status ${result.status}${tail(result.stderr) ? ` (${tail(result.stderr)})` : ''}`;
}

/** Whether Debian's python can import torch; the reason when it cannot. */
function torchProblem(): string | undefined {
  const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return `${python} not found`;
  if (r.status === 0) return undefined;
  if (/No module named ['"]?torch/.test(r.stderr ?? ''))
    return `${python} cannot import torch (no module named torch: Debian's python3-torch, which installs for /usr/bin/python3, is missing; --install as root adds it)`;
  return why(r, `${python} -c "import torch"`);
}

function installed(pkg: string): boolean {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

/** apt-get with its output on our stderr (stdout stays for the result). */
function apt(...aptArgs: string[]): SpawnSyncReturns<string> {
  return spawnSync('apt-get', aptArgs, {
    encoding: 'utf8',
    stdio: ['ignore', 2, 'pipe'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    timeout: 30 * 60_000,
  });
}

/** Installs python3-torch and libopenblas0-pthread from the configured Debian sources. */
function installTorch(): string | undefined {
  const missing = PACKAGES.filter((p) => !installed(p));
  if (missing.length === 0) return undefined;
  if (process.getuid?.() !== 0)
    return `--install needs root to apt-get install ${missing.join(' ')}`;
  const noCandidate = (pkg: string): boolean =>
    !/Candidate: (?!\(none\))/.test(
      spawnSync('apt-cache', ['policy', pkg], { encoding: 'utf8' }).stdout ?? '',
    );
  let updated = false;
  if (missing.some(noCandidate)) {
    console.error(
      `torchReference: apt-get update (no candidate for ${missing.filter(noCandidate).join(', ')})`,
    );
    const u = apt('update');
    if (u.status !== 0) return why(u, 'apt-get update');
    updated = true;
  }
  console.error(`torchReference: apt-get install -y --no-install-recommends ${missing.join(' ')}`);
  let r = apt('install', '-y', '--no-install-recommends', ...missing);
  if (r.status !== 0 && !updated) {
    // Stale package lists give 404s on download: refresh once and retry.
    const u = apt('update');
    if (u.status !== 0) return why(u, 'apt-get update');
    r = apt('install', '-y', '--no-install-recommends', ...missing);
  }
  return r.status === 0 ? undefined : why(r, `apt-get install ${missing.join(' ')}`);
}

interface TorchResult {
  version: string;
  threads: number;
  intraOpThreads: number;
  blas: { name: string; build: string; libraries: string[] };
  mkldnn: boolean;
  msPerStep: number;
  roundsMsPerStep: number[];
  matmulMs: number;
  matmulGflops: number;
}

function runTorch(nThreads: number, intraOp: number): TorchResult {
  const r = spawnSync(
    python,
    [
      script,
      '--json',
      '--batch',
      String(batchSize),
      ...(cnnSpec
        ? ['--model', cnnSpec]
        : gptSpec
          ? ['--model', gptSpec, '--optimizer', 'adamw']
          : ['--hidden', hidden]),
      '--steps',
      String(steps),
      '--rounds',
      String(rounds),
      '--warmup',
      '10',
      '--threads',
      String(nThreads),
      '--intra-op',
      String(intraOp),
    ],
    {
      encoding: 'utf8',
      timeout: (quick ? 2 : 10) * 60_000,
      maxBuffer: 1 << 24,
    },
  );
  if (r.status !== 0) skip(why(r, `${python} bench/torch_step.py`));
  try {
    return JSON.parse(lastLine(r.stdout)) as TorchResult;
  } catch {
    skip(
      `bench/torch_step.py printed no JSON result (last line: ${JSON.stringify(tail(r.stdout))})`,
    );
  }
}

/**
 * CPU time (clock ticks) used by the whole machine and by this process with its waited-for
 * children (the PyTorch runs): their difference over the run is what other processes took.
 */
function cpuTicks(): { machine: number; ours: number } | undefined {
  try {
    const all = readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]!
      .trim()
      .split(/\s+/)
      .slice(1, 9)
      .map(Number); // user nice system idle iowait irq softirq steal
    const self = readFileSync('/proc/self/stat', 'utf8');
    const fields = self
      .slice(self.lastIndexOf(')') + 2)
      .split(' ')
      .map(Number); // from field 3 (state) on
    const ours = fields[11]! + fields[12]! + fields[13]! + fields[14]!; // utime stime cutime cstime
    return { machine: all.reduce((a, b) => a + b, 0) - all[3]! - all[4]!, ours };
  } catch {
    return undefined;
  }
}
const ticksAtStart = cpuTicks();
const wallAtStart = performance.now();
const warnings: string[] = [];

let problem = torchProblem();
if (problem && install) {
  const installProblem = installTorch();
  problem = torchProblem();
  if (problem && installProblem) problem = `${problem}; install failed: ${installProblem}`;
} else if (!problem && install) {
  const installProblem = installTorch(); // torch present: still make sure OpenBLAS is there
  if (installProblem) console.error(`torchReference: ${installProblem}`);
}
if (problem) skip(problem);
if (!installed('libopenblas0-pthread') && !json)
  console.log(
    'note: libopenblas0-pthread is not installed; torch may be on the reference BLAS (see the blas field; --install fixes it)',
  );

// PyTorch first, in its own process; nothing else runs while it is timed.
const torch = runTorch(threads, 1);
const torch1 = onlyBest || threads === 1 ? undefined : runTorch(1, 1);
const torchOob = onlyBest || threads === 1 ? undefined : runTorch(threads, threads);

// grng, the code path of bench/pipeline.ts (imported only now: skipping costs no wasm start).
const tf = await import('@tensorflow/tfjs');
const { lastValueFrom, toArray } = await import('rxjs');
const { initBackend } = await import('../src/runtime/backend.js');
const { loadMnist } = await import('../src/data/mnist.js');
const { gatherRows } = await import('../src/data/dataset.js');
const { softmaxCrossEntropy } = await import('../src/nn/losses.js');
const { mlp, parseModelSpec } = await import('../src/nn/sequential.js');
const { buildModel } = await import('../src/nn/buildModel.js');
const { parseCnnSpec, parseGptSpec } = await import('../src/nn/modelSpec.js');
const { loadFortunes } = await import('../src/data/textDataset.js');
const { adamw } = await import('../src/optim/adamw.js');
const { withExampleShape } = await import('../src/data/dataset.js');
const { forwardBackward } = await import('../src/operators/forwardBackward.js');
const { metrics } = await import('../src/operators/metrics.js');
const { update } = await import('../src/operators/update.js');
const { sgd } = await import('../src/optim/sgd.js');
const { batches } = await import('../src/streams/batches.js');
type Params = import('../src/types.js').Params;

if (torch1 && threads > 1 && torch.matmulGflops < 1.3 * torch1.matmulGflops) {
  warnings.push(
    `the ${threads}-thread 1024² matmul (${torch.matmulGflops.toFixed(0)} GFLOP/s) is barely faster than the 1-thread one (${torch1.matmulGflops.toFixed(0)}): cores were shared with another process, or the BLAS is single-threaded`,
  );
}
const backend = await initBackend('wasm');
const cnn = cnnSpec ? parseCnnSpec(cnnSpec) : undefined;
const gpt = gptSpec ? parseGptSpec(gptSpec) : undefined;
// The CNN sees the same MNIST rows as images of its input shape; the GPT fortunes windows
// (PyTorch's are random bytes: the arithmetic does not depend on which bytes).
const data = gpt
  ? loadFortunes({ context: gpt.inputShape[0]! })
  : cnn
    ? withExampleShape(await loadMnist(), cnn.inputShape)
    : await loadMnist();
const model =
  cnn || gpt
    ? buildModel((cnn ?? gpt)!, { seed: 1, description: spec })
    : mlp({ ...parseModelSpec(spec), seed: 1 });

/** grng: batches → forwardBackward → update(sgd) → metrics({ norms: false }) (loss and accuracy). */
async function grngStep(n: number): Promise<number> {
  const started = performance.now();
  await lastValueFrom(
    batches(data.train, { batchSize, steps: n, seed: 1 }).pipe(
      forwardBackward(model),
      // The transformer's step is AdamW's, as torch_step.py --optimizer adamw (η 1e-3, wd 0.01).
      update(
        model,
        gpt ? adamw({ learningRate: 1e-3, weightDecay: 0.01 }) : sgd({ learningRate: lr }),
      ),
      metrics({ norms: false }),
      toArray(),
    ),
  );
  return (performance.now() - started) / n;
}

/** bench/pipeline.ts's bare loop with grng's layers: host batch → variableGrads → v −= η g → await loss. */
async function bareLoop(n: number): Promise<number> {
  const vars = Object.values(model.params);
  const features = data.train.x.length / data.train.n;
  const perEpoch = Math.ceil(data.train.n / batchSize);
  const order = Int32Array.from({ length: data.train.n }, (_, i) => i);
  let state = 1;
  for (let i = order.length - 1; i > 0; i--) {
    state = (state * 1103515245 + 12345) % 2147483648;
    const j = state % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const started = performance.now();
  for (let s = 0; s < n; s++) {
    const start = (s % perEpoch) * batchSize;
    const size = Math.min(batchSize, data.train.n - start);
    const rows = gatherRows(data.train, order, start, size);
    const x = tf.tensor(rows.x, [size, ...(data.train.shape ?? [features])]);
    const y = tf.tensor1d(rows.y, 'int32');
    const loss = tf.tidy(() => {
      const oneHot = tf.cast(
        tf.oneHot(y, model.outputs),
        'float32',
      ) as import('@tensorflow/tfjs').Tensor2D;
      const { value, grads } = tf.variableGrads(
        () => softmaxCrossEntropy(model.apply(model.params as Params, x).logits, oneHot),
        vars,
      );
      const scale = tf.scalar(lr);
      for (const v of vars) v.assign(tf.sub(v, tf.mul(grads[v.name]!, scale)));
      return value;
    });
    await loss.data();
    tf.dispose([loss, x, y]);
  }
  return (performance.now() - started) / n;
}

// The bare loop is an SGD step: beside the transformer's AdamW step it would compare nothing.
await grngStep(gpt ? 10 : warmup);
if (!gpt) await bareLoop(warmup);
const grngRounds: number[] = [];
const bareRounds: number[] = [];
for (let r = 0; r < rounds; r++) {
  grngRounds.push(await grngStep(steps));
  if (!gpt) bareRounds.push(await bareLoop(steps));
}
model.dispose();
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const summary = (t: TorchResult) => ({
  version: t.version,
  threads: t.threads,
  intraOpThreads: t.intraOpThreads,
  blas: t.blas.name,
  blasBuild: t.blas.build,
  blasLibraries: t.blas.libraries,
  mkldnn: t.mkldnn,
  msPerStep: t.msPerStep,
  roundsMsPerStep: t.roundsMsPerStep,
  matmulMs: t.matmulMs,
  matmulGflops: t.matmulGflops,
});
const grng = {
  backend: backend.name,
  detail: backend.detail,
  msPerStep: median(grngRounds),
  roundsMsPerStep: grngRounds,
  bareLoopMsPerStep: gpt ? null : median(bareRounds),
};
const result = {
  model: spec,
  batchSize,
  steps,
  rounds,
  torch: summary(torch),
  ...(torch1 ? { torchSingleThread: summary(torch1) } : {}),
  ...(torchOob ? { torchOutOfTheBox: summary(torchOob) } : {}),
  grng,
  ratio: grng.msPerStep / torch.msPerStep,
  // Against the fastest PyTorch configuration of this run: for the CNN that is out of the box,
  // whose OpenMP threads run oneDNN's convolutions (the MLP's reference gives them 1 thread).
  ratioBest:
    grng.msPerStep /
    Math.min(...[torch, torch1, torchOob].filter((t) => t).map((t) => t!.msPerStep)),
  ...(torch1 ? { ratioSingleThread: grng.msPerStep / torch1.msPerStep } : {}),
  ...(torchOob ? { ratioOutOfTheBox: grng.msPerStep / torchOob.msPerStep } : {}),
  // The MLP's goal (performance issue) and the CNN's (issue 11).
  goal: gpt ? 1.5 : cnn ? 1.2 : 2,
  otherProcessesCores: null as number | null,
  warnings,
};
const ticksAtEnd = cpuTicks();
if (ticksAtStart && ticksAtEnd) {
  // USER_HZ is 100 on Linux; cores kept busy by other processes, averaged over this run.
  const others =
    (ticksAtEnd.machine - ticksAtStart.machine - (ticksAtEnd.ours - ticksAtStart.ours)) /
    100 /
    ((performance.now() - wallAtStart) / 1000);
  result.otherProcessesCores = Math.max(0, others);
  if (others > 0.15)
    warnings.push(
      `other processes kept ${others.toFixed(2)} core(s) busy on average during this run: the figures are not reliable (the out-of-the-box PyTorch one least of all)`,
    );
}

if (json) console.log(JSON.stringify(result));
else {
  const row = (t: TorchResult, label: string): string =>
    `  PyTorch ${t.version}, ${label}: BLAS ${t.threads} + OpenMP ${t.intraOpThreads}`.padEnd(52) +
    `${t.msPerStep.toFixed(2).padStart(7)} ms/step   (1024² matmul ${t.matmulMs.toFixed(2)} ms = ${t.matmulGflops.toFixed(1)} GFLOP/s)`;
  console.log(
    `${spec}, batch ${batchSize}, ${gpt ? 'AdamW η=1e-3' : `SGD η=${lr}`}, ${steps} steps × ${rounds} rounds (median ms/step)`,
  );
  console.log(
    `  BLAS: ${torch.blas.name} (torch build: ${torch.blas.build}; ${torch.blas.libraries.join(', ') || 'no BLAS library mapped'}), oneDNN ${torch.mkldnn ? 'available' : 'not available'}`,
  );
  console.log(row(torch, 'reference'));
  if (torch1) console.log(row(torch1, '1 thread'));
  if (torchOob) console.log(row(torchOob, 'out of the box'));
  console.log(
    `  grng ${backend.name} (${backend.detail})`.padEnd(52) +
      `${grng.msPerStep.toFixed(2).padStart(7)} ms/step${grng.bareLoopMsPerStep === null ? '' : `   (bare tfjs loop ${grng.bareLoopMsPerStep.toFixed(2)} ms)`}`,
  );
  console.log(
    `  grng / PyTorch reference (${torch.threads} core${torch.threads === 1 ? '' : 's'}): ${result.ratio.toFixed(2)}×   (goal ≤ ${result.goal}×)`,
  );
  if (result.ratioSingleThread !== undefined)
    console.log(`  grng / PyTorch 1 thread:       ${result.ratioSingleThread.toFixed(2)}×`);
  if (result.ratioOutOfTheBox !== undefined)
    console.log(`  grng / PyTorch out of the box: ${result.ratioOutOfTheBox.toFixed(2)}×`);
  console.log(`  grng / fastest PyTorch:        ${result.ratioBest.toFixed(2)}×`);
  for (const w of warnings) console.log(`  warning: ${w}`);
}
