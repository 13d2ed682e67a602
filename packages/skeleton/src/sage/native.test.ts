import { accuracy, softmaxAttentionReference } from '@attnkit/attention';
import { loadNative, type NativeIsa } from '@attnkit/native';
import { Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { type Accounting, poisonAllocations } from '@attnkit/testing';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { loadNativeBackend } from '../native.js';
import {
  kGroupOf,
  qGroupOf,
  type SageCodecCpu,
  type SageDims,
  type SageGranularity,
  type SageKernelOptions,
  type SageQuantConfig,
  sageGroupCounts,
} from './codec.js';
import { sageForwardTs } from './forward-ts.js';
import { quantizeSageNative, sageForwardNative } from './native.js';
import { quantizeSageTs } from './quantize.js';

/**
 * The native SageAttention2 backend (native.ts -> @attnkit/native's sage.quantize and
 * sage.forward) against (1) the TS spec: codes and scales of quantizeSageTs bit for bit, on
 * every ISA with a pre-pass; O of sageForwardTs from the same codes, on every ISA with a kernel
 * (AVX-512 VNNI, AVX2, scalar), within ARITHMETIC.md's bounds, row by row: every row within
 * 1e-5 relative L2 except rows with a flipped P~ code, each within 1e-2 and at most 1% of the
 * rows + 2. A code may flip only where the spec's f32(255 p) lies within a few ulp of a .5
 * (the exponentials differ by ulps): this test recomputes the spec's 255 p and asserts that
 * every row off by more than 1e-5 is one with such a value (within 32 ulp; counted in the
 * messages). LSE within 1e-5 (l sums the unquantized p); (2) the
 * float64 softmax reference with KERNELS.md's bars, end to end. Fresh random inputs (the seed
 * is in each message), odd lengths, Nq != Nk both ways, GQA, causal, window, INT4 / INT8 /
 * mixed bits, granularity block / warp / thread, pvBits 8 / 32, smoothing on and off; outputs
 * poisoned with NaN (f32) and -128 (codes, which the pre-pass never writes).
 *
 * Without the addon this file fails (a test says why) unless ATTNKIT_ALLOW_NO_NATIVE=1.
 */

const available = await loadNativeBackend();
const base = available === true ? loadNative() : undefined;
if (!base) {
  if (process.env.ATTNKIT_ALLOW_NO_NATIVE === '1') {
    test.skip(`native addon unavailable (ATTNKIT_ALLOW_NO_NATIVE=1): ${available}`, () => {});
  } else {
    test('native addon loads', () => {
      throw new Error(
        `@attnkit/native did not load: ${available} (set ATTNKIT_ALLOW_NO_NATIVE=1 to skip)`,
      );
    });
  }
}
const isas = base?.availableIsas ?? [];
const quantizeIsas = isas.filter((isa) => base!.ops()['sage.quantize'].isas.includes(isa));
const forwardIsas = base ? base.ops()['sage.forward'].isas : [];

let acct: Accounting;
beforeEach(() => {
  acct = poisonAllocations();
});
afterEach(() => acct.restore());

let seed = Date.now() % 100000;

interface Inputs {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  qf: Float32Array;
  kf: Float32Array;
  vf: Float32Array;
}

/** Random normal Q, K, V; `offset`: a few K channels shifted by ~10 sigma (smoothing's case). */
function inputs(rng: Rng, dm: SageDims, offset = false): Inputs {
  const qf = rng.randn([dm.batch, dm.hq, dm.nq, dm.d]).toFloat32Array().slice();
  const kf = rng.randn([dm.batch, dm.hkv, dm.nk, dm.d]).toFloat32Array().slice();
  const vf = rng.randn([dm.batch, dm.hkv, dm.nk, dm.dv]).toFloat32Array().slice();
  if (offset) for (let i = 0; i < kf.length; i += dm.d) kf[i + 3] = kf[i + 3]! + 10;
  return {
    q: Tensor.from(qf, [dm.batch, dm.hq, dm.nq, dm.d]),
    k: Tensor.from(kf, [dm.batch, dm.hkv, dm.nk, dm.d]),
    v: Tensor.from(vf, [dm.batch, dm.hkv, dm.nk, dm.dv]),
    qf,
    kf,
    vf,
  };
}

/** The first element whose bits differ ('' when none), as a readable string. */
function firstBitDiff(a: Float32Array | Int8Array, b: Float32Array | Int8Array): string {
  if (a.length !== b.length) return `length ${a.length} vs ${b.length}`;
  const x = a instanceof Int8Array ? a : new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = b instanceof Int8Array ? b : new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return `element ${i}: ${a[i]} vs ${b[i]}`;
  return '';
}

function expectSameCodec(got: SageCodecCpu, want: SageCodecCpu, what: string): void {
  expect(got.dims, what).toEqual(want.dims);
  expect(got.granularity, what).toBe(want.granularity);
  expect(got.pvBits, what).toBe(want.pvBits);
  for (const key of ['qCodes', 'qScale', 'kCodes', 'kScale', 'vCodes', 'vScale', 'bias'] as const) {
    const a = got[key];
    const b = want[key];
    expect(a === undefined, `${what}: ${key} present`).toBe(b === undefined);
    if (a && b) expect(firstBitDiff(a, b), `${what}: ${key}`).toBe('');
  }
  expect(got.v, what).toBe(want.v);
}

interface QuantCase {
  name: string;
  dims: SageDims;
  qBits: number[] | 4 | 8;
  granularity: SageGranularity;
  smoothK: boolean;
  smoothQ: boolean;
  pvBits: 8 | 32;
  offset?: boolean;
}

const dimsOdd: SageDims = { batch: 1, hq: 4, hkv: 2, nq: 77, nk: 131, d: 64, dv: 64 };
const quantCases: QuantCase[] = [];
for (const granularity of ['block', 'warp', 'thread'] as const)
  for (const b of [8, 4] as const)
    quantCases.push({
      name: `INT${b} ${granularity}, GQA 4/2, 77 x 131`,
      dims: dimsOdd,
      qBits: b,
      granularity,
      smoothK: true,
      smoothQ: true,
      pvBits: 8,
      offset: true,
    });
quantCases.push(
  {
    name: 'mixed bits per head (K at 8 when any of its heads is), Nq > Nk, D != Dv',
    dims: { batch: 2, hq: 6, hkv: 3, nq: 300, nk: 45, d: 48, dv: 32 },
    qBits: [4, 4, 4, 8, 8, 4],
    granularity: 'thread',
    smoothK: true,
    smoothQ: true,
    pvBits: 8,
  },
  {
    name: 'no smoothing, pvBits 32',
    dims: { batch: 1, hq: 2, hkv: 1, nq: 129, nk: 257, d: 16, dv: 80 },
    qBits: 8,
    granularity: 'warp',
    smoothK: false,
    smoothQ: false,
    pvBits: 32,
  },
  {
    name: 'smoothK only, decode row',
    dims: { batch: 3, hq: 8, hkv: 8, nq: 1, nk: 200, d: 128, dv: 128 },
    qBits: 8,
    granularity: 'block',
    smoothK: true,
    smoothQ: false,
    pvBits: 8,
  },
  {
    name: 'smoothQ only, long (several 128-row blocks, 64-key tiles)',
    dims: { batch: 1, hq: 4, hkv: 1, nq: 517, nk: 300, d: 32, dv: 32 },
    qBits: 8,
    granularity: 'thread',
    smoothK: false,
    smoothQ: true,
    pvBits: 8,
    offset: true,
  },
);

function configOf(c: QuantCase): SageQuantConfig {
  const qBits =
    typeof c.qBits === 'number'
      ? new Uint8Array(c.dims.hq).fill(c.qBits)
      : Uint8Array.from(c.qBits);
  return {
    qBits,
    granularity: c.granularity,
    smoothK: c.smoothK,
    smoothQ: c.smoothQ,
    pvBits: c.pvBits,
  };
}

describe.runIf(base)(
  'quantizeSageNative: codes and scales equal quantizeSageTs bit for bit',
  () => {
    for (const c of quantCases)
      test(c.name, async () => {
        const s = seed++;
        const x = inputs(new Rng(s), c.dims, c.offset);
        const config = configOf(c);
        const want = quantizeSageTs(x.qf, x.kf, x.vf, c.dims, config);
        for (const isa of quantizeIsas) {
          const got = await quantizeSageNative(x.qf, x.kf, x.vf, c.dims, config, { isa });
          expectSameCodec(got, want, `${isa}, seed ${s}`);
        }
      });

    test('zero groups (scale 0, codes 0), constant channels, empty sequences', async () => {
      const dm: SageDims = { batch: 1, hq: 2, hkv: 1, nq: 40, nk: 70, d: 16, dv: 16 };
      const x = inputs(new Rng(seed++), dm);
      // Rows 16..31 of head 0 all zero (a whole warp group), V channel 5 zero, K channel 2
      // constant (zero after smoothing).
      x.qf.fill(0, 16 * 16, 32 * 16);
      for (let j = 0; j < dm.nk; j++) {
        x.vf[j * dm.dv + 5] = 0;
        x.kf[j * dm.d + 2] = 0.75;
      }
      // Without smoothQ the zero rows stay zero (with it they become minus their block's mean).
      const config = configOf({ ...quantCases[0]!, dims: dm, granularity: 'warp', smoothQ: false });
      const want = quantizeSageTs(x.qf, x.kf, x.vf, dm, config);
      expect(want.qScale[1]).toBe(0);
      for (const isa of quantizeIsas)
        expectSameCodec(await quantizeSageNative(x.qf, x.kf, x.vf, dm, config, { isa }), want, isa);
      const empty: SageDims = { ...dm, nq: 0, nk: 0 };
      const none = new Float32Array(0);
      const e = await quantizeSageNative(none, none, none, empty, config);
      expectSameCodec(e, quantizeSageTs(none, none, none, empty, config), 'empty');
    });
  },
);

interface FwdCase {
  name: string;
  dims: SageDims;
  causal: boolean;
  window?: [number, number];
  bits: 4 | 8;
  pvBits: 8 | 32;
  granularity: SageGranularity;
  smooth: boolean;
}

const fwdCases: FwdCase[] = [];
for (const causal of [false, true])
  for (const bits of [8, 4] as const)
    for (const granularity of ['block', 'warp', 'thread'] as const)
      fwdCases.push({
        name: `INT${bits} ${granularity}, GQA 4/2, 77 x 131`,
        dims: dimsOdd,
        causal,
        bits,
        pvBits: 8,
        granularity,
        smooth: true,
      });
fwdCases.push(
  {
    name: 'Nq > Nk (rows without keys when causal), D != Dv',
    dims: { batch: 2, hq: 2, hkv: 1, nq: 150, nk: 61, d: 32, dv: 48 },
    causal: true,
    bits: 8,
    pvBits: 8,
    granularity: 'warp',
    smooth: true,
  },
  {
    name: 'Nq > Nk, not causal',
    dims: { batch: 2, hq: 2, hkv: 2, nq: 150, nk: 61, d: 32, dv: 32 },
    causal: false,
    bits: 8,
    pvBits: 8,
    granularity: 'thread',
    smooth: true,
  },
  {
    name: 'window [20, 5] (partial tiles, skipped tiles), Dv != D',
    dims: { batch: 1, hq: 2, hkv: 1, nq: 200, nk: 333, d: 48, dv: 32 },
    causal: false,
    window: [20, 5],
    bits: 8,
    pvBits: 8,
    granularity: 'warp',
    smooth: true,
  },
  {
    name: 'window [100, -1] causal',
    dims: { batch: 1, hq: 3, hkv: 3, nq: 257, nk: 257, d: 64, dv: 64 },
    causal: true,
    window: [100, -1],
    bits: 8,
    pvBits: 8,
    granularity: 'block',
    smooth: true,
  },
  {
    name: 'no smoothing',
    dims: dimsOdd,
    causal: true,
    bits: 8,
    pvBits: 8,
    granularity: 'warp',
    smooth: false,
  },
  {
    name: 'pvBits 32',
    dims: dimsOdd,
    causal: false,
    bits: 8,
    pvBits: 32,
    granularity: 'warp',
    smooth: true,
  },
  {
    name: 'pvBits 32, INT4, causal, GQA 3/1',
    dims: { ...dimsOdd, hq: 3, hkv: 1 },
    causal: true,
    bits: 4,
    pvBits: 32,
    granularity: 'block',
    smooth: true,
  },
  {
    name: 'decode row (Nq 1), long keys',
    dims: { ...dimsOdd, nq: 1, nk: 300 },
    causal: true,
    bits: 8,
    pvBits: 8,
    granularity: 'thread',
    smooth: true,
  },
  {
    name: 'D 128, several query blocks and key tiles',
    dims: { batch: 1, hq: 2, hkv: 1, nq: 333, nk: 401, d: 128, dv: 128 },
    causal: true,
    bits: 8,
    pvBits: 8,
    granularity: 'thread',
    smooth: true,
  },
);

/**
 * Rows (b, h, i) where the spec's pCode of some key could differ on another backend: its
 * f32(255 p) (ARITHMETIC.md "Kernel", recomputed here from the codec, the spec's exact steps)
 * lies within 32 ulp of a .5 boundary (the spec's own exact ties, like 50.5, included).
 */
function ambiguousRows(c: SageCodecCpu, o: SageKernelOptions): Uint8Array {
  const { batch, hq, hkv, nq, nk, d } = c.dims;
  const f = Math.fround;
  const g = c.granularity;
  const { nQG, nKG, nQB } = sageGroupCounts(nq, nk, g);
  const left = o.window?.[0] ?? -1;
  let right = o.window?.[1] ?? -1;
  if (o.causal) right = right < 0 ? 0 : Math.min(right, 0);
  const scale = f(o.scale);
  const flags = new Uint8Array(batch * hq * nq);
  const s = new Float64Array(64);
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < hq; h++) {
      const hk = Math.floor(h / (hq / hkv));
      for (let i = 0; i < nq; i++) {
        const diag = i + nk - nq;
        const lo = left < 0 ? 0 : Math.max(0, diag - left);
        const hi = right < 0 ? nk : Math.min(nk, diag + right + 1);
        const row = (b * hq + h) * nq + i;
        const sq = c.qScale[(b * hq + h) * nQG + qGroupOf(i, g)]!;
        let m = Number.NEGATIVE_INFINITY;
        for (let t0 = 0; t0 < nk; t0 += 64) {
          const j0 = Math.max(t0, lo);
          const j1 = Math.min(t0 + 64, hi);
          if (j0 >= j1) continue;
          let mNew = m;
          for (let j = j0; j < j1; j++) {
            let dot = 0;
            for (let x = 0; x < d; x++)
              dot += c.qCodes[row * d + x]! * c.kCodes[((b * hkv + hk) * nk + j) * d + x]!;
            let t = f(f(dot) * f(sq * c.kScale[(b * hkv + hk) * nKG + kGroupOf(j, g)]!));
            if (c.bias) t = f(t + c.bias[((b * hq + h) * nQB + (i >> 7)) * nk + j]!);
            s[j - j0] = f(t * scale);
            mNew = Math.max(mNew, s[j - j0]!);
          }
          for (let j = j0; j < j1; j++) {
            const y = f(f(Math.exp(s[j - j0]! - mNew)) * 255);
            const ulp = 2 ** (Math.floor(Math.log2(Math.max(y, 2 ** -100))) - 23);
            if (Math.abs(y - Math.floor(y) - 0.5) <= 32 * ulp) flags[row] = 1;
          }
          m = mNew;
        }
      }
    }
  return flags;
}

