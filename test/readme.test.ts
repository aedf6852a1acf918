/**
 * Every code block of README.md, checked as a user would use it:
 *
 * - ```ts blocks are EXECUTED: written to a temporary folder (which is also their working
 *   directory, so the files they write land there) with `from 'grng'` pointed at src/index.ts,
 *   and run with tsx on the wasm backend; they must exit 0 (and print, when they print). They
 *   are also TYPE-CHECKED together, strict as the package's tsconfig, `grng` mapped to src.
 * - ```sh blocks are PARSED: every `grng …` / `npx grng …` command is parsed by the real commander
 *   program (src/cli/program.ts) with its actions replaced, so unknown flags, bad values, bad
 *   choices and stray arguments fail here; nothing is trained. `npm …` lines must name an npm
 *   built-in or a script of package.json. Any other command fails the test until taught here.
 * - ```json blocks are sweep configs: they must parse and expand into trials (src/sweep/config.ts).
 * - blocks without a language (or ```text) are diagrams and are not run.
 *
 * Command lines use man-page notation, read as follows: `[…]` is optional (tried with and
 * without), `a|b` lists alternative values (each one tried), ` | ` inside brackets separates
 * alternative groups of flags, an ALL-CAPS word is a placeholder (`N` → a number; any other is
 * lower-cased: `FILE.csv` → `file.csv`, `runs/NAME.arrows` → `runs/name.arrows`, `T` → `t`), and
 * `...` or bracketed prose (`[train options]`) stands for options shown elsewhere and is left out.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { buildProgram } from '../src/cli/program.js';
import { expandTrials, parseSweepConfig } from '../src/sweep/config.js';

const run = promisify(execFile);
const root = new URL('..', import.meta.url).pathname;
const readme = readFileSync(join(root, 'README.md'), 'utf8');
const scripts = Object.keys(
  (
    JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as {
      scripts: Record<string, string>;
    }
  ).scripts,
);

const TYPESCRIPT = ['ts', 'typescript'];
const SHELL = ['sh', 'bash', 'shell'];
const TEXT = ['', 'text'];
const JSON_BLOCK = ['json'];
/** npm's own commands that need no script. */
const NPM_BUILTINS = ['install', 'ci'];

interface Block {
  readonly lang: string;
  readonly code: string;
  /** 1-based line of the opening fence. */
  readonly line: number;
}

function codeBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  for (const match of markdown.matchAll(/^```([\w-]*)[^\n]*\n([\s\S]*?)^```\s*$/gm)) {
    blocks.push({
      lang: match[1]!,
      code: match[2]!,
      line: markdown.slice(0, match.index).split('\n').length,
    });
  }
  return blocks;
}

