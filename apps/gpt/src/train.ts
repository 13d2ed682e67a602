import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import {
  CharTokenizer,
  DataLoader,
  GPT_ATTENTIONS,
  Gpt,
  Gpt2Tokenizer,
  type GptAttention,
  loadCheckpoint,
  presetConfig,
  saveCheckpoint,
  type Tokenizer,
} from '@attnkit/gpt';
import {
  AdamW,
  clipGradNorm,
  clipGradNormOnDevice,
  noGrad,
  scope,
  warmupCosine,
} from '@attnkit/nn';
import { describe, type Tensor, ValueError } from '@attnkit/tensor';
import { toWebGpu } from '@attnkit/webgpu';
import cliProgress from 'cli-progress';
import { openBackend } from './backend.js';
import { type LossPoint, lossCurveSvg } from './plot.js';

export interface TrainOptions {
  data: string;
  /** 'ts' | 'native' | 'webgpu'; default: the best available on the cpu (native, else ts). */
  backend?: string;
  config?: string;
  /**
   * GptConfig.attention: 'flash' (default), 'standard' (the N x N scores materialised),
   * 'sigmoid' (FlashSigmoid) or 'gla' (gated linear attention).
   */
  attention?: string;
  tokenizer?: 'char' | 'gpt2';
  /** Total steps (a resumed run continues up to this many). */
  steps?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  evalInterval?: number;
  evalIters?: number;
  out?: string;
  /** The loss curve; default: `out` with .svg for .safetensors. */
  svg?: string;
  resume?: string;
  /** Draw the progress bar (default: when stderr is a terminal). */
  progress?: boolean;
}

export interface TrainResult {
  steps: number;
  history: LossPoint[];
  /** Validation loss at the last step. */
  valLoss: number;
  /** Training throughput of this run (tokens of the train batches per second of the steps). */
  tokensPerSecond: number;
  parameters: number;
  /** The backend it ran on. */
  backend: string;
  out: string;
  svg: string;
}

/** What a resumed run must continue with: saved in the checkpoint's `extra`. */
interface RunState {
  step: number;
  steps: number;
  batchSize: number;
  lr: number;
  seed: number;
  evalInterval: number;
  evalIters: number;
  history: LossPoint[];
}

function positiveInt(name: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1)
    throw new ValueError(`--${name} expected a positive integer, got ${describe(v)}`, name);
  return v;
}

function positiveNumber(name: string, v: unknown): number {
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v))
    throw new ValueError(`--${name} expected a positive number, got ${describe(v)}`, name);
  return v;
}

/** A file the user named, or a ValueError naming the flag. */
export function checkFile(file: string, flag: string): string {
  if (!existsSync(file) || !statSync(file).isFile())
    throw new ValueError(`--${flag}: no such file ${JSON.stringify(file)}`, flag);
  return file;
}

