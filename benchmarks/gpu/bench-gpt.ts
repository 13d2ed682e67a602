/**
 * Issue 17 items 4-5 on webgpu: @attnkit/gpt's GPT (GPT-2 small's shape by default: 12 layers,
 * 12 heads, 768 wide, context 1024, vocabulary 50257) —
 *  1. training step time (forward + backward + AdamW, wall time to the loss read back) with
 *     attention 'flash' (FlashAttention-2's WGSL kernels) vs 'standard' (the N x N scores
 *     materialised through nn's matmul / softmax / matmul on the same backend), and the peak
 *     GPU memory of each: the WebGPU buffer pool's high-water mark (BufferPool.highWaterBytes,
 *     bytes handed out at once) over the timed steps;
 *  2. generation tokens/s with the KV cache vs recomputing the whole prefix every token, at
 *     each context of --contexts (default 1024 and 8192; the model's position table is sized
 *     to the longest): a random prompt of context - tokens ids, then --gen-tokens greedy
 *     tokens; tokens/s counts the tokens after the first (the prefill is reported apart).
 * First, at a small shape, flash and standard are checked to give the same loss and gradients
 * on webgpu (and the same loss as ts), so a device run cannot time a broken path.
 *
 *   node bench-gpt.mjs [--shape 12,12,768,1024] [--vocab 50257] [--batch 8] [--steps 5]
 *                      [--warmup 2] [--contexts 1024,8192] [--gen-tokens 32,4]
 *                      [--skip train|generate] [--out gpt.json] [--profile] [--dtype f32|f16]
 *                      [--queued] [--decode-ab] [--first-ab] [--threads-ab] [--cache-ab] [--warm]
 *                      [--off earlySubmit,fuseLinear,...] [--attentions flash,standard,sigmoid,gla]
 *                      [--gen-attention flash|sigmoid|gla]
 *
 * --attentions: the training step's variants (GptConfig.attention; default flash,standard);
 * --gen-attention: the generation model's (default flash).
 * --shape is L,H,C,T (layers, heads, width, training context); --gen-tokens is the number of
 * new tokens with the cache and with recomputation. On llvmpipe: --shape 2,2,32,64 --vocab 65
 * --batch 2 --contexts 64,128 --gen-tokens 8,3.
 */
import { writeFileSync } from 'node:fs';
import {
  DeviceKvCache,
  type DevicePagedKvCache,
  GPT_ATTENTIONS,
  Gpt,
  type GptAttention,
  type GptConfig,
} from '@attnkit/gpt';
import {
  AdamW,
  registerWebGpuKernels,
  scope,
  setDeviceBackend,
  setWebGpuProfiler,
  syncWebGpu,
} from '@attnkit/nn';
import { Tensor } from '@attnkit/tensor';
import { createWebGpuContext, GpuProfiler, toWebGpu } from '@attnkit/webgpu';
// The submit schedule's knob is internal to nn (not exported): the bench imports its source.
import { setFirstSubmitBatch } from '../../packages/nn/src/kernels/webgpu/queue.js';
// The decode kernel's layout override (internal to the skeleton): --threads-ab.
import { setDecodeTuning } from '../../packages/skeleton/src/webgpu/decode.js';
import { benchDisabledToggles, benchToggles, byLabel, median } from './common.js';

