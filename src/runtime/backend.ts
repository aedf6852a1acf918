import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import { GrngError } from '../errors.js';
import { enableNativeBlas, nativeBlasLabel, nativeBlasRequested } from './nativeBlas.js';
import { setNativeMatMulActive } from './matMulMode.js';
import { startWasmThreads, wasmThreadsRequested, wasmThreadsRunning } from './wasmThreads.js';

/** The backends grng can run on, in the order `auto` tries them. */
export const BACKENDS = ['tensorflow', 'webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];
export type BackendChoice = BackendName | 'auto';

export interface BackendInfo {
  /** The backend in use, as tfjs names it. */
  readonly name: BackendName;
  /** What was tried before it and why each failed (only for `auto`). */
  readonly skipped: ReadonlyArray<{ readonly name: BackendName; readonly reason: string }>;
  /** Details worth recording in run metadata (adapter, package, SIMD...). */
  readonly detail: string;
}

export interface BackendOptions {
  /**
   * Threads for the wasm backend (1–8; default: `GRNG_WASM_THREADS`, else tfjs's
   * single-threaded build). Applies when wasm first starts in the process; see wasmThreads.ts.
   */
  readonly wasmThreads?: number;
  /**
   * The wasm backend's matMul through a native BLAS: true, false, or 'auto' (use it when it loads;
   * the default, or GRNG_BLAS=1/0); needs the addon
   * built by `node scripts/build-native.mjs`. When it cannot load, the detail says why and the
   * wasm kernel stays. See nativeBlas.ts.
   */
  readonly blas?: boolean | 'auto';
}

const require = createRequire(import.meta.url);
let active: BackendInfo | undefined;

/**
 * Picks and initialises the tfjs backend. `auto` tries tensorflow (tfjs-node-gpu, then
 * tfjs-node), webgpu (Dawn), wasm, cpu; the `GRNG_BACKEND` environment variable overrides
 * `auto`. Asking for a backend that cannot start throws a GrngError saying why. `wasmThreads`
 * (or `GRNG_WASM_THREADS`) runs the wasm backend multi-threaded.
 *
 * @example
 * const info = await initBackend('auto'); console.log(info.name);
 */
export async function initBackend(
  choice: BackendChoice | string = 'auto',
  options: BackendOptions = {},
): Promise<BackendInfo> {
  const requested =
    choice === 'auto' && process.env.GRNG_BACKEND ? process.env.GRNG_BACKEND : choice;
  if (requested !== 'auto' && !(BACKENDS as readonly string[]).includes(requested)) {
    throw new GrngError(
      'invalid-option',
      `invalid backend: ${JSON.stringify(requested)} (expected one of auto, ${BACKENDS.join(', ')})`,
      { option: 'backend', value: requested },
    );
  }
  const wasmThreads = wasmThreadsRequested(options.wasmThreads);
  const blas = options.blas ?? nativeBlasRequested();
  if (
    active &&
    (requested === 'auto' || requested === active.name) &&
    tf.getBackend() === active.name
  ) {
    // Throws when the running wasm backend has another thread count than the one asked for.
    if (active.name === 'wasm' && wasmThreads !== undefined)
      await startWasmThreads(wasmThreads, async () => true);
    return active;
  }
  if (requested !== 'auto') {
    const detail = await start(requested as BackendName, { wasmThreads, blas });
    active = { name: requested as BackendName, skipped: [], detail };
    return active;
  }
  const skipped: Array<{ name: BackendName; reason: string }> = [];
  for (const name of BACKENDS) {
    try {
      const detail = await start(name, { auto: true, wasmThreads, blas });
      active = { name, skipped, detail };
      return active;
    } catch (error) {
      skipped.push({ name, reason: error instanceof Error ? error.message : String(error) });
    }
  }
  throw new GrngError(
    'backend',
    `no backend could start: ${skipped.map((s) => `${s.name} (${s.reason})`).join('; ')}`,
    { skipped },
  );
}

/** The backend chosen by the last `initBackend`, if any. */
export function activeBackend(): BackendInfo | undefined {
  return active;
}

async function start(
  name: BackendName,
  {
    auto = false,
    wasmThreads,
    blas = false,
  }: { auto?: boolean; wasmThreads?: number | undefined; blas?: boolean | 'auto' } = {},
): Promise<string> {
  setNativeMatMulActive(false);
  let detail: string;
  switch (name) {
    case 'tensorflow':
      detail = await loadTensorflow();
      break;
    case 'webgpu':
      detail = await loadWebgpu(auto);
      break;
    case 'wasm':
      await importOrExplain('@tensorflow/tfjs-backend-wasm', 'wasm');
      detail = 'tfjs-backend-wasm';
      break;
    case 'cpu':
      detail = 'tfjs-backend-cpu (pure JavaScript)';
      break;
  }
  let ok: boolean;
  try {
    ok =
      name === 'wasm' && wasmThreads !== undefined
        ? await startWasmThreads(wasmThreads, () => tf.setBackend(name))
        : await tf.setBackend(name);
  } catch (error) {
    if (error instanceof GrngError) throw error;
    throw new GrngError(
      'backend',
      `backend ${name} failed to initialise: ${error instanceof Error ? error.message : String(error)}`,
      { backend: name },
      { cause: error },
    );
  }
  if (!ok || tf.getBackend() !== name)
    throw new GrngError('backend', `backend ${name} failed to initialise`, { backend: name });
  await tf.ready();
  if (name === 'wasm') {
    const threads = await wasmThreadsRunning();
    // Never throws: a missing addon or BLAS must not make `auto` skip wasm for the cpu backend.
    const native = blas ? enableNativeBlas() : undefined;
    // Asked for explicitly, its absence is news; under 'auto' the plain wasm kernel is the norm.
    const blasNote = native?.enabled
      ? `, ${nativeBlasLabel(native.library!)}`
      : native && blas === true
        ? `, native matMul unavailable: ${native.reason}`
        : '';
    detail += `${tf.env().getBool('WASM_HAS_SIMD_SUPPORT') ? ' (SIMD' : ' (no SIMD'}${threads > 1 ? `, ${threads} threads` : ''}${blasNote})`;
  }
  return detail;
}

async function importOrExplain(pkg: string, backend: BackendName): Promise<void> {
  try {
    await import(pkg);
  } catch (error) {
    throw new GrngError(
      'backend',
      `backend ${backend} needs the package ${pkg}, which could not be loaded: ${firstLine(error)}`,
      { backend, package: pkg },
      { cause: error },
    );
  }
}

async function loadTensorflow(): Promise<string> {
  const reasons: string[] = [];
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      require.resolve(pkg);
    } catch {
      reasons.push(`${pkg} is not installed`);
      continue;
    }
    try {
      await import(pkg);
      // tfjs-node-gpu can load and still run on the CPU when no GPU is visible: say so.
      return pkg.endsWith('-gpu') && !hasCuda()
        ? `${pkg} (no CUDA device visible: /dev/nvidiactl missing)`
        : pkg;
    } catch (error) {
      reasons.push(`${pkg} failed to load: ${firstLine(error)}`);
    }
  }
  throw new GrngError('backend', `backend tensorflow unavailable: ${reasons.join('; ')}`, {
    backend: 'tensorflow',
  });
}

