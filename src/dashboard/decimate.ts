/**
 * Min/max-preserving decimation: the visible x range is cut into `buckets` equal slices (one per
 * pixel column) and each slice keeps only its lowest and highest point, in x order, so spikes
 * survive and a series never draws more than ~2 points per pixel. Pure, no DOM.
 */

/** Index of the first element of the ascending `xs[0..n)` that is ≥ `x` (n when none). */
export function lowerBound(xs: ArrayLike<number>, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid]! < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index of the first element of the ascending `xs[0..n)` that is > `x` (n when none). */
export function upperBound(xs: ArrayLike<number>, n: number, x: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (xs[mid]! <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export interface Decimated {
  readonly x: Float64Array;
  readonly y: Float64Array;
}

/**
 * Points of `ys[0..n)` against ascending `xs` within [x0, x1] (plus the nearest point beyond each
 * edge so lines reach the frame), NaN values skipped, reduced to at most 2 per bucket (+2).
 * With `positive`, values ≤ 0 count as missing (log scales).
 */
export function decimateMinMax(
  xs: ArrayLike<number>,
  ys: ArrayLike<number>,
  n: number,
  buckets: number,
  x0 = -Infinity,
  x1 = Infinity,
  positive = false,
): Decimated {
  let i0 = x0 === -Infinity ? 0 : Math.max(0, lowerBound(xs, n, x0) - 1);
  let i1 = x1 === Infinity ? n : Math.min(n, upperBound(xs, n, x1) + 1);
  const ok = (v: number): boolean => (positive ? v > 0 : v === v);
  // Trim missing values at both ends so the buckets span the data actually drawn.
  while (i0 < i1 && !ok(ys[i0]!)) i0++;
  while (i1 > i0 && !ok(ys[i1 - 1]!)) i1--;
  const count = i1 - i0;
  const slots = Math.max(1, Math.floor(buckets));
  if (count <= 2 * slots + 2) {
    const x = new Float64Array(count);
    const y = new Float64Array(count);
    let k = 0;
    for (let i = i0; i < i1; i++) {
      const v = ys[i]!;
      if (ok(v)) {
        x[k] = xs[i]!;
        y[k++] = v;
      }
    }
    return { x: x.subarray(0, k), y: y.subarray(0, k) };
  }
  const x = new Float64Array(2 * slots + 4);
  const y = new Float64Array(2 * slots + 4);
  let k = 0;
  const push = (i: number): void => {
    x[k] = xs[i]!;
    y[k++] = ys[i]!;
  };
  const first = xs[i0]!;
  const width = (xs[i1 - 1]! - first) / slots || 1;
  let bucket = -1;
  let minI = -1;
  let maxI = -1;
  const flush = (): void => {
    if (minI < 0) return;
    if (minI === maxI) push(minI);
    else if (minI < maxI) {
      push(minI);
      push(maxI);
    } else {
      push(maxI);
      push(minI);
    }
  };
  push(i0);
  for (let i = i0 + 1; i < i1 - 1; i++) {
    const v = ys[i]!;
    if (!ok(v)) continue;
    const b = Math.min(slots - 1, Math.floor((xs[i]! - first) / width));
    if (b !== bucket) {
      flush();
      bucket = b;
      minI = maxI = i;
    } else if (v < ys[minI]!) minI = i;
    else if (v > ys[maxI]!) maxI = i;
  }
  flush();
  push(i1 - 1);
  return { x: x.subarray(0, k), y: y.subarray(0, k) };
}

/** What {@link decimateGrowing} keeps between calls for one series. */
export interface GrowingState {
  readonly key: string;
  /** Bucket width in x units (a power of two), buckets anchored at the series' first x. */
  readonly width: number;
  readonly origin: number;
  /** Rows consumed. */
  n: number;
  /** Points of the closed buckets. */
  x: Float64Array;
  y: Float64Array;
  k: number;
  /** The open (last) bucket. */
  bucket: number;
  minI: number;
  maxI: number;
}

/**
 * {@link decimateMinMax} over a whole series that only grows (a live run), in time proportional
 * to the rows added since the previous call: buckets have a power-of-two width anchored at the
 * first x, so closed buckets never change until the series' extent doubles (then it starts
 * over). Yields between `buckets` and `2 × buckets` buckets of at most 2 points each, plus the
 * latest point. `key` names everything else the points depend on (column, smoothing, scale);
 * `ys` must be the same array (or its grown copy) on every call with the same key.
 */
export function decimateGrowing(
  state: GrowingState | undefined,
  key: string,
  xs: ArrayLike<number>,
  ys: ArrayLike<number>,
  n: number,
  buckets: number,
  positive = false,
): { state: GrowingState | undefined; points: Decimated } {
  const slots = Math.max(1, Math.floor(buckets));
  if (n <= 2 * slots + 2)
    return {
      state: undefined,
      points: decimateMinMax(xs, ys, n, slots, -Infinity, Infinity, positive),
    };
  const origin = xs[0]!;
  const extent = xs[n - 1]! - origin;
  const width = 2 ** Math.ceil(Math.log2(Math.max(extent / slots, 1e-300)));
  let s = state;
  if (!s || s.key !== key || s.width !== width || s.origin !== origin || s.n > n) {
    const cap = 2 * Math.ceil(extent / width) + 8;
    s = {
      key,
      width,
      origin,
      n: 0,
      x: new Float64Array(cap),
      y: new Float64Array(cap),
      k: 0,
      bucket: -1,
      minI: -1,
      maxI: -1,
    };
  }
  const ok = (v: number): boolean => (positive ? v > 0 : v === v);
  const commit = (st: GrowingState, i: number): void => {
    if (st.k >= st.x.length) {
      const x = new Float64Array(st.x.length * 2);
      const y = new Float64Array(st.y.length * 2);
      x.set(st.x);
      y.set(st.y);
      st.x = x;
      st.y = y;
    }
    st.x[st.k] = xs[i]!;
    st.y[st.k++] = ys[i]!;
  };
  for (let i = s.n; i < n; i++) {
    const v = ys[i]!;
    if (!ok(v)) continue;
    const b = Math.floor((xs[i]! - origin) / width);
    if (b !== s.bucket) {
      if (s.minI >= 0) {
        commit(s, Math.min(s.minI, s.maxI));
        if (s.minI !== s.maxI) commit(s, Math.max(s.minI, s.maxI));
      }
      s.bucket = b;
      s.minI = s.maxI = i;
    } else if (v < ys[s.minI]!) s.minI = i;
    else if (v > ys[s.maxI]!) s.maxI = i;
  }
  s.n = n;
  // Closed buckets, then the open one and the latest point (both may still change).
  const open: number[] = [];
  if (s.minI >= 0) {
    open.push(Math.min(s.minI, s.maxI));
    if (s.minI !== s.maxI) open.push(Math.max(s.minI, s.maxI));
  }
  let last = n - 1;
  while (last >= 0 && !ok(ys[last]!)) last--;
  if (last >= 0 && last > (open[open.length - 1] ?? -1)) open.push(last);
  const x = new Float64Array(s.k + open.length);
  const y = new Float64Array(s.k + open.length);
  x.set(s.x.subarray(0, s.k));
  y.set(s.y.subarray(0, s.k));
  open.forEach((i, j) => {
    x[s.k + j] = xs[i]!;
    y[s.k + j] = ys[i]!;
  });
  return { state: s, points: { x, y } };
}

/**
 * Debiased exponential moving average (as TensorBoard draws it), extended incrementally: call
 * with the same `state` as the series grows; NaN values stay NaN and do not move the average.
 */
export interface EmaState {
  alpha: number;
  n: number;
  last: number;
  weight: number;
  out: Float64Array;
}

export function emaInto(
  state: EmaState | undefined,
  alpha: number,
  ys: ArrayLike<number>,
  n: number,
): EmaState {
  let s = state;
  if (!s || s.alpha !== alpha || s.n > n)
    s = { alpha, n: 0, last: 0, weight: 0, out: new Float64Array(Math.max(16, n)) };
  if (s.out.length < n) {
    const grown = new Float64Array(Math.max(n, s.out.length * 2));
    grown.set(s.out.subarray(0, s.n));
    s.out = grown;
  }
  let { last, weight } = s;
  const out = s.out;
  for (let i = s.n; i < n; i++) {
    const v = ys[i]!;
    if (v !== v) {
      out[i] = NaN;
      continue;
    }
    last = last * alpha + (1 - alpha) * v;
    weight = weight * alpha + (1 - alpha);
    out[i] = last / weight;
  }
  s.last = last;
  s.weight = weight;
  s.n = n;
  return s;
}
