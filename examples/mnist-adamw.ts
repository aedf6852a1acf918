/**
 * Trains the MNIST reference model (mlp:784-256-10) with AdamW (η = 1e-3, λ = 1e-2, batch 128)
 * for two epochs, with a progress bar, and prints the summary table.
 * Run: npx tsx examples/mnist-adamw.ts
 */
import { formatSummaryTable, progressBar, train } from 'grng';

const summary = await train(
  {
    dataset: 'mnist',
    model: 'mlp:784-256-10',
    optimizer: 'adamw',
    optimizerOptions: { learningRate: 1e-3, weightDecay: 1e-2 },
    epochs: 2,
    batchSize: 128,
    seed: 1,
  },
  (meta) => progressBar({ total: meta.totalSteps, label: meta.optimizer }),
);
console.log(formatSummaryTable([summary]));
console.log(
  `test accuracy ${summary.testAccuracy?.toFixed(4)} (PyTorch reference on the same split: 0.898)`,
);
