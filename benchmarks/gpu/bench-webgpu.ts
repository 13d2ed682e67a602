/**
 * Times the WGSL FlashAttention-2 kernels on a real GPU (the lent H100: Dawn on Vulkan) and
 * writes a table and JSON. Bundled to one ES module (build.mjs) with only `webgpu` external, so
 * it runs from .gpu/ (../shared/gpu/pack.sh) on a machine that has no checkout.
 *
 *   node bench-webgpu.mjs [--out result.json] [--table table.md] [--torch torch.json]
 *                         [--quick] [--sweep] [--variants] [--families] [--repeats 10]
 *
 * First checks correctness on small shapes against the float64 reference (and stops if that
 * fails), then times forward and backward: GPU time from timestamp queries when the device has
 * them (the sum of the kernel passes of one call), else wall time of back-to-back calls between
 * queue.onSubmittedWorkDone() waits; warm-up first, median of the repeats, never on zeros.
 */
import { writeFileSync } from 'node:fs';
import {
  accuracy,
  alibi,
  alibiSlopes,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  type ScoreMod,
  softcap,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
} from '@attnkit/attention';
import {
  flashAttentionBackwardWebGpu,
  flashAttentionWebGpu,
  flashFlops,
  planWebGpuFlash,
  type WebGpuFlashOptions,
  type WebGpuTileConfig,
} from '@attnkit/flash-attention';
import { sigmoidAttention, sigmoidAttentionBackward } from '@attnkit/sigmoid-attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import {
  createWebGpuContext,
  type GpuProfiler,
  toWebGpu,
  type WebGpuContext,
} from '@attnkit/webgpu';
import {
  checkLargeLogitGrads,
  LARGE_LOGITS,
  largeLogitCase,
  largeLogitReference,
} from '../../tooling/testing/src/large-logits-check.js';
import { benchDisabledToggles, benchToggles, tensor, timeCall as timeCallN } from './common.js';

type Shape4 = [number, number, number, number];
type DType = 'f32' | 'f16';

interface Row {
  /** 'softmax' (FA2), 'sigmoid' (FlashSigmoid), or 'softmax+<mod>'. */
  family?: string;
  pass: 'forward' | 'backward';
  shape: Shape4;
  causal: boolean;
  dtype: DType;
  tiles: string;
  medianMs: number;
  minMs: number;
  tflops: number;
  timing: 'timestamp' | 'wall';
}

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(`--${name}`);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};

const SHAPES: Shape4[] = flag('quick')
  ? [[2, 4, 512, 64]]
  : [
      [16, 16, 1024, 64],
      [4, 16, 4096, 128],
      [2, 16, 8192, 128],
    ];
const REPEATS = Number(value('repeats') ?? 10);
/** Storage dtypes of the table (--dtypes f32 times f32 only). */
const DTYPES = (value('dtypes') ?? 'f32,f16').split(',') as DType[];
let save: ((row: Row) => void) | undefined;

async function checkCorrectness(ctx: WebGpuContext): Promise<void> {
  const rng = new Rng(1);
  for (const dtype of ['f32', 'f16'] as const) {
    for (const causal of [false, true]) {
      const q = rng.randn([1, 4, 200, 64], dtype);
      const k = rng.randn([1, 2, 230, 64], dtype);
      const v = rng.randn([1, 2, 230, 64], dtype);
      const dO = rng.randn([1, 4, 200, 64], dtype);
      const opts = { causal };
      const ref = softmaxAttentionReference(q, k, v, opts);
      const refB = softmaxAttentionReferenceBackward(q, k, v, dO, opts);
      const [gq, gk, gv, gd] = [q, k, v, dO].map((t) => toWebGpu(t, ctx)) as Tensor[];
      const { o, lse } = await flashAttentionWebGpu(gq!, gk!, gv!, opts);
      const g = await flashAttentionBackwardWebGpu(gq!, gk!, gv!, o, lse, gd!, opts);
      const tol = dtype === 'f32' ? 1e-5 : 2e-3;
      const errs: Record<string, number> = {};
      for (const [name, got, want] of [
        ['o', o, ref.o],
        ['lse', lse, ref.lse],
        ['dq', g.dq, refB.dq],
        ['dk', g.dk, refB.dk],
        ['dv', g.dv, refB.dv],
      ] as const) {
        const a = accuracy(await got.toCpu(), want);
        errs[name] = a.relL2;
        if (!(a.relL2 <= tol) || a.nonFinite > 0) {
          throw new Error(
            `correctness: ${dtype} causal=${causal} ${name} rel_l2=${a.relL2} nonFinite=${a.nonFinite}`,
          );
        }
      }
      console.log(
        `check ${dtype} causal=${causal}: ${Object.entries(errs)
          .map(([n, e]) => `${n} ${e.toExponential(2)}`)
          .join(', ')}`,
      );
    }
  }
}

