/**
 * `npm run bench`: every benchmark, each reporting ratios against a baseline measured in the
 * same run. `npm run bench -- --json` prints one JSON object with every figure;
 * `--accuracy` adds the MNIST accuracy table (about two minutes on wasm).
 */
import { execFileSync } from 'node:child_process';

const args = process.argv.slice(2);
const json = args.includes('--json');
const passThrough = args.filter((a) => a !== '--json' && a !== '--accuracy');
const runBench = (file: string, extra: string[] = []): unknown => {
  const out = execFileSync(process.execPath, ['--import', 'tsx', file, ...extra, ...(json ? ['--json'] : [])], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 });
  if (!json) {
    process.stdout.write(out);
    return undefined;
  }
  return JSON.parse(out.trim().split('\n').at(-1)!);
};
const results: Record<string, unknown> = { pipeline: runBench('bench/pipeline.ts', passThrough) };
if (args.includes('--accuracy')) results.accuracy = runBench('bench/accuracy.ts');
if (json) console.log(JSON.stringify(results));
