// Types only: @attnkit/native is optional and loaded lazily (../native.ts).
import type * as NativePackage from '@attnkit/native';
import type { NativeEngine, NativeIsa } from '@attnkit/native';
import { BackendUnavailableError, describe, ShapeError, ValueError } from '@attnkit/tensor';
import { allocF32, allocF32Written } from '../cpu/alloc.js';
import { loadNativeBackend } from '../native.js';
import {
  checkSageConfig,
  type SageCodecCpu,
  type SageDims,
  type SageKernelOptions,
  type SageQuantConfig,
  sageCodecOf,
  sageGroupCounts,
  sageProblem,
} from './codec.js';

/**
 * SageAttention2 on @attnkit/native's C++ engine (ops sage.quantize and sage.forward), the
 * backend that matches the TS spec (quantize.ts, forward-ts.ts) per
 * packages/sage-attention/ARITHMETIC.md: the pre-pass gives the same codes and scales bit for
 * bit; the kernel the same integer products (int32 Q K dots, u8 P~ codes x int8 V codes) on the
 * same 64-key tiles, with the softmax in f32 (O within ARITHMETIC.md's bounds of the spec's).
 * Kernels per ISA, the best this CPU has chosen at run time: AVX-512 VNNI (vpdpbusd), AVX2
 * (vpmaddubsw / vpmaddwd), scalar; threads from the engine's pool. Both calls are async (the
 * engine runs off the JS thread and the optional package loads lazily).
 */

/** Which ISA's kernel runs: 'auto' (default) the best this CPU has; else a cap for tests. */
export type SageNativeIsa = 'auto' | NativeIsa;

export interface SageNativeOptions {
  isa?: SageNativeIsa | undefined;
}

export interface SageForwardNativeOptions extends SageKernelOptions {
  isa?: SageNativeIsa | undefined;
  /** At most this many of the engine's pool threads (default all); an integer >= 1. */
  threads?: number | undefined;
}

const ISAS: readonly SageNativeIsa[] = ['auto', 'avx512vnni', 'avx512', 'avx2', 'scalar'];

// A computed specifier, as ../native.ts: no bundler follows it into a browser build.
const NATIVE_PACKAGE = '@attnkit/native';

async function engineFor(isa: unknown): Promise<NativeEngine> {
  if (isa !== undefined && !ISAS.includes(isa as SageNativeIsa))
    throw new ValueError(
      `isa: expected one of ${ISAS.map((x) => `"${x}"`).join(', ')}, got ${describe(isa)}`,
      'isa',
    );
  const available = await loadNativeBackend();
  if (available !== true)
    throw new BackendUnavailableError(
      `backend: expected the native engine, but ${available}`,
      'backend',
    );
  const m = (await import(
    /* @vite-ignore */ /* webpackIgnore: true */ NATIVE_PACKAGE
  )) as typeof NativePackage;
  let engine: NativeEngine | undefined;
  if (isa === undefined || isa === 'auto') {
    engine = m.loadNative();
  } else {
    const base = m.loadNative();
    if (base && !base.availableIsas.includes(isa as NativeIsa))
      throw new ValueError(
        `isa: expected "auto" or an ISA this CPU runs (${base.availableIsas.join(', ')}), got ${describe(isa)}`,
        'isa',
      );
    engine = m.loadNative({ isa: isa as NativeIsa });
  }
  if (!engine)
    throw new BackendUnavailableError(
      `backend: expected the native engine, but it is unavailable: ${m.nativeLoadError()}`,
      'backend',
    );
  // An addon built before the Sage ops would reject them by name: say how to get them.
  if (engine.ops()['sage.forward'] === undefined)
    throw new BackendUnavailableError(
      'backend: expected a native addon with the SageAttention2 ops (sage.quantize, sage.forward), but the loaded one predates them; rebuild it (`pnpm --filter @attnkit/native build:addon`, or reinstall @attnkit/native)',
      'backend',
    );
  return engine;
}

/**
 * The engine's validation errors (TypeError / RangeError naming `inputs.x` / `problem.x`) and
 * its pre-pass's non-finite message (naming q, k or v) as the package's typed errors.
 */
