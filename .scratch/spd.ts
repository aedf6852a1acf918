export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
export function gaussian(r: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}
export type M = number[][];
export function orthogonal(d: number, seed: number): M {
  const g = gaussian(rng(seed));
  const q: M = [];
  for (let i = 0; i < d; i++) {
    let v = Array.from({ length: d }, g);
    for (let pass = 0; pass < 2; pass++) for (const u of q) { const dot = u.reduce((s, x, k) => s + x * v[k]!, 0); v = v.map((x, k) => x - dot * u[k]!); }
    const n = Math.hypot(...v);
    q.push(v.map((x) => x / n));
  }
  return q; // rows orthonormal
}
export function spd(d: number, cond: number, seed: number, scale = 1) {
  const q = orthogonal(d, seed);
  const lam = Array.from({ length: d }, (_, i) => scale * Math.pow(cond, -i / (d - 1)));
  const build = (f: (l: number) => number): M => Array.from({ length: d }, (_, i) => Array.from({ length: d }, (_, j) => { let s = 0; for (let k = 0; k < d; k++) s += q[k]![i]! * f(lam[k]!) * q[k]![j]!; return s; }));
  return { m: build((l) => l), inv: build((l) => 1 / l), lam };
}
export function relErr(x: ArrayLike<number>, ref: M): number {
  const d = ref.length; let num = 0, den = 0;
  for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) { const e = x[i * d + j]! - ref[i]![j]!; num += e * e; den += ref[i]![j]! ** 2; }
  return Math.sqrt(num / den);
}
