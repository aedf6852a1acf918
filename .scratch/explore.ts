import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend.js';
import { newtonSchulzInverse } from '../src/curvature/newtonSchulz.js';
import { spd, relErr } from './spd.js';
await initBackend((process.env.B as 'wasm') ?? 'wasm');
for (const d of [16, 64, 128]) for (const cond of [1e2, 1e3, 1e4, 1e5]) for (const seed of [1, 2, 3]) {
  const { m, inv } = spd(d, cond, seed, 3);
  const mt = tf.tensor2d(m);
  // float64 inverse of the float32-rounded matrix is approximated by inv; also compute error due to rounding M
  const res = await newtonSchulzInverse(mt, { maxIterations: 40 , tolerance: 1e-7});
  const x = await res.inverse.data();
  console.log(d, cond, seed, 'iters', res.iterations, 'resid', res.residual.toExponential(2), 'relErr', relErr(x, inv).toExponential(2));
  tf.dispose([mt, res.inverse]);
}
