import * as tf from '@tensorflow/tfjs';
import { resolveObjectURL } from 'node:buffer';
import { createRequire } from 'node:module';
import os from 'node:os';
import { Worker as NodeWorker, type WorkerOptions } from 'node:worker_threads';
import { GrngError, invalidOption } from '../errors.js';

/**
 * tfjs-backend-wasm pre-creates 8 pthread workers and its C side clamps XNNPACK's pool to 8
 * threads, so more cannot be had.
 */
export const MAX_WASM_THREADS = 8;

/** How long the 8 pthread workers may take to load the wasm module before we give up. */
const START_TIMEOUT_MS = 60_000;

const require = createRequire(import.meta.url);

/**
 * The number of threads asked of the wasm backend: the `wasmThreads` option if given, else the
 * `GRNG_WASM_THREADS` environment variable; undefined when neither says (the wasm backend then
 * runs its single-threaded SIMD build). Bad values throw a GrngError naming where they came from.
 *
 * @example
 * wasmThreadsRequested(undefined, { GRNG_WASM_THREADS: '2' }); // 2
 */
export function wasmThreadsRequested(
  option?: number,
  env: NodeJS.ProcessEnv = process.env,
): number | undefined {
  if (option !== undefined) return checkThreads('wasmThreads', option);
  const fromEnv = env.GRNG_WASM_THREADS;
  if (fromEnv === undefined || fromEnv.trim() === '') return undefined;
  // Number() would accept '0x2' and '2e0'; an environment variable should be exactly an integer.
  return checkThreads(
    'GRNG_WASM_THREADS',
    /^\d+$/.test(fromEnv.trim()) ? Number(fromEnv) : fromEnv,
  );
}

function checkThreads(option: string, value: unknown): number {
  if (
    typeof value !== 'number' ||
    !Number.isInteger(value) ||
    value < 1 ||
    value > MAX_WASM_THREADS
  ) {
    invalidOption(
      option,
      value,
      `an integer from 1 to ${MAX_WASM_THREADS}, the wasm backend's thread count; 1 is its single-threaded build`,
    );
  }
  return value;
}

/**
 * Starts tfjs-backend-wasm with `threads` threads: `initialise` is what creates the backend
 * (`tf.setBackend('wasm')`). 1 thread is tfjs's own single-threaded SIMD build; more start its
 * multi-threaded SIMD build. tfjs builds its wasm module once per process, so when the wasm
 * backend already runs, `threads` must match it (a GrngError says so otherwise). Returns what
 * `initialise` returned; throws a GrngError when the threads cannot start.
 *
 * tfjs refuses its threaded build in Node (WASM_HAS_MULTITHREAD_SUPPORT is false there) because
 * three things in its Emscripten glue assume a browser; each is bridged here at run time, without
 * touching node_modules:
 * - the pthread worker script is handed to `new Worker` as a `blob:` URL, which Node's
 *   worker_threads rejects (ERR_WORKER_PATH): `Worker` becomes a worker_threads subclass that
 *   runs a bootstrap reading that blob (see WORKER_BOOTSTRAP);
 * - the C side caps the pool at `os.cpus().length / 2` (it assumes two hyperthreads per core),
 *   which is 1 on a 2-core machine whatever `setThreadsCount` says: `os.cpus` reports enough
 *   CPUs while the module initialises, then is put back;
 * - running pthreads hold a reference on the event loop, so a finished script would never exit:
 *   our workers never take one (the main thread owns their lifetime).
 *
 * @example
 * await startWasmThreads(2, () => tf.setBackend('wasm'));
 */
export async function startWasmThreads<T>(
  threads: number,
  initialise: () => Promise<T>,
): Promise<T> {
  checkThreads('wasmThreads', threads);
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  if (tf.findBackend('wasm')) {
    const running = wasm.getThreadsCount();
    if (running === threads) return initialise();
    throw new GrngError(
      'backend',
      `wasm threads: the wasm backend already runs with ${running} thread(s) in this process; wasmThreads=${threads} must be chosen before it first starts (set GRNG_WASM_THREADS, or pass wasmThreads to the first initBackend)`,
      { option: 'wasmThreads', value: threads, running },
    );
  }
  if (threads === 1) return initialise();
  const env = tf.env();
  env.set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  wasm.setThreadsCount(threads);
  const failed = interceptPthreadWorkers();
  const cpus = os.cpus;
  const real = cpus.call(os);
  // The glue reads only the length of this list.
  os.cpus = () =>
    Array.from({ length: 2 * threads }, (_, i) => real[i % Math.max(1, real.length)]!);
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () =>
        reject(
          new GrngError(
            'backend',
            `wasm threads: the pthread workers did not load within ${START_TIMEOUT_MS / 1000} s`,
            { option: 'wasmThreads', value: threads },
          ),
        ),
      START_TIMEOUT_MS,
    );
    timer.unref();
  });
  try {
    const result = await Promise.race([initialise(), failed.promise, timedOut]);
    // When tfjs could not start the backend at all it says so itself (setBackend resolves false).
    const running = tf.findBackend('wasm') ? wasm.getThreadsCount() : threads;
    if (running !== threads)
      throw new GrngError(
        'backend',
        `wasm threads: asked for ${threads} threads but XNNPACK runs ${running}`,
        { option: 'wasmThreads', value: threads, running },
      );
    return result;
  } catch (error) {
    // A later plain start in this process (e.g. `auto` moving on) must get the single-threaded
    // build.
    env.set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    wasm.setThreadsCount(-1);
    throw error;
  } finally {
    clearTimeout(timer);
    os.cpus = cpus;
    failed.settle();
  }
}

