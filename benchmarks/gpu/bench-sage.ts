/**
 * SageAttention2 on WebGPU (issue 11 items 5 and 7, the H200 half). Bundled with build.mjs
 * (dist/bench-sage.mjs); on the H200 h200-sage.sh runs it through .gpu/run.sh.
 *
 *   node bench-sage.mjs [--out sage.json] [--repeats 10] [--skip-verify] [--skip-table]
 *                       [--shapes 4,32,4096,128;4,32,8192,128] [--subgroups 4,2] [--units elems,words]
 *                       [--tc-variants '[{"constOffsets":false},{}]']
 *                       [--f16-subgroups 4,2 | none] [--skip-i8] [--causal true|false]
 *
 * 1. Verification first, outputs poisoned: the int8 tensor-core kernel (sage/tensor-cores.ts)
 *    and the portable dot4I8Packed kernel (sage/webgpu.ts) on small random shapes (odd lengths,
 *    Nq != Nk, GQA, causal, window, INT4/INT8, every granularity), each from the codes of the
 *    TypeScript spec (quantizeSageTs) against the spec's O (sageForwardTs; relative L2 <= 1e-4,
 *    ARITHMETIC.md; a kernel is right when it reproduces the spec) and against the float64
 *    softmax reference (cosine, relative L1; KERNELS.md's bars: INT8 cos >= 0.999 and relL1 <=
 *    0.03, INT4 cos >= 0.99: printed met / MISSED, an accuracy property of the algorithm).
 *    --units elems,words tries both readings of the i8 matrix offsets (the H200, 2026-12-02:
 *    'elems' exact, 'words' rejected by the compiler: strides under 32 bytes); the table uses
 *    the first exact one.
 * 2. Table: TOPS = 4 B H N^2 D (halved causal), timestamp medians, at the issue's shapes:
 *    - sage TC: the tensor-core kernel alone, and with the GPU pre-pass (quantizeSageWebGpu on
 *      f16 inputs: smoothing, scales, codes) added: "incl. quant";
 *    - sage portable: the dot4I8Packed kernel;
 *    - our FA2 on the same shapes: tensor-core f16 (tensorCores: true), SIMT f16, and SIMT f32
 *      on the same values widened to f32.
 *    PyTorch SDPA rows come from torch_sdpa.py --shapes ... --forward-only in the same command.
 *
 * --tc-variants: a JSON list of tensor-core kernel options (SageTcConfig's constOffsets; an
 * optional "name"), each verified and timed in the one process: every tc line, verification
 * row ("variant") and table key (tc_<variant>_sg4_ms...) names its variant ("default" for {},
 * else the options set, e.g. "constOffsets"). A variant inexact on the table's reading (the
 * first exact one) counts a failure and is not timed. Without the flag: one unnamed variant
 * {}, the output as before.
 *
 * --f16-subgroups (default 4): Sage on the f16 tensor-core engine (sage/tensor-cores-f16.ts,
 * sageForwardWebGpu's tensorCores { engine: 'f16', subgroups }), verified beside the others
 * ("tc f16 sgN": against the spec and float64) and, where exact, timed ("f16_sgN_*" keys; its
 * time includes the codes' conversion to f16, which runs in the same call); `none` leaves it out.
 * --skip-i8: leave the int8 kernel out of both (it is the slow one: ~80 ms a call at N 4096).
 */
import { writeFileSync } from 'node:fs';
import { accuracy, resolveAttentionProblem, softmaxAttentionReference } from '@attnkit/attention';
import {
  quantizeSageTs,
  type SageDims,
  type SageGranularity,
  SOFTMAX_HOOKS,
  sageForwardTs,
  tiledForwardWebGpu,
} from '@attnkit/skeleton';
import { Rng, Tensor } from '@attnkit/tensor';
import { createWebGpuContext, GpuProfiler, toWebGpu, webGpuStorageOf } from '@attnkit/webgpu';
import { sageTcForward } from '../../packages/skeleton/src/sage/tensor-cores.js';
import {
  disposeSageCodecGpu,
  quantizeSageWebGpu,
  type SageCodecGpu,
  type SageForwardWebGpuOptions,
  sageCodecToGpu,
  sageForwardWebGpu,
} from '../../packages/skeleton/src/sage/webgpu.js';
import { benchDisabledToggles, benchToggles, median } from './common.js';

