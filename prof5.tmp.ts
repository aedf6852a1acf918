import * as tf from '@tensorflow/tfjs';
import { initBackend } from './src/backend.js';
import { inverseSpd } from './src/optim/inverseSpd.js';
await initBackend('wasm');
const time = async (label: string, f: () => tf.TensorContainer, n = 30) => {
  for (let i = 0; i < 3; i++) tf.dispose(f());
  const t = performance.now();
  for (let i = 0; i < n; i++) { const r = f(); const first = (Array.isArray(r) ? r[0] : r) as tf.Tensor; await first.data(); tf.dispose(r); }
  console.log(label, ((performance.now() - t) / n).toFixed(2), 'ms');
};
const k = 32, pairs = k * (k + 1) / 2;
const aa = tf.randomNormal([pairs, 785]) as tf.Tensor2D, P = tf.randomUniform([785, 512]) as tf.Tensor2D, dd = tf.randomNormal([pairs, 512]) as tf.Tensor2D;
await time('matMul(aa, P) 528x785x512', () => tf.matMul(aa, P));
await time('matMul(aa^T, dd) 785x528x512', () => tf.matMul(aa, dd, true, false));
await time('matMul(transpose(aa), dd)', () => tf.matMul(tf.transpose(aa), dd));
const s = tf.tidy(() => tf.add(tf.matMul(tf.randomNormal([k, k]), tf.randomNormal([k, k]), false, true), tf.mul(tf.eye(k), 5))) as tf.Tensor2D;
await time('inverseSpd 32 (30 NS)', () => inverseSpd(s, 30));
const p = tf.randomUniform([785, 512]); const R = tf.randomUniform([785, 512]);
await time('posterior 4 ops', () => tf.clipByValue(tf.sub(p, tf.mul(tf.square(p), R)), 1e-8, 3e38));
await time('prior 3 ops', () => tf.div(p, tf.add(tf.mul(p, 0.3), 0.999)));
