import { type AttentionProblem, blockKept, keyRange } from '@attnkit/attention';

/**
 * Tile-level pieces shared by the FA1, FA2 and backward loops: staging rows of a (possibly
 * strided, THD) tensor into a contiguous tile, the small dense matmul every tile product runs
 * on, and the tiling mask (classify a tile against the causal/window band from its corner rows).
 */

/** dst[r * width + c] = src[base + r * stride + c] * mul, for r < rows. */
export function stageRows(
  src: Float32Array,
  base: number,
  stride: number,
  rows: number,
  width: number,
  dst: Float32Array,
  mul: number,
): void {
  for (let r = 0; r < rows; r++) {
    const so = base + r * stride;
    const dOff = r * width;
    for (let c = 0; c < width; c++) dst[dOff + c] = src[so + c]! * mul;
  }
}

/**
 * Permuted tiles (PermuteHook): row r of the tile starting at tiled row `row0` of a (b, h)
 * slice is the sequence row index[at + row0 + r] (`at`: the slice's offset in the index array,
 * lseBase for q, @attnkit/attention permKBase for k); without an index it is row0 + r. The branch is taken once
 * per tile: the identity path is stageRows on a contiguous (strided) block, as without hooks.
 * dst[r * width + c] = src[base + row(r) * stride + c] * mul, for r < rows; `base` is the
 * offset of the slice's row 0.
 */
export function stageTile(
  src: Float32Array,
  base: number,
  stride: number,
  index: Int32Array | undefined,
  at: number,
  row0: number,
  rows: number,
  width: number,
  dst: Float32Array,
  mul: number,
): void {
  if (index === undefined) {
    stageRows(src, base + row0 * stride, stride, rows, width, dst, mul);
    return;
  }
  for (let r = 0; r < rows; r++) {
    const so = base + index[at + row0 + r]! * stride;
    const dOff = r * width;
    for (let c = 0; c < width; c++) dst[dOff + c] = src[so + c]! * mul;
  }
}

/**
 * The inverse of stageTile through an index (exact copies): dst[base + index[at + row0 + r] *
 * stride + c] = src[r * width + c], for r < rows. Writes a tile accumulated in scratch back to
 * the permuted rows it was staged from.
 */
export function scatterTile(
  src: Float32Array,
  rows: number,
  width: number,
  dst: Float32Array,
  base: number,
  stride: number,
  index: Int32Array,
  at: number,
  row0: number,
): void {
  for (let r = 0; r < rows; r++) {
    const dOff = base + index[at + row0 + r]! * stride;
    const so = r * width;
    for (let c = 0; c < width; c++) dst[dOff + c] = src[so + c]!;
  }
}

/**
 * out[oo + r * ldo + c] += sum_{k < depth} A(r, k) B(k, c) for r < rows, c < cols, where
 * A(r, k) = a[ao + r * ars + k * aks] and B(k, c) = b[bo + k * bks + c * bcs]. Strides let one
 * kernel serve S = Q K^T, P V, P^T dO, dS^T Q and dS K on row-major tiles without transposing
 * any of them. A 2 x 4 register block: each loaded A element feeds four products, each B
 * element two; eight accumulators and six operands stay in registers.
 */
