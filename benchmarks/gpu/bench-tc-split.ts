/**
 * Issue 20 item 5: where split-f16 loses its precision on the device. The tensor cores' sums
 * are fine for it (bench-tc-numerics: 2e-7 with the splits made on the host), the emulated
 * kernel meets 1e-5 in CI, yet the kernel on the H200 / H100 gave o 3.4-4.4e-4 against float64.
 * Two probes, one run:
 *
 * - `convert`: f32 -> f16 -> f32 on the device, the way the kernel splits (hi = f16(x),
 *   lo = f16((x - hi) 2^11)), kept in registers and through workgroup memory, and the masked
 *   split (hi = x with 13 low mantissa bits cleared): how far hi + lo 2^-11 lies from x, how
 *   often lo is 0 where x is not a half, how often hi equals round-to-nearest.
 * - `isolate`: the split-f16 forward on inputs where some operands are already halves (their
 *   lo is 0, so that operand's split cannot matter): all f32, Q K halves, V halves, all halves;
 *   for the kernel's configs (the host default, the flat layout without regSoftmax, the masked
 *   split, and the emulation run on this device). Which operand's lo goes missing shows.
 *
 *   node bench-tc-split.mjs [--out split-probe.json]
 */
import { writeFileSync } from 'node:fs';
import {
  type AttentionOptions,
  accuracy,
  resolveAttentionProblem,
  softmaxAttentionReference,
} from '@attnkit/attention';
import { SOFTMAX_HOOKS, tiledForwardWebGpu, type WebGpuTileOptions } from '@attnkit/skeleton';
import { Rng, type Tensor } from '@attnkit/tensor';
import { createWebGpuContext, toWebGpu } from '@attnkit/webgpu';
import { benchDisabledToggles, benchToggles } from './common.js';

