import { invalidOption } from './errors.js';

/** Option checks shared by every constructor; each failure names the option and the bad value. */
export function checkNumber(
  option: string,
  value: unknown,
  {
    min = -Infinity,
    max = Infinity,
    minExclusive = false,
  }: { min?: number; max?: number; minExclusive?: boolean } = {},
): number {
  const bounds = `${minExclusive ? '>' : '≥'} ${min}${max < Infinity ? ` and ≤ ${max}` : ''}`;
  if (typeof value !== 'number' || !Number.isFinite(value))
    invalidOption(option, value, `a finite number ${bounds}`);
  if (value < min || (minExclusive && value === min) || value > max)
    invalidOption(option, value, `a number ${bounds}`);
  return value;
}

export function checkInteger(
  option: string,
  value: unknown,
  min = 0,
  max = Number.MAX_SAFE_INTEGER,
): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    invalidOption(
      option,
      value,
      `an integer ≥ ${min}${max < Number.MAX_SAFE_INTEGER ? ` and ≤ ${max}` : ''}`,
    );
  }
  return value;
}

export function checkChoice<T extends string>(
  option: string,
  value: unknown,
  choices: readonly T[],
): T {
  if (typeof value !== 'string' || !(choices as readonly string[]).includes(value))
    invalidOption(option, value, `one of ${choices.join(', ')}`);
  return value as T;
}

export function checkBoolean(option: string, value: unknown): boolean {
  if (typeof value !== 'boolean') invalidOption(option, value, 'true or false');
  return value;
}

/**
 * Rejects keys an option object does not know, so a typo is an error rather than silently ignored.
 */
export function checkKeys(what: string, options: object, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key))
      invalidOption(
        `${what} option "${key}"`,
        (options as Record<string, unknown>)[key],
        `one of ${known.join(', ')}`,
      );
  }
}

/** A decay rate in [0, 1): 1 would never forget and break bias corrections. */
export function checkUnitInterval(option: string, value: unknown): number {
  checkNumber(option, value, { min: 0, max: 1 });
  if (value === 1) invalidOption(option, value, 'a number in [0, 1)');
  return value as number;
}

/**
 * The values an option takes, as an option table states them (src/optim/optionSpec.ts); it lives
 * here so that every layer, src/curvature included, can check against a table it declares.
 */
export type ValueRule =
  | {
      readonly kind: 'number';
      readonly min?: number;
      readonly max?: number;
      readonly minExclusive?: boolean;
      readonly maxExclusive?: boolean;
    }
  | { readonly kind: 'integer'; readonly min: number; readonly max?: number }
  | { readonly kind: 'boolean' }
  | { readonly kind: 'choice'; readonly choices: readonly string[] };

/**
 * Checks a value against its rule, with the messages of the checks above: `maxExclusive` on
 * [0, 1] is {@link checkUnitInterval}'s decay rate.
 */
export function checkOption(
  option: string,
  rule: ValueRule,
  value: unknown,
): number | boolean | string {
  switch (rule.kind) {
    case 'number': {
      const min = rule.min ?? -Infinity;
      const checked = checkNumber(option, value, {
        min,
        max: rule.max ?? Infinity,
        minExclusive: rule.minExclusive ?? false,
      });
      if (rule.maxExclusive && checked === rule.max)
        invalidOption(
          option,
          value,
          `a number in ${rule.minExclusive ? '(' : '['}${min}, ${rule.max})`,
        );
      return checked;
    }
    case 'integer':
      return checkInteger(option, value, rule.min, rule.max);
    case 'boolean':
      return checkBoolean(option, value);
    case 'choice':
      return checkChoice(option, value, rule.choices);
  }
}