/**
 * The backward at large logits (issue 9 item 2) on this GPU: max |logit| 1e1..1e6, GQA, odd
 * lengths, causal and not, held to the bound the CI tests use (tooling/testing large-logits).
 * The device's compiler may contract or reorder the score arithmetic differently from llvmpipe's,
 * so this is checked here too before anything is timed.
 */
async function checkLargeLogits(ctx: WebGpuContext): Promise<void> {
  const dims = { hq: 4, hkv: 2, nq: 37, nk: 45, d: 32 };
  for (const causal of [false, true]) {
    const line: string[] = [];
    for (const maxLogit of LARGE_LOGITS) {
      const c = largeLogitCase(11 + Math.round(Math.log10(maxLogit) * 10), dims, maxLogit, {
        causal,
      });
      const ref = largeLogitReference(c);
      const [q, k, v, dO] = [c.q, c.k, c.v, c.dO].map((t) => toWebGpu(t, ctx)) as Tensor[];
      const { o, lse } = await flashAttentionWebGpu(q!, k!, v!, { causal });
      const g = await flashAttentionBackwardWebGpu(q!, k!, v!, o, lse, dO!, { causal });
      const got = { dq: await g.dq.toCpu(), dk: await g.dk.toCpu(), dv: await g.dv.toCpu() };
      for (const x of checkLargeLogitGrads(c, got, ref)) {
        if (x.nonFinite > 0 || !(x.err <= x.allowed))
          throw new Error(
            `large logits: causal=${causal} max|logit|=${maxLogit} ${x.name} err ${x.err} > ${x.allowed} (nonFinite ${x.nonFinite})`,
          );
      }
      const rel = (n: 'dq' | 'dk' | 'dv') =>
        Math.sqrt(
          got[n]
            .toFloat64Array()
            .reduce((a, x, i) => a + (x - ref[n].toFloat64Array()[i]!) ** 2, 0),
        ) / Math.max(1e-300, Math.sqrt(ref[n].toFloat64Array().reduce((a, x) => a + x * x, 0)));
      line.push(`${maxLogit}: dv ${rel('dv').toExponential(1)} dq ${rel('dq').toExponential(1)}`);
      for (const t of [q, k, v, dO, o, lse, g.dq, g.dk, g.dv]) t!.dispose();
    }
    console.log(`check large logits causal=${causal} (rel L2): ${line.join('; ')}`);
  }
}

const timeCall = (
  ctx: WebGpuContext,
  run: (profiler?: GpuProfiler) => Promise<Record<string, Tensor>>,
) => timeCallN(ctx, run, REPEATS);

function inputs(ctx: WebGpuContext, shape: Shape4, dtype: DType): Tensor[] {
  return [1, 2, 3, 4].map((s) => toWebGpu(tensor(shape, dtype, s * 7919), ctx));
}

async function benchShape(
  ctx: WebGpuContext,
  [q, k, v, dO]: Tensor[],
  causal: boolean,
  tiles: WebGpuFlashOptions['tiles'],
  passes: ('forward' | 'backward')[],
  role: 'sweep' | 'table' = 'sweep',
): Promise<Row[]> {
  const shape = q!.shape as Shape4;
  const dtype = q!.dtype as DType;
  const options: WebGpuFlashOptions = { causal, tiles };
  const fwd = await flashAttentionWebGpu(q!, k!, v!, options);
  const [B, H, N, D] = shape;
  const rows: Row[] = [];
  const label = `${role} ${tiles ? JSON.stringify(tiles) : 'planner'}`;
  for (const pass of passes) {
    const t = await timeCall(ctx, async (profiler) =>
      pass === 'forward'
        ? { ...(await flashAttentionWebGpu(q!, k!, v!, { ...options, profiler })) }
        : {
            ...(await flashAttentionBackwardWebGpu(q!, k!, v!, fwd.o, fwd.lse, dO!, {
              ...options,
              profiler,
            })),
          },
    );
    const flops = flashFlops({ batch: B, hq: H, nq: N, nk: N, d: D, causal }, pass);
    const row: Row = {
      pass,
      shape,
      causal,
      dtype,
      tiles: label,
      ...t,
      tflops: flops / (t.medianMs * 1e9),
    };
    console.log(
      `${pass.padEnd(8)} ${shape.join(',').padEnd(14)} ${causal ? 'causal' : 'full  '} ${dtype} ${row.medianMs.toFixed(3)} ms ${row.tflops.toFixed(2)} TFLOP/s (${t.timing}) ${label}`,
    );
    rows.push(row);
    save?.(row);
  }
  for (const t of [fwd.o, fwd.lse]) t.dispose();
  return rows;
}

