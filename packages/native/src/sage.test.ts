import { Rng } from '@attnkit/tensor';
import { engineOrSkip, poisoned } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  loadNative,
  type NativeEngine,
  type NativeOpMap,
  type NativeSageForwardProblem,
  type NativeSageQuantizeProblem,
} from './index.js';

/**
 * The SageAttention2 ops at the engine level: every ISA's pre-pass gives the same bits (the
 * codes are the TS spec's: packages/skeleton/src/sage/native.test.ts holds them to
 * quantizeSageTs and the kernel to sageForwardTs and the float64 reference), every ISA's
 * kernel agrees with the others to f32 rounding, outputs poisoned; and the op descriptors'
 * checks (TypeError / RangeError naming the argument).
 */
const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

type QuantOut = NativeOpMap['sage.quantize']['outputs'];

function problem(over: Partial<NativeSageQuantizeProblem> = {}): NativeSageQuantizeProblem {
  return {
    batch: 1,
    hq: 4,
    hkv: 2,
    nq: 77,
    nk: 131,
    d: 32,
    dv: 48,
    granularity: 'thread',
    smoothK: true,
    smoothQ: true,
    pvBits: 8,
    ...over,
  };
}

function groups(p: NativeSageQuantizeProblem) {
  const q16 = Math.ceil(p.nq / 16);
  const k64 = Math.ceil(p.nk / 64);
  const nQB = Math.ceil(p.nq / 128);
  if (p.granularity === 'block') return { nQG: nQB, nKG: k64, nQB };
  if (p.granularity === 'warp') return { nQG: q16, nKG: k64, nQB };
  return { nQG: q16 * 8, nKG: k64 * 4, nQB };
}

function outputs(p: NativeSageQuantizeProblem): QuantOut {
  const { nQG, nKG, nQB } = groups(p);
  const out: QuantOut = {
    qCodes: new Int8Array(p.batch * p.hq * p.nq * p.d).fill(-128),
    qScale: poisoned(p.batch * p.hq * nQG),
    kCodes: new Int8Array(p.batch * p.hkv * p.nk * p.d).fill(-128),
    kScale: poisoned(p.batch * p.hkv * nKG),
  };
  if (p.pvBits === 8) {
    out.vCodes = new Int8Array(p.batch * p.hkv * p.nk * p.dv).fill(-128);
    out.vScale = poisoned(p.batch * p.hkv * p.dv);
  }
  if (p.smoothQ) out.bias = poisoned(p.batch * p.hq * nQB * p.nk);
  return out;
}

function inputs(p: NativeSageQuantizeProblem, seed: number) {
  const rng = new Rng(seed);
  return {
    q: rng.randn([p.batch * p.hq * p.nq * p.d]).toFloat32Array(),
    k: rng.randn([p.batch * p.hkv * p.nk * p.d]).toFloat32Array(),
    v: rng.randn([p.batch * p.hkv * p.nk * p.dv]).toFloat32Array(),
    qBits: Uint8Array.from({ length: p.hq }, (_, h) => (h % 3 === 1 ? 4 : 8)),
  };
}

function sameBits(a: Float32Array | Int8Array, b: Float32Array | Int8Array): boolean {
  const x = a instanceof Int8Array ? a : new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = b instanceof Int8Array ? b : new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

function relL2(a: Float32Array, b: Float32Array): number {
  let n = 0;
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    n += (a[i]! - b[i]!) ** 2;
    d += b[i]! ** 2;
  }
  return Math.sqrt(n / d);
}