const args = process.argv.slice(2);
const value = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const flag = (name: string) => args.includes(`--${name}`);
const REPEATS = Number(value('repeats') ?? 10);
const SHAPES = (value('shapes') ?? '4,32,4096,128;4,32,8192,128')
  .split(';')
  .map((s) => s.split(',').map(Number) as [number, number, number, number]);
const SUBGROUPS = (value('subgroups') ?? '4,2').split(',').map(Number);
const UNITS = (value('units') ?? 'elems').split(',') as Array<'elems' | 'words'>;
const F16_SUBGROUPS =
  value('f16-subgroups') === 'none' ? [] : (value('f16-subgroups') ?? '4').split(',').map(Number);
const SKIP_I8 = flag('skip-i8');
/** f16-engine tiles that reproduced the spec on every case (filled by verify). */
const f16Bad = new Set<number>();

/** A tensor-core kernel variant: its options, its name ('' only for the flag's absence). */
interface TcVariant {
  name: string;
  opts: { constOffsets?: boolean };
}
function tcVariants(json: string | undefined): TcVariant[] {
  if (json === undefined) return [{ name: '', opts: {} }];
  const list = JSON.parse(json) as unknown;
  if (!Array.isArray(list) || list.length === 0)
    throw new Error(`--tc-variants: expected a non-empty JSON list of objects, got ${json}`);
  const variants = list.map((v: unknown): TcVariant => {
    if (typeof v !== 'object' || v === null || Array.isArray(v))
      throw new Error(`--tc-variants: expected objects, got ${JSON.stringify(v)}`);
    const { name, ...opts } = v as Record<string, unknown>;
    for (const [k, x] of Object.entries(opts))
      if (k !== 'constOffsets' || typeof x !== 'boolean')
        throw new Error(
          `--tc-variants: expected only constOffsets (boolean) and name, got ${k}: ${JSON.stringify(x)}`,
        );
    const auto = Object.entries(opts).map(([k, x]) => (x === true ? k : `${k}=${String(x)}`));
    return {
      name: typeof name === 'string' && name !== '' ? name : auto.join('+') || 'default',
      opts: opts as TcVariant['opts'],
    };
  });
  const names = variants.map((v) => v.name);
  if (new Set(names).size !== names.length)
    throw new Error(`--tc-variants: expected distinct variants, got names ${names.join(', ')}`);
  return variants;
}
const TC_VARIANTS = tcVariants(value('tc-variants'));
/** Label suffix and table-key part of a variant (empty for the flag's absence). */
const vLabel = (v: TcVariant) => (v.name ? ` ${v.name}` : '');
const vKey = (v: TcVariant) => (v.name ? `${v.name}_` : '');

const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
console.log(
  `adapter ${JSON.stringify(ctx.adapterInfo)} features=${JSON.stringify({ ...ctx.features, subgroupMatrixConfigs: ctx.features.subgroupMatrixConfigs.filter((c) => c.component !== 'f16') })}`,
);
const out: Record<string, unknown> = { adapter: ctx.adapterInfo, date: new Date().toISOString() };
if (value('tc-variants') !== undefined) out.tcVariants = TC_VARIANTS;
const save = () => value('out') && writeFileSync(value('out')!, JSON.stringify(out, null, 2));
let failures = 0;

