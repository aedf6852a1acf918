/**
 * Trials per hour of a sweep at several local worker counts (and through Redis with two `grng
 * worker` processes when `--redis redis://HOST:PORT` is given, once with the shared folder and
 * once through the coordinator's trial files, as workers on machines without the folder run), on
 * the same config, each run from an empty folder. The baseline is the one-worker run measured in the same process.
 *
 *   npx tsx bench/sweeps.ts [--config sweeps/mnist-lr.json] [--workers 1,2,4] [--redis redis://127.0.0.1:6379] [--json]
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = process.argv.slice(2);
const flag = (name: string): string | undefined => {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : undefined;
};
const config = flag('--config') ?? 'sweeps/mnist-lr.json';
const counts = (flag('--workers') ?? '1,2,4').split(',').map(Number);
const redis = flag('--redis');
const bin = fileURLToPath(new URL('../bin/grng.js', import.meta.url));
const root = mkdtempSync(join(tmpdir(), 'grng-bench-sweeps-'));

function grng(argv: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    child.on('close', (code) => resolve({ code: code ?? 1, out }));
  });
}

interface Measured {
  readonly how: string;
  readonly trials: number;
  readonly seconds: number;
  readonly trialsPerHour: number;
  /** The table's numbers, to compare runs: trial id → metric. */
  readonly metrics: Record<string, number | null>;
}

async function measure(how: string, argv: string[]): Promise<Measured> {
  const started = performance.now();
  const { code, out } = await grng(argv);
  if (code !== 0) throw new Error(`grng ${argv.join(' ')} exited with ${code}`);
  const seconds = (performance.now() - started) / 1000;
  const records = JSON.parse(out.trim().split('\n').at(-1)!) as Array<{
    trial: string;
    metric: number | null;
  }>;
  return {
    how,
    trials: records.length,
    seconds,
    trialsPerHour: (records.length / seconds) * 3600,
    metrics: Object.fromEntries(records.map((r) => [r.trial, r.metric])),
  };
}

const results: Measured[] = [];
for (const workers of counts)
  results.push(
    await measure(`${workers} local worker${workers === 1 ? '' : 's'}`, [
      'sweep',
      config,
      '--out',
      join(root, `local-${workers}`),
      '--workers',
      String(workers),
      '--json',
    ]),
  );
if (redis) {
  const workers = [0, 1].map(() =>
    spawn(process.execPath, [bin, 'worker', '--queue', redis], { stdio: 'ignore' }),
  );
  try {
    results.push(
      await measure('Redis, 2 grng worker processes', [
        'sweep',
        config,
        '--out',
        join(root, 'redis'),
        '--queue',
        redis,
        '--json',
      ]),
    );
  } finally {
    for (const worker of workers) worker.kill('SIGKILL');
  }
  // Workers in folders of their own, through the coordinator's trial files over HTTP.
  const token = 'bench-sweeps';
  const remote = [0, 1].map((i) =>
    spawn(
      process.execPath,
      [
        bin,
        'worker',
        '--queue',
        redis,
        '--files',
        'http',
        '--token',
        token,
        '--cache',
        join(root, `machine-${i}`),
      ],
      { stdio: 'ignore' },
    ),
  );
  try {
    results.push(
      await measure('Redis, 2 workers, trial files over HTTP', [
        'sweep',
        config,
        '--out',
        join(root, 'redis-http'),
        '--queue',
        redis,
        '--serve',
        '--port',
        '0',
        '--token',
        token,
        '--json',
      ]),
    );
  } finally {
    for (const worker of remote) worker.kill('SIGKILL');
  }
}
const baseline = results[0]!;
const same = (a: Measured): boolean =>
  JSON.stringify(a.metrics) === JSON.stringify(baseline.metrics);
const summary = results.map((r) => ({
  how: r.how,
  trials: r.trials,
  seconds: Number(r.seconds.toFixed(1)),
  trialsPerHour: Math.round(r.trialsPerHour),
  speedup: Number((r.trialsPerHour / baseline.trialsPerHour).toFixed(2)),
  sameNumbersAsFirst: same(r),
}));
rmSync(root, { recursive: true, force: true });
if (args.includes('--json')) console.log(JSON.stringify({ config, results: summary }));
else
  for (const r of summary)
    console.log(
      `${r.how.padEnd(32)} ${String(r.trials).padStart(3)} trials in ${r.seconds.toFixed(1).padStart(6)} s: ${String(r.trialsPerHour).padStart(5)} trials/h (×${r.speedup.toFixed(2)}), same numbers as the first: ${r.sameNumbersAsFirst}`,
    );
