import { describe, ValueError } from '@attnkit/tensor';
import { type UniformField, uniformStruct } from '@attnkit/webgpu';

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
 * `p`, then `extra` from `extraValues`, as packUniform lays them out. Written field by field from
 * the two records: spreading both into one object for packUniform cost ~80 us a launch on the
 * 2-core dev VM (a 40-property spread and keyed loads on the dictionary-mode result), the largest
 * share of a decode attention call's host time (benchmarks/gpu/host-attend.mjs).
 */
export function packParams(
  p: Params,
  extra: readonly UniformField[] = [],
  extraValues: Readonly<Record<string, number>> = {},
): ArrayBuffer {
  const n = PARAM_FIELDS.length + extra.length;
  const buf = new ArrayBuffer(Math.ceil(n / 4) * 16);
  const u = new Uint32Array(buf);
  const i = new Int32Array(buf);
  const f = new Float32Array(buf);
  const put = (k: number, name: string, type: string, v: unknown) => {
    if (typeof v !== 'number')
      throw new ValueError(
        `values.${name}: expected a number for uniform field "${name}", got ${describe(v)}`,
        `values.${name}`,
      );
    if (type === 'f32') f[k] = v;
    else if (type === 'i32') i[k] = v;
    else u[k] = v >>> 0;
  };
  for (let k = 0; k < PARAM_FIELDS.length; k++) {
    const [name, type] = PARAM_FIELDS[k]!;
    put(k, name, type, p[name]);
  }
  for (let k = 0; k < extra.length; k++) {
    const [name, type] = extra[k]!;
    put(PARAM_FIELDS.length + k, name, type, extraValues[name]);
  }
  return buf;
}
