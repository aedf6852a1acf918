#!/usr/bin/env node
/**
 * Builds grng's optional native matMul addon (native/grng_native.c → native/build/Release/
 * grng_native.node), used when GRNG_BLAS=1 (src/runtime/nativeBlas.ts).
 *
 *   node scripts/build-native.mjs
 *
 * Tries node-gyp (a local one, else the copy bundled with npm) with Node's own headers, then a
 * direct C compiler call (cc/gcc/g++). The addon links against nothing but libdl: the BLAS is
 * found at run time, so no BLAS is needed to build it. When nothing can build it, this prints
 * why and exits 0: the addon is optional and an install must never fail because of it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = join(root, 'native');
const output = join(nativeDir, 'build', 'Release', 'grng_native.node');
const require = createRequire(import.meta.url);

/** Node's headers: an installed node's ../include/node holds node_api.h; node-gyp wants its parent. */
function nodeRootDir() {
  const candidates = [
    process.config.variables.node_root_dir,
    resolve(dirname(process.execPath), '..'),
  ];
  return candidates.find((dir) => dir && existsSync(join(dir, 'include', 'node', 'node_api.h')));
}

function run(command, args) {
  const result = spawnSync(command, args, { cwd: nativeDir, encoding: 'utf8' });
  if (result.error) return `${command}: ${result.error.message}`;
  if (result.status !== 0)
    return `${command} exited ${result.status}: ${(result.stderr || result.stdout).trim().split('\n').slice(-3).join(' | ')}`;
  return undefined;
}

function findNodeGyp() {
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    // npm ships node-gyp for packages with binding.gyp; it sits beside npm's own files.
    const bundled = join(
      dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    );
    return existsSync(bundled) ? bundled : undefined;
  }
}

const failures = [];
const nodeDir = nodeRootDir();
if (!nodeDir) {
  failures.push(
    `Node's headers (include/node/node_api.h) were not found beside ${process.execPath}`,
  );
} else {
  const gyp = findNodeGyp();
  // --nodedir keeps node-gyp from downloading headers (the machine may be offline).
  const gypFailure = gyp
    ? run(process.execPath, [gyp, 'rebuild', `--nodedir=${nodeDir}`])
    : 'node-gyp not found';
  if (gypFailure === undefined && existsSync(output)) {
    console.log(`build-native: built ${output} with node-gyp`);
    process.exit(0);
  }
  failures.push(gypFailure ?? 'node-gyp produced no grng_native.node');
  mkdirSync(dirname(output), { recursive: true });
  for (const compiler of [process.env.CC, 'cc', 'gcc', 'g++'].filter(Boolean)) {
    // g++ would compile the file as C++; -x c keeps it C.
    const failure = run(compiler, [
      '-x',
      'c',
      '-std=c11',
      '-O2',
      '-fPIC',
      '-shared',
      `-I${join(nodeDir, 'include', 'node')}`,
      '-DNODE_GYP_MODULE_NAME=grng_native',
      'grng_native.c',
      '-o',
      output,
      '-ldl',
    ]);
    if (failure === undefined) {
      console.log(`build-native: built ${output} with ${compiler}`);
      process.exit(0);
    }
    failures.push(failure);
  }
}
console.log(
  `build-native: the optional native matMul (GRNG_BLAS=1) was not built; grng uses the wasm kernel. Why: ${failures.join('; ')}`,
);
process.exit(0);
