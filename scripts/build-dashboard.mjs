#!/usr/bin/env node
// Bundles the browser dashboard (src/dashboard) into dist/dashboard: index.html, app.js
// (minified, ES2020, apache-arrow and uPlot included), app.css (uPlot's CSS included).
// Usage: node scripts/build-dashboard.mjs [--dev] [outDir]   (--dev: unminified, inline source maps)
import { build } from 'esbuild';
import { copyFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const source = join(root, 'src', 'dashboard');

/** Builds the dashboard into `outDir` (default dist/dashboard); resolves to the directory. */
export async function buildDashboard(
  outDir = join(root, 'dist', 'dashboard'),
  { dev = false } = {},
) {
  await mkdir(outDir, { recursive: true });
  const common = {
    bundle: true,
    minify: !dev,
    sourcemap: dev ? 'inline' : false,
    logLevel: 'warning',
    absWorkingDir: root,
    legalComments: 'none',
  };
  await Promise.all([
    build({
      ...common,
      entryPoints: [join(source, 'main.ts')],
      outfile: join(outDir, 'app.js'),
      platform: 'browser',
      format: 'iife',
      target: 'es2020',
    }),
    build({
      ...common,
      entryPoints: [join(source, 'app.css')],
      outfile: join(outDir, 'app.css'),
      target: ['chrome90', 'firefox90', 'safari14'],
    }),
    copyFile(join(source, 'index.html'), join(outDir, 'index.html')),
  ]);
  return outDir;
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const started = Date.now();
  const args = process.argv.slice(2);
  const dev = args.includes('--dev');
  const dir = args.find((a) => a !== '--dev');
  const out = await buildDashboard(dir ? resolve(dir) : undefined, { dev });
  console.log(`dashboard built into ${out} in ${Date.now() - started} ms`);
}
