/**
 * Float64 references for convolution in plain JavaScript, independent of tfjs and of
 * src/linalg/patches.ts: the output size and padding written from TensorFlow's rule, a direct
 * convolution loop, and helpers for explicit Fisher matrices.
 */
export type Image = number[][][]; // [H][W][C]

/** TensorFlow's rule: out = ceil(in/stride) for same (pad total split, odd one after). */
export function axisRef(
  size: number,
  k: number,
  stride: number,
  padding: 'same' | 'valid',
): { out: number; before: number } {
  if (padding === 'valid') return { out: Math.floor((size - k) / stride) + 1, before: 0 };
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + k - size, 0);
  return { out, before: Math.floor(total / 2) };
}

/** One example's homogeneous patches, [T][kh·kw·C + 1], (i, j, c) order, 1 last. */
export function patchesRef(
  x: Image,
  kh: number,
  kw: number,
  stride: [number, number],
  padding: 'same' | 'valid',
): number[][] {
  const [h, w, c] = [x.length, x[0]!.length, x[0]![0]!.length];
  const rows = axisRef(h, kh, stride[0], padding);
  const cols = axisRef(w, kw, stride[1], padding);
  const out: number[][] = [];
  for (let r = 0; r < rows.out; r++) {
    for (let q = 0; q < cols.out; q++) {
      const patch: number[] = [];
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++)
          for (let ch = 0; ch < c; ch++) {
            const y = r * stride[0] - rows.before + i;
            const z = q * stride[1] - cols.before + j;
            patch.push(y >= 0 && y < h && z >= 0 && z < w ? x[y]![z]![ch]! : 0);
          }
      patch.push(1);
      out.push(patch);
    }
  }
  return out;
}

/** s_t = Σ_i ā_{t,i} V_{i,o} with V = [kernel as (kh·kw·C)×F; bias], per location t. */
export function convRef(patches: number[][], v: number[][]): number[][] {
  return patches.map((p) => v[0]!.map((_, o) => p.reduce((sum, a, i) => sum + a * v[i]![o]!, 0)));
}

/** Σ over examples of J_nᵀ M J_n / count, J_n the Jacobian rows given per example. */
export function averageGram(jacobians: number[][][], m: number[][]): number[][] {
  const p = jacobians[0]![0]!.length;
  const f: number[][] = Array.from({ length: p }, () => new Array<number>(p).fill(0));
  for (const j of jacobians) {
    // J is (outputs)×p; M is outputs×outputs.
    const mj = m.map((row) => j[0]!.map((_, b) => row.reduce((s, v, k) => s + v * j[k]![b]!, 0)));
    for (let a = 0; a < p; a++)
      for (let b = 0; b < p; b++) {
        let sum = 0;
        for (let k = 0; k < j.length; k++) sum += j[k]![a]! * mj[k]![b]!;
        f[a]![b]! += sum / jacobians.length;
      }
  }
  return f;
}

/** Kronecker product A ⊗ B (row-major vec of a d_A×d_B matrix indexes i·d_B + o). */
export function kron(a: number[][], b: number[][]): number[][] {
  const out: number[][] = [];
  for (let i = 0; i < a.length; i++)
    for (let o = 0; o < b.length; o++) {
      const row: number[] = [];
      for (let j = 0; j < a.length; j++)
        for (let q = 0; q < b.length; q++) row.push(a[i]![j]! * b[o]![q]!);
      out.push(row);
    }
  return out;
}

/** Solves M x = b in float64 (Gaussian elimination with partial pivoting). */
export function solve(m: number[][], b: number[]): number[] {
  const n = b.length;
  const a = m.map((row, i) => [...row, b[i]!]);
  for (let c = 0; c < n; c++) {
    let pivot = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[pivot]![c]!)) pivot = r;
    [a[c], a[pivot]] = [a[pivot]!, a[c]!];
    for (let r = c + 1; r < n; r++) {
      const factor = a[r]![c]! / a[c]![c]!;
      for (let k = c; k <= n; k++) a[r]![k]! -= factor * a[c]![k]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let sum = a[r]![n]!;
    for (let k = r + 1; k < n; k++) sum -= a[r]![k]! * x[k]!;
    x[r] = sum / a[r]![r]!;
  }
  return x;
}

/** Largest |a − b| over two equally shaped nested arrays, and the largest |b|. */
export function maxError(a: unknown, b: unknown): { error: number; scale: number } {
  const fa = (a as number[]).flat(4) as number[];
  const fb = (b as number[]).flat(4) as number[];
  if (fa.length !== fb.length) throw new Error(`sizes differ: ${fa.length} vs ${fb.length}`);
  let error = 0;
  let scale = 0;
  fa.forEach((v, i) => {
    error = Math.max(error, Math.abs(v - fb[i]!));
    scale = Math.max(scale, Math.abs(fb[i]!));
  });
  return { error, scale };
}

/** A seeded uniform generator in [−1, 1). */
export function uniform(seed: number): () => number {
  let state = seed >>> 0 || 1;
  return () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return (state / 4294967296) * 2 - 1;
  };
}
