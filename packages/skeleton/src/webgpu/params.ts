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

export function paramsStruct(): string {
  const fields = PARAM_FIELDS.map(([name, type]) => `  ${name}: ${type},`);
  const pad = (4 - (PARAM_FIELDS.length % 4)) % 4;
  for (let i = 0; i < pad; i++) fields.push(`  pad${i}: u32,`);
  return `struct Params {\n${fields.join('\n')}\n}`;
}

/** The uniform buffer's bytes (a multiple of 16, as uniform structs are sized). */
export function packParams(p: Params): ArrayBuffer {
  const n = Math.ceil(PARAM_FIELDS.length / 4) * 4;
  const buf = new ArrayBuffer(n * 4);
  const u = new Uint32Array(buf);
  const i = new Int32Array(buf);
  const f = new Float32Array(buf);
  PARAM_FIELDS.forEach(([name, type], k) => {
    const v = p[name];
    if (type === 'f32') f[k] = v;
    else if (type === 'i32') i[k] = v;
    else u[k] = v >>> 0;
  });
  return buf;
}