interface Case {
  name: string;
  dims: SageDims;
  g: SageGranularity;
  bits: 4 | 8;
  causal: boolean;
  window?: [number, number];
}
const CASES: Case[] = [
  {
    name: 'odd, Nq != Nk, warp',
    dims: { batch: 1, hq: 2, hkv: 2, nq: 77, nk: 205, d: 64, dv: 64 },
    g: 'warp',
    bits: 8,
    causal: false,
  },
  {
    name: 'causal GQA 8/2, thread',
    dims: { batch: 2, hq: 8, hkv: 2, nq: 150, nk: 150, d: 128, dv: 128 },
    g: 'thread',
    bits: 8,
    causal: true,
  },
  {
    name: 'INT4 thread, Nq < Nk causal',
    dims: { batch: 1, hq: 4, hkv: 4, nq: 96, nk: 300, d: 128, dv: 128 },
    g: 'thread',
    bits: 4,
    causal: true,
  },
  {
    name: 'window (40, 9), Dv != D',
    dims: { batch: 1, hq: 2, hkv: 1, nq: 130, nk: 130, d: 64, dv: 128 },
    g: 'warp',
    bits: 8,
    causal: false,
    window: [40, 9],
  },
  {
    name: 'large N 2048 causal',
    dims: { batch: 1, hq: 2, hkv: 2, nq: 2048, nk: 2048, d: 128, dv: 128 },
    g: 'warp',
    bits: 8,
    causal: true,
  },
];

function relL2(a: Float32Array, b: Float32Array): number {
  let n = 0;
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    n += (a[i]! - b[i]!) ** 2;
    d += b[i]! ** 2;
  }
  return Math.sqrt(n / d);
}