export function gemm(
  a: Float32Array,
  ao: number,
  ars: number,
  aks: number,
  b: Float32Array,
  bo: number,
  bks: number,
  bcs: number,
  out: Float32Array,
  oo: number,
  ldo: number,
  rows: number,
  cols: number,
  depth: number,
): void {
  const b1 = bcs;
  const b2 = 2 * bcs;
  const b3 = 3 * bcs;
  let r = 0;
  for (; r + 1 < rows; r += 2) {
    const a0 = ao + r * ars;
    const o0 = oo + r * ldo;
    const o1 = o0 + ldo;
    let c = 0;
    for (; c + 3 < cols; c += 4) {
      let x00 = 0;
      let x01 = 0;
      let x02 = 0;
      let x03 = 0;
      let x10 = 0;
      let x11 = 0;
      let x12 = 0;
      let x13 = 0;
      let pa = a0;
      let pb = bo + c * bcs;
      for (let k = 0; k < depth; k++) {
        const u = a[pa]!;
        const w = a[pa + ars]!;
        const y0 = b[pb]!;
        const y1 = b[pb + b1]!;
        const y2 = b[pb + b2]!;
        const y3 = b[pb + b3]!;
        x00 += u * y0;
        x01 += u * y1;
        x02 += u * y2;
        x03 += u * y3;
        x10 += w * y0;
        x11 += w * y1;
        x12 += w * y2;
        x13 += w * y3;
        pa += aks;
        pb += bks;
      }
      out[o0 + c] += x00;
      out[o0 + c + 1] += x01;
      out[o0 + c + 2] += x02;
      out[o0 + c + 3] += x03;
      out[o1 + c] += x10;
      out[o1 + c + 1] += x11;
      out[o1 + c + 2] += x12;
      out[o1 + c + 3] += x13;
    }
    for (; c < cols; c++) {
      let x0 = 0;
      let x1 = 0;
      let pa = a0;
      let pb = bo + c * bcs;
      for (let k = 0; k < depth; k++) {
        const y = b[pb]!;
        x0 += a[pa]! * y;
        x1 += a[pa + ars]! * y;
        pa += aks;
        pb += bks;
      }
      out[o0 + c] += x0;
      out[o1 + c] += x1;
    }
  }
  if (r < rows) {
    const a0 = ao + r * ars;
    const o0 = oo + r * ldo;
    let c = 0;
    for (; c + 3 < cols; c += 4) {
      let x0 = 0;
      let x1 = 0;
      let x2 = 0;
      let x3 = 0;
      let pa = a0;
      let pb = bo + c * bcs;
      for (let k = 0; k < depth; k++) {
        const u = a[pa]!;
        x0 += u * b[pb]!;
        x1 += u * b[pb + b1]!;
        x2 += u * b[pb + b2]!;
        x3 += u * b[pb + b3]!;
        pa += aks;
        pb += bks;
      }
      out[o0 + c] += x0;
      out[o0 + c + 1] += x1;
      out[o0 + c + 2] += x2;
      out[o0 + c + 3] += x3;
    }
    for (; c < cols; c++) {
      let x = 0;
      let pa = a0;
      let pb = bo + c * bcs;
      for (let k = 0; k < depth; k++) {
        x += a[pa]! * b[pb]!;
        pa += aks;
        pb += bks;
      }
      out[o0 + c] += x;
    }
  }
}

/** How a (Q tile, K tile) pair meets the mask. */
export const SKIP = 0;
export const PARTIAL = 1;
export const FULL = 2;

/**
 * Classifies query rows [q0, q0 + rows) x keys [k0, k0 + cols) of sequence (b, h). Key
 * ranges of the causal/window band are non-decreasing in the row, so the first and last rows
 * bound every row: a tile is skipped when it lies outside them, mask-free when inside all of
 * them. Block sparsity: tiles never straddle mask blocks (the plan aligns them), so one lookup
 * decides the whole tile.
 */
export function classifyTile(
  p: AttentionProblem,
  b: number,
  h: number,
  q0: number,
  rows: number,
  k0: number,
  cols: number,
): number {
  const nq = p.seqQ[b]!;
  const nk = p.seqK[b]!;
  const k1 = k0 + cols;
  const [loFirst, hiFirst] = keyRange(p, q0, nq, nk);
  const [loLast, hiLast] = keyRange(p, q0 + rows - 1, nq, nk);
  if (hiLast <= k0 || loFirst >= k1) return SKIP;
  const bs = p.blockSparse;
  if (bs && !blockKept(p, b, h, Math.floor(q0 / bs.blockQ), Math.floor(k0 / bs.blockK))) {
    return SKIP;
  }
  return loLast <= k0 && hiFirst >= k1 ? FULL : PARTIAL;
}

/**
 * Per-row key ranges of a tile, relative to k0 and clipped to [0, cols]; an empty range
 * (lo >= hi) is a row that sees no key of this tile.
 */
export function tileRowRanges(
  p: AttentionProblem,
  b: number,
  q0: number,
  rows: number,
  k0: number,
  cols: number,
  full: boolean,
  lo: Int32Array,
  hi: Int32Array,
): void {
  if (full) {
    lo.fill(0, 0, rows);
    hi.fill(cols, 0, rows);
    return;
  }
  const nq = p.seqQ[b]!;
  const nk = p.seqK[b]!;
  for (let r = 0; r < rows; r++) {
    const [l, u] = keyRange(p, q0 + r, nq, nk);
    lo[r] = Math.min(cols, Math.max(0, l - k0));
    hi[r] = Math.min(cols, Math.max(0, u - k0));
  }
}

/**
 * Whether the tile at (q0, k0) of (b, h) needs the mask mod's element test: its block-mask
 * value is 1 (some pairs pass the mod). Value 0 tiles were skipped by classifyTile, value 2
 * tiles (every pair passes) take the test-free path, as does everything without a mask mod.
 */
export function needsMaskTest(
  p: AttentionProblem,
  b: number,
  h: number,
  q0: number,
  k0: number,
): boolean {
  const bs = p.blockSparse;
  if (!p.maskMod || !bs) return false;
  const at =
    b * bs.batchStride +
    h * bs.headStride +
    Math.floor(q0 / bs.blockQ) * bs.nbk +
    Math.floor(k0 / bs.blockK);
  return bs.mask[at] === 1;
}

/** Whether a[0, n) holds no NaN or infinity. */
export function allFinite(a: Float32Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (a[i]! - a[i]! !== 0) return false;
  return true;
}
