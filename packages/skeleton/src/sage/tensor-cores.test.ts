import { type SageKernelCase, sageCaseCodec, webGpuTestContext } from '@attnkit/testing';
import { afterAll, describe, expect, test } from 'vitest';
import { sageForwardTs } from './forward-ts.js';
import { sageTcForward, sageTcShader, sageTcWorkgroupBytes } from './tensor-cores.js';

// What CI can check of the int8 tensor-core kernel (llvmpipe has no subgroup matrices): the
// generated text, the workgroup-memory model, and — with the two products emulated by plain
// WGSL loops into the same scratch arrays — everything else of the kernel against the
// TypeScript spec of ARITHMETIC.md from the same codes. The device run checks the builtins.
describe('int8 tensor-core Sage kernel generator', () => {
  test('i8 x i8 -> i32 for Q K^T, u8 x u8 -> u32 for P V, no arrays of matrices', () => {
    const code = sageTcShader({
      d: 128,
      dv: 128,
      granularity: 'warp',
      subgroups: 4,
      bias: true,
    }).code;
    expect(code).toMatch(/enable chromium_experimental_subgroup_matrix;/);
    expect(code).toMatch(/subgroup_matrix_left<i8, 32, 16>/);
    expect(code).toMatch(/subgroup_matrix_right<i8, 16, 32>>\(&kt, 2080u, true, 128u\)/);
    expect(code).toMatch(/subgroup_matrix_left<u8, 32, 16>/);
    expect(code).toMatch(/subgroup_matrix_result<u32, 16, 16>/);
    expect(code).not.toMatch(/array<subgroup_matrix/);
    // V as u8: every staged word XOR 0x80808080 (vCode + 128).
    expect(code).toMatch(/\^ 0x80808080u/);
    const words = sageTcShader({
      d: 64,
      dv: 64,
      granularity: 'block',
      subgroups: 2,
      bias: false,
      units: 'words',
    }).code;
    expect(words).toMatch(/\(&kt, \(1056u\) \/ 4u, true, \(64u\) \/ 4u\)/);
    expect(words).not.toMatch(/dsb/);
  });

  test('constOffsets: every workgroup matrix load / store at a literal offset and stride, per-subgroup arrays through their element', () => {
    for (const units of ['elems', 'words'] as const)
      for (const [d, dv, subgroups] of [
        [128, 128, 4],
        [64, 96, 2],
        [32, 256, 1],
      ] as const) {
        const cfg = { d, dv, granularity: 'thread' as const, subgroups, bias: true, units };
        const code = sageTcShader({ ...cfg, constOffsets: true }).code;
        const what = `${units} ${d}/${dv}/${subgroups}`;
        // Off: the flat layout, as without the option.
        expect(sageTcShader({ ...cfg, constOffsets: false }).code).toBe(sageTcShader(cfg).code);
        expect(code, what).toContain(`var<workgroup> ss: array<array<i32, 1024>, ${subgroups}>;`);
        expect(code, what).toContain(`var<workgroup> pv: array<array<u32, 512>, ${subgroups}>;`);
        expect(code, what).toContain(`var<workgroup> pc: array<array<u32, 256>, ${subgroups}>;`);
        const calls = [...code.matchAll(/subgroupMatrix(Load<[^(]*>>|Store)\(([^)]*)\)/g)];
        // Every builtin call seen (none with nested parentheses).
        expect(calls.length, what).toBe(code.match(/subgroupMatrix(Load|Store)\b/g)!.length);
        const seen = new Set<string>();
        for (const [call, kind, args] of calls) {
          const a = args!.split(', ');
          const [ptr, off, stride] = kind === 'Store' ? [a[0], a[1], a[4]] : [a[0], a[1], a[3]];
          expect({ call, ptr: /^&((ss|pv|pc)\[sg\]|kt|vt)$/.test(ptr!) }, what).toEqual({
            call,
            ptr: true,
          });
          expect(off, call).toMatch(/^\d+u$/);
          expect(stride, call).toMatch(/^\d+u$/);
          seen.add(ptr!);
        }
        expect([...seen].sort(), what).toEqual(['&kt', '&pc[sg]', '&pv[sg]', '&ss[sg]', '&vt']);
        // Scalar accesses go through the element too.
        expect(code, what).not.toMatch(/\b(ss|pv|pc)\[(?!sg\])/);
      }
    // 'words': the offsets and strides divided by 4 in TypeScript.
    const words = sageTcShader({
      d: 64,
      dv: 64,
      granularity: 'block',
      subgroups: 2,
      bias: false,
      units: 'words',
      constOffsets: true,
    }).code;
    expect(words).toMatch(/\(&kt, 264u, true, 16u\)/);
    expect(words).toMatch(/\(&ss\[sg\], 8u, false, 16u\)/);
    expect(words).toMatch(/\(&pc\[sg\], 8u, false, 16u\)/);
    expect(words).toMatch(/\(&vt, 524u, false, 16u\)/);
    expect(words).toMatch(/subgroupMatrixStore\(&pv\[sg\], 16u, r1, false, 32u\)/);
  });

  test('validation names the field; workgroup memory fits 48 KiB at D = Dv = 128, 4 subgroups', () => {
    expect(() =>
      sageTcShader({ d: 48, dv: 64, granularity: 'warp', subgroups: 4, bias: false }),
    ).toThrow(/^d: expected a multiple of 32 in \[32, 256\]/);
    expect(() =>
      sageTcShader({ d: 64, dv: 64, granularity: 'warp', subgroups: 9, bias: false }),
    ).toThrow(/^subgroups: expected an integer in \[1, 8\]/);
    // K and V tiles 8 KiB each, per subgroup S 4 KiB + PV chunk 2 KiB + P codes 1 KiB + exchange.
    expect(sageTcWorkgroupBytes({ d: 128, dv: 128, subgroups: 4 })).toBe(16384 + 4 * 7424);
    expect(sageTcWorkgroupBytes({ d: 128, dv: 128, subgroups: 4 })).toBeLessThanOrEqual(49152);
  });
});

