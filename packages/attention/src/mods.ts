import {
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  isFloatDType,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';

/**
 * FlexAttention-style score and mask modifications (Dong et al., "Flex Attention", 2024), the
 * same on every backend. A score mod rewrites each score after the scale,
 *
 *     s = scale * q_i . k_j        s <- mod_n(... mod_1(s))        (mods in the order given)
 *
 * and a mask mod removes (query, key) pairs on top of causal / window / block sparsity. The
 * indices a mod sees are those of KERNELS.md "Common": b the batch entry, h the query head,
 * i and j positions within the sequence (varlen: relative to its start), nq and nk its lengths.
 */

/** Gemma-2 / Grok logit soft-capping: s <- cap * tanh(s / cap). */
export interface SoftcapMod {
  kind: 'softcap';
  cap: number;
}

/**
 * ALiBi (Press et al. 2022) as FlashAttention applies it: s <- s - slope_h * |i + nk - nq - j|
 * (the distance to the bottom-right diagonal).
 */
export interface AlibiMod {
  kind: 'alibi';
  /** One slope per query head (length Hq); `alibiSlopes(Hq)` gives the paper's. */
  slopes: Float32Array | readonly number[];
}

/** Additive bias: s <- s + bias[b, h, i, j]. */
export interface BiasMod {
  kind: 'bias';
  /**
   * f32 [Nq, Nk] (shared), [Hq, Nq, Nk] or [B, Hq, Nq, Nk] with Nq, Nk the longest sequences
   * (varlen: positions within each sequence); on q's device.
   */
  bias: Tensor;
  /**
   * Also return d loss / d bias from the backward (`dbias`, the bias's shape, summed over the
   * dims it broadcasts over). The bias must then come before any non-additive mod (only alibi /
   * bias mods ahead of it), so the gradient at the score after the scale is the bias's; at most
   * one bias mod per call asks for it.
   */
  grad?: boolean;
}

/**
 * A user-defined score mod: the same function twice, once in TypeScript (ts backend) and once
 * in WGSL (webgpu backend). The native engine runs the built-in mods only.
 */
export interface CustomScoreMod {
  kind: 'custom';
  /** A WGSL identifier: the name of the function `wgsl` defines. */
  name: string;
  ts: (s: number, b: number, h: number, i: number, j: number) => number;
  /** d mod / d s at the mod's input, for the backward. */
  tsGrad?: (s: number, b: number, h: number, i: number, j: number) => number;
  /** `fn NAME(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 { ... }`. */
  wgsl?: string;
  /** `fn NAME_grad(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 { ... }` (d mod / d s). */
  wgslGrad?: string;
}

export type ScoreMod = SoftcapMod | AlibiMod | BiasMod | CustomScoreMod;

/**
 * A user-defined mask: `ts(b, h, i, j)` is true where query i may attend key j. Kernels derive
 * a block mask from it once per call (FlexAttention's create_block_mask): blocks with no
 * allowed pair are skipped, blocks where every pair is allowed take the mask-free path.
 */
export interface MaskMod {
  /** A WGSL identifier: the name of the function `wgsl` defines. */
  name: string;
  ts: (b: number, h: number, i: number, j: number) => boolean;
  /** `fn NAME(b: u32, h: u32, i: u32, j: u32) -> bool { ... }`. */
  wgsl?: string;
  /** Whether the mask depends on b / h (default false: evaluated once and shared, as FlexAttention's B=None, H=None). */
  perBatch?: boolean;
  perHead?: boolean;
  /** Block size of the derived block mask (default 64; kernel tiles divide it). */
  blockSize?: number;
}

export const softcap = (cap: number): SoftcapMod => ({ kind: 'softcap', cap });
export const alibi = (slopes: Float32Array | readonly number[]): AlibiMod => ({
  kind: 'alibi',
  slopes,
});
export const scoreBias = (bias: Tensor, options: { grad?: boolean } = {}): BiasMod =>
  options.grad ? { kind: 'bias', bias, grad: true } : { kind: 'bias', bias };

/**
 * ALiBi's head slopes (Press et al. 2022, Sec. 3): the geometric sequence 2^(-8/n), 2^(-16/n),
 * ... for n heads; for n not a power of two, the closest power's slopes plus every other slope
 * of the next power, as the reference implementation does.
 */
export function alibiSlopes(heads: number): Float32Array {
  if (!Number.isInteger(heads) || heads < 1) {
    throw new ValueError(`heads: expected a positive integer, got ${describe(heads)}`, 'heads');
  }
  const pow2 = (n: number) => Array.from({ length: n }, (_, i) => 2 ** ((-8 * (i + 1)) / n));
  const closest = 2 ** Math.floor(Math.log2(heads));
  const slopes = pow2(closest);
  if (closest < heads) slopes.push(...pow2(2 * closest).filter((_, i) => i % 2 === 0));
  return Float32Array.from(slopes.slice(0, heads));
}

export type ResolvedScoreMod =
  | SoftcapMod
  | { kind: 'alibi'; slopes: Float32Array }
  | {
      kind: 'bias';
      bias: Tensor;
      /** Element of (b, h, i, j): b * batchStride + h * headStride + i * rowStride + j. */
      batchStride: number;
      headStride: number;
      rowStride: number;
      /** The backward also returns d loss / d bias (BiasMod.grad). */
      grad?: boolean;
    }
  | (CustomScoreMod & { tsGrad?: CustomScoreMod['tsGrad'] });

export interface ResolvedMaskMod extends MaskMod {
  perBatch: boolean;
  perHead: boolean;
  blockSize: number;
}

/** The dimensions mods are checked against (a subset of AttentionProblem). */
export interface ModDims {
  batch: number;
  hq: number;
  maxSeqQ: number;
  maxSeqK: number;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

function modFail(name: string, expected: string, got: unknown): never {
  throw new ValueError(`${name}: expected ${expected}, got ${describe(got)}`, name);
}

/**
 * Validates `scoreMod` (one mod or a list) against the problem and resolves it; `device` is
 * q's device (a bias tensor must live there). Throws a typed error naming `scoreMod[n]`.
 */
export function resolveScoreMods(
  scoreMod: unknown,
  dims: ModDims,
  device: string,
): ResolvedScoreMod[] {
  if (scoreMod === undefined) return [];
  const list = Array.isArray(scoreMod) ? scoreMod : [scoreMod];
  return list.map((m, n) => {
    const name = Array.isArray(scoreMod) ? `scoreMod[${n}]` : 'scoreMod';
    if (m === null || typeof m !== 'object') modFail(name, 'a score mod object', m);
    const mod = m as ScoreMod;
    switch (mod.kind) {
      case 'softcap':
        if (typeof mod.cap !== 'number' || !(mod.cap > 0) || !Number.isFinite(mod.cap))
          modFail(`${name}.cap`, 'a finite number > 0', mod.cap);
        return { kind: 'softcap', cap: mod.cap };
      case 'alibi': {
        const s = mod.slopes as unknown;
        if (!(s instanceof Float32Array) && !Array.isArray(s))
          modFail(`${name}.slopes`, `a Float32Array or number[] of length Hq = ${dims.hq}`, s);
        const slopes = Float32Array.from(s as ArrayLike<number>);
        if (slopes.length !== dims.hq)
          modFail(`${name}.slopes`, `length Hq = ${dims.hq}`, `length ${slopes.length}`);
        if (!slopes.every(Number.isFinite)) modFail(`${name}.slopes`, 'finite slopes', s);
        return { kind: 'alibi', slopes };
      }
      case 'bias': {
        const g = mod.grad as unknown;
        if (g !== undefined && typeof g !== 'boolean') modFail(`${name}.grad`, 'a boolean', g);
        const r = resolveBias(mod.bias, `${name}.bias`, dims, device);
        return g ? { ...r, grad: true } : r;
      }
      case 'custom': {
        if (typeof mod.name !== 'string' || !IDENT.test(mod.name))
          modFail(`${name}.name`, 'a WGSL identifier', mod.name);
        if (typeof mod.ts !== 'function') modFail(`${name}.ts`, 'a function', mod.ts);
        if (mod.tsGrad !== undefined && typeof mod.tsGrad !== 'function')
          modFail(`${name}.tsGrad`, 'a function', mod.tsGrad);
        for (const key of ['wgsl', 'wgslGrad'] as const) {
          if (mod[key] !== undefined && typeof mod[key] !== 'string')
            modFail(`${name}.${key}`, 'WGSL source text', mod[key]);
        }
        return { ...mod };
      }
      default:
        return modFail(
          `${name}.kind`,
          '"softcap", "alibi", "bias" or "custom"',
          (mod as { kind: unknown }).kind,
        );
    }
  });
}

function resolveBias(t: unknown, name: string, dims: ModDims, device: string): ResolvedScoreMod {
  const b = t as Tensor;
  if (!b || typeof b !== 'object' || !Array.isArray(b.shape))
    throw new ShapeError(`${name}: expected a Tensor, got ${describe(t)}`, name);
  if (!isFloatDType(b.dtype) || b.dtype === 'f64' || b.dtype === 'f16' || b.dtype === 'bf16')
    throw new DTypeError(`${name}: expected dtype f32, got ${b.dtype}`, name);
  if (b.device !== device)
    throw new DeviceError(
      `${name}: expected a tensor on ${device} (q's device), got one on ${b.device}`,
      name,
    );
  const s = b.shape;
  const { batch, hq, maxSeqQ: nq, maxSeqK: nk } = dims;
  const ok =
    s.length >= 2 &&
    s.length <= 4 &&
    s[s.length - 2] === nq &&
    s[s.length - 1] === nk &&
    (s.length < 3 || s[s.length - 3] === hq) &&
    (s.length < 4 || s[0] === batch);
  if (!ok) {
    throw new ShapeError(
      `${name}: expected shape [${nq}, ${nk}], [${hq}, ${nq}, ${nk}] or [${batch}, ${hq}, ${nq}, ${nk}], got ${formatShape(s)}`,
      name,
    );
  }
  return {
    kind: 'bias',
    bias: b,
    rowStride: nk,
    headStride: s.length >= 3 ? nq * nk : 0,
    batchStride: s.length === 4 ? hq * nq * nk : 0,
  };
}

/** Validates a mask mod (see MaskMod). */
export function resolveMaskMod(maskMod: unknown): ResolvedMaskMod | undefined {
  if (maskMod === undefined) return undefined;
  if (maskMod === null || typeof maskMod !== 'object')
    modFail('maskMod', 'an object { name, ts, wgsl? }', maskMod);
  const m = maskMod as MaskMod;
  if (typeof m.name !== 'string' || !IDENT.test(m.name))
    modFail('maskMod.name', 'a WGSL identifier', m.name);
  if (typeof m.ts !== 'function') modFail('maskMod.ts', 'a function (b, h, i, j) => boolean', m.ts);
  if (m.wgsl !== undefined && typeof m.wgsl !== 'string')
    modFail('maskMod.wgsl', 'WGSL source text', m.wgsl);
  for (const key of ['perBatch', 'perHead'] as const) {
    if (m[key] !== undefined && typeof m[key] !== 'boolean')
      modFail(`maskMod.${key}`, 'a boolean', m[key]);
  }
  const blockSize = m.blockSize ?? 64;
  if (!Number.isInteger(blockSize) || blockSize < 1)
    modFail('maskMod.blockSize', 'a positive integer', blockSize);
  return { ...m, perBatch: m.perBatch ?? false, perHead: m.perHead ?? false, blockSize };
}

/** Per-element context a score mod reads. */
export interface ModSite {
  b: number;
  h: number;
  i: number;
  j: number;
  nq: number;
  nk: number;
}

/** Reads a bias element; kernels bind the tensor's f32 data once per call. */
export function biasAt(
  mod: Extract<ResolvedScoreMod, { kind: 'bias' }>,
  data: ArrayLike<number>,
  at: ModSite,
): number {
  return data[at.b * mod.batchStride + at.h * mod.headStride + at.i * mod.rowStride + at.j]!;
}

/**
 * One mod applied to score s (the normative float semantics every backend follows):
 * returns the modified score. `biasData` is the bias tensor's values for kind 'bias'.
 */
export function applyScoreMod(
  mod: ResolvedScoreMod,
  s: number,
  at: ModSite,
  biasData?: ArrayLike<number>,
): number {
  switch (mod.kind) {
    case 'softcap':
      return mod.cap * Math.tanh(s / mod.cap);
    case 'alibi':
      return s - mod.slopes[at.h]! * Math.abs(at.i + at.nk - at.nq - at.j);
    case 'bias':
      return s + biasAt(mod, biasData!, at);
    case 'custom':
      return mod.ts(s, at.b, at.h, at.i, at.j);
  }
}

/** d mod / d s at the mod's input s (1 for the additive mods). */
export function scoreModGrad(mod: ResolvedScoreMod, s: number, at: ModSite): number {
  switch (mod.kind) {
    case 'softcap': {
      const t = Math.tanh(s / mod.cap);
      return 1 - t * t;
    }
    case 'alibi':
    case 'bias':
      return 1;
    case 'custom':
      if (!mod.tsGrad) {
        throw new ValueError(
          `scoreMod.tsGrad: expected a gradient function for custom mod "${mod.name}" (the backward needs d mod / d s), got undefined`,
          'scoreMod.tsGrad',
        );
      }
      return mod.tsGrad(s, at.b, at.h, at.i, at.j);
  }
}

/** Whether a list of mods can run backward on the TS path (custom mods need tsGrad). */
export function checkModsBackward(
  mods: readonly ResolvedScoreMod[],
  backend: 'ts' | 'webgpu',
): void {
  for (const m of mods) {
    if (m.kind !== 'custom') continue;
    if (backend === 'ts' && !m.tsGrad)
      modFail('scoreMod.tsGrad', `a gradient function for custom mod "${m.name}"`, m.tsGrad);
    if (backend === 'webgpu' && !m.wgslGrad)
      modFail('scoreMod.wgslGrad', `WGSL for the gradient of custom mod "${m.name}"`, m.wgslGrad);
  }
}