function typed(e: unknown, prefix: string): unknown {
  if (!(e instanceof Error) || e instanceof ValueError || e instanceof ShapeError) return e;
  const m = /^(inputs|outputs|problem)\.([A-Za-z]+)/.exec(e.message);
  if (m) return new ValueError(e.message, m[1] === 'problem' ? m[2]! : `${prefix}.${m[2]!}`);
  const t = /^([qkv]): expected finite values/.exec(e.message);
  if (t) return new ValueError(e.message, t[1]!);
  return e;
}

function checkLength(
  a: unknown,
  ctor: typeof Float32Array | typeof Int8Array,
  n: number,
  name: string,
  what: string,
): void {
  if (!(a instanceof ctor) || a.length !== n)
    throw new ShapeError(
      `${name}: expected ${ctor === Int8Array ? 'an Int8Array' : 'a Float32Array'} of ${n} elements (${what}), got ${describe(a)}`,
      name,
    );
}

/**
 * The pre-pass on the native engine: q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv]
 * (BHND f32, contiguous) -> the codec, equal to quantizeSageTs's bit for bit (with pvBits 32 the
 * codec's `v` is `v` itself). ValueError naming the config field (checkSageConfig), `q`, `k` or
 * `v` (non-finite values), `isa`; ShapeError naming q, k or v; BackendUnavailableError when the
 * addon does not load.
 */
export async function quantizeSageNative(
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  dims: SageDims,
  config: SageQuantConfig,
  options: SageNativeOptions = {},
): Promise<SageCodecCpu> {
  checkSageConfig(dims, config);
  if (options === null || typeof options !== 'object')
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  const { batch, hq, hkv, nq, nk, d, dv } = dims;
  checkLength(q, Float32Array, batch * hq * nq * d, 'q', 'BHND B Hq Nq D');
  checkLength(k, Float32Array, batch * hkv * nk * d, 'k', 'BHND B Hkv Nk D');
  checkLength(v, Float32Array, batch * hkv * nk * dv, 'v', 'BHND B Hkv Nk Dv');
  const engine = await engineFor(options.isa);
  const g = config.granularity;
  const { nQG, nKG, nQB } = sageGroupCounts(nq, nk, g);
  const pv8 = config.pvBits === 8;
  // Codes start at -128, a value the pre-pass never writes (so a missed element shows).
  const qCodes = new Int8Array(q.length).fill(-128);
  const kCodes = new Int8Array(k.length).fill(-128);
  const vCodes = pv8 ? new Int8Array(v.length).fill(-128) : undefined;
  const qScale = allocF32(batch * hq * nQG, 'output');
  const kScale = allocF32(batch * hkv * nKG, 'output');
  const vScale = pv8 ? allocF32(batch * hkv * dv, 'output') : undefined;
  const bias = config.smoothQ ? allocF32(batch * hq * nQB * nk, 'output') : undefined;
  const out: Record<string, Int8Array | Float32Array> = { qCodes, qScale, kCodes, kScale };
  if (vCodes && vScale) {
    out.vCodes = vCodes;
    out.vScale = vScale;
  }
  if (bias) out.bias = bias;
  try {
    await engine.run(
      'sage.quantize',
      {
        batch,
        hq,
        hkv,
        nq,
        nk,
        d,
        dv,
        granularity: g,
        smoothK: config.smoothK,
        smoothQ: config.smoothQ,
        pvBits: config.pvBits,
      },
      { q, k, v, qBits: config.qBits },
      out as never,
    );
  } catch (e) {
    throw typed(e, 'config');
  }
  return sageCodecOf({ batch, hq, hkv, nq, nk, d, dv }, g, config.pvBits, {
    qCodes,
    qScale,
    kCodes,
    kScale,
    vCodes,
    vScale,
    v,
    bias,
  });
}

