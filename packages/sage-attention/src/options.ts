import { UnsupportedError } from '@attnkit/attention';
import {
  checkSageConfig,
  checkSageSettings,
  type SageDims,
  type SageGranularity,
  type SageKernelOptions,
  type SageQuantConfig,
  type SageSettings,
} from '@attnkit/skeleton';
import {
  DeviceError,
  DTypeError,
  describe,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';

/** Bits of Q·K per query head: INT4 (qmax 7) or INT8 (qmax 127). */
export type SageBits = 4 | 8;

export type SageBackend = 'ts' | 'native' | 'webgpu';

/**
 * calibrate()'s decision, plain JSON: one bit width per query head and the cosine similarities
 * it was taken from (against the float64 softmax reference, over all calibration samples).
 */
export interface SageCalibration {
  version: 1;
  kind: 'sage-calibration';
  /** Query heads (Hq) the decision is for; sageAttention refuses another count. */
  heads: number;
  /** Per query head: 4 where INT4's cosine similarity met `threshold`, else 8. */
  qkBits: SageBits[];
  threshold: number;
  /** 'head': a decision per head; 'layer': one for all heads (the whole output's similarity). */
  per: 'head' | 'layer';
  samples: number;
  /** The quantization settings calibrated with (a decision holds for these). */
  granularity: SageGranularity;
  smoothK: boolean;
  smoothQ: boolean;
  pvBits: 8 | 32;
  /** Per query head (index = head), against the float64 reference. */
  metrics: {
    cosInt4: number[];
    relL1Int4: number[];
    cosInt8: number[];
    relL1Int8: number[];
  };
}

export interface SageAttentionOptions {
  /**
   * Q·K bits: 8 (default), 4, one per query head (length Hq), or a calibration
   * (calibrate()'s JSON, as `calibration`).
   */
  qkBits?: SageBits | readonly SageBits[] | SageCalibration;
  /**
   * calibrate()'s decision (its heads must equal Hq: ValueError naming `calibration`). The
   * settings it was measured with (granularity, smoothK, smoothQ, pvBits) become the call's
   * defaults; an explicit other value is a ValueError naming that option.
   */
  calibration?: SageCalibration;
  /** Scale groups of Q and K (ARITHMETIC.md): 'block' | 'warp' (default) | 'thread'. */
  granularity?: SageGranularity;
  /** Subtract K's per-channel mean over the keys (default true; softmax is unchanged). */
  smoothK?: boolean;
  /** Subtract Q's per-channel mean per 128-row block, its rank-one term added back (default true). */
  smoothQ?: boolean;
  /** 8 (default): P~ and V in 8 bit with int32 accumulation; 32: P·V in f32 (ablation). */
  pvBits?: 8 | 32;
  /** Softmax scale (default 1/sqrt(D)). */
  scale?: number;
  /** Bottom-right causal mask (KERNELS.md "Common"). */
  causal?: boolean;
  /** Sliding window [left, right], -1 unbounded. */
  window?: readonly [number, number];
  /** Also return lse [B, Hq, Nq] (f32, natural log; -Infinity for rows without keys). */
  returnLse?: boolean;
  /** 'BHND' (default: q [B, Hq, Nq, D]) or 'BSHD' (q [B, Nq, Hq, D]); varlen is unsupported. */
  layout?: 'BHND' | 'BSHD';
  /** Default: webgpu for webgpu tensors; native when its addon loads, else ts, for cpu tensors. */
  backend?: SageBackend;
  /** native: the instruction set (default 'auto': the best this CPU has). */
  isa?: 'auto' | 'avx512vnni' | 'avx512' | 'avx2' | 'scalar';
  /** native: worker threads (default: the engine's). */
  threads?: number;
  /**
   * webgpu: the tensor-core kernels. Unset: the f16 tensor-core engine where the H200 measured
   * it faster than the portable kernel (NVIDIA, D = Dv = 128, 8-bit P~ V, Nq and Nk of 4096 or
   * more; 32.1 against 27.2 TOPS at (4, 32, 4096, 128)) and the adapter has f16 subgroup
   * matrices, else the portable dot4I8Packed kernel; false: the portable kernel; true or
   * `{ engine: 'f16' | 'i8', subgroups: 1 | 2 | 4 }`: a tensor-core kernel, a ValueError naming
   * tensorCores where the adapter or the problem cannot run it. Ignored on the cpu backends.
   */
  tensorCores?: boolean | { engine?: 'i8' | 'f16'; subgroups?: number };
}

const KNOWN = [
  'qkBits',
  'calibration',
  'granularity',
  'smoothK',
  'smoothQ',
  'pvBits',
  'scale',
  'causal',
  'window',
  'returnLse',
  'layout',
  'backend',
  'isa',
  'threads',
  'tensorCores',
];

/** Options of other attnkit families that Sage does not implement: UnsupportedError naming them. */
const UNSUPPORTED: Record<string, string> = {
  cuSeqlensQ: 'varlen (THD, cu_seqlens) is unsupported by Sage; pad to BHND or BSHD',
  cuSeqlensK: 'varlen (THD, cu_seqlens) is unsupported by Sage; pad to BHND or BSHD',
  blockSparse: 'block-sparse masks are unsupported by Sage',
  maskMod: 'mask mods are unsupported by Sage',
  scoreMod: 'score mods are unsupported by Sage (the scores are dequantized int32 dots)',
  paged: 'paged K/V is unsupported by Sage',
  sinks: 'attention sinks are unsupported by Sage',
  permute: 'permuted tiles are unsupported by Sage',
  numSplits: 'split-K is unsupported by Sage (P~ is quantized per 64-key tile of one pass)',
  streamKWorkers: 'stream-K is unsupported by Sage (P~ is quantized per 64-key tile of one pass)',
};

export const SAGE_BACKENDS: readonly SageBackend[] = ['webgpu', 'native', 'ts'];

/** Why no Sage backend runs `options` (an option of another family), else undefined. */
export function unsupportedOption(
  options: Readonly<Record<string, unknown>>,
): { argument: string; why: string } | undefined {
  for (const [key, why] of Object.entries(UNSUPPORTED))
    if (options[key] !== undefined) return { argument: key, why };
  if (options.layout === 'THD') return { argument: 'layout', why: UNSUPPORTED.cuSeqlensQ! };
  return undefined;
}

function fail(name: string, expected: string, got: unknown): never {
  throw new ValueError(`${name}: expected ${expected}, got ${describe(got)}`, name);
}

/** Everything a backend needs, validated: BHND dims, the quantization config, kernel options. */
export interface ResolvedSage {
  layout: 'BHND' | 'BSHD';
  dims: SageDims;
  config: SageQuantConfig;
  kernel: SageKernelOptions;
  returnLse: boolean;
  backend: SageBackend | undefined;
  isa: SageAttentionOptions['isa'];
  threads: number | undefined;
  tensorCores: SageAttentionOptions['tensorCores'];
}

/** A calibration's per-head bits, checked against Hq (ValueError naming `name`). */
export function calibrationBits(c: unknown, hq: number, name = 'calibration'): SageBits[] {
  const cal = c as SageCalibration;
  if (cal === null || typeof cal !== 'object' || cal.version !== 1 || !Array.isArray(cal.qkBits))
    fail(name, 'a Sage calibration ({ version: 1, heads, qkBits: [...] } from calibrate())', c);
  if (cal.heads !== cal.qkBits.length || !cal.qkBits.every((b) => b === 4 || b === 8))
    fail(name, 'qkBits of 4 or 8, one per head (heads entries)', cal.qkBits);
  if (cal.heads !== hq)
    throw new ValueError(
      `${name}: expected a calibration for Hq = ${hq} query heads, got one for ${cal.heads} heads`,
      name,
    );
  return [...cal.qkBits];
}

/** The settings a call takes from `granularity`, `smoothK`, `smoothQ`, `pvBits`, else these. */
const DEFAULT_SETTINGS: SageSettings = {
  granularity: 'warp',
  smoothK: true,
  smoothQ: true,
  pvBits: 8,
};
const SETTING_KEYS = ['granularity', 'smoothK', 'smoothQ', 'pvBits'] as const;

/**
 * The quantization settings a calibration (already validated by bitsOf) records, checked as a
 * call's are (checkSageSettings; ValueError naming `${name}.granularity`, ...); null or absent
 * = not recorded. Undefined for per-head bits.
 */
function calibrationSettings(c: unknown, name: string): Partial<SageSettings> | undefined {
  if (c === null || typeof c !== 'object' || Array.isArray(c)) return undefined;
  const cal = c as Partial<Record<string, unknown>>;
  if (cal.version === undefined) return undefined;
  const out: Partial<Record<keyof SageSettings, unknown>> = {};
  for (const key of SETTING_KEYS)
    if (cal[key] !== undefined && cal[key] !== null) out[key] = cal[key];
  checkSageSettings({ ...DEFAULT_SETTINGS, ...out } as SageSettings, `${name}.`);
  return out as Partial<SageSettings>;
}

function bitsOf(o: SageAttentionOptions, hq: number): Uint8Array {
  const q = o.qkBits;
  if (o.calibration !== undefined) {
    if (q !== undefined)
      fail('calibration', 'no qkBits beside it (the calibration holds the bits)', 'both');
    return Uint8Array.from(calibrationBits(o.calibration, hq));
  }
  if (q === undefined) return new Uint8Array(hq).fill(8);
  if (q === 4 || q === 8) return new Uint8Array(hq).fill(q);
  if (Array.isArray(q)) {
    if (q.length !== hq) fail('qkBits', `one entry per query head (Hq = ${hq})`, q);
    for (const b of q) if (b !== 4 && b !== 8) fail('qkBits', '4 or 8 per head', q);
    return Uint8Array.from(q);
  }
  if (q !== null && typeof q === 'object' && (q as SageCalibration).version !== undefined)
    return Uint8Array.from(calibrationBits(q, hq, 'qkBits'));
  return fail('qkBits', '4, 8, an array of 4 / 8 per query head, or a calibration', q);
}

/**
 * Validates the options and tensors of a Sage call: typed errors naming the argument
 * (ValueError for options and head dims, ShapeError for shapes, DTypeError, DeviceError,
 * UnsupportedError for other families' options).
 */
export function resolveSage(q: Tensor, k: Tensor, v: Tensor, options: unknown = {}): ResolvedSage {
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    fail('options', 'an object', options);
  const o = options as SageAttentionOptions & Record<string, unknown>;
  const no = unsupportedOption(o);
  if (no) {
    const reasons = Object.fromEntries(SAGE_BACKENDS.map((b) => [b, no.why]));
    throw new UnsupportedError(`${no.argument}: ${no.why}`, no.argument, reasons);
  }
  for (const key of Object.keys(o))
    if (!KNOWN.includes(key) && o[key] !== undefined)
      throw new ValueError(
        `options.${key}: expected one of ${KNOWN.join(', ')} (unknown option), got ${describe(o[key])}`,
        key,
      );
  const layout = o.layout ?? 'BHND';
  if (layout !== 'BHND' && layout !== 'BSHD') fail('layout', '"BHND" or "BSHD"', layout);
  for (const [name, t] of [
    ['q', q],
    ['k', k],
    ['v', v],
  ] as const) {
    if (!t || typeof t !== 'object' || !Array.isArray(t.shape) || typeof t.device !== 'string')
      throw new ShapeError(`${name}: expected a Tensor, got ${describe(t)}`, name);
    if (t.shape.length !== 4)
      throw new ShapeError(
        `${name}: expected a rank-4 tensor (${layout}), got shape [${t.shape.join(', ')}]`,
        name,
      );
  }
  if (q.dtype !== 'f32' && q.dtype !== 'f16' && q.dtype !== 'bf16')
    throw new DTypeError(
      `q: expected f32, f16 or bf16 (widened exactly to f32 before quantization), got ${q.dtype}`,
      'q',
    );
  if (k.dtype !== q.dtype)
    throw new DTypeError(`k: expected dtype ${q.dtype} (as q), got ${k.dtype}`, 'k');
  if (v.dtype !== q.dtype)
    throw new DTypeError(`v: expected dtype ${q.dtype} (as q), got ${v.dtype}`, 'v');
  if (k.device !== q.device)
    throw new DeviceError(`k: expected device ${q.device} (as q), got ${k.device}`, 'k');
  if (v.device !== q.device)
    throw new DeviceError(`v: expected device ${q.device} (as q), got ${v.device}`, 'v');
  // BHND [B, H, N, D] or BSHD [B, N, H, D]: the head and token axes.
  const [hAx, nAx] = layout === 'BHND' ? [1, 2] : [2, 1];
  const B = q.shape[0]!;
  const hq = q.shape[hAx]!;
  const nq = q.shape[nAx]!;
  const d = q.shape[3]!;
  const hkv = k.shape[hAx]!;
  const nk = k.shape[nAx]!;
  const dv = v.shape[3]!;
  if (k.shape[0] !== B || k.shape[3] !== d)
    throw new ShapeError(
      `k: expected shape ${layout === 'BHND' ? `[${B}, Hkv, Nk, ${d}]` : `[${B}, Nk, Hkv, ${d}]`} (q is [${q.shape.join(', ')}]), got [${k.shape.join(', ')}]`,
      'k',
    );
  if (v.shape[0] !== B || v.shape[hAx] !== hkv || v.shape[nAx] !== nk)
    throw new ShapeError(
      `v: expected the batch, kv heads and keys of k [${k.shape.join(', ')}] (${layout}), got [${v.shape.join(', ')}]`,
      'v',
    );
  const dims: SageDims = { batch: B, hq, hkv, nq, nk, d, dv };
  // A calibration's decision holds for the settings it was measured with: they are the call's
  // defaults, and an explicit other value is refused (INT4's cosine at 'block' granularity is
  // not the one measured at 'warp').
  // The calibration itself first (its form and head count: ValueError naming it), then its
  // recorded settings (each checked; null or absent = not recorded).
  const qBits = bitsOf(o, hq);
  const cal = calibrationSettings(
    o.calibration ?? o.qkBits,
    o.calibration !== undefined ? 'calibration' : 'qkBits',
  );
  const config: SageQuantConfig = {
    qBits: new Uint8Array(0),
    granularity: o.granularity ?? cal?.granularity ?? DEFAULT_SETTINGS.granularity,
    smoothK: o.smoothK ?? cal?.smoothK ?? DEFAULT_SETTINGS.smoothK,
    smoothQ: o.smoothQ ?? cal?.smoothQ ?? DEFAULT_SETTINGS.smoothQ,
    pvBits: o.pvBits ?? cal?.pvBits ?? DEFAULT_SETTINGS.pvBits,
  };
  if (cal)
    for (const key of SETTING_KEYS)
      if (cal[key] !== undefined && config[key] !== cal[key])
        throw new ValueError(
          `${key}: the calibration was measured with ${key} ${describe(cal[key])} (its INT4 / INT8 decision holds for that setting), got ${describe(config[key])}; leave ${key} out or calibrate again with it`,
          key,
        );
  // Head dims, head counts, granularity, smoothing and pvBits: the shared checks of every backend.
  checkSageConfig(dims, { ...config, qBits: new Uint8Array(hq).fill(8) });
  config.qBits = qBits;
  const scale = o.scale ?? 1 / Math.sqrt(d);
  if (typeof scale !== 'number' || !Number.isFinite(scale)) fail('scale', 'a finite number', scale);
  const causal = o.causal ?? false;
  if (typeof causal !== 'boolean') fail('causal', 'a boolean', causal);
  const w = o.window;
  if (
    w !== undefined &&
    (!Array.isArray(w) || w.length !== 2 || !w.every((x) => Number.isInteger(x) && x >= -1))
  )
    fail('window', '[left, right] integers >= -1 (-1 = unbounded)', w);
  const returnLse = o.returnLse ?? false;
  if (typeof returnLse !== 'boolean') fail('returnLse', 'a boolean', returnLse);
  if (o.backend !== undefined && !SAGE_BACKENDS.includes(o.backend))
    fail('backend', `one of ${SAGE_BACKENDS.join(', ')}`, o.backend);
  if (o.isa !== undefined && !['auto', 'avx512vnni', 'avx512', 'avx2', 'scalar'].includes(o.isa))
    fail('isa', '"auto", "avx512vnni", "avx512", "avx2" or "scalar"', o.isa);
  if (o.threads !== undefined && (!Number.isSafeInteger(o.threads) || o.threads < 1))
    fail('threads', 'a positive integer', o.threads);
  const tc = o.tensorCores;
  if (tc !== undefined && typeof tc !== 'boolean' && (tc === null || typeof tc !== 'object'))
    fail('tensorCores', "a boolean or { engine?: 'f16' | 'i8', subgroups? }", tc);
  return {
    layout,
    dims,
    config,
    kernel: { scale, causal, window: w as [number, number] | undefined, returnLse },
    returnLse,
    backend: o.backend,
    isa: o.isa,
    threads: o.threads,
    tensorCores: tc,
  };
}
