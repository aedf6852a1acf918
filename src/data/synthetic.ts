import seedrandom from 'seedrandom';
import { checkInteger, checkKeys, checkNumber } from '../validate.js';
import { validateDataset, type Dataset, type Split } from './dataset.js';

export interface SyntheticOptions {
  /** Input width; default 20. */
  readonly features?: number;
  /** Number of classes; default 4. */
  readonly classes?: number;
  /** Hidden width of the random teacher network; default 32. */
  readonly teacherHidden?: number;
  /** Training rows; default 2048. */
  readonly train?: number;
  /** Test rows; default 512. */
  readonly test?: number;
  /** Share of training labels replaced by a random class (label noise); default 0. */
  readonly labelNoise?: number;
  /** Seed of the teacher and of the inputs; default 1. */
  readonly seed?: number;
}

/**
 * A teacher–student classification set: inputs x ~ N(0, I), labels the arg-max of a random
 * one-hidden-layer tanh teacher network. Learnable by an MLP but not linearly separable;
 * deterministic for a seed; built on the host in plain JavaScript, so it is instant.
 *
 * @example
 * const data = syntheticDataset({ features: 8, classes: 3, seed: 7 });
 */
export function syntheticDataset(options: SyntheticOptions = {}): Dataset {
  checkKeys('synthetic dataset', options, [
    'features',
    'classes',
    'teacherHidden',
    'train',
    'test',
    'labelNoise',
    'seed',
  ]);
  const features = checkInteger('synthetic features', options.features ?? 20, 1);
  const classes = checkInteger('synthetic classes', options.classes ?? 4, 2);
  const hidden = checkInteger('synthetic teacherHidden', options.teacherHidden ?? 32, 1);
  const nTrain = checkInteger('synthetic train', options.train ?? 2048, 1);
  const nTest = checkInteger('synthetic test', options.test ?? 512, 1);
  const noise = checkNumber('synthetic labelNoise', options.labelNoise ?? 0, { min: 0, max: 1 });
  const seed = checkInteger('synthetic seed', options.seed ?? 1, 0);
  const rng = seedrandom(`grng-synthetic-${seed}`);
  const gauss = (): number => {
    // Box–Muller: two uniforms give one standard normal.
    const u = 1 - rng();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng());
  };
  const w1 = Float64Array.from({ length: features * hidden }, () => gauss() / Math.sqrt(features));
  const w2 = Float64Array.from(
    { length: hidden * classes },
    () => (gauss() * 2) / Math.sqrt(hidden),
  );
  const make = (n: number, flip: number): Split => {
    const x = new Float32Array(n * features);
    const y = new Int32Array(n);
    const h = new Float64Array(hidden);
    for (let i = 0; i < n; i++) {
      for (let f = 0; f < features; f++) x[i * features + f] = gauss();
      h.fill(0);
      for (let f = 0; f < features; f++) {
        const xf = x[i * features + f]!;
        for (let j = 0; j < hidden; j++) h[j]! += xf * w1[f * hidden + j]!;
      }
      let best = 0;
      let bestScore = -Infinity;
      for (let c = 0; c < classes; c++) {
        let score = 0;
        for (let j = 0; j < hidden; j++) score += Math.tanh(h[j]!) * w2[j * classes + c]!;
        if (score > bestScore) [best, bestScore] = [c, score];
      }
      y[i] = rng() < flip ? Math.floor(rng() * classes) : best;
    }
    return { x, y, n };
  };
  return validateDataset({
    name: 'synthetic',
    features,
    classes,
    train: make(nTrain, noise),
    test: make(nTest, 0),
    description: `teacher-student: x~N(0,I_${features}), y=argmax tanh-MLP(${features}-${hidden}-${classes}) seed ${seed}, ${nTrain} train / ${nTest} test, label noise ${noise}`,
  });
}
