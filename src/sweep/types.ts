/**
 * The vocabulary of a sweep: trials, the request to run one to a step budget, its result, and
 * the executor that runs requests (a local pool of processes, or BullMQ workers on Redis).
 */

/** Train options a trial runs with: JSON only, so they travel to another process or machine. */
export type TrialOptions = Readonly<Record<string, unknown>>;

/** One configuration of a sweep, named by a hash of its options (seed included). */
export interface Trial {
  /** 12 hex digits of the SHA-256 of its canonical options: the same configuration, the same id. */
  readonly id: string;
  /** The settings the search varies (`optimizer`, `learningRate`, `seed`, …), for tables. */
  readonly settings: Readonly<Record<string, string | number | boolean>>;
  /** Everything `train` needs: the base options with the settings applied. */
  readonly options: TrialOptions;
}

/** Run a trial until `steps` steps are done (resuming from its checkpoint when it has one). */
export interface TrialRequest {
  /** The sweep's folder: trials keep their checkpoint, recording and results under it. */
  readonly sweepDir: string;
  readonly trial: Trial;
  /** The step budget: the rung of successive halving, or the whole run. */
  readonly steps: number;
}

/** What a trial reached at a step budget. */
export interface TrialResult {
  readonly id: string;
  readonly status: 'done' | 'failed';
  /** Steps done in all (a promoted trial counts the rungs before too). */
  readonly steps: number;
  /** The budget asked for. */
  readonly budget: number;
  /** The sweep metric at the last evaluation, and its best over the run (null: never evaluated). */
  readonly metric: number | null;
  readonly best: number | null;
  readonly testAccuracy: number | null;
  readonly testLoss: number | null;
  readonly finalLoss: number | null;
  /** Training seconds in all (the checkpoint's clock carries over a resume). */
  readonly seconds: number;
  readonly stepsPerSecond: number;
  /** Which process ran it: `host:pid`, for the table and for tests that count runs. */
  readonly ranBy: string;
  /** The error line of a failed trial. */
  readonly error?: string;
}

/** Runs trial requests somewhere; `close` stops taking new ones and frees the workers. */
export interface TrialExecutor {
  run(request: TrialRequest): Promise<TrialResult>;
  close(): Promise<void>;
}
