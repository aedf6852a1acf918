// Debian packages that some tests need. `npm test` must pass on a machine with only Node and the
// npm registry, so a test whose package is missing skips with one line naming it, and the run
// ends with a list of those skips (test/systemPackagesReporter.ts). With
// GRNG_REQUIRE_SYSTEM_PACKAGES=1 (.ci/run sets it) a missing package fails the test with the same
// line instead, so CI cannot pass by skipping. .ci/run installs exactly the packages listed here
// (test/systemPackages.test.ts checks).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FASHION_MNIST_DIR } from '../src/data/imageDatasets.js';
import { FORTUNES_DIR } from '../src/data/textDataset.js';

/** Where Debian's chromium package puts the browser. */
export const CHROMIUM_PATH = '/usr/bin/chromium';

/** Where Debian's redis-server package puts the server the queue tests start. */
export const REDIS_SERVER_PATH = '/usr/bin/redis-server';

/** How a test tells that each package is installed: by the file it will use. */
export const SYSTEM_PACKAGES = {
  /** The dashboard's browser test drives it through playwright-core. */
  chromium: () => existsSync(CHROMIUM_PATH),
  /** The BLAS and LAPACK the native addon loads: its matMul, fused kernels and Cholesky inverses. */
  'libopenblas0-pthread': () => sharedLibraryInstalled('libopenblas.so.0'),
  /** Fashion-MNIST's idx.gz files, read by `--dataset fashion-mnist`. */
  'dataset-fashion-mnist': () => existsSync(FASHION_MNIST_DIR),
  /** The text loadFortunes reads; checked by a file of its own, as fortunes-min makes the folder too. */
  fortunes: () => existsSync(join(FORTUNES_DIR, 'computers')),
  /** The Redis the BullMQ sweep queue tests run their coordinator and workers on. */
  'redis-server': () => existsSync(REDIS_SERVER_PATH),
} satisfies Record<string, () => boolean>;

export type SystemPackage = keyof typeof SYSTEM_PACKAGES;

/** The variable that turns every skip for a missing package into a failure. */
export const REQUIRE_VARIABLE = 'GRNG_REQUIRE_SYSTEM_PACKAGES';

/** The start of every such skip note; the reporter finds the skips by it. */
export const MISSING_PACKAGE_NOTE = 'needs Debian package ';

/**
 * The one line a skip (or, required, a failure) carries.
 *
 * @example
 * missingPackageLine('chromium'); // 'needs Debian package chromium (apt-get install chromium)'
 */
export function missingPackageLine(name: string): string {
  return `${MISSING_PACKAGE_NOTE}${name} (apt-get install ${name})`;
}

/** Whether GRNG_REQUIRE_SYSTEM_PACKAGES asks for every package: 1/true yes; unset, empty, 0/false no. */
export function systemPackagesRequired(env: NodeJS.ProcessEnv = process.env): boolean {
  const value = (env[REQUIRE_VARIABLE] ?? '').trim().toLowerCase();
  if (value === '' || value === '0' || value === 'false') return false;
  if (value === '1' || value === 'true') return true;
  // A typo must not quietly let CI pass by skipping.
  throw new Error(
    `invalid ${REQUIRE_VARIABLE}: ${JSON.stringify(env[REQUIRE_VARIABLE])} (1 to fail tests whose Debian package is missing, or 0)`,
  );
}

const installed = new Map<SystemPackage, boolean>();

/** Whether the package is installed (checked once per test process). */
export function systemPackageInstalled(name: SystemPackage): boolean {
  let present = installed.get(name);
  if (present === undefined) installed.set(name, (present = SYSTEM_PACKAGES[name]()));
  return present;
}

/**
 * Skips the current test when a Debian package it needs is missing, with one line naming the
 * package; with GRNG_REQUIRE_SYSTEM_PACKAGES=1 fails it with the same line. Call it first in the
 * test, or in a `beforeEach` for a whole `describe`. Decided when the test runs, so a test that
 * another condition leaves out (`it.runIf`, GRNG_BLAS=0) is never counted as a package skip.
 *
 * @example
 * beforeEach((context) => needsPackage(context, 'chromium'));
 */
export function needsPackage(
  context: { skip(note: string): never },
  name: SystemPackage,
  present = systemPackageInstalled(name),
  env: NodeJS.ProcessEnv = process.env,
): void {
  if (present) return;
  const line = missingPackageLine(name);
  if (systemPackagesRequired(env)) throw new Error(`${line} [${REQUIRE_VARIABLE}=1]`);
  context.skip(line);
}

/** Whether dlopen finds the library: in a LD_LIBRARY_PATH folder, or in the dynamic linker's cache. */
function sharedLibraryInstalled(soname: string): boolean {
  const folders = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean);
  if (folders.some((folder) => existsSync(join(folder, soname)))) return true;
  for (const ldconfig of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    const listing = spawnSync(ldconfig, ['-p'], { encoding: 'utf8' });
    if (listing.status === 0)
      return listing.stdout.split('\n').some((line) => line.trim().startsWith(`${soname} `));
  }
  return false;
}
