import { GrngError, isGrngError } from '../errors.js';
import type { Initializer } from '../nn/init.js';
import type { Sequential } from '../nn/sequential.js';
import { generateTokens, modelFromCheckpoint } from '../run/generate.js';
import { resolveModel, tokenContext } from '../run/options.js';
import { initBackend, type BackendChoice } from '../runtime/backend.js';
import type { CliIo } from './io.js';
import { checkCheckpointDir } from './modelCommands.js';
import { loadSavedModel } from '../run/savedModel.js';

/** Flags of `grng generate`, as commander parses them. */
export interface GenerateCommandOptions {
  readonly checkpoint?: string;
  readonly model?: string;
  readonly prompt: string;
  readonly tokens: number;
  readonly temperature: number;
  readonly seed: number;
  readonly init: Initializer;
  readonly backend: BackendChoice;
  readonly wasmThreads?: number;
}

/**
 * Prints the prompt, then each sampled byte as it comes (decoded as UTF-8, a split character
 * printed once whole), then a newline. The model is a checkpoint's, or an untrained one from
 * --model (seeded by --seed: for trying the command, not for reading).
 */
export async function runGenerateCommand(
  options: GenerateCommandOptions,
  io: CliIo,
): Promise<void> {
  if ((options.checkpoint === undefined) === (options.model === undefined))
    throw new GrngError(
      'invalid-option',
      '--checkpoint DIR (a trained run) or --model gpt:... (untrained) names the model: give one of them',
      { option: 'checkpoint' },
    );
  if (options.checkpoint !== undefined) checkCheckpointDir(options.checkpoint);
  // The model is checked before the backend starts (seconds for some): a wrong spec fails fast.
  const spec = options.model === undefined ? undefined : tokenModelSpec(options.model);
  await initBackend(
    options.backend,
    options.wasmThreads === undefined ? {} : { wasmThreads: options.wasmThreads },
  );
  let model: Sequential;
  if (spec) {
    // A saved model (grng export, --save-model) keeps its weights; a spec is seeded.
    model = (await loadSavedModel({ model: options.model, seed: options.seed, init: options.init }))
      .model;
  } else {
    try {
      model = modelFromCheckpoint(options.checkpoint!);
    } catch (error) {
      // Named by the flag here: the checkpoint reader's errors name --resume, train's flag.
      if (isGrngError(error))
        throw new GrngError(
          error.code,
          `--checkpoint ${options.checkpoint}: ${error.message}`,
          { ...error.context, option: 'checkpoint' },
          { cause: error },
        );
      throw error;
    }
  }
  try {
    // A prompt byte past a small vocabulary (gpt:...-v128) is found by the first model call, so
    // the prompt is printed only once the sampling has started.
    let printed = false;
    const decoder = new TextDecoder();
    for await (const byte of withFlagNames(
      generateTokens(model, {
        prompt: options.prompt,
        tokens: options.tokens,
        temperature: options.temperature,
        seed: options.seed,
      }),
    )) {
      if (!printed) io.out(options.prompt);
      printed = true;
      const text = decoder.decode(Uint8Array.of(byte), { stream: true });
      if (text) io.out(text);
    }
    io.out(`${decoder.decode()}\n`);
  } finally {
    model.dispose();
  }
}

/** generateTokens names its options (`invalid prompt: …`); here they are flags (`--prompt`). */
async function* withFlagNames(bytes: AsyncGenerator<number>): AsyncGenerator<number> {
  try {
    yield* bytes;
  } catch (error) {
    const option = isGrngError(error) ? error.context.option : undefined;
    if (
      isGrngError(error) &&
      typeof option === 'string' &&
      error.message.startsWith(`invalid ${option}:`)
    )
      throw new GrngError(
        error.code,
        `invalid --${option}${error.message.slice(`invalid ${option}`.length)}`,
        { ...error.context },
        { cause: error },
      );
    throw error;
  }
}

function tokenModelSpec(
  model: string,
): NonNullable<ReturnType<typeof resolveModel>['layered']>['spec'] {
  const { layered } = resolveModel(model);
  if (!layered || tokenContext(layered.spec) === undefined)
    throw new GrngError(
      'invalid-model',
      `--model ${model} is not a token model: generate needs one such as gpt:L2-d128-h4-ctx64`,
      { option: 'model', value: model },
    );
  return layered.spec;
}
