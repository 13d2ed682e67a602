import {
  type BindingKind,
  declareBindings,
  type UniformField,
  uniformStruct,
} from '@attnkit/webgpu';

/**
 * WGSL of HyperAttention's own passes on WebGPU (the exact attention pieces run on
 * @attnkit/flash-attention's WGSL FlashAttention; ./host.ts strings them together):
 *
 * - `hashKernel`: the angular LSH of ../lsh.ts for every row (P dot products, sign bits, Gray
 *   rank);
 * - `radixHistKernel`, `radixScanKernel`, `radixScatterKernel`: one pass of a segmented,
 *   stable LSD radix sort on 8-bit digits of the buckets (the algorithm of ../lsh.ts
 *   sortByBucket; a stable sort's result is unique, so the permutation is the same): per chunk
 *   of 256 ids a digit histogram, per segment an exclusive prefix in (digit, chunk) order, per
 *   chunk a scatter where an id lands after the ids of its chunk with the same digit before it;
 * - `resolveKernel`: packed row references to global rows (a reference < 0 names a position of
 *   the sorted ids); `gatherKernel`: rows of q / k / v / o / dO into a packed THD tensor;
 *   `gatherLseKernel`: the final LSE of each packed row minus its piece's log weight;
 * - `initOutKernel`, `mergeKernel`: the LSE combine of ../combine.ts, one packed piece per
 *   output row per dispatch (./plan.ts puts pieces that share rows in different layers);
 * - `zeroKernel`, `scatterAddKernel`: the backward's gradient accumulation. f32 adds through a
 *   compare-exchange loop (WGSL has no float atomics): a row repeats across the pieces of the
 *   recursion, the query heads of a kv head and repeated draws, so plain stores would race.
 *   The order of the adds is not fixed, so the gradients agree with ts to f32 rounding, not
 *   bit for bit.
 *
 * Every kernel is 1-D over its items (a workgroup per chunk or segment for the radix passes),
 * the workgroup grid folded into x and y (x <= 65535) and unfolded with num_workgroups.
 * Storage is f32 (u32 / i32 for ids and buckets).
 */

export const HYPER_THREADS = 256;
/** Ids per radix chunk (one workgroup of the histogram and scatter passes). */
export const RADIX_CHUNK = 256;
/** Bits per radix pass. */
export const RADIX_BITS = 8;

export interface HyperKernel {
  label: string;
  code: string;
  /** Binding kinds, the uniform first. */
  bindings: BindingKind[];
  /** Buffer names of the bindings after the uniform, in order. */
  names: string[];
  fields: readonly UniformField[];
}

type Bind = readonly [name: string, kind: 'read' | 'storage', type: string];

function kernel(
  label: string,
  fields: readonly UniformField[],
  binds: readonly Bind[],
  body: string,
  prelude = '',
): HyperKernel {
  const all = [
    { name: 'P', kind: 'uniform' as const, type: 'Params' },
    ...binds.map(([name, kind, type]) => ({ name, kind, type })),
  ];
  const code = `${uniformStruct('Params', fields)}
${declareBindings(all)}
${prelude}
@compute @workgroup_size(${HYPER_THREADS})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
  let group = wg.x + wg.y * nwg.x;
  let gid = group * ${HYPER_THREADS}u + lid.x;
${body}
}
`;
  return {
    label: `hyper ${label}`,
    code,
    bindings: ['uniform', ...binds.map((b) => b[1])],
    names: binds.map((b) => b[0]),
    fields,
  };
}

/**
 * Buckets of `rows` rows of x (f32 [rows, D]) into bucket[out0 + row]: the dot products with
 * the P hyperplanes R (f32 [P, D]) summed in column order, bit p set when dot > 0, then the
 * code's Gray rank (the prefix XOR of its bits). The ts path sums in f64: a dot product within
 * rounding of 0 may take the other sign there.
 */
export const hashKernel = kernel(
  'hash',
  [
    ['rows', 'u32'],
    ['D', 'u32'],
    ['NP', 'u32'],
    ['out0', 'u32'],
  ],
  [
    ['x', 'read', 'array<f32>'],
    ['R', 'read', 'array<f32>'],
    ['bucket', 'storage', 'array<u32>'],
  ],
  `  if (gid >= P.rows) { return; }
  let base = gid * P.D;
  var code = 0u;
  for (var p = 0u; p < P.NP; p++) {
    var dot = 0.0;
    let rb = p * P.D;
    for (var c = 0u; c < P.D; c++) { dot += x[base + c] * R[rb + c]; }
    if (dot > 0.0) { code = code | (1u << p); }
  }
  var r = code;
  r = r ^ (r >> 1u); r = r ^ (r >> 2u); r = r ^ (r >> 4u); r = r ^ (r >> 8u); r = r ^ (r >> 16u);
  bucket[P.out0 + gid] = r;`,
);

