import * as tf from '@tensorflow/tfjs';
import { defer, finalize, map, mergeMap, Observable, type OperatorFunction } from 'rxjs';
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
 * unsubscribe. Built from public RxJS operators so that a synchronous source stops being pulled
 * the moment downstream unsubscribes (e.g. `take(1)`).
 */
export function ownedMap<
  T extends { readonly batch: { readonly step: number } } | { readonly step: number },
  R,
  S = void,
>(
  operator: string,
  setup: () => S,
  project: (value: T, state: S) => Owned<R>,
  teardown: (state: S) => void = () => {},
): OperatorFunction<T, R> {
  return (source) =>
    defer(() => {
      let state: S;
      try {
        state = setup();
      } catch (error) {
        throw asGrngError(error, { operator });
      }
      return source.pipe(
        map((value) => {
          try {
            return project(value, state);
          } catch (error) {
            throw asGrngError(error, {
              operator,
              step: 'batch' in value ? value.batch.step : value.step,
            });
          }
        }),
        mergeMap(
          (result) =>
            new Observable<R>((subscriber) => {
              try {
                subscriber.next(result.value);
              } finally {
                tf.dispose(result.owned as tf.Tensor[]);
              }
              subscriber.complete();
            }),
        ),
        finalize(() => teardown(state)),
      );
    });
}
