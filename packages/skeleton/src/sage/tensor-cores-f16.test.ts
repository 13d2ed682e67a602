import {
  expectSageRowsClose,
  type SageKernelCase,
  sageCaseCodec,
  webGpuTestContext,
} from '@attnkit/testing';
import { afterAll, describe, expect, test } from 'vitest';
import { tcForwardShader, tcForwardWorkgroupBytes } from '../webgpu/tc-forward.js';
import { sageForwardTs } from './forward-ts.js';
import {
  type SageTcF16Tuning,
  sageTcF16Config,
  sageTcF16Configs,
  sageTcF16Forward,
} from './tensor-cores-f16.js';
import { disposeSageCodecGpu, sageCodecToGpu, sageForwardWebGpu } from './webgpu.js';

// What CI can check of Sage on the f16 tensor-core engine (llvmpipe has no subgroup matrices):
// the generated text, the tile plan, and — with the multiplies emulated by the engine's plain
// WGSL (matrixOps) — the conversion, the dequantisation, the softmax with P~'s codes, the
// rescales and the epilogue against the TypeScript spec of ARITHMETIC.md from the same codes.
// The device run (benchmarks/gpu/bench-sage.ts) checks the builtins before it times them.
describe('Sage on the f16 tensor-core engine: the generated kernel', () => {
  test('natural units and sage_exp, P~ codes into sp, f32 O scaled by dV, the scales bound', () => {
    const code = tcForwardShader(sageTcF16Config(128, 128, 'thread', true, 4)).code;
    expect(code).toMatch(/enable chromium_experimental_subgroup_matrix;/);
    expect(code).toContain('fn sage_exp(x0: f32) -> f32');
    expect(code).toContain(
      'fn kgroup(j: u32) -> u32 { return (j >> 6u) * 4u + ((j & 7u) >> 1u); }',
    );
    // The score: f32(dot) (qsv ksc) + bias, times the natural scale; no log2 units.
    expect(code).toContain(
      'select(NEG, (rs0 * (qsv * ksc[ksB + kgroup(min(u32(i32(c0 + cl0)), nk - 1u))]) + dsb[dsB + min(u32(i32(c0 + cl0)), nk - 1u)]) * P.scale',
    );
    expect(code).not.toContain('P.scaleLog2');
    expect(code).not.toMatch(/exp2\(/);
    expect(code).toContain('let alpha = sage_exp(m - mn);');
    expect(code).toContain('select(0.0, sage_exp(ms0 - mn), ms0 > NEG)');
    expect(code).toMatch(/sp\[sg\]\[rr \* 72u \+ cl0\] = f16\(round\(p \* 255\.0\)\);/);
    // Lazy 0: a row's max moves at every increase.
    expect(code).toContain('if (tmax > m) { mn = tmax; }');
    // f32 O times dV, LSE in natural units.
    expect(code).toContain('var<storage, read_write> o: array<vec4<f32>>;');
    expect(code).toMatch(/\* vsc\[cc \+ 3u\]\) \* inv;/);
    expect(code).toContain('lse[lB + u32(row)] = select(m + log(l)');
    for (const b of ['qsc', 'ksc', 'vsc', 'dsb'])
      expect(code).toContain(`var<storage, read> ${b}: array<f32>;`);
    expect(code).toMatch(
      /struct Params \{[^}]*hq: u32,\s*hkv: u32,\s*nQG: u32,\s*nKG: u32,\s*nQB: u32,/,
    );
    const noBias = tcForwardShader(sageTcF16Config(64, 32, 'warp', false, 2)).code;
    expect(noBias).not.toMatch(/dsb/);
    expect(noBias).toContain('fn qgroup(i: u32) -> u32 { return i >> 4u; }');
    // One K scale per 64-key tile with 'warp' (and 'block'): f32(sQ sK) once a tile.
    expect(noBias).toContain('let ksT = qsv * ksc[ksB + kgroup(c0)];');
    expect(noBias).toContain('select(NEG, (rs0 * ksT) * P.scale');
    expect(code).not.toContain('ksT');
  });

  test('validation names the field; the tile fits 48 KiB at D = Dv = 128 with 4 subgroups', () => {
    const base = sageTcF16Config(64, 64, 'warp', false, 2);
    expect(() => tcForwardShader({ ...base, keyMatrices: 2 })).toThrow(
      /^keyMatrices: expected 4 with sage \(ARITHMETIC.md's 64-key tiles\), got 2/,
    );
    expect(() => tcForwardShader({ ...base, lazy: 8 })).toThrow(/^lazy: expected 0 with sage/);
    expect(() => tcForwardShader({ ...base, blockSparse: true })).toThrow(
      /^sage: expected no split, blockSparse or debug/,
    );
    expect(() =>
      tcForwardShader({ ...base, sage: { granularity: 'row' as never, bias: false } }),
    ).toThrow(/^sage.granularity: expected "block", "warp" or "thread", got "row"/);
    expect(tcForwardWorkgroupBytes(sageTcF16Config(128, 128, 'warp', true, 4))).toBeLessThanOrEqual(
      49152,
    );
    const h200 = {
      limits: { maxComputeWorkgroupStorageSize: 49152, maxComputeInvocationsPerWorkgroup: 1024 },
    };
    expect(sageTcF16Configs(h200 as never, 128, 128, 'warp', true).map((c) => c.subgroups)).toEqual(
      [4, 2, 1],
    );
    const small = {
      limits: { maxComputeWorkgroupStorageSize: 16384, maxComputeInvocationsPerWorkgroup: 256 },
    };
    expect(() => sageTcF16Configs(small as never, 128, 128, 'warp', true)).toThrow(
      /^tensorCores: expected a tile whose workgroup fits the device \(16384 bytes\), got 4 subgroups needing/,
    );
  });
});

const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

// Odd lengths, Nq != Nk, GQA, causal rows without keys, a window, Dv != D, INT4 and INT8, every
// granularity, with and without the smoothQ bias; past 64 keys so the running max moves across
// tiles (the rescale path), and past 16 rows per subgroup. Head dims small: llvmpipe's cold
// compile of the emulated kernel grows with them (~70 s at D = Dv = 64, ~17 s at 16 / 32); the
// device run covers D = 128.
const CASES: SageKernelCase[] = [
  {
    name: 'odd lengths, Nq != Nk, warp, smoothing',
    dims: { batch: 1, hq: 2, hkv: 2, nq: 77, nk: 131, d: 32, dv: 32 },
    g: 'warp',
    bits: 8,
    smoothQ: true,
    opts: { scale: 0.125, causal: false },
    offset: true,
  },
  {
    name: 'causal GQA 4/2, thread, INT4, Dv != D',
    dims: { batch: 2, hq: 4, hkv: 2, nq: 45, nk: 70, d: 16, dv: 48 },
    g: 'thread',
    bits: 4,
    smoothQ: true,
    opts: { scale: 0.2, causal: true },
  },
  {
    name: 'Nq > Nk causal (rows without keys), window, block, no Q smoothing, D 16',
    dims: { batch: 1, hq: 2, hkv: 1, nq: 90, nk: 40, d: 16, dv: 32 },
    g: 'block',
    bits: 8,
    smoothQ: false,
    opts: { scale: 0.3, causal: true, window: [20, -1] },
  },
  {
    // Three 128-row bias blocks and Q groups, four key tiles; with two subgroups the last
    // workgroup's second subgroup lies wholly past the sequence (rows 304..319).
    name: 'nq 300 (three bias blocks), nk 200, block, smoothing',
    dims: { batch: 1, hq: 1, hkv: 1, nq: 300, nk: 200, d: 16, dv: 16 },
    g: 'block',
    bits: 8,
    smoothQ: true,
    opts: { scale: 0.25, causal: false },
  },
];

/** O against the spec (relative L2 of the tensor), LSE entry by entry, no non-finite values. */
function compare(
  c: SageKernelCase,
  o: Float32Array,
  lse: Float32Array,
  spec: { o: Float32Array; lse?: Float32Array },
) {
  // Row by row (ARITHMETIC.md): rows with a flipped P~ code counted and bounded, the rest
  // within 1e-5 (the integers are exact; the rest is f32 rounding order).
  expectSageRowsClose(o, spec.o, c.dims.dv, c.name);
  let lseBad = 0;
  let empty = 0;
  for (let i = 0; i < lse.length; i++) {
    const a = lse[i]!;
    const b = spec.lse![i]!;
    if (b === Number.NEGATIVE_INFINITY) {
      empty++;
      if (a !== b) lseBad++;
    } else if (!(Math.abs(a - b) <= 1e-5 * Math.max(1, Math.abs(b)))) lseBad++;
  }
  expect({ case: c.name, lseBad }).toEqual({ case: c.name, lseBad: 0 });
  if (c.name.startsWith('Nq > Nk')) expect(empty).toBeGreaterThan(0);
}

describe.skipIf(!ctx)(
  'Sage on the f16 tensor-core engine, emulated, vs the TypeScript spec',
  () => {
    const run = async (
      c: SageKernelCase,
      seed: number,
      subgroups: number,
      tuning?: SageTcF16Tuning,
    ) => {
      const codec = sageCaseCodec(c, seed);
      const spec = sageForwardTs(codec, { ...c.opts, returnLse: true });
      const gpu = sageCodecToGpu(ctx!, codec);
      const bufs = { ...gpu, vCodes: gpu.vCodes!, vScale: gpu.vScale! };
      ctx!.poisonOutputs = true;
      try {
        const r = await sageTcF16Forward(
          ctx!,
          bufs,
          c.dims,
          c.g,
          { scale: c.opts.scale!, window: bandOf(c) },
          { subgroups, emulate: true, tuning },
        );
        const o = new Float32Array(await ctx!.readBuffer(r.o, spec.o.length * 4));
        const lse = new Float32Array(await ctx!.readBuffer(r.lse, spec.lse!.length * 4));
        compare(c, o, lse, spec);
        ctx!.pool.release(r.o);
        ctx!.pool.release(r.lse);
      } finally {
        ctx!.poisonOutputs = false;
        disposeSageCodecGpu(ctx!, gpu);
      }
    };

    // The softmax loop and the flat scratch: the defaults' unrolled softmax costs llvmpipe about a
    // minute of compiling per kernel when its shader cache is cold (CI), this a few seconds.
    test('every case, the softmax loop', async () => {
      for (const [n, c] of CASES.entries())
        await run(c, 300 + n, n === 3 ? 2 : 1, { regSoftmax: false, constOffsets: false });
    });

    test('the device defaults (softmax from registers, nested scratch), two subgroups, four key tiles', () =>
      run(CASES[3]!, 303, 2));

    test('through sageForwardWebGpu (tensorCores: { engine: "f16" }), with its errors', async () => {
      const c = CASES[3]!;
      const codec = sageCaseCodec(c, 400);
      const spec = sageForwardTs(codec, { ...c.opts, returnLse: true });
      const gpu = sageCodecToGpu(ctx!, codec);
      ctx!.poisonOutputs = true;
      try {
        const r = await sageForwardWebGpu(ctx!, gpu, {
          ...c.opts,
          returnLse: true,
          // The kernel the test before compiled (llvmpipe compiles slowly).
          tensorCores: { engine: 'f16', subgroups: 2, emulate: true },
        });
        const o = new Float32Array(await ctx!.readBuffer(r.o, spec.o.length * 4));
        const lse = new Float32Array(await ctx!.readBuffer(r.lse!, spec.lse!.length * 4));
        compare(c, o, lse, spec);
        ctx!.pool.release(r.o);
        ctx!.pool.release(r.lse!);
        await expect(
          sageForwardWebGpu(ctx!, gpu, {
            ...c.opts,
            returnLse: false,
            tensorCores: { engine: 'f16', subgroups: 3, emulate: true },
          }),
        ).rejects.toThrow(/^tensorCores.subgroups: expected 1, 2 or 4 with engine "f16", got 3/);
        await expect(
          sageForwardWebGpu(ctx!, gpu, {
            ...c.opts,
            returnLse: false,
            tensorCores: { engine: 'bf16' as never, emulate: true },
          }),
        ).rejects.toThrow(/^tensorCores.engine: expected "i8" or "f16", got "bf16"/);
        // WebGPU's default 8 storage buffers a stage: this case's emulated kernel binds 10 (on a
        // device 11, Q's halves bound a second time for the direct loads).
        const eight = { limits: { ...ctx!.limits, maxStorageBuffersPerShaderStage: 8 } };
        const bufs = { ...gpu, vCodes: gpu.vCodes!, vScale: gpu.vScale! };
        await expect(
          sageTcF16Forward(
            eight as never,
            bufs,
            c.dims,
            c.g,
            { scale: 0.3, window: bandOf(c) },
            { emulate: true },
          ),
        ).rejects.toThrow(
          /^tensorCores: expected a device with 10 storage buffers per shader stage for the f16 engine's Sage kernel, got one with 8/,
        );
      } finally {
        ctx!.poisonOutputs = false;
      }
    });
  },
);

/** The window with causal folded in (bottom-right), as the kernels read it. */
function bandOf(c: SageKernelCase): [number, number] {
  let [left, right] = c.opts.window ?? [-1, -1];
  if (c.opts.causal) right = right < 0 ? 0 : Math.min(right, 0);
  return [left, right];
}