/**
 * ARITHMETIC.md's row bounds of O against the spec: the rows (of width w) off by more than
 * 1e-5 relative L2 (absolute for a zero row), each of which must be `ambiguous` and within 1e-2,
 * at most 1% of the rows + 2. Returns how many there were.
 */
function expectRowBounds(
  got: Float32Array,
  spec: Float32Array,
  w: number,
  ambiguous: Uint8Array,
  what: string,
): number {
  const rows = spec.length / w;
  let off = 0;
  for (let r = 0; r < rows; r++) {
    let num = 0;
    let den = 0;
    for (let x = r * w; x < (r + 1) * w; x++) {
      num += (got[x]! - spec[x]!) ** 2;
      den += spec[x]! ** 2;
    }
    const rel = den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
    if (rel <= 1e-5) continue;
    off++;
    expect(ambiguous[r], `${what}: row ${r} off by ${rel} has no code near a .5`).toBe(1);
    expect(rel, `${what}: row ${r}`).toBeLessThanOrEqual(1e-2);
  }
  expect(off, `${what}: rows off`).toBeLessThanOrEqual(0.01 * rows + 2);
  return off;
}

describe.runIf(base)(
  'sageForwardNative vs sageForwardTs (same codes) and the float64 reference',
  () => {
    for (const cs of fwdCases)
      test(`${cs.name}${cs.causal ? ', causal' : ''}`, async () => {
        const dm = cs.dims;
        const s = seed++;
        const x = inputs(new Rng(s), dm);
        const config = configOf({
          name: cs.name,
          dims: dm,
          qBits: cs.bits,
          granularity: cs.granularity,
          smoothK: cs.smooth,
          smoothQ: cs.smooth,
          pvBits: cs.pvBits,
        });
        const codec = quantizeSageTs(x.qf, x.kf, x.vf, dm, config);
        const opts: SageKernelOptions = {
          scale: 1 / Math.sqrt(dm.d),
          causal: cs.causal,
          window: cs.window,
          returnLse: true,
        };
        const spec = sageForwardTs(codec, opts);
        const ref = softmaxAttentionReference(x.q, x.k, x.v, {
          causal: cs.causal,
          window: cs.window,
        });
        const amb = cs.pvBits === 8 ? ambiguousRows(codec, opts) : new Uint8Array(spec.lse!.length);
        const nAmb = amb.reduce((a, y) => a + y, 0);
        for (const isa of forwardIsas) {
          const what = `${isa}, seed ${s}, ${nAmb} ambiguous rows of ${amb.length}`;
          const got = await sageForwardNative(codec, { ...opts, isa });
          const toSpec = accuracy(got.o, spec.o);
          expect(toSpec.nonFinite, what).toBe(0);
          expectRowBounds(got.o, spec.o, dm.dv, amb, what);
          const lse = accuracy(got.lse!, spec.lse!);
          expect(lse.nonFinite, what).toBe(0);
          expect(lse.maxAbs, what).toBeLessThan(1e-5);
          // Rows without an allowed key: exactly as the spec (O = 0, LSE = -inf).
          for (let r = 0; r < spec.lse!.length; r++) {
            if (spec.lse![r] !== Number.NEGATIVE_INFINITY) continue;
            expect(got.lse![r], what).toBe(Number.NEGATIVE_INFINITY);
            expect(
              got.o.subarray(r * dm.dv, (r + 1) * dm.dv).every((y) => y === 0),
              what,
            ).toBe(true);
          }
          const acc = accuracy(got.o, ref.o);
          expect(acc.nonFinite, what).toBe(0);
          if (cs.bits === 8) {
            expect(acc.cosine, what).toBeGreaterThanOrEqual(0.999);
            expect(acc.relL1, what).toBeLessThanOrEqual(0.03);
          } else {
            // INT4 on random normal Q, K: the spec kernel measures 0.971-0.985 (forward-ts.test.ts
            // and BENCHMARKS.md "Sage"), below KERNELS.md's 0.99; the native kernel equals the
            // spec to 1e-4, so the floor asserted is the spec's.
            expect(acc.cosine, what).toBeGreaterThanOrEqual(0.96);
          }
        }
      });

    test('end to end (native pre-pass and kernel), K channel offset: the bars, every ISA', async () => {
      const dm: SageDims = { batch: 2, hq: 4, hkv: 2, nq: 190, nk: 250, d: 64, dv: 64 };
      const s = seed++;
      const x = inputs(new Rng(s), dm, true);
      const config: SageQuantConfig = {
        qBits: new Uint8Array(dm.hq).fill(8),
        granularity: 'warp',
        smoothK: true,
        smoothQ: true,
        pvBits: 8,
      };
      for (const causal of [false, true]) {
        const ref = softmaxAttentionReference(x.q, x.k, x.v, { causal });
        for (const isa of forwardIsas) {
          const what = `${isa}, causal ${causal}, seed ${s}`;
          const codec = await quantizeSageNative(x.qf, x.kf, x.vf, dm, config, { isa });
          const got = await sageForwardNative(codec, {
            scale: 1 / Math.sqrt(dm.d),
            causal,
            returnLse: false,
            isa,
          });
          expect(got.lse).toBeUndefined();
          const acc = accuracy(got.o, ref.o);
          expect(acc.nonFinite, what).toBe(0);
          expect(acc.cosine, what).toBeGreaterThanOrEqual(0.999);
          expect(acc.relL1, what).toBeLessThanOrEqual(0.03);
        }
      }
    });

    test('threads: 1 thread gives the same bits as the whole pool', async () => {
      const dm: SageDims = { batch: 1, hq: 4, hkv: 4, nq: 300, nk: 300, d: 64, dv: 64 };
      const x = inputs(new Rng(seed++), dm);
      const codec = await quantizeSageNative(
        x.qf,
        x.kf,
        x.vf,
        dm,
        configOf({ ...quantCases[0]!, dims: dm }),
      );
      const opts = { scale: 0.125, causal: true, returnLse: true };
      const all = await sageForwardNative(codec, opts);
      const one = await sageForwardNative(codec, { ...opts, threads: 1 });
      expect(firstBitDiff(one.o, all.o)).toBe('');
      expect(firstBitDiff(one.lse!, all.lse!)).toBe('');
    });
  },
);