function hasCuda(): boolean {
  try {
    require('node:fs').accessSync('/dev/nvidiactl');
    return true;
  } catch {
    return false;
  }
}

async function loadWebgpu(auto: boolean): Promise<string> {
  let create: (flags: string[]) => unknown;
  try {
    ({ create } = (await import('webgpu')) as unknown as { create: (flags: string[]) => unknown });
  } catch (error) {
    throw new GrngError(
      'backend',
      `backend webgpu needs the package webgpu (Dawn), which could not be loaded: ${firstLine(error)}`,
      { backend: 'webgpu', package: 'webgpu' },
      { cause: error },
    );
  }
  if (process.platform === 'linux' && !findSharedLibrary('libvulkan.so.1')) {
    // Asking Dawn anyway would only print native warnings before failing.
    throw new GrngError(
      'backend',
      'backend webgpu: the Vulkan loader libvulkan.so.1 is not installed (Debian: apt-get install libvulkan1), so no GPU adapter can be found',
      { backend: 'webgpu' },
    );
  }
  type Adapter = {
    info?: {
      vendor?: string;
      architecture?: string;
      description?: string;
      isFallbackAdapter?: boolean;
    };
    isFallbackAdapter?: boolean;
  };
  const gpu = create([]) as { requestAdapter(options?: object): Promise<Adapter | null> };
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new GrngError(
      'backend',
      'backend webgpu: no WebGPU adapter found (no GPU, or no Vulkan driver: libvulkan.so.1 and an ICD are needed)',
      { backend: 'webgpu' },
    );
  }
  const fallback = adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false;
  if (fallback && auto) {
    throw new GrngError(
      'backend',
      'backend webgpu: only a software (CPU) adapter was found; wasm is faster',
      { backend: 'webgpu' },
    );
  }
  // tfjs-backend-webgpu registers itself only if navigator.gpu exists when it is imported.
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (!g.navigator)
    Object.defineProperty(globalThis, 'navigator', {
      value: {},
      configurable: true,
      writable: true,
    });
  if (!g.navigator!.gpu)
    Object.defineProperty(g.navigator!, 'gpu', { value: gpu, configurable: true });
  await importOrExplain('@tensorflow/tfjs-backend-webgpu', 'webgpu');
  const info = adapter.info ?? {};
  return `webgpu (Dawn) ${[info.vendor, info.architecture, info.description].filter(Boolean).join(' ')}`.trim();
}

/**
 * Looks for a shared library where the dynamic loader would: LD_LIBRARY_PATH and the usual dirs.
 */
function findSharedLibrary(name: string): boolean {
  const fs = require('node:fs') as typeof import('node:fs');
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':'),
    '/lib/x86_64-linux-gnu',
    '/usr/lib/x86_64-linux-gnu',
    '/lib/aarch64-linux-gnu',
    '/usr/lib/aarch64-linux-gnu',
    '/usr/lib64',
    '/lib64',
    '/usr/lib',
    '/usr/local/lib',
  ];
  return dirs.some((dir) => dir !== '' && fs.existsSync(`${dir}/${name}`));
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n')[0] ?? '';
}
