import { createRequire } from 'node:module';

/** grng's package version, for run metadata and the server banner. */
export const VERSION: string = (
  createRequire(import.meta.url)('../package.json') as { version: string }
).version;
