/**
 * Float64 reference computations in plain JavaScript, independent of tfjs, for tiny networks:
 * forward pass, mean softmax cross-entropy, and central finite differences.
 */
export type Matrix = number[][];

export interface RefLayer {
  kernel: Matrix; // in×out
  bias: number[];
  activation: 'relu' | 'tanh' | 'gelu' | 'identity';
}

function erf(x: number): number {
  // Abramowitz & Stegun 7.1.26 refined by one Newton-free series switch: |error| < 1.2e-7.
  const sign = Math.sign(x);
  const ax = Math.abs(x);
  if (ax < 2) {
    // Maclaurin series converges fast here and is accurate to ~1e-15.
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 60; n++) {
      term *= (-ax * ax) / n;
      sum += term / (2 * n + 1);
    }
    return (sign * 2 * sum) / Math.sqrt(Math.PI);
  }
  const t = 1 / (1 + 0.3275911 * ax);
  const y =
    1 -
    ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) *
      t *
      Math.exp(-ax * ax);
  return sign * y;
}

export function act(kind: RefLayer['activation'], s: number): number {
  switch (kind) {
    case 'relu':
      return Math.max(0, s);
    case 'tanh':
      return Math.tanh(s);
    case 'gelu':
      return 0.5 * s * (1 + erf(s / Math.SQRT2));
    case 'identity':
      return s;
  }
}

export function forward(layers: RefLayer[], x: Matrix): Matrix {
  let a = x;
  for (const layer of layers) {
    a = a.map((row) =>
      layer.bias.map((b, o) =>
        act(layer.activation, b + row.reduce((sum, v, i) => sum + v * layer.kernel[i]![o]!, 0)),
      ),
    );
  }
  return a;
}

export function crossEntropy(logits: Matrix, labels: number[]): number {
  let total = 0;
  logits.forEach((z, i) => {
    const max = Math.max(...z);
    const lse = max + Math.log(z.reduce((s, v) => s + Math.exp(v - max), 0));
    total += lse - z[labels[i]!]!;
  });
  return total / logits.length;
}

/** Central finite difference of f with respect to every entry of every parameter. */
export function finiteDifferences(
  layers: RefLayer[],
  f: () => number,
  h = 1e-6,
): Array<{ kernel: Matrix; bias: number[] }> {
  const diff = (get: () => number, set: (v: number) => void): number => {
    const v = get();
    set(v + h);
    const up = f();
    set(v - h);
    const down = f();
    set(v);
    return (up - down) / (2 * h);
  };
  return layers.map((layer) => ({
    kernel: layer.kernel.map((row) =>
      row.map((_, o) =>
        diff(
          () => row[o]!,
          (v) => (row[o] = v),
        ),
      ),
    ),
    bias: layer.bias.map((_, o) =>
      diff(
        () => layer.bias[o]!,
        (v) => (layer.bias[o] = v),
      ),
    ),
  }));
}

export function maxRelativeError(a: number[], b: number[]): number {
  const scale = Math.max(1e-3, ...b.map(Math.abs));
  return Math.max(...a.map((v, i) => Math.abs(v - b[i]!) / scale));
}
