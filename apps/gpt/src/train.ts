import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import {
  CharTokenizer,
  DataLoader,
  Gpt,
  Gpt2Tokenizer,
  loadCheckpoint,
  presetConfig,
  saveCheckpoint,
  type Tokenizer,
} from '@attnkit/gpt';
import { AdamW, clipGradNorm, noGrad, setDeviceBackend, warmupCosine } from '@attnkit/nn';
import { describe, type Tensor, ValueError } from '@attnkit/tensor';
import cliProgress from 'cli-progress';
import { type LossPoint, lossCurveSvg } from './plot.js';

export interface TrainOptions {
  data: string;
  backend?: string;
  config?: string;
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
  const backend = options.backend ?? 'ts';
  if (backend !== 'ts')
    throw new ValueError(
      `--backend expected 'ts' (nn has only ts kernels today; native and webgpu come with them), got ${describe(backend)}`,
      'backend',
    );
  // nn runs cpu tensors on its native backend by default when the engine loads: the flag says ts.
  setDeviceBackend('cpu', backend);
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
    model = new Gpt(presetConfig(options.config ?? 'tiny', tokenizer.vocabSize), { seed });
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
    `attnkit-gpt train: ${model.numParameters()} parameters (${c.nLayer} layers, ${c.nHead} heads, ${c.nKvHead} kv heads, ${c.nEmbd} wide, context ${c.blockSize}, vocab ${c.vocabSize}, ${tokenizer.kind}), backend ts, steps ${state.step} -> ${state.steps}, batch ${state.batchSize}`,
  );

  // The same val batches every time: evaluations differ by the model alone.
  const valLoss = () =>
    noGrad(() => {
      model.eval();
      let sum = 0;
      for (let i = 0; i < state.evalIters; i++) {
        const { x, y } = data.batch('val', i);
        sum += model.forward(x, y).loss!.item();
      }
      model.train();
      return sum / state.evalIters;
    });
  const save = async () => {
    writeFileSync(out, saveCheckpoint({ model, tokenizer, optimizer: opt, extra: { ...state } }));
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
      const { x, y } = data.batch('train', step);
      const { loss } = model.forward(x, y);
      loss!.backward();
      clipGradNorm(model.parameters(), 1);
      opt.step();
      last = loss!.item();
      stepSeconds += (performance.now() - t0) / 1000;
      stepsRun++;
      state.step = step + 1;
      const point: LossPoint = { step: state.step, train: last };
      if (state.step % state.evalInterval === 0 || state.step === state.steps)
        point.val = valLoss();
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
  const lastVal = [...state.history].reverse().find((p) => p.val !== undefined)?.val ?? valLoss();
  if (stepsRun === 0) await save();
  const tokensPerSecond = stepsRun > 0 ? (stepsRun * tokensPerStep) / stepSeconds : 0;
  log(
    `step ${state.step}: train loss ${last.toFixed(4)}, val loss ${lastVal.toFixed(4)}, ${Math.round(tokensPerSecond)} tokens/s (ts); wrote ${out} and ${svg}`,
  );
  return {
    steps: state.step,
    history: state.history,
    valLoss: lastVal,
    tokensPerSecond,
    parameters: model.numParameters(),
    out,
    svg,
  };
}