const args = process.argv.slice(2);
// The last occurrence wins: h200-gpt.sh's GPT_ARGS can override its defaults.
const value = (name: string) => {
  const i = args.lastIndexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const ints = (name: string, fallback: string, count?: number) => {
  const xs = (value(name) ?? fallback).split(',').map(Number);
  if (
    (count !== undefined && xs.length !== count) ||
    !xs.every((x) => Number.isInteger(x) && x >= 0)
  ) {
    console.error(
      `bad --${name} ${value(name)}: expected ${count ?? 'some'} comma-separated integers`,
    );
    process.exit(2);
  }
  return xs;
};
const [L, H, C, T] = ints('shape', '12,12,768,1024', 4) as [number, number, number, number];
const [VOCAB] = ints('vocab', '50257', 1) as [number];
const [BATCH] = ints('batch', '8', 1) as [number];
const [STEPS] = ints('steps', '5', 1) as [number];
const [WARMUP] = ints('warmup', '2', 1) as [number];
const CONTEXTS = ints('contexts', '1024,8192');
const [GEN_CACHED, GEN_RECOMPUTE] = ints('gen-tokens', '32,4', 2) as [number, number];
const SKIP = value('skip');
// The training step's attention variants, timed in this order (GptConfig.attention): the
// default is the FlashAttention paper's comparison; sigmoid and gla are the other families.
const ATTENTIONS = (value('attentions') ?? 'flash,standard').split(',') as GptAttention[];
// Generation's model (GptConfig.attention; default flash): sigmoid decodes from the same paged
// cache through the decode kernel, gla from its recurrent states.
const GEN_ATTENTION = (value('gen-attention') ?? 'flash') as GptAttention;
if (
  !(GPT_ATTENTIONS as readonly string[]).includes(GEN_ATTENTION) ||
  !ATTENTIONS.every((a) => (GPT_ATTENTIONS as readonly string[]).includes(a))
) {
  console.error(
    `--attentions / --gen-attention: expected some of ${GPT_ATTENTIONS.join(',')}, got ${value('attentions')} / ${GEN_ATTENTION}`,
  );
  process.exit(2);
}
// Training's parameter storage: f32, or f16 (f32 math; matmuls on tensor cores where the adapter
// has them).
const DTYPE = (value('dtype') ?? 'f32') as 'f32' | 'f16';
if (DTYPE !== 'f32' && DTYPE !== 'f16') {
  console.error(`--dtype: expected f32 or f16, got ${DTYPE}`);
  process.exit(2);
}
if (C % H !== 0 || L < 1 || T < 2 || STEPS < 1 || GEN_CACHED < 2 || GEN_RECOMPUTE < 2) {
  console.error(
    'bad --shape/--steps/--gen-tokens: H must divide C, T >= 2, steps >= 1, tokens >= 2',
  );
  process.exit(2);
}

const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
// For A/B runs, kernel options off: --queued (encodeEagerly), --no-reuse (reuseBindings),
// --off NAME[,NAME] (any boolean kernel option, e.g. earlySubmit, fuseLinear, sharePasses).
const off = args.includes('--off') ? args[args.indexOf('--off') + 1]!.split(',') : [];
registerWebGpuKernels(ctx, {
  encodeEagerly: !args.includes('--queued'),
  reuseBindings: !args.includes('--no-reuse'),
  ...Object.fromEntries(off.map((name) => [name, false])),
});
if (off.length > 0) console.log(`kernel options off: ${off.join(', ')}`);
console.log(
  `adapter ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend} robust=${ctx.robustAccess}`,
);
const MiB = 2 ** 20;

const config = (attention: GptAttention, blockSize: number): GptConfig => ({
  nLayer: L,
  nHead: H,
  nKvHead: H,
  nEmbd: C,
  blockSize,
  vocabSize: VOCAB,
  dropout: 0,
  bias: false,
  positional: 'learned',
  tieWeights: true,
  attention,
});

/** n seeded token ids in [0, vocab). */
function randomIds(n: number, seed: number, vocab = VOCAB): Int32Array {
  let s = seed >>> 0 || 1;
  return Int32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % vocab;
  });
}
const ids = (b: number, t: number, seed: number, vocab = VOCAB) =>
  Tensor.from(randomIds(b * t, seed, vocab), [b, t]);

function release(model: Gpt, opt?: AdamW) {
  opt?.zeroGrad();
  for (const t of Object.values(opt?.stateDict() ?? {})) t.dispose();
  for (const p of model.parameters()) p.data.dispose();
}

/** One training step in a scope; the loss read back (the step's GPU work done). */
async function trainStep(model: Gpt, opt: AdamW, x: Tensor, y: Tensor): Promise<number> {
  const loss = scope(() => {
    opt.zeroGrad();
    const l = model.forward(x, y).loss!;
    l.backward();
    opt.step();
    return l.data;
  });
  const v = (await loss.toCpu()).toFloat64Array()[0]!;
  loss.dispose();
  return v;
}