describe.runIf(base)('sage.quantize and sage.forward on every ISA', () => {
  for (const granularity of ['block', 'warp', 'thread'] as const)
    for (const pvBits of [8, 32] as const)
      test(`${granularity}, pvBits ${pvBits}: equal codes, kernels within f32 rounding`, async () => {
        const p = problem({ granularity, pvBits, smoothQ: pvBits === 8 });
        const x = inputs(p, granularity.length * 31 + pvBits);
        const codecs: QuantOut[] = [];
        for (const e of engines) {
          const out = outputs(p);
          await e.run('sage.quantize', p, x, out);
          codecs.push(out);
          for (const [key, arr] of Object.entries(out)) {
            if (arr instanceof Float32Array) expect(arr.every(Number.isFinite), key).toBe(true);
            else
              expect(
                (arr as Int8Array).every((c) => c >= -127 && c <= 127),
                key,
              ).toBe(true);
          }
        }
        for (let n = 1; n < codecs.length; n++)
          for (const key of Object.keys(codecs[0]!) as (keyof QuantOut)[])
            expect(sameBits(codecs[n]![key]!, codecs[0]![key]!), `${engines[n]!.isa} ${key}`).toBe(
              true,
            );
        const c = codecs[0]!;
        for (const causal of [false, true]) {
          const fp: NativeSageForwardProblem = {
            ...p,
            scale: 1 / Math.sqrt(p.d),
            left: -1,
            right: causal ? 0 : -1,
          };
          const ins: NativeOpMap['sage.forward']['inputs'] = {
            qCodes: c.qCodes,
            qScale: c.qScale,
            kCodes: c.kCodes,
            kScale: c.kScale,
          };
          if (pvBits === 8) {
            ins.vCodes = c.vCodes;
            ins.vScale = c.vScale;
          } else {
            ins.v = x.v;
          }
          if (p.smoothQ) ins.bias = c.bias;
          const results: Float32Array[] = [];
          for (const e of engines) {
            const o = poisoned(p.batch * p.hq * p.nq * p.dv);
            const lse = poisoned(p.batch * p.hq * p.nq);
            await e.run('sage.forward', fp, ins, { o, lse });
            expect(o.every(Number.isFinite), e.isa).toBe(true);
            expect(
              lse.every((y) => Number.isFinite(y)),
              e.isa,
            ).toBe(true);
            results.push(o);
          }
          for (let n = 1; n < results.length; n++)
            expect(relL2(results[n]!, results[0]!), engines[n]!.isa).toBeLessThan(1e-4);
        }
      });
});

