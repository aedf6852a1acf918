import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;

async function example(file: string): Promise<string> {
  const { stdout } = await run(process.execPath, ['--import', 'tsx', `examples/${file}`], {
    cwd: root,
    env: { ...process.env, GRNG_BACKEND: 'wasm' },
    maxBuffer: 1 << 24,
  });
  return stdout;
}

describe('examples run as a user would run them (npx tsx examples/<file>)', () => {
  it('custom-pipeline.ts composes the operators and reaches > 0.88 test accuracy', async () => {
    const out = await example('custom-pipeline.ts');
    const accuracy = Number(/final test accuracy ([\d.]+)/.exec(out)?.[1]);
    expect(accuracy).toBeGreaterThan(0.88);
  });

  it('layers-model-roundtrip.ts trains a tf.sequential() CNN with RING, saves it and serves it with plain tfjs', async () => {
    const out = await example('layers-model-roundtrip.ts');
    const trained = Number(/RING test accuracy ([\d.]+)/.exec(out)?.[1]);
    const served = Number(/plain tfjs on the saved model: test accuracy ([\d.]+)/.exec(out)?.[1]);
    const difference = Number(
      /largest probability difference from grng ([\d.e+-]+)/.exec(out)?.[1],
    );
    expect(trained).toBeGreaterThan(0.85);
    expect(served).toBe(trained);
    expect(difference).toBeLessThan(1e-5);
  });

  it('mnist-adamw.ts trains the reference model and prints the summary table', async () => {
    const out = await example('mnist-adamw.ts');
    expect(out).toMatch(/optimizer\s+backend\s+dataset/);
    const accuracy = Number(/test accuracy ([\d.]+)/.exec(out)?.[1]);
    expect(accuracy).toBeGreaterThanOrEqual(0.885);
  });
});