/** flash vs standard at a small shape on webgpu (loss and every gradient), and vs ts. */
async function verify(): Promise<Record<string, number>> {
  const small: GptConfig = {
    ...config('flash', 32),
    nLayer: 2,
    nHead: 2,
    nKvHead: 2,
    nEmbd: 32,
    vocabSize: 61,
  };
  const x = ids(2, 32, 11, 61);
  const y = ids(2, 32, 12, 61);
  const run = async (attention: 'flash' | 'standard', gpu: boolean) => {
    const model = new Gpt({ ...small, attention }, { seed: 3 });
    if (gpu) model.toWebGpu(ctx);
    const [xg, yg] = gpu ? [toWebGpu(x, ctx), toWebGpu(y, ctx)] : [x, y];
    const loss = scope(() => {
      const l = model.forward(xg, yg).loss!;
      l.backward();
      return l.data;
    });
    const grads = await Promise.all(
      model.parameters().map(async (p) => (await p.grad!.toCpu()).toFloat32Array()),
    );
    const value = (await loss.toCpu()).toFloat64Array()[0]!;
    if (gpu) {
      for (const t of [loss, xg, yg, ...model.parameters().map((p) => p.grad!)]) t.dispose();
      release(model);
    }
    return { value, grads };
  };
  // Decoding (one-row matmuls, permute views, the cache's concat, decode attention): greedy
  // tokens with the KV cache on webgpu against ts, logits compared token by token.
  const decode = async (gpu: boolean) => {
    const model = new Gpt({ ...small, attention: 'flash' }, { seed: 3 });
    if (gpu) model.toWebGpu(ctx);
    const logits: Float32Array[] = [];
    const tokens = await model.generate(Array.from(x.toFloat64Array().slice(0, 9)), {
      maxNewTokens: 8,
      temperature: 0,
      onToken: (_t, l) => logits.push(Float32Array.from(l)),
    });
    if (gpu) release(model);
    return { tokens, logits };
  };
  setDeviceBackend('cpu', 'ts');
  const [decTs, decGpu] = [await decode(false), await decode(true)];
  let decodeErr = 0;
  decTs.logits.forEach((l, i) => {
    l.forEach((v, j) => {
      decodeErr = Math.max(decodeErr, Math.abs(v - decGpu.logits[i]![j]!) / (1 + Math.abs(v)));
    });
  });
  const ts = await run('flash', false);
  const flash = await run('flash', true);
  const standard = await run('standard', true);
  let gradErr = 0;
  flash.grads.forEach((g, i) => {
    g.forEach((v, j) => {
      const w = standard.grads[i]![j]!;
      gradErr = Math.max(gradErr, Math.abs(v - w) / (1 + Math.abs(v)));
    });
  });
  return {
    lossTs: ts.value,
    lossFlash: flash.value,
    lossStandard: standard.value,
    maxGradDiffFlashVsStandard: gradErr,
    decodeMaxLogitDiffVsTs: decodeErr,
    decodeTokensEqual: Number(decTs.tokens.join() === decGpu.tokens.join()),
  };
}

/** The model on webgpu with its parameters stored in `dtype` (f16: nn's tensor-core matmuls). */
function onGpu(model: Gpt, dtype: 'f32' | 'f16'): Gpt {
  if (dtype === 'f16') for (const p of model.parameters()) p.data = p.data.astype('f16');
  return model.toWebGpu(ctx);
}