const argv = process.argv.slice(2);
const value = (name: string) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : undefined;
};
const ctx = await createWebGpuContext({
  dawnToggles: benchToggles(),
  disabledDawnToggles: benchDisabledToggles(),
});
const t0 = performance.now();
const log = (s: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1)}s] ${s}`);
log(`adapter ${JSON.stringify(ctx.adapterInfo)} features=${JSON.stringify(ctx.features)}`);
const hw = ctx.features.shaderF16 && ctx.features.subgroupMatrix;
const results: Record<string, unknown> = { adapter: ctx.adapterInfo };

// ---- convert ---------------------------------------------------------------------------------
const CONVERT = `enable f16;
@group(0) @binding(0) var<storage, read> X: array<f32>;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
var<workgroup> wh: array<f16, 256>;
var<workgroup> wl: array<f16, 256>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(local_invocation_index) li: u32) {
  let x = X[g.x];
  let h = f16(x);
  let lo = f16((x - f32(h)) * 2048.0);
  wh[li] = h;
  wl[li] = lo;
  workgroupBarrier();
  let m = bitcast<f32>(bitcast<u32>(x) & 0xffffe000u);
  let b = g.x * 6u;
  Y[b] = f32(h);
  Y[b + 1u] = f32(lo);
  Y[b + 2u] = f32(wh[li]);
  Y[b + 3u] = f32(wl[li]);
  Y[b + 4u] = f32(f16(m));
  Y[b + 5u] = f32(f16((x - m) * 2048.0));
}`;

function f16Nearest(x: number): number {
  // Round to nearest even at 11 significant bits (normal range; these inputs stay in it or are
  // reported as subnormal).
  if (x === 0) return 0;
  const e = Math.floor(Math.log2(Math.abs(x)));
  const q = 2 ** (Math.max(e, -14) - 10);
  const r = x / q;
  const f = Math.floor(r);
  const d = r - f;
  const n = d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
  return n * q;
}

if (hw) {
  const rng = new Rng(7);
  const N = 256 * 64;
  const classes: Array<[string, () => number]> = [
    ['randn', () => rng.normal()],
    ['p in (0, 1], exp(-u 12)', () => Math.exp(-12 * rng.uniform())],
    ['p up to 256 (lazy rescale)', () => 256 * Math.exp(-12 * rng.uniform())],
    ['small 1e-4..1e-2', () => 10 ** (-4 + 2 * rng.uniform()) * (rng.uniform() < 0.5 ? -1 : 1)],
  ];
  const prog = await ctx.pipelines.get({
    code: CONVERT,
    bindings: ['read', 'storage'],
    label: 'split convert',
  });
  const conv: Record<string, unknown> = {};
  for (const [name, gen] of classes) {
    const x = new Float32Array(N);
    for (let i = 0; i < N; i++) x[i] = gen();
    const bx = ctx.createFromData(x, 'convert x');
    const by = ctx.createStorageBuffer(N * 6 * 4, 'convert y');
    await ctx.dispatch([{ program: prog, buffers: [bx, by], workgroups: [N / 256] }]);
    const y = new Float32Array(await ctx.readBuffer(by, N * 6 * 4));
    bx.destroy();
    by.destroy();
    const stat = (hiAt: number, loAt: number) => {
      let maxRel = 0;
      let sum2 = 0;
      let ref2 = 0;
      let loZero = 0;
      let notHalf = 0;
      let nearest = 0;
      for (let i = 0; i < N; i++) {
        const xi = x[i]!;
        const h = y[i * 6 + hiAt]!;
        const lo = y[i * 6 + loAt]!;
        const e = xi - (h + lo / 2048);
        maxRel = Math.max(maxRel, Math.abs(e / xi));
        sum2 += e * e;
        ref2 += xi * xi;
        const hn = f16Nearest(xi);
        if (hn !== xi) {
          notHalf++;
          if (lo === 0) loZero++;
        }
        if (h === hn) nearest++;
      }
      return {
        maxRel,
        relL2: Math.sqrt(sum2 / ref2),
        loZeroOfNotHalf: loZero / Math.max(notHalf, 1),
        hiNearest: nearest / N,
      };
    };
    const r = { registers: stat(0, 1), workgroup: stat(2, 3), masked: stat(4, 5) };
    conv[name] = r;
    for (const [k, s] of Object.entries(r))
      log(
        `RESULT convert ${name} ${k}: hi + lo 2^-11 vs x relL2 ${s.relL2.toExponential(2)}, max rel ${s.maxRel.toExponential(2)}, lo = 0 where x is no half ${(100 * s.loZeroOfNotHalf).toFixed(1)}%, hi = f16 nearest ${(100 * s.hiNearest).toFixed(1)}%`,
      );
  }
  results.convert = conv;
} else log('convert: skipped (no shader-f16 / subgroup matrices)');

// ---- isolate ---------------------------------------------------------------------------------
type TcOpt = WebGpuTileOptions['tensorCores'];
const emu = { emulate: true, subgroups: 1, keyMatrices: 1 } as const;
const configs: Array<[string, TcOpt]> = hw
  ? [
      ['presplit', { presplit: true }],
      ['presplit, masked P', { presplit: true, splitMask: true }],
      ['presplit, 8 x 1', { presplit: true, subgroups: 8, keyMatrices: 1 }],
      ['in-kernel split', { presplit: false }],
      ['in-kernel split, masked', { presplit: false, splitMask: true }],
      [
        'in-kernel split, flat, loop softmax',
        { presplit: false, constOffsets: false, regSoftmax: false },
      ],
      [
        'in-kernel split, one subgroup, one key matrix',
        { presplit: false, subgroups: 1, keyMatrices: 1 },
      ],
      ['emulated on this device, presplit', { ...emu, presplit: true }],
      ['emulated on this device, in-kernel split', { ...emu, presplit: false }],
    ]
  : [
      ['emulated, presplit', emu],
      ['emulated, presplit, qDirect', { ...emu, qDirect: true }],
      ['emulated, presplit, masked P', { ...emu, splitMask: true }],
      ['emulated, in-kernel split', { ...emu, presplit: false }],
      ['emulated, in-kernel split, masked', { ...emu, presplit: false, splitMask: true }],
    ];
const halves = (t: Tensor) => t.astype('f16').astype('f32');
const shapes: Array<[string, number[], number[], AttentionOptions]> = [
  ['(1, 4, 257 x 515, 128)', [1, 4, 257, 128], [1, 4, 515, 128], {}],
  ['(1, 4, 515 x 515, 128) causal', [1, 4, 515, 128], [1, 4, 515, 128], { causal: true }],
  // D 32: what the emulation fits in llvmpipe's 32 KiB of workgroup memory.
  ['(1, 4, 515 x 515, 32) causal', [1, 4, 515, 32], [1, 4, 515, 32], { causal: true }],
];
const iso: unknown[] = [];
for (const [sname, qs, ks, attn] of shapes) {
  const rng = new Rng(11);
  const q0 = rng.randn(qs);
  const k0 = rng.randn(ks);
  const v0 = rng.randn(ks);
  const variants: Array<[string, Tensor, Tensor, Tensor]> = [
    ['all f32', q0, k0, v0],
    ['Q K halves', halves(q0), halves(k0), v0],
    ['V halves', q0, k0, halves(v0)],
    ['all halves', halves(q0), halves(k0), halves(v0)],
  ];
  for (const [vname, q, k, v] of variants) {
    const ref = softmaxAttentionReference(q, k, v, attn);
    for (const [cname, tc] of configs) {
      const g = [q, k, v].map((t) => toWebGpu(t, ctx));
      ctx.poisonOutputs = true;
      try {
        const p = resolveAttentionProblem(q, k, v, attn);
        const r = await tiledForwardWebGpu(p, SOFTMAX_HOOKS, g[0]!, g[1]!, g[2]!, {
          tensorCores: tc,
        });
        const eo = accuracy(await r.o.toCpu(), ref.o);
        const el = accuracy(await r.lse!.toCpu(), ref.lse as Tensor);
        iso.push({
          shape: sname,
          inputs: vname,
          config: cname,
          o: eo.relL2,
          lse: el.relL2,
          nonFinite: eo.nonFinite + el.nonFinite,
        });
        log(
          `RESULT isolate ${sname} ${vname} [${cname}]: o ${eo.relL2.toExponential(2)}, lse ${el.relL2.toExponential(2)}, nonfinite ${eo.nonFinite + el.nonFinite}`,
        );
        r.o.dispose();
        r.lse!.dispose();
      } catch (e) {
        iso.push({ shape: sname, inputs: vname, config: cname, error: (e as Error).message });
        log(
          `RESULT isolate ${sname} ${vname} [${cname}]: error ${(e as Error).message.slice(0, 300)}`,
        );
      } finally {
        ctx.poisonOutputs = false;
        for (const t of g) t.dispose();
      }
    }
    // The f16 tensor-core kernel on the halves, for scale.
    if (vname === 'all halves' && hw) {
      const g = [q, k, v].map((t) => toWebGpu(t.astype('f16'), ctx));
      const p = resolveAttentionProblem(g[0]!, g[1]!, g[2]!, attn);
      const r = await tiledForwardWebGpu(p, SOFTMAX_HOOKS, g[0]!, g[1]!, g[2]!, {
        tensorCores: true,
      });
      const eo = accuracy(await r.o.toCpu(), ref.o);
      log(
        `RESULT isolate ${sname} ${vname} [tc f16 kernel on f16 tensors]: o ${eo.relL2.toExponential(2)}`,
      );
      iso.push({ shape: sname, inputs: vname, config: 'tc f16', o: eo.relL2 });
      r.o.dispose();
      r.lse?.dispose();
      for (const t of g) t.dispose();
    }
  }
}
results.isolate = iso;
const outPath = value('out');
if (outPath) writeFileSync(outPath, JSON.stringify(results, null, 1));
log('done');
