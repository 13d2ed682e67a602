/**
 * HSTU on the GPU (issue 10 item 6): attnkit's WGSL HSTU forward and forward+backward beside
 * attnkit's causal FA2 on the same jagged batch, in the row format of
 * benchmarks/hstu/torch_hstu.py, so `node benchmarks/hstu/table.mjs torch.json this.json` makes one
 * table. Bundled with build.mjs (dist/bench-hstu.mjs); runs from .gpu/ on the device.
 *
 *   node bench-hstu.mjs [--out hstu-webgpu.json] [--quick] [--repeats 10] [--seed 0]
 *                       [--batch 16] [--max-seq-len 4096] [--heads 4] [--dim 128] [--dtypes f32,f16]
 *                       [--ab-rounds 0] [--rab]
 *
 * Correctness first (stops on a mismatch): HSTU and causal FA2 on a small jagged batch (odd
 * lengths, f32 and packed f16) against the float64 references, forward and backward. Then the
 * timings: GPU time from timestamp queries (sum of a call's passes), >= 0.5 s warm-up, median.
 * FLOPs of the jagged causal work as torch_hstu.py counts them: forward 2 sum_b n_b (n_b + 1) / 2
 * H (D + Dv), forward+backward 3.5x.
 */
import { writeFileSync } from 'node:fs';
import {
  accuracy,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
  toleranceFor,
} from '@attnkit/attention';
import { flashAttention, flashAttentionBackward } from '@attnkit/flash-attention';
import { hstuAttention, hstuAttentionBackward } from '@attnkit/hstu-attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import {
  createWebGpuContext,
  type GpuProfiler,
  toWebGpu,
  type WebGpuContext,
} from '@attnkit/webgpu';
import { jaggedLengths, seqOffsets } from '../hstu/lengths.mjs';
import { benchDisabledToggles, benchToggles, median, tensor, timeCall } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const flag = (name: string) => args.includes(`--${name}`);
const quick = flag('quick');
const num = (name: string, full: number, small: number) =>
  Number(value(name) ?? (quick ? small : full));
const B = num('batch', 16, 4);
const N = num('max-seq-len', 4096, 256);
const H = num('heads', 4, 2);
const D = num('dim', 128, 32);
const SEED = num('seed', 0, 0);
const REPEATS = num('repeats', 10, 3);
const ALPHA = Number(value('alpha') ?? 1 / D);
const DTYPES = (value('dtypes') ?? 'f32,f16').split(',') as ('f32' | 'f16')[];
/** Interleaved forward A/B rounds of HSTU vs FA2 (0: none). */
const AB_ROUNDS = num('ab-rounds', 0, 0);
/** Also time HSTU with the bucketed rab (position + time tables, timestamps). */
const RAB = flag('rab');

interface Row {
  impl: string;
  dtype: string;
  pass: 'forward' | 'forward+backward';
  ms: number;
  min_ms: number;
  tflops: number;
  timing: 'timestamp' | 'wall';
  shape: { B: number; N: number; H: number; D: number; V: number; L: number };
  lengths_seed: number;
  flops: number;
}

function jagged(ctx: WebGpuContext, lengths: number[], dtype: 'f32' | 'f16', seed: number) {
  const offsets = seqOffsets(lengths);
  const L = offsets[offsets.length - 1]!;
  const [q, k, v, dO] = [1, 2, 3, 4].map((s) => tensor([L, H, D], dtype, seed * 101 + s * 7919));
  return {
    offsets,
    L,
    cpu: { q: q!, k: k!, v: v!, dO: dO! },
    gpu: [q, k, v, dO].map((t) => toWebGpu(t!, ctx)) as [Tensor, Tensor, Tensor, Tensor],
  };
}