const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

const CASES: SageKernelCase[] = [
  {
    name: 'odd lengths, Nq != Nk, warp, smoothing',
    dims: { batch: 1, hq: 2, hkv: 2, nq: 77, nk: 131, d: 64, dv: 64 },
    g: 'warp',
    bits: 8,
    smoothQ: true,
    opts: { scale: 0.125, causal: false },
    offset: true,
  },
  {
    name: 'causal GQA 4/2, thread, INT4, Dv != D',
    dims: { batch: 2, hq: 4, hkv: 2, nq: 45, nk: 70, d: 32, dv: 64 },
    g: 'thread',
    bits: 4,
    smoothQ: true,
    opts: { scale: 0.2, causal: true },
  },
  {
    name: 'Nq > Nk causal (rows without keys), window, block, no Q smoothing',
    dims: { batch: 1, hq: 2, hkv: 1, nq: 90, nk: 40, d: 32, dv: 32 },
    g: 'block',
    bits: 8,
    smoothQ: false,
    opts: { scale: 0.3, causal: true, window: [20, -1] },
  },
];

async function upload(bytes: ArrayBufferView) {
  // Codes packed 4 per word: the typed array's bytes, padded to a whole word.
  const u8 = new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const padded = new Uint8Array(Math.max(4, Math.ceil(u8.length / 4) * 4));
  padded.set(u8);
  return ctx!.createFromData(padded, 'sage test');
}

describe.skipIf(!ctx)('int8 tensor-core Sage kernel, emulated, vs the TypeScript spec', () => {
  // constOffsets: the per-subgroup scratch nested (array<array<...>, SG>), emulation included.
  for (const [subgroups, constOffsets] of [
    [1, false],
    [2, false],
    [1, true],
    [2, true],
  ] as const)
    test(`subgroups ${subgroups}${constOffsets ? ', constOffsets' : ''}`, async () => {
      for (const [n, c] of CASES.entries()) {
        const codec = sageCaseCodec(c, 300 + n);
        const spec = sageForwardTs(codec, { ...c.opts, returnLse: true });
        const bufs = {
          qCodes: await upload(codec.qCodes),
          qScale: await upload(codec.qScale),
          kCodes: await upload(codec.kCodes),
          kScale: await upload(codec.kScale),
          vCodes: await upload(codec.vCodes!),
          vScale: await upload(codec.vScale!),
          bias: codec.bias ? await upload(codec.bias) : undefined,
        };
        ctx!.poisonOutputs = true;
        try {
          const r = await sageTcForward(ctx!, bufs, c.dims, c.g, c.opts, {
            subgroups,
            emulate: true,
            // Explicit both ways: the default is on (sageTcForward).
            constOffsets,
          });
          const o = new Float32Array(await ctx!.readBuffer(r.o, spec.o.length * 4));
          const lse = new Float32Array(await ctx!.readBuffer(r.lse, spec.lse!.length * 4));
          let num = 0;
          let den = 0;
          let nonFinite = 0;
          for (let i = 0; i < o.length; i++) {
            if (!Number.isFinite(o[i]!)) nonFinite++;
            num += (o[i]! - spec.o[i]!) ** 2;
            den += spec.o[i]! ** 2;
          }
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
          expect({ case: c.name, relL2: Math.sqrt(num / den) <= 1e-4, nonFinite, lseBad }).toEqual({
            case: c.name,
            relL2: true,
            nonFinite: 0,
            lseBad: 0,
          });
          if (c.name.startsWith('Nq > Nk')) expect(empty).toBeGreaterThan(0);
          ctx!.pool.release(r.o);
          ctx!.pool.release(r.lse);
        } finally {
          ctx!.poisonOutputs = false;
          for (const b of Object.values(bufs)) if (b) ctx!.pool.release(b);
        }
      }
    });
});