async function timeTraining(attention: GptAttention) {
  const model = onGpu(new Gpt(config(attention, T), { seed: 1 }), DTYPE);
  const opt = new AdamW(model.parameters(), { lr: 1e-4 });
  const x = toWebGpu(ids(BATCH, T, 1), ctx);
  const y = toWebGpu(ids(BATCH, T, 2), ctx);
  const losses: number[] = [];
  const t0 = performance.now();
  for (let i = 0; i < WARMUP; i++) losses.push(await trainStep(model, opt, x, y));
  const warmupMs = performance.now() - t0;
  ctx.pool.resetHighWater();
  const ms: number[] = [];
  for (let i = 0; i < STEPS; i++) {
    const s = performance.now();
    losses.push(await trainStep(model, opt, x, y));
    ms.push(performance.now() - s);
  }
  const peakMiB = ctx.pool.highWaterBytes / MiB;
  release(model, opt);
  x.dispose();
  y.dispose();
  return {
    attention,
    parameters: model.numParameters(),
    medianMs: median(ms),
    minMs: Math.min(...ms),
    ms,
    warmupMs,
    tokensPerS: (BATCH * T) / (median(ms) / 1e3),
    peakMiB,
    losses,
  };
}

async function timeGeneration(context: number, model: Gpt) {
  const row: Record<string, unknown> = { context };
  // --decode-ab: the cached path pipelined (the default: the next forward recorded from the
  // GPU-side argmax before this token is read back) and serial, alternating, in this process.
  // --first-ab: pipelined with nn's default first command buffer (2 passes after an idle
  // queue) and with the 8 of session 14 (-first8), alternating.
  // --threads-ab: the decode kernel's default layout (512 threads where the device holds it)
  // and the 256-thread one (-t256), alternating.
  // --cache-ab: the paged device cache (the default: pages written by queued copies, attended
  // in place) and session 12's DeviceKvCache (-concat: the sequence concatenated every token),
  // after an untimed warm-up of each, in ABBA order (tokens/s rose run after run in one process
  // on the H200: a plain alternation favours whichever goes second).
  // --warm: an untimed 20-token warm-up generate, then the cached generate twice (the row
  // keeps their median), then recompute: a process decoding its second and third sequence.
  const variants = args.includes('--warm')
    ? (['warmup', 'cached', 'cached', 'recompute'] as const)
    : args.includes('--cache-ab')
      ? ([
          'warmup',
          'warmup-concat',
          'cached',
          'cached-concat',
          'cached-concat',
          'cached',
          'cached',
          'cached-concat',
          'cached-concat',
          'cached',
          'recompute',
        ] as const)
      : args.includes('--decode-ab')
        ? (['pipelined', 'serial', 'pipelined', 'serial', 'recompute'] as const)
        : args.includes('--first-ab')
          ? ([
              'pipelined',
              'pipelined-first8',
              'pipelined',
              'pipelined-first8',
              'recompute',
            ] as const)
          : args.includes('--threads-ab')
            ? (['pipelined', 'pipelined-t256', 'pipelined', 'pipelined-t256', 'recompute'] as const)
            : (['cached', 'recompute'] as const);
  const ab: { variant: string; tokensPerS: number }[] = [];
  const newKvCaches = model.newKvCaches;
  for (const variant of variants) {
    model.newKvCaches =
      variant === 'cached-concat' || variant === 'warmup-concat'
        ? (batch = 1) =>
            newKvCaches.call(model, batch).map((c) => {
              (c as DevicePagedKvCache).dispose();
              return new DeviceKvCache();
            })
        : newKvCaches;
    setFirstSubmitBatch(variant === 'pipelined-first8' ? 8 : undefined);
    setDecodeTuning(variant === 'pipelined-t256' ? { threads: 256 } : undefined);
    const cache = variant !== 'recompute';
    const warm = variant === 'warmup' || variant === 'warmup-concat';
    const n = warm ? Math.min(20, GEN_CACHED) : cache ? GEN_CACHED : GEN_RECOMPUTE;
    const prompt = Array.from(randomIds(context - n, 7 + context));
    const stamps: number[] = [];
    // Monotonic microseconds (V8's profile clock) of the tokens after the first: the window of a
    // --cpu-prof profile that holds decoding alone (cpuprof-top.mjs --from-us / --to-us).
    const window: bigint[] = [];
    const t0 = performance.now();
    await model.generate(prompt, {
      maxNewTokens: n,
      temperature: 0,
      cache,
      pipelined: variant !== 'serial',
      onToken: () => {
        stamps.push(performance.now());
        window.push(process.hrtime.bigint() / 1000n);
      },
    });
    console.log(
      `window ${cache ? 'cached' : 'recompute'} ${context}: --from-us ${window[0]} --to-us ${window.at(-1)}`,
    );
    const first = stamps[0]! - t0;
    const rest = (stamps.at(-1)! - stamps[0]!) / 1e3;
    const result = { tokens: n, firstTokenMs: first, tokensPerS: (n - 1) / rest };
    ab.push({ variant, tokensPerS: result.tokensPerS });
    const key = variant === 'cached-concat' ? 'cachedConcat' : cache ? 'cached' : 'recompute';
    if (row[key] === undefined && !warm) row[key] = result;
  }
  // The A/B's rows: each variant's median tokens/s in place of its first run's.
  if (args.includes('--cache-ab') || args.includes('--warm'))
    for (const [key, name] of [
      ['cached', 'cached'],
      ['cachedConcat', 'cached-concat'],
    ] as const) {
      const runs = ab.filter((r) => r.variant === name).map((r) => r.tokensPerS);
      if (runs.length === 0) continue;
      row[key] = { ...(row[key] as object), tokensPerS: median(runs), runs };
    }
  if (ab.length > 2) {
    row.decodeAb = ab;
    console.log(
      `decode A/B ${context}: ${ab.map((r) => `${r.variant} ${r.tokensPerS.toFixed(1)}`).join(', ')} tok/s`,
    );
  }
  if (args.includes('--profile') && ctx.features.timestampQuery) {
    try {
      row.decodeProfile = await profileDecodeToken(context, model);
    } catch (e) {
      row.decodeProfile = { error: String(e).slice(0, 300) };
      console.error(`profile ${context}: ${String(e).slice(0, 300)}`);
    }
  }
  const cached = row.cached as { tokensPerS: number };
  const plain = row.recompute as { tokensPerS: number };
  row.speedup = cached.tokensPerS / plain.tokensPerS;
  return row;
}

