import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const BIN = new URL('../bin/grng.js', import.meta.url).pathname;

async function grng(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [BIN, ...args], {
      env: { ...process.env, GRNG_BACKEND: '' },
      maxBuffer: 1 << 24,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const FIELDS = [
  'optimizer',
  'backend',
  'dataset',
  'steps',
  'epochs',
  'finalLoss',
  'testAccuracy',
  'testLoss',
  'msPerStep',
  'samplesPerSecond',
];

describe('grng compare', () => {
  it('trains each optimizer from the same start and prints one JSON array', async () => {
    const { code, stdout, stderr } = await grng([
      'compare',
      '--dataset',
      'synthetic',
      '--optimizers',
      'sgd,kfac,ring',
      '--epochs',
      '2',
      '--batch-size',
      '64',
      '--target',
      '0.7',
      '--lr',
      '0.05',
      '--backend',
      'wasm',
      '--json',
    ]);
    expect(code).toBe(0);
    const summaries = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(summaries.map((s: { optimizer: string }) => s.optimizer)).toEqual([
      'sgd',
      'kfac',
      'ring',
    ]);
    for (const s of summaries) {
      for (const field of [
        ...FIELDS,
        'meanGradNorm',
        'meanUpdateGradCorrelation',
        'epochsToTarget',
        'secondsToTarget',
      ])
        expect(s).toHaveProperty(field);
      expect(s.steps).toBe(64);
    }
    expect(stderr).toMatch(/epochs→0.7/);
    expect(stderr).toMatch(/s→0.7/);
  });
});

describe('grng train', () => {
  it('--json prints one JSON summary as the last stdout line', async () => {
    const { code, stdout, stderr } = await grng([
      'train',
      '--dataset',
      'synthetic',
      '--optimizer',
      'sgd',
      '--epochs',
      '2',
      '--batch-size',
      '64',
      '--backend',
      'wasm',
      '--json',
    ]);
    expect(code).toBe(0);
    const summary = JSON.parse(stdout.trim().split('\n').at(-1)!);
    for (const field of FIELDS) expect(summary).toHaveProperty(field);
    expect(summary).toMatchObject({
      optimizer: 'sgd',
      backend: 'wasm',
      dataset: 'synthetic',
      steps: 64,
      epochs: 2,
    });
    expect(summary.testAccuracy).toBeGreaterThan(0.6);
    expect(stderr).toMatch(/grng: backend wasm/);
  });

  it('trains MNIST mlp:784-256-10 with AdamW to ≥ 0.885 test accuracy in 2 epochs', async () => {
    const { code, stdout } = await grng([
      'train',
      '--dataset',
      'mnist',
      '--model',
      'mlp:784-256-10',
      '--optimizer',
      'adamw',
      '--lr',
      '1e-3',
      '--weight-decay',
      '1e-2',
      '--epochs',
      '2',
      '--json',
    ]);
    expect(code).toBe(0);
    const summary = JSON.parse(stdout.trim().split('\n').at(-1)!);
    expect(summary.dataset).toBe('mnist');
    expect(summary.steps).toBe(2 * 63);
    expect(summary.testAccuracy).toBeGreaterThanOrEqual(0.885);
  });

  const bad: Array<[string[], RegExp, number]> = [
    [['train', '--bogus'], /unknown option '--bogus'/, 2],
    [['train', '--lr', 'abc'], /--lr must be a number, got "abc"/, 2],
    [['train', '--epochs', '0'], /--epochs must be an integer ≥ 1, got "0"/, 2],
    [['train', '--epochs', '1.5'], /--epochs must be an integer ≥ 1, got "1.5"/, 2],
    [['train', '--batch-size', '-3'], /--batch-size must be an integer ≥ 1/, 2],
    [
      ['train', '--optimizer', 'rmsprop'],
      /argument 'rmsprop' is invalid. Allowed choices are sgd, adamw/,
      2,
    ],
    [
      ['train', '--dataset', 'cifar'],
      /invalid --dataset: "cifar" is none of mnist, mnist-full, fashion-mnist, synthetic, a folder or a file/,
      2,
    ],
    [['train', '--backend', 'tpu'], /argument 'tpu' is invalid/, 2],
    [['train', '--dataset', 'synthetic', '--lr', '-1'], /invalid --lr: -1/, 2],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'sgd', '--momentum', '1'],
      /invalid --momentum: 1/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'sgd', '--b1', '0.9'],
      /option b1 for optimizer sgd/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--model', 'mlp:10-3'],
      /takes 10 inputs but dataset synthetic has 20 features/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--model', 'mlp:20-8-7'],
      /has 7 outputs but dataset synthetic has 4 classes/,
      2,
    ],
    [['train', '--dataset', 'synthetic', '--model', 'resnet'], /invalid model spec "resnet"/, 2],
    [['frobnicate'], /unknown command 'frobnicate'/, 2],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'ring', '--rho', '-0.5'],
      /invalid --rho: -0.5/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'kfac', '--damping', '-1'],
      /invalid --damping: -1/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'kfac', '--damping', '0'],
      /invalid --damping: 0/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'rkalman', '--kalman-rows', '0'],
      /invalid --kalman-rows: 0/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'kfac', '--inverse-every', '2.5'],
      /--inverse-every must be an integer ≥ 1, got "2.5"/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'kfac', '--stats-every', '0'],
      /--stats-every must be an integer ≥ 1, got "0"/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'sgd', '--rho', '0.1'],
      /option rho for optimizer sgd/,
      2,
    ],
    [
      ['train', '--dataset', 'synthetic', '--optimizer', 'kfac', '--fisher', 'exact'],
      /argument 'exact' is invalid/,
      2,
    ],
    [['compare', '--optimizers', 'sgd,lbfgs'], /--optimizers must list optimizers from/, 2],
  ];
  for (const [args, message, exitCode] of bad) {
    it(`rejects ${args.slice(1).join(' ') || args[0]} with one clear line`, async () => {
      const { code, stderr, stdout } = await grng(args);
      expect(code).toBe(exitCode);
      expect(stdout).toBe('');
      const lines = stderr
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('grng: backend'));
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(message);
      expect(stderr).not.toMatch(/^\s+at /m);
    });
  }

  for (const optimizer of ['sophia', 'kfac', 'ring', 'reng', 'rkalman']) {
    it(`trains the synthetic set with ${optimizer} and its defaults`, async () => {
      const { code, stdout } = await grng([
        'train',
        '--dataset',
        'synthetic',
        '--optimizer',
        optimizer,
        '--epochs',
        '3',
        '--batch-size',
        '64',
        '--backend',
        'wasm',
        '--json',
      ]);
      expect(code).toBe(0);
      const summary = JSON.parse(stdout.trim().split('\n').at(-1)!);
      expect(summary.optimizer).toBe(optimizer);
      expect(summary.testAccuracy).toBeGreaterThan(0.6);
      expect(Number.isFinite(summary.finalLoss)).toBe(true);
    });
  }

  it('names why a requested backend cannot start', async () => {
    const { code, stderr } = await grng([
      'train',
      '--dataset',
      'synthetic',
      '--backend',
      'tensorflow',
    ]);
    expect(code).toBe(1);
    expect(stderr.trim()).toMatch(
      /^grng: backend tensorflow unavailable: @tensorflow\/tfjs-node-gpu is not installed/,
    );
    expect(stderr.trim().split('\n')).toHaveLength(1);
  });
});