/** A family variant on the skeleton: sigmoid, or softmax with a built-in score mod. */
interface Variant {
  family: string;
  normalize: 'softmax' | 'sigmoid';
  scoreMod?: (heads: number) => ScoreMod;
}

const FAMILY_VARIANTS: Variant[] = [
  { family: 'sigmoid', normalize: 'sigmoid' },
  { family: 'softmax+softcap', normalize: 'softmax', scoreMod: () => softcap(30) },
  { family: 'softmax+alibi', normalize: 'softmax', scoreMod: (h) => alibi(alibiSlopes(h)) },
];

async function runVariant(
  variant: Variant,
  pass: 'forward' | 'backward',
  [q, k, v, dO]: Tensor[],
  options: WebGpuFlashOptions,
  fwd?: { o: Tensor; lse?: Tensor },
): Promise<Record<string, Tensor>> {
  const scoreMod = variant.scoreMod?.(q!.shape[1]!);
  if (variant.normalize === 'sigmoid') {
    return pass === 'forward'
      ? { ...(await sigmoidAttention(q!, k!, v!, { ...options, scoreMod, backend: 'webgpu' })) }
      : {
          ...(await sigmoidAttentionBackward(q!, k!, v!, dO!, {
            ...options,
            scoreMod,
            backend: 'webgpu',
          })),
        };
  }
  return pass === 'forward'
    ? { ...(await flashAttentionWebGpu(q!, k!, v!, { ...options, scoreMod })) }
    : {
        ...(await flashAttentionBackwardWebGpu(q!, k!, v!, fwd!.o, fwd!.lse!, dO!, {
          ...options,
          scoreMod,
        })),
      };
}

/** Each family variant checked against the float64 reference before anything is timed. */
async function checkVariants(ctx: WebGpuContext): Promise<void> {
  const rng = new Rng(2);
  for (const variant of FAMILY_VARIANTS) {
    for (const causal of [false, true]) {
      const q = rng.randn([1, 4, 150, 128]);
      const k = rng.randn([1, 2, 170, 128]);
      const v = rng.randn([1, 2, 170, 128]);
      const dO = rng.randn([1, 4, 150, 128]);
      const opts = { causal, scoreMod: variant.scoreMod?.(4), normalize: variant.normalize };
      const ref = moddedAttentionReference(q, k, v, opts);
      const refB = moddedAttentionReferenceBackward(q, k, v, dO, opts);
      const g = [q, k, v, dO].map((t) => toWebGpu(t, ctx));
      const fwd = (await runVariant(variant, 'forward', g, { causal })) as {
        o: Tensor;
        lse?: Tensor;
      };
      const grads = await runVariant(variant, 'backward', g, { causal }, fwd);
      const pairs: [string, Tensor, Tensor | undefined][] = [
        ['o', fwd.o, ref.o],
        ['lse', fwd.lse!, ref.lse],
        ['dq', grads.dq!, refB.dq],
        ['dk', grads.dk!, refB.dk],
        ['dv', grads.dv!, refB.dv],
      ];
      const errs: string[] = [];
      for (const [name, got, want] of pairs) {
        if (!want) continue;
        const a = accuracy(await got.toCpu(), want);
        if (!(a.relL2 <= 1e-5) || a.nonFinite > 0)
          throw new Error(
            `correctness: ${variant.family} causal=${causal} ${name} rel_l2=${a.relL2}`,
          );
        errs.push(`${name} ${a.relL2.toExponential(2)}`);
      }
      console.log(`check ${variant.family} causal=${causal}: ${errs.join(', ')}`);
      for (const t of [...g, ...Object.values(fwd), ...Object.values(grads)]) t.dispose();
    }
  }
}