async function verify(): Promise<{
  readings: Array<'elems' | 'words'>;
  exactVariants: (units: 'elems' | 'words') => TcVariant[];
}> {
  const rows: unknown[] = [];
  // Per reading, the variants with an exact run and those with an inexact or failed one.
  const exact = new Set<string>();
  const bad = new Set<string>();
  const at = (units: string, v: TcVariant) => `${units} ${v.name}`;
  const variantOf = (v: TcVariant) => (v.name ? { variant: v.name } : {});
  for (const [n, c] of CASES.entries()) {
    const rng = new Rng(500 + n);
    const { batch, hq, hkv, nq, nk, d, dv } = c.dims;
    const q = rng.randn([batch, hq, nq, d]);
    const k = rng.randn([batch, hkv, nk, d]);
    const v = rng.randn([batch, hkv, nk, dv]);
    const codec = quantizeSageTs(
      q.toFloat32Array(),
      k.toFloat32Array(),
      v.toFloat32Array(),
      c.dims,
      {
        qBits: new Uint8Array(hq).fill(c.bits),
        granularity: c.g,
        smoothK: true,
        smoothQ: true,
        pvBits: 8,
      },
    );
    const opts = { scale: 1 / Math.sqrt(d), causal: c.causal, window: c.window };
    const spec = sageForwardTs(codec, { ...opts, returnLse: true });
    const ref = softmaxAttentionReference(q, k, v, {
      causal: c.causal,
      ...(c.window ? { window: c.window } : {}),
    });
    const refO = ref.o.toFloat32Array();
    const gpu = sageCodecToGpu(ctx, codec);
    const check = async (label: string, o: Float32Array, extra: object = {}) => {
      const vsSpec = relL2(o, spec.o);
      // Row by row as ARITHMETIC.md bounds it: rows beyond 1e-5 (P~ code flips, or an
      // accumulation that drifts) counted, and the worst row.
      let rowsOff = 0;
      let worstRow = 0;
      for (let r = 0; r < o.length / dv; r++) {
        const e = relL2(o.subarray(r * dv, (r + 1) * dv), spec.o.subarray(r * dv, (r + 1) * dv));
        if (e > 1e-5) rowsOff++;
        if (e > worstRow) worstRow = e;
      }
      const a = accuracy(Tensor.from(o, ref.o.shape), ref.o);
      const cos = cosine(o, refO);
      const bar = c.bits === 8 ? cos >= 0.999 && a.relL1 <= 0.03 : cos >= 0.99;
      // The kernel is right when it reproduces the spec; the accuracy bar is the algorithm's
      // (INT4 at D = 128 on random normal inputs misses it on every backend alike).
      const ok = vsSpec <= 1e-4 && a.nonFinite === 0;
      console.log(
        `${ok ? 'ok  ' : 'FAIL'} ${label} ${c.name}: vs spec relL2 ${vsSpec.toExponential(2)}, rows beyond 1e-5 ${rowsOff} of ${o.length / dv} (worst ${worstRow.toExponential(2)}); vs float64 cos ${cos.toFixed(6)} relL1 ${a.relL1.toExponential(2)} (nonfinite ${a.nonFinite}); INT${c.bits} bar ${bar ? 'met' : 'MISSED'}`,
      );
      rows.push({
        kernel: label,
        ...extra,
        case: c.name,
        ok,
        vsSpec,
        rowsOff,
        worstRow,
        cos,
        relL1: a.relL1,
        nonFinite: a.nonFinite,
        bar,
      });
      return ok;
    };
    ctx.poisonOutputs = true;
    try {
      for (const sg of F16_SUBGROUPS) {
        const label = `tc f16 sg${sg}`;
        try {
          const r = await sageForwardWebGpu(ctx, gpu, {
            ...opts,
            returnLse: true,
            tensorCores: { engine: 'f16', subgroups: sg },
          });
          const o = new Float32Array(await ctx.readBuffer(r.o, spec.o.length * 4));
          ctx.pool.release(r.o);
          if (r.lse) ctx.pool.release(r.lse);
          if (!(await check(label, o, { engine: 'f16' }))) f16Bad.add(sg);
        } catch (e) {
          f16Bad.add(sg);
          console.log(`FAIL ${label} ${c.name}: ${String((e as Error).message).slice(0, 300)}`);
          rows.push({ kernel: label, engine: 'f16', case: c.name, ok: false, error: String(e) });
        }
      }
      for (const units of SKIP_I8 ? [] : UNITS)
        for (const variant of TC_VARIANTS)
          for (const subgroups of SUBGROUPS) {
            const label = `tc ${units} sg${subgroups}${vLabel(variant)}`;
            try {
              const r = await sageTcForward(ctx, gpu as Required<SageCodecGpu>, c.dims, c.g, opts, {
                subgroups,
                units,
                ...variant.opts,
              });
              const o = new Float32Array(await ctx.readBuffer(r.o, spec.o.length * 4));
              ctx.pool.release(r.o);
              ctx.pool.release(r.lse);
              if (await check(label, o, variantOf(variant))) exact.add(at(units, variant));
              else bad.add(at(units, variant));
            } catch (e) {
              bad.add(at(units, variant));
              console.log(`FAIL ${label} ${c.name}: ${String((e as Error).message).slice(0, 300)}`);
              rows.push({
                kernel: label,
                ...variantOf(variant),
                case: c.name,
                ok: false,
                error: String(e),
              });
            }
          }
      try {
        // The portable kernel by name: unset, the f16 engine runs where tc-auto.ts takes it.
        const r = await sageForwardWebGpu(ctx, gpu, {
          ...opts,
          returnLse: true,
          tensorCores: false,
        });
        const o = new Float32Array(await ctx.readBuffer(r.o, spec.o.length * 4));
        ctx.pool.release(r.o);
        if (r.lse) ctx.pool.release(r.lse);
        if (!(await check('portable', o))) failures++;
      } catch (e) {
        failures++;
        console.log(`FAIL portable ${c.name}: ${String((e as Error).message).slice(0, 300)}`);
      }
    } finally {
      ctx.poisonOutputs = false;
      disposeSageCodecGpu(ctx, gpu);
    }
  }
  out.verify = rows;
  save();
  const exactVariants = (units: 'elems' | 'words') =>
    TC_VARIANTS.filter((v) => exact.has(at(units, v)) && !bad.has(at(units, v)));
  // A reading is exact when a variant of it is (the flag absent: the one kernel).
  const good = UNITS.filter((u) => exactVariants(u).length > 0);
  const names = (u: 'elems' | 'words') => exactVariants(u).map((v) => v.name);
  const byVariant = TC_VARIANTS[0]!.name
    ? `; exact tc variants ${UNITS.map((u) => `${u} [${names(u).join(', ')}]`).join(', ')}`
    : '';
  console.log(
    `verification: exact readings [${SKIP_I8 ? 'i8 skipped' : good.join(', ')}]; portable failures ${failures}${byVariant}; f16 engine exact tiles [${F16_SUBGROUPS.filter((s) => !f16Bad.has(s)).join(', ')}]`,
  );
  failures += f16Bad.size;
  if (SKIP_I8) return { readings: UNITS, exactVariants: () => [] };
  if (good.length === 0) failures++;
  return { readings: good, exactVariants };
}

