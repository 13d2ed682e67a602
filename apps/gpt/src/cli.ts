import { parseArgs } from 'node:util';
import { AttnkitError } from '@attnkit/tensor';
import { sample } from './sample.js';
import { train } from './train.js';

export interface CliIo {
  /** Text as it comes (sampled tokens: no newline added). */
  write(text: string): void;
  /** A line of progress or an error. */
  err(line: string): void;
}

const processIo: CliIo = {
  write: (t) => process.stdout.write(t),
  err: (l) => process.stderr.write(`${l}\n`),
};

export const USAGE = `attnkit-gpt: train a GPT on a text file and sample from it (@attnkit/gpt on @attnkit/nn)

  attnkit-gpt train --data FILE [--backend ts|native|webgpu] [--config tiny|small|gpt2]
                    [--tokenizer char|gpt2] [--attention flash|standard|sigmoid|gla]
                    [--steps N] [--batch-size N] [--lr X] [--seed N] [--eval-interval N]
                    [--eval-iters N] [--out ckpt.safetensors] [--svg loss.svg] [--resume ckpt]
      Trains from scratch (or continues --resume's run up to --steps), drawing a progress bar
      (step, loss, tokens/s, ETA); every --eval-interval steps and at the end it measures the
      validation loss and writes the checkpoint (model, AdamW state, tokenizer, run state) and
      the loss curve (SVG). --backend: nn's kernels to run on (default: the best available on
      the cpu, native when its engine loads, else ts; webgpu is a GPU through Dawn); a
      checkpoint from one backend loads on any other. --attention: softmax on FlashAttention-2
      (flash) or materialised (standard), sigmoid attention (sigmoid), or gated linear
      attention layers (gla). Defaults: --config tiny, --tokenizer char, --attention flash,
      --steps 200,
      --batch-size 16, --lr 1e-3, --out ckpt.safetensors, --svg the --out name with .svg.

  attnkit-gpt sample --ckpt FILE [--backend ts|native|webgpu] [--prompt TEXT] [--tokens N]
                     [--temperature X] [--top-k N] [--seed N] [--no-cache]
      Streams N (default 200) new tokens after the prompt to stdout as they are drawn, decoding
      with the paged KV cache (--no-cache recomputes the whole context every token).
`;

const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));

export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === 'train') {
      const { values } = parseArgs({
        args: rest,
        options: {
          data: { type: 'string' },
          backend: { type: 'string' },
          config: { type: 'string' },
          attention: { type: 'string' },
          tokenizer: { type: 'string' },
          steps: { type: 'string' },
          'batch-size': { type: 'string' },
          lr: { type: 'string' },
          seed: { type: 'string' },
          'eval-interval': { type: 'string' },
          'eval-iters': { type: 'string' },
          out: { type: 'string' },
          svg: { type: 'string' },
          resume: { type: 'string' },
        },
      });
      if (values.data === undefined) {
        io.err(`attnkit-gpt train: --data FILE is required\n\n${USAGE}`);
        return 2;
      }
      const opts = {
        data: values.data,
        backend: values.backend,
        config: values.config,
        attention: values.attention,
        tokenizer: values.tokenizer as 'char' | 'gpt2' | undefined,
        steps: num(values.steps),
        batchSize: num(values['batch-size']),
        lr: num(values.lr),
        seed: num(values.seed),
        evalInterval: num(values['eval-interval']),
        evalIters: num(values['eval-iters']),
        out: values.out,
        svg: values.svg,
        resume: values.resume,
      };
      await train(
        Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as typeof opts,
        io.err,
      );
      return 0;
    }
    if (command === 'sample') {
      const { values } = parseArgs({
        args: rest,
        options: {
          ckpt: { type: 'string' },
          backend: { type: 'string' },
          prompt: { type: 'string' },
          tokens: { type: 'string' },
          temperature: { type: 'string' },
          'top-k': { type: 'string' },
          seed: { type: 'string' },
          'no-cache': { type: 'boolean' },
        },
      });
      if (values.ckpt === undefined) {
        io.err(`attnkit-gpt sample: --ckpt FILE is required\n\n${USAGE}`);
        return 2;
      }
      const opts = {
        ckpt: values.ckpt,
        backend: values.backend,
        prompt: values.prompt,
        tokens: num(values.tokens),
        temperature: num(values.temperature),
        topK: num(values['top-k']),
        seed: num(values.seed),
        cache: values['no-cache'] ? false : undefined,
      };
      await sample(
        Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as typeof opts,
        io.write,
      );
      io.write('\n');
      return 0;
    }
    io.err(
      command === undefined || command === '--help' || command === 'help'
        ? USAGE
        : `attnkit-gpt: unknown command ${JSON.stringify(command)}\n\n${USAGE}`,
    );
    return command === undefined || command === '--help' || command === 'help' ? 0 : 2;
  } catch (e) {
    // Our typed errors (a missing file, a bad flag or config) and parseArgs' own: one clear line.
    if (e instanceof AttnkitError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`attnkit-gpt ${command}: ${(e as Error).name}: ${(e as Error).message}`);
      return 2;
    }
    throw e;
  }
}