async function benchVariant(
  ctx: WebGpuContext,
  variant: Variant,
  x: Tensor[],
  causal: boolean,
): Promise<Row[]> {
  const shape = x[0]!.shape as Shape4;
  const [B, H, N, D] = shape;
  const fwd = (await runVariant(variant, 'forward', x, { causal })) as { o: Tensor; lse?: Tensor };
  const rows: Row[] = [];
  for (const pass of ['forward', 'backward'] as const) {
    const t = await timeCall(ctx, (profiler) =>
      runVariant(variant, pass, x, { causal, profiler }, fwd),
    );
    const flops = flashFlops({ batch: B, hq: H, nq: N, nk: N, d: D, causal }, pass);
    const row: Row = {
      family: variant.family,
      pass,
      shape,
      causal,
      dtype: 'f32',
      tiles: 'family planner',
      ...t,
      tflops: flops / (t.medianMs * 1e9),
    };
    console.log(
      `${variant.family.padEnd(16)} ${pass.padEnd(8)} ${shape.join(',').padEnd(14)} ${causal ? 'causal' : 'full  '} ${row.medianMs.toFixed(3)} ms ${row.tflops.toFixed(2)} TFLOP/s`,
    );
    rows.push(row);
    save?.(row);
  }
  for (const t of Object.values(fwd)) t.dispose();
  return rows;
}

type Tiles = Partial<WebGpuTileConfig>;
const t = (tx: number, ty: number, rv: number, cu: number, kc: number, mc: number): Tiles => ({
  tx,
  ty,
  rv,
  cu,
  kc,
  mc,
});

/**
 * Tile variants tried by --sweep at (4, 16, 4096, 128), f32, non-causal (the first of each list
 * is the planner's choice). The fastest forward and backward are then used for the table.
 */
const SWEEP_FORWARD: Tiles[] = [
  t(16, 16, 1, 1, 16, 16),
  t(16, 16, 1, 1, 8, 8),
  t(16, 8, 2, 1, 16, 16),
  t(16, 8, 2, 1, 8, 8),
  t(16, 8, 2, 1, 32, 32),
  t(16, 16, 2, 1, 16, 16),
  t(8, 8, 2, 2, 16, 16),
  t(8, 16, 2, 2, 16, 16),
  t(16, 4, 2, 1, 16, 16),
];
const SWEEP_BACKWARD: { dq: Tiles; dkdv: Tiles }[] = [
  { dq: t(16, 16, 1, 1, 16, 16), dkdv: t(16, 16, 1, 1, 16, 16) },
  { dq: t(16, 16, 1, 1, 8, 8), dkdv: t(16, 16, 1, 1, 8, 8) },
  { dq: t(16, 8, 2, 1, 16, 16), dkdv: t(16, 8, 2, 1, 16, 16) },
  { dq: t(16, 8, 2, 1, 8, 8), dkdv: t(16, 8, 2, 1, 8, 8) },
  { dq: t(16, 8, 2, 1, 16, 16), dkdv: t(16, 16, 1, 1, 16, 16) },
  { dq: t(16, 16, 2, 1, 16, 16), dkdv: t(16, 8, 2, 1, 16, 16) },
  { dq: t(8, 8, 2, 2, 16, 16), dkdv: t(16, 8, 2, 1, 16, 16) },
];

/**
 * Forward variants timed by --variants [count] (f32, (4, 16, 4096, 128), non-causal and causal;
 * the first `count` only when given), each checked first against the float64 reference at
 * D = 128; then the program stops.
 */
const VARIANTS: Tiles[] = [
  t(16, 16, 1, 1, 16, 16),
  t(16, 32, 1, 1, 16, 16),
  t(16, 16, 1, 1, 8, 8),
  t(16, 16, 1, 2, 16, 32),
  t(32, 16, 1, 1, 16, 16),
];