/** HSTU and causal FA2 on a small jagged batch against float64, forward and backward. */
async function check(ctx: WebGpuContext): Promise<void> {
  const lengths = [37, 1, 64, 50];
  const maxSeqLen = 70;
  for (const dtype of DTYPES) {
    const x = jagged(ctx, lengths, dtype, 5);
    const [q, k, v, dO] = x.gpu;
    const opts = { seqOffsets: x.offsets, maxSeqLen, alpha: 0.3 };
    const tol = toleranceFor({ dtype });
    const fa2 = {
      layout: 'THD' as const,
      cuSeqlensQ: x.offsets,
      cuSeqlensK: x.offsets,
      causal: true,
    };
    const ref = {
      hstu: {
        ...hstuAttentionReference(x.cpu.q, x.cpu.k, x.cpu.v, opts),
        ...hstuAttentionReferenceBackward(x.cpu.q, x.cpu.k, x.cpu.v, x.cpu.dO, opts),
      },
      fa2: {
        ...softmaxAttentionReference(x.cpu.q, x.cpu.k, x.cpu.v, fa2),
        ...softmaxAttentionReferenceBackward(x.cpu.q, x.cpu.k, x.cpu.v, x.cpu.dO, fa2),
      },
    };
    const got = {
      hstu: {
        ...(await hstuAttention(q, k, v, opts)),
        ...(await hstuAttentionBackward(q, k, v, dO, opts)),
      },
      fa2: await (async () => {
        const f = await flashAttention(q, k, v, fa2);
        return { ...f, ...(await flashAttentionBackward(q, k, v, f.o, f.lse, dO, fa2)) };
      })(),
    };
    for (const impl of ['hstu', 'fa2'] as const) {
      const errs: string[] = [];
      for (const name of ['o', 'dq', 'dk', 'dv'] as const) {
        const a = accuracy(await (got[impl][name] as Tensor).toCpu(), ref[impl][name] as Tensor);
        if (!(a.relL2 <= tol) || a.nonFinite > 0)
          throw new Error(
            `correctness: ${impl} ${dtype} ${name} rel_l2 ${a.relL2} (tol ${tol}) nonFinite ${a.nonFinite}`,
          );
        errs.push(`${name} ${a.relL2.toExponential(1)}`);
      }
      console.log(`check ${impl} ${dtype} lengths ${lengths}: ${errs.join(', ')}`);
      for (const t of Object.values(got[impl])) (t as Tensor).dispose();
    }
    if (RAB && dtype === 'f32') {
      // The bucketed rab against float64 too (o, dq, dk, dv and both tables' gradients).
      const rng = new Rng(9);
      const pos = rng.randn([H, 2 * maxSeqLen - 1]);
      const time = rng.randn([H, 129]);
      const stamps = Array.from(
        { length: x.L },
        (_, i) => 1_700_000_000 + 997 * i + rng.int(0, 500),
      );
      const br = { positionTable: pos, timestampTable: time, timestamps: stamps };
      const ro = { ...opts, bucketedRab: br };
      const go = {
        ...opts,
        bucketedRab: {
          ...br,
          positionTable: toWebGpu(pos, ctx),
          timestampTable: toWebGpu(time, ctx),
        },
      };
      const ref = {
        ...hstuAttentionReference(x.cpu.q, x.cpu.k, x.cpu.v, ro),
        ...hstuAttentionReferenceBackward(x.cpu.q, x.cpu.k, x.cpu.v, x.cpu.dO, ro),
      } as Record<string, Tensor>;
      const got = {
        ...(await hstuAttention(q, k, v, go)),
        ...(await hstuAttentionBackward(q, k, v, dO, go)),
      } as Record<string, Tensor>;
      const errs: string[] = [];
      for (const name of ['o', 'dq', 'dk', 'dv', 'dPositionTable', 'dTimestampTable']) {
        const a = accuracy(await got[name]!.toCpu(), ref[name]!);
        if (!(a.relL2 <= tol) || a.nonFinite > 0)
          throw new Error(`correctness: hstu bucketed rab ${name} rel_l2 ${a.relL2} (tol ${tol})`);
        errs.push(`${name} ${a.relL2.toExponential(1)}`);
      }
      console.log(`check hstu bucketed rab f32 lengths ${lengths}: ${errs.join(', ')}`);
      for (const t of Object.values(got)) t.dispose();
      go.bucketedRab.positionTable.dispose();
      go.bucketedRab.timestampTable.dispose();
    }
    for (const t of x.gpu) t.dispose();
  }
}

