import { invalidOption } from '../errors.js';
import { checkInteger, checkNumber } from '../validate.js';

/** A hyper-parameter as a function of the step index (from 0). */
export type Schedule = (step: number) => number;
/** Every hyper-parameter accepts a constant or a schedule. */
export type Hyper = number | Schedule;

/** The value of a hyper-parameter at a step. */
export function valueAt(hyper: Hyper, step: number): number {
  return typeof hyper === 'number' ? hyper : hyper(step);
}

/** Validates a hyper-parameter: a number in range, or a schedule (checked at step 0). */
export function checkHyper(
  option: string,
  value: unknown,
  range: { min?: number; max?: number; minExclusive?: boolean } = {},
): Hyper {
  if (typeof value === 'function') {
    const first = (value as Schedule)(0);
    checkNumber(`${option} (schedule value at step 0)`, first, range);
    return value as Schedule;
  }
  if (typeof value !== 'number') invalidOption(option, value, 'a number or a schedule');
  return checkNumber(option, value, range);
}

/** η constant. */
export function constantSchedule(value: number): Schedule {
  checkNumber('constantSchedule value', value);
  return () => value;
}

/** η·factor^⌊step/every⌋ (step decay). */
export function stepSchedule({
  initial,
  every,
  factor,
}: {
  initial: number;
  every: number;
  factor: number;
}): Schedule {
  checkNumber('stepSchedule initial', initial);
  checkInteger('stepSchedule every', every, 1);
  checkNumber('stepSchedule factor', factor, { min: 0 });
  return (step) => initial * factor ** Math.floor(step / every);
}

/** Cosine decay from `initial` to `final` over `steps`, then constant at `final`. */
export function cosineSchedule({
  initial,
  steps,
  final = 0,
}: {
  initial: number;
  steps: number;
  final?: number;
}): Schedule {
  checkNumber('cosineSchedule initial', initial);
  checkInteger('cosineSchedule steps', steps, 1);
  checkNumber('cosineSchedule final', final);
  return (step) => {
    const t = Math.min(step, steps) / steps;
    return final + 0.5 * (initial - final) * (1 + Math.cos(Math.PI * t));
  };
}

/** Linear warm-up from `from` to the schedule's value over `steps`, then the schedule (shifted). */
export function warmupSchedule({
  steps,
  then,
  from = 0,
}: {
  steps: number;
  then: Hyper;
  from?: number;
}): Schedule {
  checkInteger('warmupSchedule steps', steps, 1);
  checkNumber('warmupSchedule from', from);
  return (step) => {
    if (step < steps) return from + ((valueAt(then, 0) - from) * (step + 1)) / steps;
    return valueAt(then, step - steps);
  };
}
