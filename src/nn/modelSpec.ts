import { GrngError } from '../errors.js';
import { ACTIVATIONS, type Activation } from './activations.js';

/** One layer of a model description (a `cnn:` spec or a JSON model file). */
export type LayerSpec =
  | { readonly type: 'dense'; readonly units: number; readonly activation?: Activation }
  | {
      readonly type: 'conv2d';
      readonly filters: number;
      readonly kernelSize: readonly [number, number];
      readonly strides?: readonly [number, number];
      readonly padding?: 'same' | 'valid';
      readonly activation?: Activation;
    }
  | {
      readonly type: 'maxPool' | 'avgPool';
      readonly poolSize: readonly [number, number];
      readonly strides?: readonly [number, number];
      readonly padding?: 'same' | 'valid';
    }
  | { readonly type: 'flatten' }
  /** Token ids [positions] → token plus learned positional embedding [positions, width]. */
  | { readonly type: 'embedding'; readonly vocabulary: number; readonly width: number }
  /** A pre-norm causal self-attention and MLP block; MLP hidden width default 4·width. */
  | { readonly type: 'transformerBlock'; readonly heads: number; readonly hidden?: number }
  /** Layer norm over the last axis, learned scale and shift. */
  | { readonly type: 'layerNorm' };

/**
 * A model as a list of layers over an input shape: what `cnn:` specs and JSON model files
 * describe. Defaults: conv `same` padding, stride 1; pooling stride = pool size, `valid` padding
 * (PyTorch's MaxPool2d); relu after hidden conv and dense layers, identity after the last.
 */
export interface ModelSpec {
  /** Shape of one example, e.g. [28, 28, 1] (height, width, channels). */
  readonly inputShape: readonly number[];
  readonly layers: readonly LayerSpec[];
}

const GRAMMAR =
  'cnn:HxWxC-TOKEN-...-CLASSES[:activation], tokens cFkK[sS][v] (conv F filters K×K or KxK2, ' +
  'stride S, v = valid padding), pN[sS] (max pool), aN[sS] (average pool), dN (dense), e.g. ' +
  'cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10';

/**
 * Parses the CLI's convolutional model spec (grammar in the README, "Model specs"):
 * `cnn:28x28x1-c32k3-p2-c64k3-p2-d128-10` is input 28×28×1, conv 32 filters 3×3 (same padding),
 * max pool 2, conv 64 3×3, max pool 2, dense 128, 10 outputs. A flatten layer goes before the
 * first dense layer that follows an image-shaped one. Each malformed part is a GrngError naming
 * it.
 *
 * @example
 * parseCnnSpec('cnn:28x28x1-c32k3-p2-d128-10').layers.length; // 5 (conv, pool, flatten, dense, dense)
 */
