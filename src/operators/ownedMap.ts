import * as tf from '@tensorflow/tfjs';
import { Observable, type OperatorFunction } from 'rxjs';
import { asGrngError } from '../errors.js';

/** What a step function returns: the value to emit and the tensors it created for it. */
export interface Owned<R> {
  readonly value: R;
  readonly owned: readonly tf.Tensor[];
}

/**
 * The shape shared by the synchronous pipeline operators: per subscription `setup` creates the
 * operator's state, each value is mapped synchronously, emitted, and the tensors the mapping
 * created are disposed as soon as downstream `next` returns (downstream copies what it needs
 * synchronously, or holds the batch). Anything thrown becomes an `error` notification with a
 * typed GrngError naming the operator and step; `teardown` runs on complete, error and
 * unsubscribe.
 */
export function ownedMap<T extends { readonly batch: { readonly step: number } } | { readonly step: number }, R, S = void>(
  operator: string,
  setup: () => S,
  project: (value: T, state: S) => Owned<R>,
  teardown: (state: S) => void = () => {},
): OperatorFunction<T, R> {
  return (source) =>
    new Observable<R>((subscriber) => {
      let state: S;
      try {
        state = setup();
      } catch (error) {
        subscriber.error(asGrngError(error, { operator }));
        return;
      }
      const subscription = source.subscribe({
        next(value) {
          let result: Owned<R>;
          try {
            result = project(value, state);
          } catch (error) {
            const step = 'batch' in value ? value.batch.step : value.step;
            subscriber.error(asGrngError(error, { operator, step }));
            return;
          }
          try {
            subscriber.next(result.value);
          } finally {
            tf.dispose(result.owned as tf.Tensor[]);
          }
        },
        error: (error: unknown) => subscriber.error(error),
        complete: () => subscriber.complete(),
      });
      return () => {
        subscription.unsubscribe();
        teardown(state);
      };
    });
}
