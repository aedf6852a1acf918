import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend.js';
import { newtonSchulzInverse } from '../src/curvature/newtonSchulz.js';
import { spd, relErr } from './spd.js';
await initBackend('wasm');
for (const [d, cond] of [[64, 1e2], [64, 1e4], [16,1e4]] as const) {
  const { m, inv } = spd(d, cond, 1, 3);
  const mt = tf.tensor2d(m);
  const line: string[] = [];
  for (let k = 8; k <= 26; k++) {
    const res = await newtonSchulzInverse(mt, { maxIterations: k, tolerance: 1e-12, checkEvery: 1000 });
    line.push(`${k}:${res.residual.toExponential(1)}/${relErr(await res.inverse.data(), inv).toExponential(1)}`);
    res.inverse.dispose();
  }
  console.log(d, cond, line.join(' '));
  mt.dispose();
}
