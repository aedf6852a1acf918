// The skip-or-fail helper for Debian packages (test/systemPackages.ts), its end-of-run summary
// (test/systemPackagesReporter.ts) through a real child vitest, and .ci/run's matching list.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  missingPackageLine,
  needsPackage,
  REQUIRE_VARIABLE,
  SYSTEM_PACKAGES,
  systemPackagesRequired,
} from './systemPackages.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A test context whose skip records its note and stops the test, as vitest's does. */
function fakeContext(): { skip(note?: string): never; notes: string[] } {
  const notes: string[] = [];
  return {
    notes,
    skip(note?: string): never {
      notes.push(note ?? '');
      throw new Error('skipped');
    },
  };
}

describe('needsPackage', () => {
  it('does nothing when the package is there, skips with the line when not, fails with it when required', () => {
    const present = fakeContext();
    needsPackage(present, 'chromium', true, {});
    expect(present.notes).toEqual([]);

    const missing = fakeContext();
    expect(() => needsPackage(missing, 'libopenblas0-pthread', false, {})).toThrow('skipped');
    expect(missing.notes).toEqual([
      'needs Debian package libopenblas0-pthread (apt-get install libopenblas0-pthread)',
    ]);

    const required = fakeContext();
    expect(() => needsPackage(required, 'chromium', false, { [REQUIRE_VARIABLE]: '1' })).toThrow(
      `${missingPackageLine('chromium')} [GRNG_REQUIRE_SYSTEM_PACKAGES=1]`,
    );
    expect(required.notes).toEqual([]);
  });

  it('reads GRNG_REQUIRE_SYSTEM_PACKAGES: 1/true require, unset/empty/0/false skip, anything else is an error naming it', () => {
    for (const yes of ['1', 'true', ' TRUE '])
      expect(systemPackagesRequired({ [REQUIRE_VARIABLE]: yes })).toBe(true);
    for (const no of [undefined, '', '0', 'false'])
      expect(systemPackagesRequired(no === undefined ? {} : { [REQUIRE_VARIABLE]: no })).toBe(
        false,
      );
    expect(() => systemPackagesRequired({ [REQUIRE_VARIABLE]: 'yes' })).toThrow(
      /^invalid GRNG_REQUIRE_SYSTEM_PACKAGES: "yes"/,
    );
  });
});

describe('.ci/run', () => {
  const script = readFileSync(join(ROOT, '.ci', 'run'), 'utf8');

  it('installs exactly the packages the helper names', () => {
    const list = /^packages=\(([^)]*)\)$/m.exec(script);
    expect(list, '.ci/run should list its Debian packages as packages=(...)').not.toBeNull();
    expect(list![1]!.trim().split(/\s+/).sort()).toEqual(Object.keys(SYSTEM_PACKAGES).sort());
    expect(script).toMatch(/apt-get install [^\n]*"\$\{missing\[@\]\}"/);
  });

  it('requires them before running the tests', () => {
    const required = script.indexOf(`export ${REQUIRE_VARIABLE}=1\n`);
    expect(required).toBeGreaterThan(0);
    expect(script.indexOf('npm test', required)).toBeGreaterThan(required);
  });
});

/** Runs the fixture file through a child vitest with the project's configuration and reporters. */
function vitestOnFixture(
  env: Record<string, string>,
): Promise<{ code: number | null; output: string }> {
  const vitest = join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');
  const child = spawn(
    process.execPath,
    [vitest, 'run', '--config', 'test/fixtures/packageSkip.vitest.config.ts'],
    {
      cwd: ROOT,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', CI: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => void (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => void (output += chunk.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, output })));
}

describe('a run of vitest with a missing package', () => {
  const line = missingPackageLine('chromium');

  it('passes, prints the skip line for the file and lists the skip at the end', async () => {
    const { code, output } = await vitestOnFixture({ [REQUIRE_VARIABLE]: '0' });
    expect(code, output).toBe(0);
    expect(output).toContain(` ↓ test/fixtures/packageSkip.fixture.ts: 1 test skipped: ${line}`);
    const summary = output.slice(output.indexOf('Skipped for missing Debian packages: 1 test'));
    expect(summary, output).toMatch(
      /^Skipped for missing Debian packages: 1 test \(GRNG_REQUIRE_SYSTEM_PACKAGES=1 makes them failures\)\n/,
    );
    expect(summary).toContain(`  ${line}: 1 test\n    in test/fixtures/packageSkip.fixture.ts (1)`);
  });

  it('fails with the same line under GRNG_REQUIRE_SYSTEM_PACKAGES=1', async () => {
    const { code, output } = await vitestOnFixture({ [REQUIRE_VARIABLE]: '1' });
    expect(code, output).toBe(1);
    expect(output).toContain(`Error: ${line} [GRNG_REQUIRE_SYSTEM_PACKAGES=1]`);
    expect(output).toMatch(/1 failed \| 1 passed/);
    expect(output).not.toContain('Skipped for missing Debian packages');
  });
});
