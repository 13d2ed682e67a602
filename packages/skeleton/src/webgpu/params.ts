import { packUniformParts, type UniformField, uniformStruct } from '@attnkit/webgpu';

/**
 * The uniform block every FlashAttention WGSL kernel reads. One list drives both the WGSL
 * struct and the host-side packing, so the two cannot drift apart. Strides are in elements;
 * "rows" are tokens of one head. Layout BHND: batch stride H N W, head stride N W, row stride W;
 * THD: batch stride 0, head stride W, row stride H W, plus the sequence's start token.
 */
export const PARAM_FIELDS = [
  ['group', 'u32'],
  ['d', 'u32'],
  ['dv', 'u32'],
  ['qBatch', 'u32'],
  ['qHead', 'u32'],
  ['qRow', 'u32'],
  ['kBatch', 'u32'],
  ['kHead', 'u32'],
  ['kRow', 'u32'],
  ['vBatch', 'u32'],
  ['vHead', 'u32'],
  ['vRow', 'u32'],
  ['oBatch', 'u32'],
  ['oHead', 'u32'],
  ['oRow', 'u32'],
  // LSE and the backward's row statistics: index b lBatch + h lHead + start + i.
  ['lBatch', 'u32'],
  ['lHead', 'u32'],
  // Causal folded into the window, as FlashAttention does; -1 = unbounded.
  ['left', 'i32'],
  ['right', 'i32'],
  // Block-sparse mask (one u32 per block in aux at bsOff) and its per-kernel tile summary.
  ['bsQ', 'u32'],
  ['bsK', 'u32'],
  ['nbq', 'u32'],
  ['nbk', 'u32'],
  ['bsBatch', 'u32'],
  ['bsHead', 'u32'],
  ['bsOff', 'u32'],
  ['tsOff', 'u32'],
  ['ntq', 'u32'],
  ['ntk', 'u32'],
  // Bits of -Infinity: a runtime value, so no compiler folds an infinity constant.
  ['negInf', 'u32'],
  ['scale', 'f32'],
  ['scaleLog2', 'f32'],
] as const;

export type ParamName = (typeof PARAM_FIELDS)[number][0];
export type Params = Record<ParamName, number>;

/** The WGSL struct: PARAM_FIELDS, then the fields the kernel's hooks add (hooks.ts). */
export function paramsStruct(extra: readonly UniformField[] = []): string {
  return uniformStruct('Params', [...PARAM_FIELDS, ...extra]);
}

/**
 * The uniform buffer's bytes (a multiple of 16, as uniform structs are sized): PARAM_FIELDS from
 * `p`, then `extra` from `extraValues`. Packed part by part (packUniformParts): spreading both
 * records into one object for packUniform cost ~80 us a launch on the 2-core dev VM, the largest
 * share of a decode attention call's host time (BENCHMARKS.md, "GPT generation on the H200 ...
 * session 20").
 */
export function packParams(
  p: Params,
  extra: readonly UniformField[] = [],
  extraValues: Readonly<Record<string, number>> = {},
): ArrayBuffer {
  return packUniformParts([
    [PARAM_FIELDS, p],
    [extra, extraValues],
  ]);
}