/**
 * --profile: the GPU time of nn's queued passes in one cached decode token (the second
 * generated), summed per kernel label, beside that token's wall time. Attention submits on its
 * own and is not in the sum.
 */
async function profileDecodeToken(context: number, model: Gpt) {
  const profiler = new GpuProfiler(ctx.device, 2048);
  const stamps: number[] = [];
  await model.generate(Array.from(randomIds(context - 3, 11 + context)), {
    maxNewTokens: 3,
    temperature: 0,
    onToken: (_t, _l) => {
      stamps.push(performance.now());
      setWebGpuProfiler(ctx, stamps.length === 1 ? profiler : undefined);
    },
  });
  await syncWebGpu(ctx);
  const labels = byLabel(await profiler.read());
  profiler.destroy();
  const queuedMs = labels.reduce((a, l) => a + l.ms, 0);
  const passes = labels.reduce((a, l) => a + l.count, 0);
  const tokenMs = stamps[1]! - stamps[0]!;
  console.log(
    `decode token at context ${context}: ${tokenMs.toFixed(2)} ms wall, ${passes} queued passes, ${queuedMs.toFixed(2)} ms of their GPU time`,
  );
  for (const l of labels.slice(0, 12))
    console.log(`  ${l.ms.toFixed(3).padStart(8)} ms  x${l.count}  ${l.label}`);
  return { tokenMs, passes, queuedMs, labels };
}

const out: Record<string, unknown> = {
  shape: { layers: L, heads: H, width: C, context: T, vocab: VOCAB, batch: BATCH },
  dtype: DTYPE,
  steps: STEPS,
  warmup: WARMUP,
  adapter: ctx.adapterInfo,
};
const save = () => value('out') && writeFileSync(value('out')!, JSON.stringify(out, null, 2));