describe.runIf(base)('typed errors', () => {
  const dm: SageDims = { batch: 1, hq: 2, hkv: 1, nq: 20, nk: 30, d: 16, dv: 16 };
  const config = (): SageQuantConfig => ({
    qBits: new Uint8Array([8, 8]),
    granularity: 'warp',
    smoothK: true,
    smoothQ: true,
    pvBits: 8,
  });
  const x = () => inputs(new Rng(7), dm);

  test('non-finite q, k or v: ValueError naming the tensor', async () => {
    for (const name of ['q', 'k', 'v'] as const) {
      const t = x();
      const arr = name === 'q' ? t.qf : name === 'k' ? t.kf : t.vf;
      arr[5] = name === 'v' ? Number.POSITIVE_INFINITY : Number.NaN;
      const run = quantizeSageNative(t.qf, t.kf, t.vf, dm, config());
      await expect(run).rejects.toThrow(ValueError);
      await expect(quantizeSageNative(t.qf, t.kf, t.vf, dm, config())).rejects.toMatchObject({
        argument: name,
      });
    }
  });

  test('config, lengths, isa, threads', async () => {
    const t = x();
    const bad = { ...config(), qBits: new Uint8Array([8, 6]) };
    await expect(quantizeSageNative(t.qf, t.kf, t.vf, dm, bad)).rejects.toThrow(ValueError);
    await expect(
      quantizeSageNative(t.qf, t.kf, t.vf, { ...dm, d: 24 }, config()),
    ).rejects.toMatchObject({ argument: 'q' });
    await expect(quantizeSageNative(t.qf.subarray(1), t.kf, t.vf, dm, config())).rejects.toThrow(
      ShapeError,
    );
    await expect(
      quantizeSageNative(t.qf, t.kf, t.vf, dm, config(), { isa: 'neon' as NativeIsa }),
    ).rejects.toMatchObject({ argument: 'isa' });
    const codec = await quantizeSageNative(t.qf, t.kf, t.vf, dm, config());
    const opts = { scale: 0.25, causal: false, returnLse: true };
    await expect(sageForwardNative(codec, { ...opts, threads: 0 })).rejects.toMatchObject({
      argument: 'threads',
    });
    await expect(sageForwardNative(codec, { ...opts, scale: Number.NaN })).rejects.toMatchObject({
      argument: 'scale',
    });
    await expect(
      sageForwardNative({ ...codec, kScale: codec.kScale.subarray(1) }, opts),
    ).rejects.toThrow(ShapeError);
    await expect(sageForwardNative({ ...codec, pvBits: 16 as 8 }, opts)).rejects.toMatchObject({
      argument: 'codec.pvBits',
    });
    // Codes outside [-127, 127] (the VNNI offset and AVX2 products assume them) and
    // non-finite scales: ValueError naming the codec field.
    const q8 = codec.qCodes.slice();
    q8[3] = -128;
    await expect(sageForwardNative({ ...codec, qCodes: q8 }, opts)).rejects.toMatchObject({
      argument: 'codec.qCodes',
    });
    const ks = codec.kScale.slice();
    ks[0] = Number.POSITIVE_INFINITY;
    await expect(sageForwardNative({ ...codec, kScale: ks }, opts)).rejects.toMatchObject({
      argument: 'codec.kScale',
    });
  });
});