function checkCodec(codec: unknown): SageCodecCpu {
  if (
    codec === null ||
    typeof codec !== 'object' ||
    (codec as SageCodecCpu).dims === null ||
    typeof (codec as SageCodecCpu).dims !== 'object'
  )
    throw new ValueError(`codec: expected a SageCodecCpu, got ${describe(codec)}`, 'codec');
  const c = codec as SageCodecCpu;
  const { batch, hq, hkv, nq, nk, d, dv } = c.dims;
  const g = c.granularity;
  if (g !== 'block' && g !== 'warp' && g !== 'thread')
    throw new ValueError(
      `codec.granularity: expected "block", "warp" or "thread", got ${describe(g)}`,
      'codec.granularity',
    );
  if (c.pvBits !== 8 && c.pvBits !== 32)
    throw new ValueError(
      `codec.pvBits: expected 8 or 32, got ${describe(c.pvBits)}`,
      'codec.pvBits',
    );
  const { nQG, nKG, nQB } = sageGroupCounts(nq, nk, g);
  checkLength(c.qCodes, Int8Array, batch * hq * nq * d, 'codec.qCodes', 'B Hq Nq D');
  checkLength(c.qScale, Float32Array, batch * hq * nQG, 'codec.qScale', 'B Hq Q groups');
  checkLength(c.kCodes, Int8Array, batch * hkv * nk * d, 'codec.kCodes', 'B Hkv Nk D');
  checkLength(c.kScale, Float32Array, batch * hkv * nKG, 'codec.kScale', 'B Hkv K groups');
  if (c.pvBits === 8) {
    checkLength(c.vCodes, Int8Array, batch * hkv * nk * dv, 'codec.vCodes', 'B Hkv Nk Dv');
    checkLength(c.vScale, Float32Array, batch * hkv * dv, 'codec.vScale', 'B Hkv Dv');
  } else {
    checkLength(c.v, Float32Array, batch * hkv * nk * dv, 'codec.v', 'B Hkv Nk Dv');
  }
  if (c.bias !== undefined)
    checkLength(
      c.bias,
      Float32Array,
      batch * hq * nQB * nk,
      'codec.bias',
      'B Hq ceil(Nq / 128) Nk',
    );
  return c;
}

/**
 * The kernel on the native engine, from a codec (quantizeSageNative's or quantizeSageTs's):
 * O [B, Hq, Nq, Dv] and, with returnLse, LSE [B, Hq, Nq] (a row with no allowed key: O = 0,
 * LSE = -inf). The mask rule is @attnkit/attention's (causal bottom-right, window), folded as
 * its resolveAttentionProblem does. ValueError naming scale / causal / window / returnLse /
 * threads / isa / the codec field at fault; ShapeError naming a codec array that does not fit
 * its dims; BackendUnavailableError when the addon does not load.
 */
export async function sageForwardNative(
  codec: SageCodecCpu,
  opts: SageForwardNativeOptions,
): Promise<{ o: Float32Array; lse?: Float32Array }> {
  const c = checkCodec(codec);
  if (opts === null || typeof opts !== 'object')
    throw new ValueError(`options: expected SageKernelOptions, got ${describe(opts)}`, 'options');
  if (typeof opts.returnLse !== 'boolean')
    throw new ValueError(
      `returnLse: expected a boolean, got ${describe(opts.returnLse)}`,
      'returnLse',
    );
  if (opts.scale === undefined)
    throw new ValueError('scale: expected a finite number, got undefined', 'scale');
  const threads = opts.threads;
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1))
    throw new ValueError(`threads: expected an integer >= 1, got ${describe(threads)}`, 'threads');
  const { batch, hq, hkv, nq, nk, d, dv } = c.dims;
  // Validates scale, causal, window and the head counts; folds causal into the window.
  const p = sageProblem(c.dims, opts);
  const engine = await engineFor(opts.isa);
  // Not zero-filled: sage.forward writes every row of o and lse (rows without keys get O = 0,
  // LSE -inf; packages/native sage.test.ts runs it on NaN-poisoned outputs).
  const o = allocF32Written(batch * hq * nq * dv, 'output');
  const lse = opts.returnLse ? allocF32Written(batch * hq * nq, 'output') : undefined;
  const inputs: Record<string, Int8Array | Float32Array> = {
    qCodes: c.qCodes,
    qScale: c.qScale,
    kCodes: c.kCodes,
    kScale: c.kScale,
  };
  if (c.pvBits === 8) {
    inputs.vCodes = c.vCodes!;
    inputs.vScale = c.vScale!;
  } else {
    inputs.v = c.v!;
  }
  if (c.bias !== undefined) inputs.bias = c.bias;
  try {
    await engine.run(
      'sage.forward',
      {
        batch,
        hq,
        hkv,
        nq,
        nk,
        d,
        dv,
        granularity: c.granularity,
        pvBits: c.pvBits,
        smoothQ: c.bias !== undefined,
        scale: p.scale,
        left: p.left,
        right: p.right,
        threads: threads === undefined ? undefined : Math.min(threads, 1024),
      },
      inputs as never,
      lse ? { o, lse } : { o },
    );
  } catch (e) {
    throw typed(e, 'codec');
  }
  return lse ? { o, lse } : { o };
}