/**
 * counts[chunk * 256 + digit] = the ids of the chunk with that digit of their bucket. Chunk
 * table: 4 u32 per chunk (first position in `ids`, length <= 256, 0, 0).
 */
export const radixHistKernel = kernel(
  'radix hist',
  [
    ['numChunks', 'u32'],
    ['shift', 'u32'],
  ],
  [
    ['chunks', 'read', 'array<u32>'],
    ['ids', 'read', 'array<u32>'],
    ['bucket', 'read', 'array<u32>'],
    ['counts', 'storage', 'array<u32>'],
  ],
  `  // One workgroup per chunk; the exit is uniform (the whole workgroup leaves together).
  if (group >= P.numChunks) { return; }
  atomicStore(&hist[lid.x], 0u);
  workgroupBarrier();
  let start = chunks[group * 4u];
  let len = chunks[group * 4u + 1u];
  if (lid.x < len) {
    let d = (bucket[ids[start + lid.x]] >> P.shift) & 255u;
    atomicAdd(&hist[d], 1u);
  }
  workgroupBarrier();
  counts[group * 256u + lid.x] = atomicLoad(&hist[lid.x]);`,
  'var<workgroup> hist: array<atomic<u32>, 256>;',
);

/**
 * Per segment (4 u32: first chunk, chunk count, first position, 0) the counts become absolute
 * destinations: segment start + ids of smaller digits + ids of the same digit in earlier
 * chunks. Thread = digit; the digit totals scanned across the workgroup.
 */
export const radixScanKernel = kernel(
  'radix scan',
  [['numSegments', 'u32']],
  [
    ['segments', 'read', 'array<u32>'],
    ['counts', 'storage', 'array<u32>'],
  ],
  `  if (group >= P.numSegments) { return; }
  let first = segments[group * 4u];
  let nc = segments[group * 4u + 1u];
  let start = segments[group * 4u + 2u];
  var run = 0u;
  for (var c = 0u; c < nc; c++) {
    let at = (first + c) * 256u + lid.x;
    let t = counts[at];
    counts[at] = run;
    run += t;
  }
  tot[lid.x] = run;
  workgroupBarrier();
  for (var o = 1u; o < 256u; o = o << 1u) {
    let has = lid.x >= o;
    var add = 0u;
    if (has) { add = tot[lid.x - o]; }
    workgroupBarrier();
    tot[lid.x] += add;
    workgroupBarrier();
  }
  let base = start + tot[lid.x] - run;
  for (var c = 0u; c < nc; c++) {
    let at = (first + c) * 256u + lid.x;
    counts[at] += base;
  }`,
  'var<workgroup> tot: array<u32, 256>;',
);

/** dst[destination] = id, stable: an id's rank among the same digit before it in its chunk. */
export const radixScatterKernel = kernel(
  'radix scatter',
  [
    ['numChunks', 'u32'],
    ['shift', 'u32'],
  ],
  [
    ['chunks', 'read', 'array<u32>'],
    ['src', 'read', 'array<u32>'],
    ['bucket', 'read', 'array<u32>'],
    ['counts', 'read', 'array<u32>'],
    ['dst', 'storage', 'array<u32>'],
  ],
  `  if (group >= P.numChunks) { return; }
  let start = chunks[group * 4u];
  let len = chunks[group * 4u + 1u];
  var id = 0u;
  var d = 256u;
  if (lid.x < len) {
    id = src[start + lid.x];
    d = (bucket[id] >> P.shift) & 255u;
  }
  dig[lid.x] = d;
  workgroupBarrier();
  if (lid.x < len) {
    var rank = 0u;
    for (var j = 0u; j < lid.x; j++) { rank += select(0u, 1u, dig[j] == d); }
    dst[counts[group * 256u + d] + rank] = id;
  }`,
  'var<workgroup> dig: array<u32, 256>;',
);

/** rows[i] = ref[i] when >= 0, else sorted[-1 - ref[i]] - sub (sorted ids of k are offset). */
export const resolveKernel = kernel(
  'resolve',
  [
    ['n', 'u32'],
    ['sub', 'u32'],
  ],
  [
    ['refs', 'read', 'array<i32>'],
    ['sorted', 'read', 'array<u32>'],
    ['rows', 'storage', 'array<u32>'],
  ],
  `  if (gid >= P.n) { return; }
  let r = refs[gid];
  if (r >= 0) {
    rows[gid] = u32(r);
  } else {
    rows[gid] = sorted[u32(-1 - r)] - P.sub;
  }`,
);

