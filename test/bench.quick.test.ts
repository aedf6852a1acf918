import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;

describe('npm run bench -- --quick', () => {
  it('runs every benchmark and prints one JSON object with their figures', async () => {
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', 'bench/index.ts', '--quick', '--json', '--no-write'],
      { cwd: root, maxBuffer: 1 << 26, timeout: 170_000 },
    );
    const results = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(results.machine.quick).toBe(true);
    expect(results.pipeline.ratios.grngLossOnlyOverBareLoop).toBeGreaterThan(0);
    expect(results.pipeline.tensorLeak).toBe(0);
    for (const name of ['sgd', 'adamw', 'sophia', 'kfac', 'ring', 'reng', 'rkalman']) {
      expect(results.optimizers.results[name].msPerStep).toBeGreaterThan(0);
    }
    expect(results.optimizers.results.kfac.stages.refresh).toBeGreaterThan(0);
    expect(results.optimizersCnn.model).toMatch(/^cnn:/);
    for (const name of ['sgd', 'kfac'])
      expect(results.optimizersCnn.results[name].msPerStep).toBeGreaterThan(0);
    // The transformer's table: measured against AdamW where Debian's fortunes is installed.
    if (results.optimizersGpt.skipped)
      expect(results.optimizersGpt.skipped).toMatch(/needs Debian package fortunes/);
    else
      for (const name of ['adamw', 'kfac'])
        expect(results.optimizersGpt.results[name].overBaseline).toBeGreaterThan(0);
    expect(results.scaling).toBeDefined();
    expect(results.memory).toBeDefined();
  }, 180_000);
});