/** The commands of a shell block: comments dropped, `\` continuations joined, `&&` split. */
function commandsOf(code: string): string[] {
  return code
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((line) => line.replace(/(^|\s)#.*$/, ''))
    .flatMap((line) => line.split('&&'))
    .map((command) => command.trim().replace(/\s+/g, ' '))
    .filter((command) => command !== '');
}

type Item = { readonly word: string } | { readonly optional: readonly (readonly string[])[] };

/** Words and bracketed groups (each a list of alternatives, split at a lone `|`). */
function itemsOf(synopsis: string): Item[] {
  const items: Item[] = [];
  for (const match of synopsis.matchAll(/\[([^\]]*)\]|(\S+)/g)) {
    if (match[2] !== undefined) items.push({ word: match[2] });
    else
      items.push({
        optional: match[1]!.split(/\s\|\s/).map((alternative) => alternative.trim().split(/\s+/)),
      });
  }
  return items;
}

function placeholder(word: string): string {
  return word.replace(/\b[A-Z][A-Z0-9_]*\b/g, (name) => (name === 'N' ? '3' : name.toLowerCase()));
}

/**
 * The argument lists a synopsis stands for: every optional group in (first alternative), every
 * alternative value or group once, and every optional group out.
 */
function expandSynopsis(synopsis: string): string[][] {
  const items = itemsOf(synopsis).filter(
    (item) =>
      !('word' in item && item.word === '...') &&
      !('optional' in item && !item.optional[0]![0]!.startsWith('-')),
  );
  const choices = items.map((item) =>
    'word' in item
      ? item.word.split('|').map((w) => [w])
      : item.optional.map((group) => [...group]),
  );
  const pick = (at: number, alternative: number, withOptional = true): string[] =>
    items
      .flatMap((item, i) =>
        'optional' in item && !withOptional ? [] : choices[i]![i === at ? alternative : 0]!,
      )
      .map(placeholder);
  const variants = [pick(-1, 0)];
  choices.forEach((alternatives, i) =>
    alternatives.slice(1).forEach((_, k) => variants.push(pick(i, k + 1))),
  );
  if (items.some((item) => 'optional' in item)) variants.push(pick(-1, 0, false));
  return variants;
}

/** Parses argv with the real CLI program, running no command; resolves to the command's name or an error line. */
async function parseOnly(argv: readonly string[]): Promise<{ command?: string; error?: string }> {
  const errors: string[] = [];
  const program = buildProgram({ out: () => {}, err: (text) => errors.push(text), isTTY: false });
  let ran: string | undefined;
  for (const command of program.commands) command.action(() => void (ran = command.name()));
  try {
    await program.parseAsync([...argv], { from: 'user' });
  } catch (error) {
    return { error: errors.join('').trim() || String(error) };
  }
  return ran === undefined ? { error: `no command ran for ${argv.join(' ')}` } : { command: ran };
}

async function checkShellCommand(command: string): Promise<void> {
  const words = command.split(' ');
  const grng =
    words[0] === 'grng'
      ? 1
      : words[0] === 'npx' && words[1] === 'grng'
        ? 2
        : words[0] === 'node' && words[1] === 'bin/grng.js'
          ? 2
          : 0;
  if (grng > 0) {
    for (const argv of expandSynopsis(words.slice(grng).join(' '))) {
      const parsed = await parseOnly(argv);
      expect(parsed.error, `README: grng ${argv.join(' ')} (from "${command}")`).toBeUndefined();
      expect(parsed.command).toBe(argv[0]);
    }
    return;
  }
  if (words[0] === 'npm') {
    const script = words[1] === 'run' ? words[2] : words[1];
    if (NPM_BUILTINS.includes(script!)) return;
    expect(scripts, `README: "${command}" names no script of package.json`).toContain(script);
    return;
  }
  expect.fail(
    `README shell command "${command}" is neither a grng nor an npm command; teach test/readme.test.ts how to check it`,
  );
}

const blocks = codeBlocks(readme);
const scratch = mkdtempSync(join(tmpdir(), 'grng-readme-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('the README test harness', () => {
  it('finds the blocks, and every block is TypeScript, shell or a diagram', () => {
    const unknown = blocks
      .filter((b) => ![...TYPESCRIPT, ...SHELL, ...TEXT, ...JSON_BLOCK].includes(b.lang))
      .map((b) => `line ${b.line}: \`\`\`${b.lang}`);
    expect(unknown, 'a block in a language this test neither runs nor parses').toEqual([]);
    expect(blocks.filter((b) => TYPESCRIPT.includes(b.lang)).length).toBeGreaterThanOrEqual(3);
    expect(
      blocks
        .filter((b) => SHELL.includes(b.lang))
        .flatMap((b) => commandsOf(b.code))
        .filter((c) => /^(npx )?grng /.test(c)).length,
    ).toBeGreaterThanOrEqual(8);
  });

  it('expands the notation: optional groups, alternatives, placeholders, prose', () => {
    expect(
      expandSynopsis(
        'train --partial keep|drop [--steps N] [train options] ... --record runs/NAME.arrows',
      ),
    ).toEqual([
      ['train', '--partial', 'keep', '--steps', '3', '--record', 'runs/name.arrows'],
      ['train', '--partial', 'drop', '--steps', '3', '--record', 'runs/name.arrows'],
      ['train', '--partial', 'keep', '--record', 'runs/name.arrows'],
    ]);
    expect(expandSynopsis('train [--epochs 10 | --steps N]')).toEqual([
      ['train', '--epochs', '10'],
      ['train', '--steps', '3'],
      ['train'],
    ]);
  });

  it('the parser it uses rejects what the CLI rejects', async () => {
    expect((await parseOnly(['train', '--bogus'])).error).toMatch(/unknown option '--bogus'/);
    expect((await parseOnly(['train', '--epochs', 'x'])).error).toMatch(/--epochs/);
    expect((await parseOnly(['train', '--optimizer', 'adam'])).error).toMatch(/--optimizer/);
    expect((await parseOnly(['train', '--nesterov', '1'])).error).toMatch(
      /unexpected argument "1"/,
    );
    expect(await parseOnly(['compare', '--optimizers', 'ring,adamw', '--target', '0.9'])).toEqual({
      command: 'compare',
    });
  });
});

/** A folder where `rxjs` and the other dependencies resolve as in a user's project. */
function projectFolder(name: string): string {
  const folder = mkdtempSync(join(scratch, `${name}-`));
  writeFileSync(join(folder, 'package.json'), '{ "type": "module" }\n');
  symlinkSync(join(root, 'node_modules'), join(folder, 'node_modules'));
  return folder;
}

describe('README code blocks', () => {
  it('the TypeScript blocks type-check (strict, exactOptionalPropertyTypes)', async () => {
    const folder = projectFolder('typecheck');
    const files = blocks
      .filter((b) => TYPESCRIPT.includes(b.lang))
      .map((block) => {
        writeFileSync(join(folder, `line-${block.line}.ts`), block.code);
        return `line-${block.line}.ts`;
      });
    const { compilerOptions } = JSON.parse(readFileSync(join(root, 'tsconfig.json'), 'utf8')) as {
      compilerOptions: Record<string, unknown>;
    };
    const config = {
      compilerOptions: {
        ...compilerOptions,
        noEmit: true,
        declaration: false,
        sourceMap: false,
        outDir: undefined,
        rootDir: undefined,
        paths: { grng: [join(root, 'src/index.ts')] },
      },
      files,
    };
    writeFileSync(join(folder, 'tsconfig.json'), JSON.stringify(config));
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    const result = await run(process.execPath, [tsc, '-p', 'tsconfig.json'], {
      cwd: folder,
      maxBuffer: 1 << 24,
    }).catch((error: { stdout?: string }) => ({ stdout: error.stdout ?? String(error) }));
    expect(result.stdout.trim(), 'README TypeScript blocks (file names give the README line)').toBe(
      '',
    );
  }, 300_000);

  for (const block of blocks) {
    if (TYPESCRIPT.includes(block.lang)) {
      it(`TypeScript block at README line ${block.line} runs as written`, async () => {
        const source = block.code.replace(/from 'grng'/g, `from '${join(root, 'src/index.ts')}'`);
        expect(source, 'a README example imports the library as a user would: from grng').not.toBe(
          block.code,
        );
        const folder = projectFolder(`line-${block.line}`);
        writeFileSync(join(folder, 'block.ts'), source);
        const { stdout } = await run(process.execPath, ['--import', 'tsx', 'block.ts'], {
          cwd: folder,
          env: { ...process.env, GRNG_BACKEND: 'wasm' },
          maxBuffer: 1 << 24,
        });
        if (block.code.includes('console.log(')) expect(stdout.trim()).not.toBe('');
      }, 300_000);
    } else if (JSON_BLOCK.includes(block.lang)) {
      // JSON blocks are sweep configs: they must read as one and expand into trials.
      it(`JSON block at README line ${block.line} is a valid sweep config`, () => {
        const config = parseSweepConfig(block.code, `README line ${block.line}`);
        expect(expandTrials(config).length).toBeGreaterThan(0);
      });
    } else if (SHELL.includes(block.lang)) {
      it(`shell block at README line ${block.line}: every command parses`, async () => {
        const commands = commandsOf(block.code);
        expect(commands.length).toBeGreaterThan(0);
        for (const command of commands) await checkShellCommand(command);
      });
    }
  }
});
