import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../src/cli/main.js';
import { buildModel } from '../src/nn/buildModel.js';
import { parseGptSpec } from '../src/nn/modelSpec.js';
import type { Sequential } from '../src/nn/sequential.js';
import { generateText, generateTokens, modelFromCheckpoint } from '../src/run/generate.js';
import { train } from '../src/run/train.js';
import type { Params } from '../src/types.js';
import { useTestBackend } from './helpers.js';

const SPEC = 'gpt:L1-d16-h2-ctx8';
let backend: string;
let dir: string;
let textFile: string;

beforeAll(async () => {
  backend = await useTestBackend();
  dir = mkdtempSync(join(tmpdir(), 'grng-lm-'));
  textFile = join(dir, 'corpus.txt');
  // Short repetitive lines: a few steps already learn something, and 2,400 bytes give 270
  // training and 30 test windows of 8.
  writeFileSync(textFile, 'the cat sat on the mat.\n'.repeat(100));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** Runs the CLI in this process, capturing its output. */
async function grng(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await main([...args], {
    out: (t: string) => void (stdout += t),
    err: (t: string) => void (stderr += t),
    isTTY: false,
  });
  return { code, stdout, stderr };
}

const trainArgs = (...more: string[]): string[] => [
  'train',
  '--dataset',
  `text:${textFile}`,
  '--model',
  SPEC,
  '--batch-size',
  '16',
  '--backend',
  backend,
  ...more,
];

describe('grng train on a text dataset', () => {
  for (const optimizer of ['adamw', 'kfac']) {
    it(`trains ${SPEC} with ${optimizer}: per-token test loss, next-byte accuracy, bits per character`, async () => {
      const { code, stdout, stderr } = await grng(
        trainArgs('--optimizer', optimizer, '--steps', '6', '--json'),
      );
      expect(stderr).not.toMatch(/grng: (?!backend|parameter groups)/);
      expect(code).toBe(0);
      const summary = JSON.parse(stdout.trim().split('\n').at(-1)!);
      expect(summary.dataset).toBe(`text:${textFile}`);
      expect(summary.steps).toBe(6);
      // 30 test windows of 8 positions; the loss is per token, so near ln 256 before training
      // gets far, not 8 times it.
      expect(summary.testLoss).toBeGreaterThan(0.5);
      expect(summary.testLoss).toBeLessThan(Math.log(256) + 1);
      expect(summary.testAccuracy).toBeGreaterThanOrEqual(0);
      expect(summary.testAccuracy).toBeLessThanOrEqual(1);
      expect(summary.testBitsPerCharacter).toBeCloseTo(summary.testLoss / Math.LN2, 10);
    }, 120_000);
  }

  it('learns: the test loss falls well below the uniform ln 256 on repetitive text', async () => {
    const summary = await train({
      dataset: `text:${textFile}`,
      model: SPEC,
      optimizer: 'adamw',
      optimizerOptions: { learningRate: 0.01 },
      batchSize: 16,
      steps: 40,
      backend: backend as 'wasm',
    });
    expect(summary.testLoss!).toBeLessThan(Math.log(256) - 1.5);
  }, 120_000);

  it('--context other than the model ctx is an error naming --context and the ctx', async () => {
    const { code, stderr } = await grng(trainArgs('--context', '16', '--steps', '1'));
    expect(code).toBe(2);
    expect(stderr).toMatch(/^grng: invalid --context: 16 \(expected the model's context 8/);
    // The model's context itself is accepted.
    const ok = await grng(trainArgs('--context', '8', '--steps', '1'));
    expect(ok.code).toBe(0);
  }, 60_000);

  it('--context without a text dataset is an error', async () => {
    const { code, stderr } = await grng([
      'train',
      '--dataset',
      'synthetic',
      '--context',
      '8',
      '--backend',
      backend,
    ]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/invalid --context: 8 \(expected a text dataset/);
  });

  it('an embedding smaller than the byte values is an error, not zero lookups', async () => {
    const file = join(dirname(textFile), 'small-vocabulary.json');
    writeFileSync(
      file,
      JSON.stringify({
        inputShape: [8],
        layers: [
          { type: 'embedding', vocabulary: 16, width: 8 },
          { type: 'transformerBlock', heads: 2 },
          { type: 'layerNorm' },
          { type: 'dense', units: 256 },
        ],
      }),
    );
    const { code, stderr } = await grng([
      'train',
      '--dataset',
      `text:${textFile}`,
      '--model',
      file,
      '--backend',
      backend,
    ]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/embeds a vocabulary of 16 but dataset text:.* has 256 token values/);
  });

  it('a text dataset with the default MLP suggests a gpt model', async () => {
    const { code, stderr } = await grng([
      'train',
      '--dataset',
      `text:${textFile}`,
      '--backend',
      backend,
    ]);
    expect(code).toBe(2);
    expect(stderr).toMatch(/needs a token model .*--model gpt:L2-d128-h4-ctx64; got an MLP/);
    const cnn = await grng([
      'train',
      '--dataset',
      'fortunes',
      '--model',
      'cnn:8x8x1-d10-256',
      '--backend',
      backend,
    ]);
    expect(cnn.code).toBe(2);
    expect(cnn.stderr).toMatch(/--model gpt:L2-d128-h4-ctx64; got cnn:8x8x1-d10-256/);
  });

  it('text:PATH of a missing file names it', async () => {
    const missing = join(dir, 'missing.txt');
    const { code, stderr } = await grng([
      'train',
      '--dataset',
      `text:${missing}`,
      '--model',
      SPEC,
      '--backend',
      backend,
    ]);
    expect(code).toBe(2);
    expect(stderr).toContain(missing);
    expect(stderr).toMatch(/ENOENT/);
  });

  it('a checkpointed text run saves dataset and context, and resumes', async () => {
    const ckpt = join(dir, 'resume');
    const first = await grng(trainArgs('--steps', '3', '--checkpoint-dir', ckpt, '--json'));
    expect(first.code).toBe(0);
    const resumed = await grng([
      'train',
      '--resume',
      ckpt,
      '--steps',
      '5',
      '--backend',
      backend,
      '--json',
    ]);
    expect(resumed.stderr).toMatch(/resuming at step 3/);
    expect(resumed.code).toBe(0);
    expect(JSON.parse(resumed.stdout.trim().split('\n').at(-1)!).dataset).toBe(`text:${textFile}`);
    // A context that differs from the checkpoint's is refused like any other change.
    const changed = await grng(['train', '--resume', ckpt, '--steps', '6', '--context', '4']);
    expect(changed.code).toBe(2);
    expect(changed.stderr).toMatch(/--context|context 4/);
  }, 120_000);
});

describe('grng generate', () => {
  let ckpt: string;
  beforeAll(async () => {
    ckpt = join(dir, 'lm');
    const { code, stderr } = await grng(
      trainArgs('--steps', '4', '--checkpoint-dir', ckpt, '--optimizer', 'adamw'),
    );
    if (code !== 0) throw new Error(stderr);
  }, 120_000);

  const generate = (...more: string[]) =>
    grng(['generate', '--checkpoint', ckpt, '--backend', backend, ...more]);

  it('prints the prompt, then the sampled bytes; the same seed gives the same text', async () => {
    const args = ['--prompt', 'the c', '--tokens', '30', '--temperature', '0.8', '--seed', '5'];
    const a = await generate(...args);
    expect(a.stderr).not.toMatch(/^grng: /m);
    expect(a.code).toBe(0);
    expect(a.stdout.startsWith('the c')).toBe(true);
    expect(a.stdout.endsWith('\n')).toBe(true);
    const b = await generate(...args);
    expect(b.stdout).toBe(a.stdout);
    const other = await generate(...args.slice(0, -1), '6');
    expect(other.stdout).not.toBe(a.stdout);
  }, 60_000);

  it('--temperature 0 is greedy: reproducible, and the arg-max of the model at each step', async () => {
    const a = await generate(
      '--prompt',
      'the',
      '--tokens',
      '12',
      '--temperature',
      '0',
      '--seed',
      '1',
    );
    const b = await generate(
      '--prompt',
      'the',
      '--tokens',
      '12',
      '--temperature',
      '0',
      '--seed',
      '2',
    );
    expect(a.code).toBe(0);
    expect(b.stdout).toBe(a.stdout);
    const model = modelFromCheckpoint(ckpt);
    try {
      expect(a.stdout).toBe(`${greedyReference(model, 'the', 12)}\n`);
    } finally {
      model.dispose();
    }
  }, 60_000);

  it('the errors name their flag', async () => {
    const missing = await grng(['generate', '--checkpoint', join(dir, 'nothing')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^grng: --checkpoint .*nothing: no such folder/);
    // The temp folder holds the corpus and other runs' folders, but no checkpoint of its own.
    const notCkpt = await grng(['generate', '--checkpoint', dir]);
    expect(notCkpt.stderr).toMatch(/--checkpoint .*holds no checkpoint/);
    const tokens = await generate('--tokens', '0');
    expect(tokens.code).toBe(2);
    expect(tokens.stderr).toMatch(/--tokens must be an integer ≥ 1/);
    const temperature = await generate('--temperature', '-0.5');
    expect(temperature.code).toBe(2);
    expect(temperature.stderr).toMatch(/--temperature must be a number in \[0/);
    const neither = await grng(['generate']);
    expect(neither.code).toBe(2);
    expect(neither.stderr).toMatch(/--checkpoint DIR .* or --model gpt:/);
  });

  it('a checkpoint of a classifier is not a token model', async () => {
    const mlpCkpt = join(dir, 'mlp');
    const trained = await grng([
      'train',
      '--dataset',
      'synthetic',
      '--steps',
      '2',
      '--checkpoint-dir',
      mlpCkpt,
      '--backend',
      backend,
    ]);
    expect(trained.code).toBe(0);
    const { code, stderr } = await grng([
      'generate',
      '--checkpoint',
      mlpCkpt,
      '--backend',
      backend,
    ]);
    expect(code).toBe(2);
    expect(stderr).toMatch(
      /^grng: --checkpoint \S+mlp: checkpoint \S+ holds model mlp:\S+, not a token model/,
    );
  }, 60_000);

  it('--model generates from an untrained model, seeded', async () => {
    const args = ['generate', '--model', SPEC, '--tokens', '10', '--backend', backend];
    const a = await grng([...args, '--seed', '3']);
    expect(a.code).toBe(0);
    expect((await grng([...args, '--seed', '3'])).stdout).toBe(a.stdout);
    const mlp = await grng(['generate', '--model', 'mlp:4-2', '--backend', backend]);
    expect(mlp.code).toBe(2);
    expect(mlp.stderr).toMatch(/--model mlp:4-2 is not a token model/);
    // é is bytes 195 169, past a vocabulary of 128.
    const small = await grng([
      'generate',
      '--model',
      'gpt:L1-d16-h2-ctx8-v128',
      '--prompt',
      'café',
      '--backend',
      backend,
    ]);
    expect(small.code).toBe(2);
    expect(small.stdout).toBe('');
    expect(small.stderr).toMatch(
      /^grng: invalid --prompt: "café" \(expected bytes below the model's vocabulary 128/,
    );
  });
});

describe('generateText', () => {
  it('leaves no tensors behind, with an empty prompt, a prompt longer than ctx and a bytes prompt', async () => {
    const model = buildModel(parseGptSpec(SPEC), { seed: 2 });
    try {
      const before = tf.memory().numTensors;
      const empty = await generateText(model, { tokens: 5, seed: 1 });
      const long = await generateText(model, { prompt: 'a prompt longer than 8', tokens: 5 });
      const bytes: number[] = [];
      for await (const b of generateTokens(model, { prompt: Uint8Array.of(1, 2, 3), tokens: 4 }))
        bytes.push(b);
      expect(tf.memory().numTensors).toBe(before);
      expect(long.startsWith('a prompt longer than 8')).toBe(true);
      expect(typeof empty).toBe('string');
      expect(bytes).toHaveLength(4);
      expect(bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256)).toBe(true);
    } finally {
      model.dispose();
    }
  });

  it('refuses a classifier, tokens < 1 and a negative temperature, naming the option', async () => {
    const model = buildModel(parseGptSpec(SPEC), { seed: 2 });
    try {
      await expect(generateText(model, { tokens: 0 })).rejects.toThrow(/invalid tokens: 0/);
      await expect(generateText(model, { tokens: 1, temperature: -1 })).rejects.toThrow(
        /invalid temperature: -1/,
      );
    } finally {
      model.dispose();
    }
  });
});

describe('--explain-groups', () => {
  for (const optimizer of ['kfac', 'adamw']) {
    it(`${optimizer}: lists every parameter exactly once, with the scalars per group, and does not train`, async () => {
      const { code, stdout, stderr } = await grng(
        trainArgs('--optimizer', optimizer, '--explain-groups', '--json'),
      );
      expect(code).toBe(0);
      expect(stderr).not.toMatch(/ms\/step/);
      const explained = JSON.parse(stdout.trim().split('\n').at(-1)!) as {
        parameters: number;
        groups: Record<string, { scalars: number; parameters: { key: string; scalars: number }[] }>;
      };
      const model = buildModel(parseGptSpec(SPEC), { seed: 1 });
      try {
        const listed = Object.values(explained.groups).flatMap((g) =>
          g.parameters.map((p) => p.key),
        );
        expect([...listed].sort()).toEqual(Object.keys(model.params).sort());
        expect(explained.parameters).toBe(model.size);
        for (const group of Object.values(explained.groups))
          expect(group.scalars).toBe(group.parameters.reduce((n, p) => n + p.scalars, 0));
      } finally {
        model.dispose();
      }
      if (optimizer === 'kfac') {
        expect(Object.keys(explained.groups)).toEqual(['kfac', 'adamw']);
        expect(explained.groups.adamw!.parameters.map((p) => p.key)).toContain('embed0/tokens');
        expect(explained.groups.kfac!.parameters.map((p) => p.key)).toContain('block0/q/kernel');
      }
      // The text form (on stderr with --json) names each parameter on one line.
      for (const key of ['embed0/tokens', 'block0/fc2/kernel', 'dense0/bias'])
        expect(stderr.split('\n').filter((l) => l.trim().startsWith(`${key} `))).toHaveLength(1);
    }, 60_000);
  }

  it('compare explains each optimizer', async () => {
    const { code, stdout } = await grng([
      'compare',
      '--dataset',
      `text:${textFile}`,
      '--model',
      SPEC,
      '--optimizers',
      'adamw,ring',
      '--explain-groups',
      '--backend',
      backend,
    ]);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^adamw on gpt:L1-d16-h2-ctx8 .*: 1 group, 22 parameters/m);
    expect(stdout).toMatch(/^ring on gpt:L1-d16-h2-ctx8 .*: 2 groups, 22 parameters/m);
  }, 60_000);
});

/**
 * Greedy decoding written the plain way: the window padded on the right with spaces (generate
 * pads with zeros), the arg-max read at the last real position. Equal output means the padding
 * is invisible, as causal attention promises.
 */
function greedyReference(model: Sequential, prompt: string, tokens: number): string {
  const context = model.inputShape[0]!;
  const history = [...new TextEncoder().encode(prompt)];
  for (let t = 0; t < tokens; t++) {
    const window = history.slice(-context);
    const real = window.length;
    while (window.length < context) window.push(32);
    const next = tf.tidy(() => {
      const logits = model.apply(model.params as Params, tf.tensor([window], [1, context])).logits;
      return tf.argMax(logits.slice([real - 1, 0], [1, -1]), 1).dataSync()[0]!;
    });
    history.push(next);
  }
  return new TextDecoder().decode(Uint8Array.from(history));
}
