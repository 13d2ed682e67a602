import { describe, ValueError } from '@attnkit/tensor';

/**
 * Binding chunks: a BHND forward whose q, k, v, o or lse is larger than one WebGPU storage binding
 * (the device's maxStorageBufferBindingSize, 2^31 - 4 bytes on the H100 / H200 under Dawn) runs
 * as several launches over ranges of (batch, kv head), each binding its piece of the inputs
 * where it lies (a BufferRange: no copy of K or V, which decode reads once) and writing its
 * own o / lse, copied into place after. Pure planning, unit-tested (chunks.test.ts).
 */

/** One tensor's footprint per kv head: its slice of the tensor for one (batch, kv head). */
export interface HeadSlice {
  /** Bytes of the slice (q, o, lse: the group's query heads; k, v: the kv head's keys). */
  bytes: number;
  /** Elements of the slice (kernels index a binding with u32: fewer than 2^32 in one). */
  elements: number;
  /** Whether its chunks are bound in place (the inputs): their starts must be aligned. */
  bound: boolean;
  /** The argument an error names for it (default: its key, the tensor's name). */
  argument?: string;
}

export interface ChunkProblem {
  batch: number;
  hkv: number;
  slices: Readonly<Record<string, HeadSlice>>;
  /** Largest binding in bytes (maxStorageBufferBindingSize). */
  maxBinding: number;
  /** Byte alignment of a bound range's offset (BINDING_OFFSET_ALIGNMENT). */
  align: number;
}

/** A range of batch entries, and of kv heads within them (all heads when nb > 1). */
export interface BindingChunk {
  b0: number;
  nb: number;
  h0: number;
  nh: number;
}

/** Most elements one binding may index (u32 indices; one below 2^32 as checkBindingSizes). */
const MAX_ELEMENTS = 2 ** 32 - 1;

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * The piece size that cuts `total` items into as few pieces of at most `per` as possible, as
 * even as a multiple of `step` allows (per is a multiple of step, and ceil(total / n) <= per,
 * so rounding that up to the step stays within per).
 */
const evenCut = (total: number, per: number, step: number): number => {
  const n = Math.ceil(total / per);
  return Math.min(per, Math.ceil(Math.ceil(total / n) / step) * step);
};

/**
 * The chunks of a problem, or undefined when everything fits one launch. Chunks are whole
 * batches when one batch entry fits a binding, else kv-head ranges of one batch entry, as few as
 * fit and as even as alignment allows; every bound tensor's chunk starts at a byte offset that
 * is a multiple of `align`. ValueError naming the tensor when one kv head's slice alone does not
 * fit, or when no aligned cut exists (naming it and the alignment).
 */
export function planBindingChunks(c: ChunkProblem): BindingChunk[] | undefined {
  checkChunkProblem(c);
  const entries = Object.entries(c.slices);
  const fits = (heads: number) =>
    entries.every(([, s]) => heads * s.bytes <= c.maxBinding && heads * s.elements <= MAX_ELEMENTS);
  const total = c.batch * c.hkv;
  if (total === 0 || fits(total)) return undefined;
  for (const [name, s] of entries) {
    if (s.bytes > c.maxBinding || s.elements > MAX_ELEMENTS) {
      const arg = s.argument ?? name;
      throw new ValueError(
        `${arg}: one kv head's slice of ${name} takes ${s.bytes} bytes (${s.elements} elements), more than one binding may hold on this device (${c.maxBinding} bytes, ${MAX_ELEMENTS} elements)`,
        arg,
      );
    }
  }
  // Largest head count that fits (fits is monotone in heads).
  let most = 1;
  for (let step = 2 ** Math.floor(Math.log2(total)); step >= 1; step /= 2)
    if (most + step <= total && fits(most + step)) most += step;
  // A chunk may start at flat (b * hkv + h) index i only if i * bytes is aligned for every
  // bound tensor: i a multiple of `unit`.
  let unit = 1;
  for (const [, s] of entries) {
    if (!s.bound) continue;
    const u = c.align / gcd(s.bytes % c.align, c.align);
    unit = (unit * u) / gcd(unit, u);
  }
  if (most >= c.hkv) {
    // Whole batch entries, `per` of them a chunk: per * hkv a multiple of unit.
    const step = unit / gcd(c.hkv % unit, unit);
    const per = Math.floor(Math.floor(most / c.hkv) / step) * step;
    if (per >= 1) {
      const even = evenCut(c.batch, per, step);
      const out: BindingChunk[] = [];
      for (let b0 = 0; b0 < c.batch; b0 += even)
        out.push({ b0, nb: Math.min(even, c.batch - b0), h0: 0, nh: c.hkv });
      return out;
    }
  }
  // kv-head ranges within each batch entry: every entry's first head must be aligned too.
  const cap = Math.min(most, c.hkv);
  const per = Math.floor(cap / unit) * unit;
  if (per < 1 || (c.batch > 1 && c.hkv % unit !== 0)) {
    const [name] = entries.find(([, s]) => s.bound && s.bytes % c.align !== 0) ?? entries[0]!;
    throw new ValueError(
      `${name}: its kv heads cannot be cut into pieces of at most ${c.maxBinding} bytes that start at multiples of ${c.align} bytes (${c.slices[name]!.bytes} bytes a kv head); pad the sequence so a head's slice is a multiple of ${c.align} bytes`,
      name,
    );
  }
  const even = evenCut(c.hkv, per, unit);
  const out: BindingChunk[] = [];
  for (let b = 0; b < c.batch; b++)
    for (let h0 = 0; h0 < c.hkv; h0 += even)
      out.push({ b0: b, nb: 1, h0, nh: Math.min(even, c.hkv - h0) });
  return out;
}

/** ValueError naming the field unless `c` is a ChunkProblem planBindingChunks can plan. */
function checkChunkProblem(c: ChunkProblem): void {
  if (c === null || typeof c !== 'object')
    throw new ValueError(`problem: expected a ChunkProblem object, got ${describe(c)}`, 'problem');
  const count = (x: unknown, name: string, min: number) => {
    if (!Number.isSafeInteger(x) || (x as number) < min)
      throw new ValueError(`${name}: expected an integer >= ${min}, got ${describe(x)}`, name);
  };
  count(c.batch, 'batch', 0);
  count(c.hkv, 'hkv', 0);
  count(c.maxBinding, 'maxBinding', 4);
  count(c.align, 'align', 1);
  if (!Number.isInteger(Math.log2(c.align)))
    throw new ValueError(`align: expected a power of two, got ${c.align}`, 'align');
  if (c.slices === null || typeof c.slices !== 'object' || Object.keys(c.slices).length === 0)
    throw new ValueError(
      `slices: expected an object of at least one HeadSlice, got ${describe(c.slices)}`,
      'slices',
    );
  for (const [name, sl] of Object.entries(c.slices)) {
    if (sl === null || typeof sl !== 'object')
      throw new ValueError(
        `slices.${name}: expected a HeadSlice, got ${describe(sl)}`,
        `slices.${name}`,
      );
    count(sl.bytes, `slices.${name}.bytes`, 0);
    count(sl.elements, `slices.${name}.elements`, 0);
    if (typeof sl.bound !== 'boolean')
      throw new ValueError(
        `slices.${name}.bound: expected a boolean, got ${describe(sl.bound)}`,
        `slices.${name}.bound`,
      );
  }
}