function cosine(a: Float32Array, b: Float32Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
}

/** Timestamp median of `run` (its kernel passes summed), after warm-up. */
async function timeIt(run: (p?: GpuProfiler) => Promise<() => void>): Promise<number> {
  const profiler = new GpuProfiler(ctx.device, 16);
  const warm = performance.now();
  // Each warm-up call waits for the GPU: without the sync this loop only submitted, queueing
  // 300 ms worth of submissions, i.e. hundreds of 100+ ms calls at N 8192 (minutes of GPU work
  // before the first timed call; session 32's N 8192 runs never reached one).
  for (let i = 0; i < 3 || performance.now() - warm < 300; i++) {
    const done = await run();
    await ctx.sync();
    done();
  }
  const ms: number[] = [];
  for (let i = 0; i < REPEATS; i++) {
    const done = await run(profiler);
    await ctx.sync();
    done();
    const passes = await profiler.read();
    ms.push(passes.reduce((a, p) => a + p.ns, 0) / 1e6);
  }
  profiler.destroy();
  return median(ms);
}

async function table(units: 'elems' | 'words', variants: TcVariant[]) {
  const rows: Array<Record<string, unknown>> = [];
  for (const [B, H, N, D] of SHAPES) {
    const dims: SageDims = { batch: B, hq: H, hkv: H, nq: N, nk: N, d: D, dv: D };
    // f16 values on the GPU, and the same values widened to f32 for the SIMT f32 FA2 row.
    const [[q, q32], [k, k32], [v, v32]] = [1, 2, 3].map((seed) => {
      const cpu = new Rng(seed).randn([B, H, N, D]).astype('f16');
      return [toWebGpu(cpu, ctx), toWebGpu(cpu.astype('f32'), ctx)] as const;
    }) as [[Tensor, Tensor], [Tensor, Tensor], [Tensor, Tensor]];
    const buf = (t: Tensor) => webGpuStorageOf(t, 'sage bench').buffer;
    const cfg = {
      qBits: new Uint8Array(H).fill(8),
      granularity: 'warp' as const,
      smoothK: true,
      smoothQ: true,
      pvBits: 8 as const,
    };
    const codec = await quantizeSageWebGpu(ctx, buf(q), buf(k), buf(v), dims, cfg, 'f16', {
      checkFinite: false,
    });
    const quantMs = await timeIt(async (profiler) => {
      const c = await quantizeSageWebGpu(ctx, buf(q), buf(k), buf(v), dims, cfg, 'f16', {
        checkFinite: false,
        ...(profiler ? { profiler } : {}),
      });
      return () => disposeSageCodecGpu(ctx, c);
    });
    // --causal true|false: one of the two (a device step too short for both).
    for (const causal of value('causal') ? [value('causal') === 'true'] : [false, true]) {
      const ops = 4 * B * H * N * N * D * (causal ? 0.5 : 1);
      const tops = (ms: number) => ops / (ms * 1e9);
      const opts = { scale: 1 / Math.sqrt(D), causal };
      const row: Record<string, unknown> = { shape: [B, H, N, D], causal, quantMs };
      for (const variant of variants)
        for (const sg of SUBGROUPS) {
          const key = `tc_${vKey(variant)}sg${sg}`;
          try {
            const ms = await timeIt(async (profiler) => {
              const r = await sageTcForward(
                ctx,
                codec as Required<SageCodecGpu>,
                dims,
                'warp',
                opts,
                { subgroups: sg, units, ...variant.opts },
                profiler,
              );
              return () => {
                ctx.pool.release(r.o);
                ctx.pool.release(r.lse);
              };
            });
            row[`${key}_ms`] = ms;
            row[`${key}_tops`] = tops(ms);
            row[`${key}_tops_incl_quant`] = tops(ms + quantMs);
          } catch (e) {
            row[`${key}_error`] = String(e).slice(0, 300);
          }
        }
      // The portable kernel's O (the spec's within 1e-5 row by row, verified above) at this
      // shape: the f16 engine's is compared with it row by row, where its O accumulates over
      // 64-128 key tiles in the tensor cores (longer than any verification case).
      // One call's O read back, and one call of `kernel` (the portable kernel, or the f16
      // engine's tile) timed: the f16 rows and the portable row share them.
      type Kernel = Pick<SageForwardWebGpuOptions, 'tensorCores'>;
      const readO = async (kernel: Kernel) => {
        const r = await sageForwardWebGpu(ctx, codec, { ...opts, ...kernel, returnLse: false });
        const o = new Float32Array(await ctx.readBuffer(r.o, B * H * N * D * 4));
        ctx.pool.release(r.o);
        return o;
      };
      const timeSage = (kernel: Kernel) =>
        timeIt(async (profiler) => {
          const r = await sageForwardWebGpu(ctx, codec, {
            ...opts,
            ...kernel,
            returnLse: true,
            ...(profiler ? { profiler } : {}),
          });
          return () => {
            ctx.pool.release(r.o);
            if (r.lse) ctx.pool.release(r.lse);
          };
        });
      const portableO = F16_SUBGROUPS.some((s) => !f16Bad.has(s))
        ? await readO({ tensorCores: false })
        : undefined;
      for (const sg of F16_SUBGROUPS.filter((s) => !f16Bad.has(s))) {
        const key = `f16_sg${sg}`;
        try {
          const o = await readO({ tensorCores: { engine: 'f16', subgroups: sg } });
          let off = 0;
          let worst = 0;
          let nonFinite = 0;
          for (let i = 0; i < B * H * N; i++) {
            const got = o.subarray(i * D, (i + 1) * D);
            if (got.some((x) => !Number.isFinite(x))) {
              nonFinite++;
              continue;
            }
            // A row without keys is zero in both (relL2 0 / 0): nothing to compare.
            const e = relL2(got, portableO!.subarray(i * D, (i + 1) * D));
            if (e > 1e-5) off++;
            if (e > worst) worst = e;
          }
          row[`${key}_rows_beyond_1e-5_vs_portable`] = off;
          row[`${key}_worst_row_vs_portable`] = worst;
          row[`${key}_nonfinite_rows`] = nonFinite;
          console.log(
            `rows ${JSON.stringify([B, H, N, D])} causal=${causal} f16 sg${sg} vs portable: ${off} of ${B * H * N} rows beyond 1e-5, worst ${worst.toExponential(2)}, non-finite ${nonFinite}`,
          );
        } catch (e) {
          row[`${key}_check_error`] = String(e).slice(0, 300);
        }
        try {
          const ms = await timeSage({ tensorCores: { engine: 'f16', subgroups: sg } });
          row[`${key}_ms`] = ms;
          row[`${key}_tops`] = tops(ms);
          row[`${key}_tops_incl_quant`] = tops(ms + quantMs);
        } catch (e) {
          row[`${key}_error`] = String(e).slice(0, 300);
        }
      }
      try {
        const ms = await timeSage({ tensorCores: false });
        row.portable_ms = ms;
        row.portable_tops = tops(ms);
      } catch (e) {
        row.portable_error = String(e).slice(0, 300);
      }
      // Our FA2 on the same shape: tensor-core f16, SIMT f16, and SIMT f32 on the same values
      // widened to f32 (the f32 kernel issue 11 item 7 names; tensorCores false, or the
      // automatic choice would take split-f16 there).
      const p16 = resolveAttentionProblem(q, k, v, { causal });
      const p32 = resolveAttentionProblem(q32, k32, v32, { causal });
      for (const [name, tc, p, [qq, kk, vv]] of [
        ['fa2_tc_f16', true, p16, [q, k, v]],
        ['fa2_simt_f16', false, p16, [q, k, v]],
        ['fa2_simt_f32', false, p32, [q32, k32, v32]],
      ] as const) {
        try {
          const ms = await timeIt(async (profiler) => {
            const r = await tiledForwardWebGpu(p, SOFTMAX_HOOKS, qq, kk, vv, {
              tensorCores: tc,
              ...(profiler ? { profiler } : {}),
            });
            return () => {
              r.o.dispose();
              r.lse?.dispose();
            };
          });
          row[`${name}_ms`] = ms;
          row[`${name}_tops`] = tops(ms);
        } catch (e) {
          row[`${name}_error`] = String(e).slice(0, 300);
        }
      }
      rows.push(row);
      console.log(`row ${JSON.stringify(row)}`);
      out.table = rows;
      save();
    }
    disposeSageCodecGpu(ctx, codec);
    for (const t of [q, k, v, q32, k32, v32]) t.dispose();
  }
  console.log(
    '\ntable (TOPS = 4 B H N^2 D / time, halved causal; quant = GPU pre-pass on f16 inputs)',
  );
  for (const r of rows) {
    const f = (x: unknown) => (typeof x === 'number' ? x.toFixed(1).padStart(6) : '     -');
    const keys = variants.flatMap((v) => SUBGROUPS.map((s) => `tc_${vKey(v)}sg${s}`));
    const tc = variants
      .map(
        (v) => `tc${vLabel(v)} ${SUBGROUPS.map((s) => f(r[`tc_${vKey(v)}sg${s}_tops`])).join(' ')}`,
      )
      .join(' | ');
    // The best of some rows' keys (`key_suffix`), or '-' where there are none.
    const bestOf = (ks: string[], suffix: string) =>
      f(
        ks.length > 0 ? Math.max(...ks.map((k) => (r[`${k}${suffix}`] as number) ?? 0)) : undefined,
      );
    const f16Keys = F16_SUBGROUPS.map((s) => `f16_sg${s}`);
    const f16 = F16_SUBGROUPS.map((s) => `f16 sg${s} ${f(r[`f16_sg${s}_tops`])}`).join(' ');
    const parts = [
      `${JSON.stringify(r.shape)} causal=${String(r.causal).padEnd(5)}`,
      ...(f16Keys.length > 0 ? [f16, `f16+quant ${bestOf(f16Keys, '_tops_incl_quant')}`] : []),
      ...(keys.length > 0
        ? [tc, `tc+quant ${bestOf(keys, '_tops_incl_quant')}`, `best tc ${bestOf(keys, '_tops')}`]
        : []),
      `quant ${(r.quantMs as number).toFixed(3)} ms`,
      `portable ${f(r.portable_tops)}`,
      `fa2 tc f16 ${f(r.fa2_tc_f16_tops)}`,
      `fa2 simt f16 ${f(r.fa2_simt_f16_tops)}`,
      `fa2 simt f32 ${f(r.fa2_simt_f32_tops)}`,
    ];
    console.log(parts.join(' | '));
  }
}

const verified = flag('skip-verify')
  ? { readings: UNITS, exactVariants: () => (SKIP_I8 ? [] : TC_VARIANTS) }
  : await verify();
const readings = verified.readings;
if (readings.length > 0) {
  const timed = verified.exactVariants(readings[0]!);
  for (const v of SKIP_I8 ? [] : TC_VARIANTS)
    if (!timed.includes(v)) {
      failures++;
      console.log(`FAIL tc${vLabel(v)} inexact on the ${readings[0]} reading: not timed`);
    }
  if (!flag('skip-table')) await table(readings[0]!, timed);
}
save();
console.log(`failures ${failures}`);
process.exit(failures > 0 ? 1 : 0);