export async function train(
  options: TrainOptions,
  log: (line: string) => void,
): Promise<TrainResult> {
  const text = readFileSync(checkFile(options.data, 'data'), 'utf8');
  const out = options.out ?? 'ckpt.safetensors';
  const svg = options.svg ?? `${out.replace(/\.safetensors$/, '')}.svg`;

  let model: Gpt;
  let tokenizer: Tokenizer;
  let state: RunState;
  let optimizerState: Record<string, Tensor> | null = null;
  if (options.resume) {
    const ck = await loadCheckpoint(
      new Uint8Array(readFileSync(checkFile(options.resume, 'resume'))),
    );
    ({ model, tokenizer } = ck);
    state = ck.extra as unknown as RunState;
    if (options.steps !== undefined) state.steps = positiveInt('steps', options.steps);
    optimizerState = ck.optimizerState;
  } else {
    if (
      options.tokenizer !== undefined &&
      options.tokenizer !== 'char' &&
      options.tokenizer !== 'gpt2'
    )
      throw new ValueError(
        `--tokenizer expected 'char' or 'gpt2', got ${describe(options.tokenizer)}`,
        'tokenizer',
      );
    tokenizer =
      options.tokenizer === 'gpt2' ? await Gpt2Tokenizer.load() : CharTokenizer.fromText(text);
    const seed = options.seed ?? 1337;
    const config = presetConfig(options.config ?? 'tiny', tokenizer.vocabSize);
    if (options.attention !== undefined) {
      if (!(GPT_ATTENTIONS as readonly string[]).includes(options.attention))
        throw new ValueError(
          `--attention expected one of ${GPT_ATTENTIONS.join(', ')}, got ${describe(options.attention)}`,
          'attention',
        );
      config.attention = options.attention as GptAttention;
    }
    model = new Gpt(config, { seed });
    state = {
      step: 0,
      steps: positiveInt('steps', options.steps ?? 200),
      batchSize: positiveInt('batch-size', options.batchSize ?? 16),
      lr: positiveNumber('lr', options.lr ?? 1e-3),
      seed,
      evalInterval: positiveInt('eval-interval', options.evalInterval ?? 50),
      evalIters: positiveInt('eval-iters', options.evalIters ?? 4),
      history: [],
    };
  }
  // After the file checks: a missing file is reported before a GPU is opened.
  const backend = await openBackend(options.backend);
  const ctx = backend.ctx;
  if (ctx) {
    model.toWebGpu(ctx);
    // AdamW's moments go where the parameters are ('step' is a host counter).
    if (optimizerState)
      optimizerState = Object.fromEntries(
        Object.entries(optimizerState).map(([k, t]) => [k, k === 'step' ? t : toWebGpu(t, ctx)]),
      );
  }
  const onDevice = (t: Tensor) => (ctx ? toWebGpu(t, ctx) : t);
  const c = model.config;
  const data = new DataLoader(tokenizer.encode(text), {
    blockSize: c.blockSize,
    batchSize: state.batchSize,
    seed: state.seed,
  });
  const opt = new AdamW(model.parameters(), { lr: state.lr, betas: [0.9, 0.99], weightDecay: 0.1 });
  if (optimizerState) opt.loadStateDict(optimizerState);
  const schedule = warmupCosine({
    lr: state.lr,
    warmup: Math.min(100, Math.ceil(state.steps / 10)),
    total: state.steps,
    minLr: state.lr / 10,
  });
  log(
    `attnkit-gpt train: ${model.numParameters()} parameters (${c.nLayer} layers, ${c.nHead} heads, ${c.nKvHead} kv heads, ${c.nEmbd} wide, context ${c.blockSize}, ${c.attention} attention, vocab ${c.vocabSize}, ${tokenizer.kind}), backend ${backend.label}, steps ${state.step} -> ${state.steps}, batch ${state.batchSize}`,
  );

  // One batch's loss, read back (a GPU's once its work is done); `learn`: the training step
  // (backward, clipping, AdamW) too. The scope frees the step's intermediates.
  const lossOf = async (split: 'train' | 'val', i: number, learn: boolean) => {
    const batch = data.batch(split, i);
    const [x, y] = [onDevice(batch.x), onDevice(batch.y)];
    const loss = scope(() => {
      if (!learn) return noGrad(() => model.forward(x, y).loss!.data);
      const l = model.forward(x, y).loss!;
      l.backward();
      if (ctx) clipGradNormOnDevice(model.parameters(), 1)?.dispose();
      else clipGradNorm(model.parameters(), 1);
      opt.step();
      return l.data;
    });
    const value = (await loss.toCpu()).toFloat64Array()[0]!;
    if (ctx) for (const t of [loss, x, y]) t.dispose();
    return value;
  };
  // The same val batches every time: evaluations differ by the model alone.
  const valLoss = async () => {
    model.eval();
    let sum = 0;
    for (let i = 0; i < state.evalIters; i++) sum += await lossOf('val', i, false);
    model.train();
    return sum / state.evalIters;
  };
  const save = async () => {
    writeFileSync(
      out,
      await saveCheckpoint({ model, tokenizer, optimizer: opt, extra: { ...state } }),
    );
    writeFileSync(svg, await lossCurveSvg(state.history));
  };

  const tokensPerStep = state.batchSize * c.blockSize;
  const bar = new cliProgress.SingleBar(
    {
      format: 'step {value}/{total} |{bar}| loss {loss} | {tps} tok/s | ETA {eta_formatted}',
      etaBuffer: 20,
      noTTYOutput: false,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  const showBar = options.progress ?? process.stderr.isTTY === true;
  if (showBar) bar.start(state.steps, state.step, { loss: '-', tps: '-' });
  let stepSeconds = 0;
  let stepsRun = 0;
  let last = Number.NaN;
  try {
    while (state.step < state.steps) {
      const step = state.step;
      const t0 = performance.now();
      opt.lr = schedule(step);
      model.reseedDropout(step);
      opt.zeroGrad();
      last = await lossOf('train', step, true);
      stepSeconds += (performance.now() - t0) / 1000;
      stepsRun++;
      state.step = step + 1;
      const point: LossPoint = { step: state.step, train: last };
      if (state.step % state.evalInterval === 0 || state.step === state.steps)
        point.val = await valLoss();
      state.history.push(point);
      if (showBar)
        bar.update(state.step, {
          loss: last.toFixed(4),
          tps: Math.round((stepsRun * tokensPerStep) / stepSeconds),
        });
      if (point.val !== undefined) {
        await save();
        // Without a terminal (a log, CI) each evaluation is a line instead of the bar (the last
        // one is the summary below).
        if (!showBar && state.step < state.steps)
          log(
            `step ${state.step}: train loss ${last.toFixed(4)}, val loss ${point.val.toFixed(4)}, ${Math.round((stepsRun * tokensPerStep) / stepSeconds)} tokens/s`,
          );
      }
    }
  } finally {
    if (showBar) bar.stop();
  }
  const lastVal =
    [...state.history].reverse().find((p) => p.val !== undefined)?.val ?? (await valLoss());
  if (stepsRun === 0) await save();
  const tokensPerSecond = stepsRun > 0 ? (stepsRun * tokensPerStep) / stepSeconds : 0;
  if (ctx) {
    // The run's GPU state (weights, gradients, AdamW's moments) goes back before the device.
    opt.zeroGrad();
    for (const t of Object.values(opt.stateDict())) t.dispose();
    for (const p of model.parameters()) p.data.dispose();
    ctx.destroy();
  }
  log(
    `step ${state.step}: train loss ${last.toFixed(4)}, val loss ${lastVal.toFixed(4)}, ${Math.round(tokensPerSecond)} tokens/s (${backend.name}); wrote ${out} and ${svg}`,
  );
  return {
    steps: state.step,
    history: state.history,
    valLoss: lastVal,
    tokensPerSecond,
    parameters: model.numParameters(),
    backend: backend.name,
    out,
    svg,
  };
}