/** out[i, c] = src[rows[i], c] for n rows of width W. */
export const gatherKernel = kernel(
  'gather',
  [
    ['n', 'u32'],
    ['W', 'u32'],
  ],
  [
    ['src', 'read', 'array<f32>'],
    ['rows', 'read', 'array<u32>'],
    ['out', 'storage', 'array<f32>'],
  ],
  `  if (gid >= P.n * P.W) { return; }
  let i = gid / P.W;
  out[gid] = src[rows[i] * P.W + (gid - i * P.W)];`,
);

/** out[i] = L[rows[i]] - shift[i]: the LSE a packed piece's backward needs. */
export const gatherLseKernel = kernel(
  'gather lse',
  [['n', 'u32']],
  [
    ['L', 'read', 'array<f32>'],
    ['rows', 'read', 'array<u32>'],
    ['shift', 'read', 'array<f32>'],
    ['out', 'storage', 'array<f32>'],
  ],
  `  if (gid >= P.n) { return; }
  out[gid] = L[rows[gid]] - shift[gid];`,
);

/**
 * O = 0 and LSE = -inf: rows no piece reaches keep them (no keys: O = 0, LSE = -inf). The
 * bits of -inf come from the uniform (negInf = 0xff800000; WGSL rejects an infinite constant).
 */
export const initOutKernel = kernel(
  'init out',
  [
    ['rows', 'u32'],
    ['DV', 'u32'],
    ['negInf', 'u32'],
  ],
  [
    ['O', 'storage', 'array<f32>'],
    ['LSE', 'storage', 'array<f32>'],
  ],
  `  if (gid < P.rows * P.DV) { O[gid] = 0.0; }
  if (gid < P.rows) { LSE[gid] = bitcast<f32>(P.negInf); }`,
);

/**
 * Merges the packed rows pos[0..n) of one call (o, lse + shift) into their output rows
 * (mergeSoftmaxRow of ../combine.ts): against the larger LSE, a side without keys adds
 * nothing, the first piece is copied. No two entries of `pos` share an output row. -inf is
 * tested as < -1e38 (no arithmetic on infinities: a compiler may assume finite floats).
 */
export const mergeKernel = kernel(
  'merge',
  [
    ['n', 'u32'],
    ['DV', 'u32'],
  ],
  [
    ['pos', 'read', 'array<u32>'],
    ['rows', 'read', 'array<u32>'],
    ['po', 'read', 'array<f32>'],
    ['pl', 'read', 'array<f32>'],
    ['shift', 'read', 'array<f32>'],
    ['O', 'storage', 'array<f32>'],
    ['LSE', 'storage', 'array<f32>'],
  ],
  `  if (gid >= P.n) { return; }
  let t = pos[gid];
  let row = rows[t];
  let s = pl[t] + shift[t];
  if (s < -1.0e38) { return; }
  let a = LSE[row];
  let ob = row * P.DV;
  let pb = t * P.DV;
  if (a < -1.0e38) {
    for (var c = 0u; c < P.DV; c++) { O[ob + c] = po[pb + c]; }
    LSE[row] = s;
    return;
  }
  let m = max(a, s);
  let wa = exp(a - m);
  let wb = exp(s - m);
  let z = wa + wb;
  for (var c = 0u; c < P.DV; c++) { O[ob + c] = (wa * O[ob + c] + wb * po[pb + c]) / z; }
  LSE[row] = m + log(z);`,
);

export const zeroKernel = kernel(
  'zero',
  [['n', 'u32']],
  [['a', 'storage', 'array<f32>']],
  `  if (gid < P.n) { a[gid] = 0.0; }`,
);

/** dst[rows[i], c] += src[i, c] (n rows of width W), an f32 add by compare-exchange. */
export const scatterAddKernel = kernel(
  'scatter add',
  [
    ['n', 'u32'],
    ['W', 'u32'],
  ],
  [
    ['rows', 'read', 'array<u32>'],
    ['src', 'read', 'array<f32>'],
    ['dst', 'storage', 'array<atomic<u32>>'],
  ],
  `  if (gid >= P.n * P.W) { return; }
  let i = gid / P.W;
  let at = rows[i] * P.W + (gid - i * P.W);
  let x = src[gid];
  var old = atomicLoad(&dst[at]);
  loop {
    let r = atomicCompareExchangeWeak(&dst[at], old, bitcast<u32>(bitcast<f32>(old) + x));
    if (r.exchanged) { break; }
    old = r.old_value;
  }`,
);

/** out[i] = sorted[i] % N: global row ids back to positions within their slice. */
export const localIndexKernel = kernel(
  'local index',
  [
    ['n', 'u32'],
    ['N', 'u32'],
  ],
  [
    ['sorted', 'read', 'array<u32>'],
    ['out', 'storage', 'array<u32>'],
  ],
  `  if (gid >= P.n) { return; }
  out[gid] = sorted[gid] % P.N;`,
);