export function parseCnnSpec(spec: string): ModelSpec {
  const fail = (problem: string): never => {
    throw new GrngError(
      'invalid-model',
      `invalid model spec ${JSON.stringify(spec)}: ${problem} (expected ${GRAMMAR})`,
      {
        option: 'model',
        value: spec,
      },
    );
  };
  const parts = spec.trim().split(':');
  if (parts[0] !== 'cnn') fail(`unknown model kind ${JSON.stringify(parts[0])}`);
  if (parts.length > 3) fail(`${parts.length - 1} ":" separators, at most 2`);
  if (parts.length === 3 && !(ACTIVATIONS as readonly string[]).includes(parts[2]!)) {
    fail(`unknown activation ${JSON.stringify(parts[2])} (one of ${ACTIVATIONS.join(', ')})`);
  }
  const hidden = (parts[2] ?? 'relu') as Activation;
  const tokens = (parts[1] ?? '').split('-');
  if (tokens.length < 2 || tokens[0] === '')
    fail('needs an input shape and at least the output size');
  const shapeText = tokens[0]!;
  if (!/^\d+x\d+x\d+$/.test(shapeText))
    fail(`the input shape ${JSON.stringify(shapeText)} is not HxWxC (e.g. 28x28x1)`);
  const inputShape = shapeText.split('x').map(Number);
  if (inputShape.some((d) => d < 1)) fail(`the input shape ${shapeText} has a zero dimension`);
  const layers: LayerSpec[] = [];
  let flat = false;
  tokens.slice(1).forEach((token, i) => {
    const which = `part ${i + 2} ${JSON.stringify(token)}`;
    const last = i === tokens.length - 2;
    const positive = (text: string | undefined, what: string): number => {
      const value = Number(text);
      if (text === undefined || !/^\d+$/.test(text) || value < 1)
        fail(`${which}: ${what} must be a whole number ≥ 1`);
      return value;
    };
    if (token === '') fail(`${which} is empty (two "-" in a row, or one at an end)`);
    if (last) {
      if (!/^\d+$/.test(token))
        fail(`the last part ${JSON.stringify(token)} must be the number of outputs (classes)`);
      if (!flat) layers.push({ type: 'flatten' });
      layers.push({
        type: 'dense',
        units: positive(token, 'the number of outputs'),
        activation: 'identity',
      });
      return;
    }
    let m: RegExpMatchArray | null;
    if ((m = token.match(/^c(\d+)k(\d+)(?:x(\d+))?(?:s(\d+))?(v?)$/))) {
      if (flat) fail(`${which}: a convolution after a dense layer`);
      const kh = positive(m[2], 'the kernel size');
      const stride = m[4] === undefined ? 1 : positive(m[4], 'the stride');
      layers.push({
        type: 'conv2d',
        filters: positive(m[1], 'the number of filters'),
        kernelSize: [kh, m[3] === undefined ? kh : positive(m[3], 'the kernel width')],
        strides: [stride, stride],
        padding: m[5] === 'v' ? 'valid' : 'same',
        activation: hidden,
      });
    } else if ((m = token.match(/^([pa])(\d+)(?:s(\d+))?$/))) {
      if (flat) fail(`${which}: pooling after a dense layer`);
      const size = positive(m[2], 'the pool size');
      const stride = m[3] === undefined ? size : positive(m[3], 'the stride');
      layers.push({
        type: m[1] === 'p' ? 'maxPool' : 'avgPool',
        poolSize: [size, size],
        strides: [stride, stride],
        padding: 'valid',
      });
    } else if ((m = token.match(/^d(\d+)$/))) {
      if (!flat) layers.push({ type: 'flatten' });
      flat = true;
      layers.push({
        type: 'dense',
        units: positive(m[1], 'the number of units'),
        activation: hidden,
      });
    } else {
      fail(`${which} is not a layer (cFkK conv, pN max pool, aN average pool, dN dense)`);
    }
  });
  return { inputShape, layers };
}

export const GPT_GRAMMAR =
  'gpt:L<blocks>-d<width>-h<heads>-ctx<context>[-m<mlp width>][-v<vocabulary>], parts in any ' +
  'order, e.g. gpt:L2-d128-h4-ctx64 (MLP width default 4·width, vocabulary default 256 bytes)';

/**
 * Parses the GPT-style model spec (grammar in the README, "Model specs"):
 * `gpt:L2-d128-h4-ctx64` is a byte-level language model over windows of 64 tokens: token and
 * positional embeddings of width 128, 2 pre-norm transformer blocks with 4 heads and an MLP of
 * 4·128, a final layer norm and a head to the 256 byte values. `-m` sets the MLP width, `-v` the
 * vocabulary. Each malformed part is a GrngError naming it.
 *
 * @example
 * parseGptSpec('gpt:L2-d128-h4-ctx64').layers.length; // 5 (embedding, 2 blocks, layer norm, head)
 */