/**
 * The threads of the running wasm backend's XNNPACK pool, main thread included (1 when
 * single-threaded).
 */
export async function wasmThreadsRunning(): Promise<number> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  return tf.findBackend('wasm') ? wasm.getThreadsCount() : 1;
}

/**
 * Runs in each pthread worker (a CommonJS `eval` worker, so `require` exists). tfjs hands us its
 * worker script as a Blob (`workerData.script`); Blob reads are asynchronous, so the script is
 * evaluated once read, and messages from the main thread reach it through a relay that keeps them
 * in order behind that read. The first message, `load`, carries the Emscripten module source as
 * another Blob, which the script would pass to `importScripts` (a synchronous file read in Node);
 * the relay reads it first and swaps in a key that our `importScripts` recognises. The module
 * source was cut out of tfjs's Rollup bundle, so it refers
 * to the bundle's names for Node built-ins (`require$$0` for fs...) and `commonjsGlobal`: they are
 * read from the bundle's header and defined as globals.
 */
const WORKER_BOOTSTRAP = String.raw`'use strict';
const { workerData, parentPort } = require('node:worker_threads');
const { EventEmitter } = require('node:events');
const fs = require('node:fs');
const fail = (error) => process.nextTick(() => { throw error; });
const header = fs.readFileSync(workerData.bundlePath, 'utf8').slice(0, 16384);
for (const [, name, id] of header.matchAll(/^var (require\$\$\d+) = require\('([^']+)'\);$/gm)) globalThis[name] = require(id);
globalThis.commonjsGlobal = globalThis;
const MODULE_SCRIPT = 'tfjs-backend-wasm-threaded-simd.js';
const port = new EventEmitter();
port.postMessage = (message, transfer) => parentPort.postMessage(message, transfer);
const threads = { ...require('node:worker_threads'), parentPort: port };
const scriptRequire = (id) => (id === 'worker_threads' || id === 'node:worker_threads' ? threads : require(id));
let moduleSource;
let delivered = Promise.resolve();
const ready = workerData.script.text().then((source) => {
  new Function('require', '__filename', source)(scriptRequire, workerData.bundlePath);
  const importScripts = globalThis.importScripts;
  globalThis.importScripts = (file) => (file === MODULE_SCRIPT ? (0, eval)(moduleSource + '\n//# sourceURL=' + MODULE_SCRIPT) : importScripts(file));
});
parentPort.on('message', (data) => {
  delivered = delivered.then(async () => {
    await ready;
    if (data && data.cmd === 'load' && data.urlOrBlob instanceof Blob) {
      moduleSource = await data.urlOrBlob.text();
      data.urlOrBlob = MODULE_SCRIPT;
    }
    port.emit('message', data);
  }).catch(fail);
});
ready.catch(fail);
`;

const bundlePath = (): string => require.resolve('@tensorflow/tfjs-backend-wasm');

/**
 * Where worker errors go while the module starts; undefined once started (they reach the glue as
 * usual).
 */
let starting: ((error: unknown) => void) | undefined;

/**
 * What tfjs's glue constructs as `new Worker(url)`: a worker_threads Worker that accepts its blob:
 * URL.
 */
class PthreadWorker extends NodeWorker {
  constructor(url: string | URL, options?: WorkerOptions) {
    if (typeof url === 'string' && url.startsWith('blob:')) {
      const script = resolveObjectURL(url);
      if (!script)
        throw new GrngError(
          'backend',
          `wasm threads: the pthread worker script ${url} is not a live Blob URL`,
          { url },
        );
      // tfjs makes one Blob URL per worker and never revokes it.
      URL.revokeObjectURL(url);
      super(WORKER_BOOTSTRAP, { eval: true, workerData: { script, bundlePath: bundlePath() } });
    } else {
      super(url, options);
    }
  }

  // The glue refs a worker while it runs a pthread; XNNPACK's pthreads run until exit, so honouring
  // that would keep every finished script alive. The main thread outlives them anyway.
  override ref(): void {}

  // The glue rethrows worker errors from its listener, which kills the process with a bare stack;
  // while starting, the error goes to startWasmThreads instead, to become a GrngError.
  override emit(event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'error' && starting) {
      starting(args[0]);
      return true;
    }
    return super.emit(event, ...args);
  }
}

/**
 * Makes the glue's `new Worker(...)` build a PthreadWorker. The glue first assigns
 * `globalThis.Worker = worker_threads.Worker` and then constructs through that global, so the
 * assignment must be ignored while the module starts; afterwards `Worker` stays a PthreadWorker
 * (a plain property again), for pthreads the glue may create later.
 */
function interceptPthreadWorkers(): { promise: Promise<never>; settle(): void } {
  let reject!: (error: unknown) => void;
  const promise = new Promise<never>((_, r) => (reject = r));
  promise.catch(() => {});
  starting = (error) =>
    reject(
      new GrngError(
        'backend',
        `wasm threads: a pthread worker failed to start: ${error instanceof Error ? error.message : String(error)}`,
        { option: 'wasmThreads' },
        { cause: error },
      ),
    );
  Object.defineProperty(globalThis, 'Worker', {
    configurable: true,
    enumerable: false,
    get: () => PthreadWorker,
    set: () => {},
  });
  return {
    promise,
    settle() {
      starting = undefined;
      Object.defineProperty(globalThis, 'Worker', {
        configurable: true,
        enumerable: false,
        writable: true,
        value: PthreadWorker,
      });
    },
  };
}