try {
  out.verify = await verify();
  console.log(`verify (small shape): ${JSON.stringify(out.verify)}`);
  const v = out.verify as Record<string, number>;
  // f32 end to end: the decoded logits agree with ts to rounding (the tests use 1e-4).
  if (!(v.decodeMaxLogitDiffVsTs! <= 1e-4) || v.decodeTokensEqual !== 1)
    console.error('verify: DECODING ON WEBGPU DISAGREES WITH TS (see decode* above)');
} catch (e) {
  out.verifyError = String(e).slice(0, 600);
  console.error(`verify: ${out.verifyError}`);
}
save();

const train: Record<string, unknown>[] = [];
if (SKIP !== 'train') {
  out.train = train;
  for (const attention of ATTENTIONS) {
    try {
      const r = await timeTraining(attention);
      train.push(r);
      console.log(
        `train ${attention}: median ${r.medianMs.toFixed(1)} ms/step, peak ${r.peakMiB.toFixed(0)} MiB, losses ${r.losses.map((l) => l.toFixed(3)).join(' ')}`,
      );
    } catch (e) {
      train.push({ attention, error: String(e).slice(0, 600) });
      console.error(`train ${attention}: ${String(e).slice(0, 600)}`);
    }
    save();
  }
}

const generation: Record<string, unknown>[] = [];
if (SKIP !== 'generate') {
  out.generation = generation;
  const longest = Math.max(...CONTEXTS);
  try {
    const model = new Gpt(config(GEN_ATTENTION, longest), { seed: 2 }).toWebGpu(ctx);
    for (const context of CONTEXTS) {
      try {
        const r = await timeGeneration(context, model);
        generation.push(r);
        console.log(`generate context ${context}: ${JSON.stringify(r)}`);
      } catch (e) {
        generation.push({ context, error: String(e).slice(0, 600) });
        console.error(`generate ${context}: ${String(e).slice(0, 600)}`);
      }
      save();
    }
    release(model);
  } catch (e) {
    generation.push({ error: String(e).slice(0, 600) });
    console.error(`generate: ${String(e).slice(0, 600)}`);
  }
}

const f = (v: unknown, d = 1) => (typeof v === 'number' ? v.toFixed(d) : '-');
console.log(
  `\nGPT training step (fwd + bwd + AdamW), ${L} layers, ${H} heads, ${C} wide, B ${BATCH} T ${T}, vocab ${VOCAB}, ${DTYPE}`,
);
console.log('| attention | median ms | min ms | tokens/s | peak pool MiB |');
console.log('| --- | --- | --- | --- | --- |');
for (const r of train)
  console.log(
    `| ${r.attention} | ${f(r.medianMs)} | ${f(r.minMs)} | ${f(r.tokensPerS, 0)} | ${r.error ? `error: ${String(r.error).slice(0, 80)}` : f(r.peakMiB, 0)} |`,
  );
const byName = (a: string) =>
  train.find((r) => r.attention === a) as { medianMs?: number; peakMiB?: number } | undefined;
const [fl, st] = [byName('flash'), byName('standard')];
if (fl?.medianMs && st?.medianMs)
  console.log(
    `flash vs standard: ${(st.medianMs / fl.medianMs).toFixed(2)}x faster, ${(st.peakMiB! / fl.peakMiB!).toFixed(2)}x less peak memory`,
  );
console.log(
  `\nGeneration (greedy, batch 1, ${GEN_ATTENTION} attention): tokens/s after the first token`,
);
console.log('| context | KV cache tok/s | recompute tok/s | speed-up | cache first-token ms |');
console.log('| --- | --- | --- | --- | --- |');
for (const r of generation) {
  const c = r.cached as { tokensPerS?: number; firstTokenMs?: number } | undefined;
  const p = r.recompute as { tokensPerS?: number } | undefined;
  console.log(
    `| ${r.context ?? '-'} | ${f(c?.tokensPerS)} | ${f(p?.tokensPerS, 2)} | ${f(r.speedup)}x | ${r.error ? `error: ${String(r.error).slice(0, 80)}` : f(c?.firstTokenMs)} |`,
  );
}
save();
ctx.destroy();