export function parseGptSpec(spec: string): ModelSpec {
  const fail = (problem: string): never => {
    throw new GrngError(
      'invalid-model',
      `invalid model spec ${JSON.stringify(spec)}: ${problem} (expected ${GPT_GRAMMAR})`,
      { option: 'model', value: spec },
    );
  };
  const text = spec.trim();
  if (!text.startsWith('gpt:')) fail('not a gpt: spec');
  const names: Record<string, string> = {
    L: 'blocks',
    d: 'width',
    h: 'heads',
    ctx: 'context',
    m: 'mlp width',
    v: 'vocabulary',
  };
  const values: Record<string, number> = {};
  for (const part of text.slice(4).split('-')) {
    if (part === '') fail('an empty part (two "-" in a row, or one at an end)');
    const match = part.match(/^(L|d|h|ctx|m|v)(\d+)$/);
    if (!match)
      fail(`part ${JSON.stringify(part)} is not one of L<n>, d<n>, h<n>, ctx<n>, m<n>, v<n>`);
    const [, key, digits] = match!;
    if (values[key!] !== undefined) fail(`the ${names[key!]} (${key}) is given twice`);
    const value = Number(digits);
    if (value < 1 || !Number.isSafeInteger(value))
      fail(`the ${names[key!]} ${digits} must be a whole number ≥ 1`);
    values[key!] = value;
  }
  for (const key of ['L', 'd', 'h', 'ctx'])
    if (values[key] === undefined) fail(`no ${names[key]} (${key}<n>)`);
  const width = values.d!;
  const heads = values.h!;
  if (width % heads !== 0)
    fail(`the width ${width} is not a multiple of the ${heads} heads (each head gets width/heads)`);
  const vocabulary = values.v ?? 256;
  if (vocabulary < 2) fail(`the vocabulary ${vocabulary} must be at least 2`);
  const hidden = values.m ?? 4 * width;
  return {
    inputShape: [values.ctx!],
    layers: [
      { type: 'embedding', vocabulary, width },
      ...Array.from({ length: values.L! }, () => ({
        type: 'transformerBlock' as const,
        heads,
        hidden,
      })),
      { type: 'layerNorm' },
      { type: 'dense', units: vocabulary, activation: 'identity' },
    ],
  };
}

/**
 * Reads a JSON model description: `{ "inputShape": [28, 28, 1], "layers": [{ "type": "conv2d",
 * "filters": 32, "kernelSize": 3 }, { "type": "maxPool", "poolSize": 2 }, { "type": "flatten" },
 * { "type": "dense", "units": 10 }] }`. Sizes may be a number or a pair; the last layer must be
 * dense (the class logits, identity unless told). Each problem names the source, the layer and
 * the field.
 *
 * @example
 * parseModelJson(readFileSync('model.json', 'utf8'), 'model.json');
 */