async function main(): Promise<void> {
  const ctx = await createWebGpuContext({
    dawnToggles: benchToggles(),
    disabledDawnToggles: benchDisabledToggles(),
  });
  console.log(`adapter: ${JSON.stringify(ctx.adapterInfo)} backend=${ctx.backend}`);
  await check(ctx);
  const lengths = jaggedLengths(SEED, B, N) as number[];
  const flopsFwd = 2 * lengths.reduce((a, n) => a + (n * (n + 1)) / 2, 0) * H * (D + D);
  const rows: Row[] = [];
  const abRows: unknown[] = [];
  const out = value('out');
  for (const dtype of DTYPES) {
    const x = jagged(ctx, lengths, dtype, SEED);
    const [q, k, v, dO] = x.gpu;
    const shape = { B, N, H, D, V: D, L: x.L };
    const hstu = { seqOffsets: x.offsets, maxSeqLen: N, alpha: ALPHA };
    const fa2 = {
      layout: 'THD' as const,
      cuSeqlensQ: x.offsets,
      cuSeqlensK: x.offsets,
      causal: true,
      scale: ALPHA,
    };
    type Run = (profiler?: GpuProfiler) => Promise<Record<string, Tensor>>;
    const impls: Record<string, { forward: Run; both: Run }> = {
      attnkit_hstu_webgpu: {
        forward: async (profiler) => ({ ...(await hstuAttention(q, k, v, { ...hstu, profiler })) }),
        both: async (profiler) => ({
          ...(await hstuAttention(q, k, v, { ...hstu, profiler })),
          ...(await hstuAttentionBackward(q, k, v, dO, { ...hstu, profiler })),
        }),
      },
      attnkit_fa2_causal_webgpu: {
        forward: async (profiler) => ({ ...(await flashAttention(q, k, v, { ...fa2, profiler })) }),
        both: async (profiler) => {
          const f = await flashAttention(q, k, v, { ...fa2, profiler });
          return {
            ...f,
            ...(await flashAttentionBackward(q, k, v, f.o, f.lse, dO, { ...fa2, profiler })),
          };
        },
      },
    };
    // --rab: HSTU with the paper's bucketed relative attention bias computed in the kernels
    // (position table [H, 2N - 1], time table [H, 129] with log buckets as upstream, integer
    // timestamps increasing by random gaps of up to a day): what the bias costs on top.
    let rabTables: Tensor[] = [];
    if (RAB) {
      const rng = new Rng(SEED + 7);
      const pos = toWebGpu(rng.randn([H, 2 * N - 1]), ctx);
      const time = toWebGpu(rng.randn([H, 129]), ctx);
      rabTables = [pos, time];
      const stamps = new Float64Array(x.L);
      for (let b = 0; b + 1 < x.offsets.length; b++) {
        let t = 1_700_000_000;
        for (let i = x.offsets[b]!; i < x.offsets[b + 1]!; i++) stamps[i] = t += rng.int(0, 86_400);
      }
      const withRab = {
        ...hstu,
        bucketedRab: { positionTable: pos, timestampTable: time, timestamps: stamps },
      };
      impls.attnkit_hstu_bucketed_rab_webgpu = {
        forward: async (profiler) => ({
          ...(await hstuAttention(q, k, v, { ...withRab, profiler })),
        }),
        both: async (profiler) => {
          const g = await hstuAttentionBackward(q, k, v, dO, { ...withRab, profiler });
          return { ...(await hstuAttention(q, k, v, { ...withRab, profiler })), ...g } as Record<
            string,
            Tensor
          >;
        },
      };
    }
    for (const [impl, fns] of Object.entries(impls)) {
      for (const pass of ['forward', 'forward+backward'] as const) {
        const t = await timeCall(ctx, pass === 'forward' ? fns.forward : fns.both, REPEATS);
        const flops = pass === 'forward' ? flopsFwd : 3.5 * flopsFwd;
        const row: Row = {
          impl,
          dtype: dtype === 'f32' ? 'fp32' : 'fp16',
          pass,
          ms: t.medianMs,
          min_ms: t.minMs,
          tflops: flops / (t.medianMs * 1e9),
          timing: t.timing,
          shape,
          lengths_seed: SEED,
          flops,
        };
        rows.push(row);
        console.log(
          `${impl.padEnd(26)} ${row.dtype} ${pass.padEnd(16)} ${t.medianMs.toFixed(3)} ms ${row.tflops.toFixed(2)} TFLOP/s (${t.timing})`,
        );
        if (out) writeFileSync(out, `${JSON.stringify({ partial: true, rows }, null, 2)}\n`);
      }
    }
    // Forward A/B, interleaved: rounds alternate HSTU and FA2 (each a timeCall of REPEATS
    // calls), so a drift of the GPU's clocks hits both; the ratio per round and its median.
    if (AB_ROUNDS > 0) {
      const ratios: number[] = [];
      for (let r = 0; r < AB_ROUNDS; r++) {
        const order =
          r % 2
            ? ['attnkit_fa2_causal_webgpu', 'attnkit_hstu_webgpu']
            : ['attnkit_hstu_webgpu', 'attnkit_fa2_causal_webgpu'];
        const ms: Record<string, number> = {};
        for (const impl of order)
          ms[impl] = (await timeCall(ctx, impls[impl]!.forward, REPEATS)).medianMs;
        ratios.push(ms.attnkit_fa2_causal_webgpu! / ms.attnkit_hstu_webgpu!);
      }
      const sorted = [...ratios].sort((a, b) => a - b);
      const ab = {
        dtype,
        rounds: AB_ROUNDS,
        ratios,
        median: median(ratios),
        min: sorted[0]!,
        max: sorted[sorted.length - 1]!,
      };
      abRows.push(ab);
      console.log(
        `forward A/B ${dtype}: FA2 time / HSTU time over ${AB_ROUNDS} interleaved rounds: median ${ab.median.toFixed(4)} (min ${ab.min.toFixed(4)}, max ${ab.max.toFixed(4)})`,
      );
    }
    for (const t of [...x.gpu, ...rabTables]) t.dispose();
  }
  if (out)
    writeFileSync(
      out,
      `${JSON.stringify({ adapter: ctx.adapterInfo, backend: ctx.backend, alpha: ALPHA, lengths, rows, forwardAB: abRows }, null, 2)}\n`,
    );
  ctx.destroy();
}

await main();