describe.runIf(base)('sage ops: descriptor checks', () => {
  const p = problem({ nq: 20, nk: 30 });
  const x = inputs(p, 3);
  const run = (over: Partial<NativeSageQuantizeProblem>, ins: object = x, outs?: object) =>
    base!.run(
      'sage.quantize',
      problem({ nq: 20, nk: 30, ...over }),
      ins as never,
      (outs ?? outputs(problem({ nq: 20, nk: 30, ...over }))) as never,
    );

  test('problem fields', async () => {
    await expect(run({ d: 24 })).rejects.toThrow(/^problem\.d: expected a multiple of 16/);
    await expect(run({ dv: 272 })).rejects.toThrow(
      /^problem\.dv: expected an integer in \[16, 256\]/,
    );
    await expect(run({ granularity: 'tile' as never })).rejects.toThrow(
      /^problem\.granularity: expected "block", "warp" or "thread", got "tile"/,
    );
    await expect(run({ pvBits: 16 as never })).rejects.toThrow(
      /^problem\.pvBits: expected 8 or 32/,
    );
    await expect(run({ hkv: 3 })).rejects.toThrow(/^problem\.hkv: expected a divisor of hq = 4/);
    await expect(run({ smoothK: 1 as never })).rejects.toThrow(
      /^problem\.smoothK: expected a boolean/,
    );
  });

  test('arrays: types, lengths, absent ones, qBits values', async () => {
    await expect(run({}, { ...x, qBits: new Int8Array(4) })).rejects.toThrow(
      /^inputs\.qBits: expected a Uint8Array, got Int8Array/,
    );
    await expect(run({}, { ...x, qBits: new Uint8Array([8, 8, 5, 8]) })).rejects.toThrow(
      /^inputs\.qBits\[2\]: expected 4 or 8, got 5/,
    );
    const o = outputs(p);
    await expect(run({}, x, { ...o, qCodes: new Int8Array(7) })).rejects.toThrow(
      /^outputs\.qCodes: expected 2560 elements \(batch x hq x nq x d\), got 7 elements/,
    );
    await expect(run({}, x, { ...o, qScale: new Int8Array(o.qScale.length) })).rejects.toThrow(
      /^outputs\.qScale: expected a Float32Array, got Int8Array/,
    );
    // pvBits 32: V stays f32, so vCodes / vScale must be absent.
    await expect(run({ pvBits: 32 }, x, o)).rejects.toThrow(
      /^outputs\.vCodes: expected undefined \(problem\.pvBits is 32/,
    );
  });

  test('non-finite inputs reject naming the tensor', async () => {
    for (const name of ['q', 'k', 'v'] as const) {
      const bad = { ...x, [name]: x[name].slice() };
      bad[name][3] = Number.NaN;
      await expect(run({}, bad)).rejects.toThrow(new RegExp(`^${name}: expected finite values`));
    }
  });

  test('the kernel checks codes and scales', async () => {
    const o = outputs(p);
    await run({}, x, o);
    const fp: NativeSageForwardProblem = { ...p, scale: 0.2, left: -1, right: -1 };
    const ins = {
      qCodes: o.qCodes,
      qScale: o.qScale,
      kCodes: o.kCodes,
      kScale: o.kScale,
      vCodes: o.vCodes,
      vScale: o.vScale,
      bias: o.bias,
    };
    const out = { o: new Float32Array(p.hq * p.nq * p.dv) };
    await expect(base!.run('sage.forward', fp, ins, out)).resolves.toBeUndefined();
    const k8 = o.kCodes.slice();
    k8[9] = -128;
    await expect(base!.run('sage.forward', fp, { ...ins, kCodes: k8 }, out)).rejects.toThrow(
      /^inputs\.kCodes\[9\]: expected a code in \[-127, 127\], got -128/,
    );
    const b = o.bias!.slice();
    b[2] = Number.NaN;
    await expect(base!.run('sage.forward', fp, { ...ins, bias: b }, out)).rejects.toThrow(
      /^inputs\.bias\[2\]: expected a finite number/,
    );
    // The check scans blocks of 1024 elements and then names the element: a bias of 4 x 300
    // (two blocks) with its last element infinite.
    const pl = problem({ nq: 20, nk: 300 });
    const ol = outputs(pl);
    await base!.run('sage.quantize', pl, inputs(pl, 5) as never, ol as never);
    const late = ol.bias!.slice();
    expect(late.length).toBeGreaterThan(1024);
    late[late.length - 1] = Number.POSITIVE_INFINITY;
    const insL = {
      qCodes: ol.qCodes,
      qScale: ol.qScale,
      kCodes: ol.kCodes,
      kScale: ol.kScale,
      vCodes: ol.vCodes,
      vScale: ol.vScale,
    };
    const fpl: NativeSageForwardProblem = { ...pl, scale: 0.2, left: -1, right: -1 };
    const outL = { o: new Float32Array(pl.hq * pl.nq * pl.dv) };
    await expect(
      base!.run('sage.forward', fpl, { ...insL, bias: ol.bias }, outL),
    ).resolves.toBeUndefined();
    await expect(base!.run('sage.forward', fpl, { ...insL, bias: late }, outL)).rejects.toThrow(
      new RegExp(`^inputs\\.bias\\[${late.length - 1}\\]: expected a finite number, got inf`),
    );
    await expect(base!.run('sage.forward', { ...fp, smoothQ: false }, ins, out)).rejects.toThrow(
      /^inputs\.bias: expected undefined \(problem\.smoothQ is false/,
    );
    await expect(base!.run('sage.forward', { ...fp, threads: 0 }, ins, out)).rejects.toThrow(
      /^problem\.threads: expected an integer in \[1, 1024\]/,
    );
  });
});
