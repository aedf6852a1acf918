// The entry of the sweep bundle (build.sh): the backend that src/runtime/backend.ts imports by a
// computed name is bundled here, where esbuild can see it, lazily (as in the npm build, it
// registers only once that backend is chosen: imported eagerly, it became tfjs's highest-priority
// backend before initBackend ran, and every trial resumed from a checkpoint failed), and handed to
// backend.ts's import through globalThis.
(globalThis as Record<string, unknown>).__grngBundled = {
  get '@tensorflow/tfjs-backend-wasm'() {
    return import('@tensorflow/tfjs-backend-wasm');
  },
};
await import('../../src/cli/bin.js');