export function parseModelJson(text: string, source: string): ModelSpec {
  const fail = (problem: string, context: Record<string, unknown> = {}): never => {
    throw new GrngError('invalid-model', `invalid model file ${source}: ${problem}`, {
      option: 'model',
      path: source,
      ...context,
    });
  };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    fail(`not JSON (${(error as Error).message})`);
  }
  if (!isObject(value)) return fail('expected an object { "inputShape": [...], "layers": [...] }');
  const unknownKey = Object.keys(value).find((k) => k !== 'inputShape' && k !== 'layers');
  if (unknownKey) fail(`unknown key ${JSON.stringify(unknownKey)} (only inputShape, layers)`);
  const inputShape = value.inputShape;
  if (
    !Array.isArray(inputShape) ||
    inputShape.length === 0 ||
    !inputShape.every((d) => Number.isInteger(d) && d >= 1)
  ) {
    fail(`inputShape must be a list of whole numbers ≥ 1, got ${JSON.stringify(inputShape)}`);
  }
  if (!Array.isArray(value.layers) || value.layers.length === 0)
    fail('layers must be a non-empty list');
  const raw = value.layers as unknown[];
  const layers = raw.map((layer, index): LayerSpec => {
    const where = `layer ${index}`;
    const bad = (field: string, expected: string, got: unknown): never =>
      fail(
        `${where} (${String((layer as { type?: unknown })?.type)}): ${field} must be ${expected}, got ${JSON.stringify(got)}`,
        {
          layer: index,
          field,
        },
      );
    if (!isObject(layer)) return bad('the layer', 'an object with a "type"', layer);
    const allow = (keys: readonly string[]): void => {
      const extra = Object.keys(layer).find((k) => k !== 'type' && !keys.includes(k));
      if (extra)
        bad(
          extra,
          `absent (a ${String(layer.type)} layer takes ${keys.join(', ') || 'nothing'})`,
          layer[extra],
        );
    };
    const count = (field: string, optional = false): number | undefined => {
      const v = layer[field];
      if (v === undefined && optional) return undefined;
      if (!Number.isInteger(v) || (v as number) < 1) bad(field, 'a whole number ≥ 1', v);
      return v as number;
    };
    const pair = (field: string, optional = false): [number, number] | undefined => {
      const v = layer[field];
      if (v === undefined && optional) return undefined;
      const list = typeof v === 'number' ? [v, v] : v;
      if (
        !Array.isArray(list) ||
        list.length !== 2 ||
        !list.every((d) => Number.isInteger(d) && d >= 1)
      ) {
        bad(field, 'a whole number ≥ 1 or a pair of them', v);
      }
      return list as [number, number];
    };
    const padding = (): 'same' | 'valid' | undefined => {
      const v = layer.padding;
      if (v !== undefined && v !== 'same' && v !== 'valid') bad('padding', '"same" or "valid"', v);
      return v as 'same' | 'valid' | undefined;
    };
    const activation = (): Activation | undefined => {
      const v = layer.activation;
      if (v !== undefined && !(ACTIVATIONS as readonly unknown[]).includes(v))
        bad('activation', `one of ${ACTIVATIONS.join(', ')}`, v);
      return v as Activation | undefined;
    };
    // exactOptionalPropertyTypes: absent, not undefined.
    const optionalFields = (fields: Record<string, unknown>): LayerSpec =>
      Object.fromEntries(
        Object.entries(fields).filter(([, v]) => v !== undefined),
      ) as unknown as LayerSpec;
    switch (layer.type) {
      case 'dense':
        allow(['units', 'activation']);
        return optionalFields({ type: 'dense', units: count('units')!, activation: activation() });
      case 'conv2d':
        allow(['filters', 'kernelSize', 'strides', 'padding', 'activation']);
        return optionalFields({
          type: 'conv2d',
          filters: count('filters')!,
          kernelSize: pair('kernelSize')!,
          strides: pair('strides', true),
          padding: padding(),
          activation: activation(),
        });
      case 'maxPool':
      case 'avgPool':
        allow(['poolSize', 'strides', 'padding']);
        return optionalFields({
          type: layer.type,
          poolSize: pair('poolSize')!,
          strides: pair('strides', true),
          padding: padding(),
        });
      case 'flatten':
        allow([]);
        return { type: 'flatten' };
      case 'embedding':
        allow(['vocabulary', 'width']);
        return { type: 'embedding', vocabulary: count('vocabulary')!, width: count('width')! };
      case 'transformerBlock':
        allow(['heads', 'hidden']);
        return optionalFields({
          type: 'transformerBlock',
          heads: count('heads')!,
          hidden: count('hidden', true),
        });
      case 'layerNorm':
        allow([]);
        return { type: 'layerNorm' };
      default:
        return bad(
          'type',
          '"dense", "conv2d", "maxPool", "avgPool", "flatten", "embedding", "transformerBlock" or "layerNorm"',
          layer.type,
        );
    }
  });
  if (layers.at(-1)!.type !== 'dense')
    fail(`the last layer must be dense (the class logits), got ${layers.at(-1)!.type}`);
  return { inputShape: inputShape as number[], layers };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