async function checkVariant(ctx: WebGpuContext, tiles: Tiles): Promise<string> {
  const rng = new Rng(3);
  const errs: string[] = [];
  for (const causal of [false, true]) {
    const q = rng.randn([1, 2, 200, 128]);
    const k = rng.randn([1, 2, 230, 128]);
    const v = rng.randn([1, 2, 230, 128]);
    const ref = softmaxAttentionReference(q, k, v, { causal });
    const [gq, gk, gv] = [q, k, v].map((x) => toWebGpu(x, ctx)) as Tensor[];
    const { o, lse } = await flashAttentionWebGpu(gq!, gk!, gv!, {
      causal,
      tiles: { forward: tiles },
    });
    for (const [name, got, want] of [
      ['o', o, ref.o],
      ['lse', lse, ref.lse],
    ] as const) {
      const a = accuracy(await got.toCpu(), want);
      if (!(a.relL2 <= 1e-5) || a.nonFinite > 0) {
        throw new Error(`causal=${causal} ${name} rel_l2=${a.relL2} nonFinite=${a.nonFinite}`);
      }
      errs.push(`${name} ${a.relL2.toExponential(1)}`);
    }
    for (const x of [gq, gk, gv, o, lse]) x!.dispose();
  }
  return errs.join(' ');
}

async function variants(ctx: WebGpuContext): Promise<void> {
  const x = inputs(ctx, [4, 16, 4096, 128], 'f32');
  const summary: string[] = [];
  const count = Number(value('variants'));
  for (const tiles of Number.isInteger(count) ? VARIANTS.slice(0, count) : VARIANTS) {
    const name = JSON.stringify(tiles);
    try {
      console.log(`variant ${name} ok: ${await checkVariant(ctx, tiles)}`);
      const full = await benchShape(ctx, x, false, { forward: tiles }, ['forward']);
      const causal = await benchShape(ctx, x, true, { forward: tiles }, ['forward']);
      summary.push(
        `${full[0]!.tflops.toFixed(2).padStart(6)} full ${causal[0]!.tflops.toFixed(2).padStart(6)} causal ${name}`,
      );
    } catch (e) {
      console.log(`variant ${name} failed: ${(e as Error).message}`);
      summary.push(`failed ${name}`);
    }
  }
  for (const t of x) t.dispose();
  console.log(`summary (TFLOP/s forward f32 4,16,4096,128):\n${summary.join('\n')}`);
}

interface TorchRow {
  impl: string;
  pass: string;
  shape: Shape4;
  causal: boolean;
  tflops: number;
  ms: number;
}

