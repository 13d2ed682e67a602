import { describe, FormatError, ValueError } from '@attnkit/tensor';

export interface Tokenizer {
  readonly kind: 'char' | 'gpt2';
  readonly vocabSize: number;
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
  /** What `tokenizerFromJson` reads back (a checkpoint keeps it in its metadata). */
  toJSON(): { kind: string; chars?: string[] };
}

/** One token per character (code point) of a text: nanoGPT's shakespeare_char. */
export class CharTokenizer implements Tokenizer {
  readonly kind = 'char';
  readonly chars: string[];
  readonly #index: Map<string, number>;

  /** `chars`: the vocabulary in id order (distinct characters). */
  constructor(chars: readonly string[]) {
    if (!Array.isArray(chars) || chars.length === 0)
      throw new ValueError(
        `CharTokenizer: chars expected a non-empty array of characters, got ${describe(chars)}`,
        'chars',
      );
    this.chars = [...chars];
    this.#index = new Map();
    this.chars.forEach((ch, i) => {
      if (typeof ch !== 'string' || [...ch].length !== 1 || this.#index.has(ch))
        throw new ValueError(
          `CharTokenizer: chars[${i}] expected a distinct single character, got ${describe(ch)}`,
          'chars',
        );
      this.#index.set(ch, i);
    });
  }

  /** The sorted distinct characters of `text`. */
  static fromText(text: string): CharTokenizer {
    if (typeof text !== 'string' || text.length === 0)
      throw new ValueError(
        `CharTokenizer.fromText: text expected a non-empty string, got ${describe(text)}`,
        'text',
      );
    return new CharTokenizer([...new Set(text)].sort());
  }

  get vocabSize(): number {
    return this.chars.length;
  }

  encode(text: string): number[] {
    const out: number[] = [];
    for (const ch of text) {
      const id = this.#index.get(ch);
      if (id === undefined)
        throw new ValueError(
          `CharTokenizer.encode: text has ${JSON.stringify(ch)}, which is not in the vocabulary of ${this.vocabSize} characters`,
          'text',
        );
      out.push(id);
    }
    return out;
  }

  decode(ids: readonly number[]): string {
    return ids
      .map((id) => {
        const ch = this.chars[id];
        if (ch === undefined)
          throw new ValueError(
            `CharTokenizer.decode: ids expected integers in [0, ${this.vocabSize}), got ${describe(id)}`,
            'ids',
          );
        return ch;
      })
      .join('');
  }

  toJSON() {
    return { kind: this.kind, chars: this.chars };
  }
}

/** The subset of gpt-tokenizer's encoding API used here. */
interface BpeEncoding {
  encode(
    text: string,
    options?: { allowedSpecial?: Set<string>; disallowedSpecial?: Set<string> },
  ): number[];
  decode(ids: Iterable<number>): string;
}

/**
 * GPT-2's byte-pair encoding (r50k_base, 50257 tokens) through gpt-tokenizer, whose vocabulary
 * ships inside the npm package: nothing is downloaded. Loaded on first use (`Gpt2Tokenizer.load()`),
 * so importing @attnkit/gpt does not parse the ~50k-entry table.
 */
export class Gpt2Tokenizer implements Tokenizer {
  readonly kind = 'gpt2';
  readonly vocabSize = 50257;
  private constructor(private readonly bpe: BpeEncoding) {}

  static async load(): Promise<Gpt2Tokenizer> {
    const bpe = (await import('gpt-tokenizer/encoding/r50k_base')) as BpeEncoding;
    return new Gpt2Tokenizer(bpe);
  }

  encode(text: string): number[] {
    // <|endoftext|> in a text is text (the special token only comes from the data loader).
    return this.bpe.encode(text, { allowedSpecial: new Set(), disallowedSpecial: new Set() });
  }

  decode(ids: readonly number[]): string {
    return this.bpe.decode(ids);
  }

  toJSON() {
    return { kind: this.kind };
  }
}

/** A tokenizer back from its `toJSON()` (a checkpoint's metadata); anything else is a FormatError. */
export async function tokenizerFromJson(json: unknown): Promise<Tokenizer> {
  const j = json as { kind?: unknown; chars?: unknown };
  if (j && j.kind === 'char' && Array.isArray(j.chars)) return new CharTokenizer(j.chars);
  if (j && j.kind === 'gpt2') return Gpt2Tokenizer.load();
  throw new FormatError(
    `tokenizer: expected { kind: 'char', chars } or { kind: 'gpt2' }, got ${describe(json)}`,
    'tokenizer',
  );
}
