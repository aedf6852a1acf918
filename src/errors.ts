/**
 * The one error class grng raises. `code` says which part of the input or run is at fault, and
 * `context` carries what a user needs to fix it (option name, step, layer, shapes, file, offset).
 *
 * @example
 * try { sgd({ learningRate: -1 }); } catch (e) { if (isGrngError(e)) console.log(e.code); }
 */
export type GrngErrorCode =
  'invalid-option' | 'invalid-model' | 'invalid-data' | 'backend' | 'shape' | 'step' | 'internal';

export class GrngError extends Error {
  override readonly name = 'GrngError';
  readonly code: GrngErrorCode;
  readonly context: Readonly<Record<string, unknown>>;

  constructor(
    code: GrngErrorCode,
    message: string,
    context: Record<string, unknown> = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.code = code;
    this.context = context;
  }
}

/** Type guard that also works across duplicated copies of the package (checks the name). */
export function isGrngError(value: unknown): value is GrngError {
  return (
    value instanceof GrngError ||
    (value instanceof Error && value.name === 'GrngError' && 'code' in value)
  );
}

/**
 * Wraps anything thrown inside a pipeline step into a GrngError with the step's context, so
 * that the `error` notification always carries a typed error.
 */
export function asGrngError(error: unknown, context: Record<string, unknown> = {}): GrngError {
  const where = context.operator
    ? `${String(context.operator)}${context.step !== undefined ? ` at step ${String(context.step)}` : ''}: `
    : '';
  if (isGrngError(error)) {
    if (Object.keys(context).length === 0 || error.context.operator !== undefined) return error;
    return new GrngError(
      error.code,
      `${where}${error.message}`,
      { ...context, ...error.context },
      { cause: error.cause },
    );
  }
  const message = error instanceof Error ? error.message : String(error);
  return new GrngError('step', `${where}${message}`, context, { cause: error });
}

/** Throws an `invalid-option` error naming the option and the offending value. */
export function invalidOption(option: string, value: unknown, expected: string): never {
  throw new GrngError(
    'invalid-option',
    `invalid ${option}: ${formatValue(value)} (expected ${expected})`,
    { option, value },
  );
}

function formatValue(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'function') return 'a function';
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