function table(rows: Row[], torch: TorchRow[]): string {
  const t = (shape: Shape4, causal: boolean, pass: string, impl: string) =>
    torch.find(
      (r) =>
        r.impl === impl &&
        r.pass === pass &&
        r.causal === causal &&
        r.shape.join() === shape.join(),
    );
  const lines = [
    '| pass | B,H,N,D | causal | WGSL f32 TFLOP/s | WGSL f16-storage TFLOP/s | torch SDPA mem-efficient fp32 | torch SDPA flash fp16 |',
    '| --- | --- | --- | --- | --- | --- | --- |',
  ];
  const keys = new Set(
    rows
      .filter((r) => r.tiles.startsWith('table'))
      .map((r) => `${r.pass}|${r.shape.join(',')}|${r.causal}`),
  );
  for (const key of keys) {
    const [pass, shapeText, causalText] = key.split('|') as [string, string, string];
    const shape = shapeText.split(',').map(Number) as Shape4;
    const causal = causalText === 'true';
    const cell = (dtype: DType) => {
      const r = rows.find(
        (x) =>
          x.tiles.startsWith('table') &&
          x.dtype === dtype &&
          `${x.pass}|${x.shape.join(',')}|${x.causal}` === key,
      );
      return r ? `${r.tflops.toFixed(1)} (${r.medianMs.toFixed(2)} ms)` : '-';
    };
    const tc = (impl: string) => {
      const r = t(shape, causal, pass, impl);
      return r ? `${r.tflops.toFixed(1)} (${r.ms.toFixed(2)} ms)` : '-';
    };
    lines.push(
      `| ${pass} | ${shapeText} | ${causal ? 'yes' : 'no'} | ${cell('f32')} | ${cell('f16')} | ${tc('mem_efficient_fp32')} | ${tc('flash_fp16')} |`,
    );
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const ctx = await createWebGpuContext({
    dawnToggles: benchToggles(),
    disabledDawnToggles: benchDisabledToggles(),
  });
  console.log(`adapter: ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend}`);
  console.log(`features: ${JSON.stringify(ctx.features)}`);
  console.log(`limits: ${JSON.stringify(ctx.limits)}`);
  for (const kernel of ['forward', 'dq', 'dkdv'] as const) {
    const plan = planWebGpuFlash({
      kernel,
      d: 128,
      dv: 128,
      maxComputeWorkgroupStorageSize: ctx.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: ctx.limits.maxComputeInvocationsPerWorkgroup,
      subgroupMinSize: ctx.features.subgroups ? ctx.features.subgroupMinSize : 0,
    });
    console.log(`plan ${kernel} d128: ${JSON.stringify(plan)}`);
  }
  await checkCorrectness(ctx);
  await checkLargeLogits(ctx);
  if (flag('families')) await checkVariants(ctx);
  if (flag('variants')) {
    await variants(ctx);
    ctx.destroy();
    return;
  }
  const rows: Row[] = [];
  const out = value('out');
  // Rows are saved as they come, so a run stopped by its time limit still leaves its numbers.
  save = (row) => {
    if (out)
      writeFileSync(out, `${JSON.stringify({ partial: true, rows: [...rows, row] }, null, 2)}\n`);
  };
  let tuned: WebGpuFlashOptions['tiles'];
  if (flag('sweep')) {
    const x = inputs(ctx, [4, 16, 4096, 128], 'f32');
    const best = {
      forward: { tflops: 0, tiles: {} as Tiles },
      backward: { tflops: 0, tiles: {} as { dq: Tiles; dkdv: Tiles } },
    };
    for (const tiles of [...SWEEP_FORWARD.map((forward) => ({ forward })), ...SWEEP_BACKWARD]) {
      const pass = 'forward' in tiles ? 'forward' : 'backward';
      try {
        const [row] = await benchShape(ctx, x, false, tiles, [pass]);
        rows.push(row!);
        if ('forward' in tiles && row!.tflops > best.forward.tflops)
          best.forward = { tflops: row!.tflops, tiles: tiles.forward };
        if (!('forward' in tiles) && row!.tflops > best.backward.tflops)
          best.backward = { tflops: row!.tflops, tiles };
      } catch (e) {
        console.log(`sweep ${JSON.stringify(tiles)} failed: ${(e as Error).message}`);
      }
    }
    for (const t of x) t.dispose();
    tuned = { forward: best.forward.tiles, ...best.backward.tiles };
    console.log(`tuned tiles: ${JSON.stringify(tuned)}`);
  }
  for (const shape of SHAPES) {
    for (const dtype of DTYPES) {
      const x = inputs(ctx, shape, dtype);
      for (const causal of [false, true]) {
        rows.push(...(await benchShape(ctx, x, causal, tuned, ['forward', 'backward'], 'table')));
      }
      for (const t of x) t.dispose();
    }
  }
  // --families: sigmoid (FlashSigmoid) at every table shape beside FA2's rows above, and the
  // cost of a built-in mod (softcap, ALiBi) at (4, 16, 4096, 128); f32 storage.
  if (flag('families')) {
    for (const shape of SHAPES) {
      const x = inputs(ctx, shape, 'f32');
      for (const variant of FAMILY_VARIANTS) {
        if (variant.family !== 'sigmoid' && shape.join() !== '4,16,4096,128') continue;
        for (const causal of [false, true])
          rows.push(...(await benchVariant(ctx, variant, x, causal)));
      }
      for (const t of x) t.dispose();
    }
  }
  const torchFile = value('torch');
  let torch: TorchRow[] = [];
  if (torchFile) {
    try {
      const { readFileSync } = await import('node:fs');
      torch = JSON.parse(readFileSync(torchFile, 'utf8')).rows;
    } catch (e) {
      console.log(`no torch results (${(e as Error).message})`);
    }
  }
  const md = table(rows, torch);
  console.log(md);
  const result = {
    date: new Date().toISOString(),
    adapter: ctx.adapterInfo,
    backend: ctx.backend,
    features: ctx.features,
    limits: ctx.limits,
    rows,
    torch,
  };
  if (out) writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  const tablePath = value('table');
  if (tablePath) writeFileSync(tablePath, md);
  ctx.destroy();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
