/**
 * Test accuracy on the fixed MNIST split against the PyTorch reference runs of the foundation
 * issue (mlp:784-256-10, batch 128; AdamW η=1e-3 λ=1e-2 after 1/2/5 epochs; SGD momentum 0.9
 * η=0.05 after 10 epochs), over several seeds, for the default (torch) and He initialisation.
 *
 *   npx tsx bench/accuracy.ts [--seeds 3] [--backend wasm] [--json]
 */
import { train } from '../src/run/train.js';
import type { Initializer } from '../src/nn/init.js';

const args = process.argv.slice(2);
const seedCount = Number(args[args.indexOf('--seeds') + 1] ?? 3) || 3;
const backend = (
  args.includes('--backend') ? args[args.indexOf('--backend') + 1] : 'wasm'
) as 'wasm';
const cases = [
  {
    optimizer: 'adamw',
    optimizerOptions: { learningRate: 1e-3, weightDecay: 1e-2 },
    epochs: 1,
    reference: 0.876,
  },
  {
    optimizer: 'adamw',
    optimizerOptions: { learningRate: 1e-3, weightDecay: 1e-2 },
    epochs: 2,
    reference: 0.898,
  },
  {
    optimizer: 'adamw',
    optimizerOptions: { learningRate: 1e-3, weightDecay: 1e-2 },
    epochs: 5,
    reference: 0.917,
  },
  {
    optimizer: 'sgd',
    optimizerOptions: { learningRate: 0.05, momentum: 0.9 },
    epochs: 10,
    reference: 0.939,
  },
];
const results = [];
for (const init of ['torch', 'he'] as Initializer[]) {
  for (const c of cases) {
    const accuracies: number[] = [];
    for (let seed = 1; seed <= seedCount; seed++) {
      const s = await train({
        dataset: 'mnist',
        model: 'mlp:784-256-10',
        optimizer: c.optimizer,
        optimizerOptions: c.optimizerOptions,
        epochs: c.epochs,
        seed,
        init,
        backend,
      });
      accuracies.push(s.testAccuracy!);
    }
    const mean = accuracies.reduce((a, b) => a + b, 0) / accuracies.length;
    results.push({
      init,
      optimizer: c.optimizer,
      epochs: c.epochs,
      reference: c.reference,
      mean,
      accuracies,
      withinPoints: Math.abs(mean - c.reference) * 100,
    });
    if (!args.includes('--json')) {
      console.log(
        `${init.padEnd(6)} ${c.optimizer.padEnd(6)} ${String(c.epochs).padStart(2)} ep  mean ${mean.toFixed(4)}  seeds ${accuracies.map((a) => a.toFixed(4)).join(' ')}  reference ${c.reference}  Δ ${((mean - c.reference) * 100).toFixed(2)} pts`,
      );
    }
  }
}
if (args.includes('--json')) console.log(JSON.stringify(results));
