import type { GrngError } from '../errors.js';

/**
 * The CLI flag that sets each library option. The library names its own options in errors
 * (`invalid learningRate: -1`); a CLI user typed `--lr -1`, so the CLI translates before it
 * prints. Keys are the `option` a GrngError carries in its context.
 */
export const FLAG_OF_OPTION: Readonly<Record<string, string>> = {
  // train / compare
  dataset: '--dataset',
  model: '--model',
  epochs: '--epochs',
  steps: '--steps',
  batchSize: '--batch-size',
  partial: '--partial',
  seed: '--seed',
  init: '--init',
  backend: '--backend',
  optimizer: '--optimizer',
  evalEvery: '--eval-every',
  targetAccuracy: '--target',
  // optimizer options, as trainCommand's optimizerOptionsOf maps them
  learningRate: '--lr',
  momentum: '--momentum',
  nesterov: '--nesterov',
  weightDecay: '--weight-decay',
  b1: '--b1',
  b2: '--b2',
  eps: '--eps',
  damping: '--damping',
  rho: '--rho',
  klClip: '--kl-clip',
  fisher: '--fisher',
  beta: '--stats-decay',
  statsEvery: '--stats-every',
  inverseEvery: '--inverse-every',
  newtonTolerance: '--newton-tol',
  newtonMaxIterations: '--newton-max-iters',
  newtonWarmTrials: '--newton-warm-trials',
  inverse: '--inverse',
  ringNorm: '--ring-norm',
  hvp: '--hvp',
  gamma: '--gamma',
  hessianEvery: '--hessian-every',
  rows: '--kalman-rows',
  p0: '--p0',
  r0: '--r0',
  fading: '--fading',
  processNoise: '--process-noise',
  betaR: '--beta-r',
  rMin: '--r-min',
  pMin: '--p-min',
  // recording, replay, dashboard server
  record: '--record',
  speed: '--speed',
  port: '--port',
  host: '--host',
  token: '--token',
  maxClients: '--max-clients',
  // checkpoints and faults
  resume: '--resume',
  checkpointDir: '--checkpoint-dir',
  checkpointEvery: '--checkpoint-every',
  maxBadSteps: '--max-bad-steps',
  wasmThreads: '--wasm-threads',
};

/**
 * The one line the CLI prints for a GrngError: the library's message with the library option
 * replaced by the flag that set it (`invalid --lr: -1 (…)`), or the flag put in front when the
 * message words it otherwise (`--model: invalid model spec …`). Line breaks become spaces.
 *
 * @example
 * cliMessage(new GrngError('invalid-option', 'invalid rows: 0 (expected an integer ≥ 1)', { option: 'rows', value: 0 })); // 'invalid --kalman-rows: 0 (expected an integer ≥ 1)'
 */
export function cliMessage(error: GrngError): string {
  const message = error.message.trim().replace(/\s*\n\s*/g, ' ');
  const option = error.context.option;
  const flag = typeof option === 'string' && Object.hasOwn(FLAG_OF_OPTION, option) ? FLAG_OF_OPTION[option]! : undefined;
  if (!flag || message.includes(flag)) return message;
  const libraryWording = `invalid ${option as string}: `;
  if (message.startsWith(libraryWording)) return `invalid ${flag}: ${message.slice(libraryWording.length)}`;
  return `${flag}: ${message}`;
}
