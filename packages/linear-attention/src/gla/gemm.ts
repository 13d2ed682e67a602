/**
 * The small dense products of the TS chunk kernels, on row-major Float64Arrays addressed by
 * (array, element offset, row stride) so that the hot loops allocate nothing. Two rows at a time
 * (each element of the right-hand matrix is loaded once for both) and four columns per
 * iteration: about twice the speed of the plain triple loop in V8, which does not vectorise.
 */

/** A row-major matrix view: element (i, j) at data[at + i*ld + j]. */
export interface Mat {
  data: Float64Array;
  at: number;
  ld: number;
}

export const mat = (data: Float64Array, at: number, ld: number): Mat => ({ data, at, ld });

/** Which j a row i sums over: all of [0, inner), j <= i ('lower') or j >= i ('upper'). */
export type Triangle = 'full' | 'lower' | 'upper';

function lo(tri: Triangle, i: number): number {
  return tri === 'upper' ? i : 0;
}

function hi(tri: Triangle, i: number, inner: number): number {
  return tri === 'lower' ? Math.min(inner, i + 1) : inner;
}

/** sum over j in [from, to) of X[x + j] M[m + j*ldm] (one output element). */
function dotRange(
  xd: Float64Array,
  x: number,
  md: Float64Array,
  m: number,
  ldm: number,
  from: number,
  to: number,
): number {
  let s = 0;
  for (let j = from; j < to; j++) s += xd[x + j]! * md[m + j * ldm]!;
  return s;
}

/**
 * out (+)= X M: out(i, c) (+)= sum_j X(i, j) M(j, c) for i < rows, c < cols, j over the row's
 * range (`tri`); `accumulate` false overwrites. A 2 x 4 block of out stays in registers while j
 * runs (six loads per eight multiply-adds, no stores in the loop).
 */
export function mulRows(
  X: Mat,
  M: Mat,
  out: Mat,
  rows: number,
  inner: number,
  cols: number,
  accumulate: boolean,
  tri: Triangle = 'full',
): void {
  const xd = X.data;
  const md = M.data;
  const od = out.data;
  const ldm = M.ld;
  const c4 = cols - (cols % 4);
  for (let i = 0; i < rows; i += 2) {
    const two = i + 1 < rows;
    const lo0 = lo(tri, i);
    const hi0 = hi(tri, i, inner);
    const lo1 = two ? lo(tri, i + 1) : 0;
    const hi1 = two ? hi(tri, i + 1, inner) : 0;
    // j shared by both rows, then each row's own ends (all of its range when none is shared).
    let a = two ? Math.max(lo0, lo1) : hi0;
    let e = two ? Math.min(hi0, hi1) : hi0;
    if (a >= e) {
      a = Math.max(hi0, hi1);
      e = a;
    }
    const x0 = X.at + i * X.ld;
    const x1 = x0 + X.ld;
    const o0 = out.at + i * out.ld;
    const o1 = o0 + out.ld;
    const own0a = Math.min(hi0, a);
    const own0b = Math.max(lo0, e);
    const own1a = Math.min(hi1, a);
    const own1b = Math.max(lo1, e);
    for (let c = 0; c < c4; c += 4) {
      let s00 = accumulate ? od[o0 + c]! : 0;
      let s01 = accumulate ? od[o0 + c + 1]! : 0;
      let s02 = accumulate ? od[o0 + c + 2]! : 0;
      let s03 = accumulate ? od[o0 + c + 3]! : 0;
      let s10 = 0;
      let s11 = 0;
      let s12 = 0;
      let s13 = 0;
      for (let j = a; j < e; j++) {
        const a0 = xd[x0 + j]!;
        const a1 = xd[x1 + j]!;
        const m = M.at + j * ldm + c;
        const m0 = md[m]!;
        const m1 = md[m + 1]!;
        const m2 = md[m + 2]!;
        const m3 = md[m + 3]!;
        s00 += a0 * m0;
        s01 += a0 * m1;
        s02 += a0 * m2;
        s03 += a0 * m3;
        s10 += a1 * m0;
        s11 += a1 * m1;
        s12 += a1 * m2;
        s13 += a1 * m3;
      }
      for (let j = lo0; j < own0a; j++) {
        const a0 = xd[x0 + j]!;
        const m = M.at + j * ldm + c;
        s00 += a0 * md[m]!;
        s01 += a0 * md[m + 1]!;
        s02 += a0 * md[m + 2]!;
        s03 += a0 * md[m + 3]!;
      }
      for (let j = own0b; j < hi0; j++) {
        const a0 = xd[x0 + j]!;
        const m = M.at + j * ldm + c;
        s00 += a0 * md[m]!;
        s01 += a0 * md[m + 1]!;
        s02 += a0 * md[m + 2]!;
        s03 += a0 * md[m + 3]!;
      }
      od[o0 + c] = s00;
      od[o0 + c + 1] = s01;
      od[o0 + c + 2] = s02;
      od[o0 + c + 3] = s03;
      if (!two) continue;
      for (let j = lo1; j < own1a; j++) {
        const a1 = xd[x1 + j]!;
        const m = M.at + j * ldm + c;
        s10 += a1 * md[m]!;
        s11 += a1 * md[m + 1]!;
        s12 += a1 * md[m + 2]!;
        s13 += a1 * md[m + 3]!;
      }
      for (let j = own1b; j < hi1; j++) {
        const a1 = xd[x1 + j]!;
        const m = M.at + j * ldm + c;
        s10 += a1 * md[m]!;
        s11 += a1 * md[m + 1]!;
        s12 += a1 * md[m + 2]!;
        s13 += a1 * md[m + 3]!;
      }
      od[o1 + c] = (accumulate ? od[o1 + c]! : 0) + s10;
      od[o1 + c + 1] = (accumulate ? od[o1 + c + 1]! : 0) + s11;
      od[o1 + c + 2] = (accumulate ? od[o1 + c + 2]! : 0) + s12;
      od[o1 + c + 3] = (accumulate ? od[o1 + c + 3]! : 0) + s13;
    }
    for (let c = c4; c < cols; c++) {
      const m = M.at + c;
      od[o0 + c] = (accumulate ? od[o0 + c]! : 0) + dotRange(xd, x0, md, m, ldm, lo0, hi0);
      if (two) od[o1 + c] = (accumulate ? od[o1 + c]! : 0) + dotRange(xd, x1, md, m, ldm, lo1, hi1);
    }
  }
}

/**
 * out(i, j) = alpha * sum_c X(i, c) Y(j, c) for i < rows and j < cols (j <= i with `lower`):
 * products of rows, X Y^T. Entries outside the triangle are not written.
 */
export function mulRowsT(
  X: Mat,
  Y: Mat,
  out: Mat,
  rows: number,
  cols: number,
  inner: number,
  alpha: number,
  lower = false,
): void {
  const xd = X.data;
  const yd = Y.data;
  const od = out.data;
  for (let i = 0; i < rows; i++) {
    const x = X.at + i * X.ld;
    const o = out.at + i * out.ld;
    const end = lower ? Math.min(cols, i + 1) : cols;
    let j = 0;
    // Two dot products at a time share the loads of row i.
    for (; j + 1 < end; j += 2) {
      const y0 = Y.at + j * Y.ld;
      const y1 = y0 + Y.ld;
      let s0 = 0;
      let s1 = 0;
      for (let c = 0; c < inner; c++) {
        const xv = xd[x + c]!;
        s0 += xv * yd[y0 + c]!;
        s1 += xv * yd[y1 + c]!;
      }
      od[o + j] = alpha * s0;
      od[o + j + 1] = alpha * s1;
    }
    if (j < end) {
      const y0 = Y.at + j * Y.ld;
      let s0 = 0;
      for (let c = 0; c < inner; c++) s0 += xd[x + c]! * yd[y0 + c]!;
      od[o + j] = alpha * s0;
    }
  }
}

/** out(j, i) = X(i, j) for i < rows, j < cols. */
export function transpose(X: Mat, rows: number, cols: number, out: Mat): void {
  for (let i = 0; i < rows; i++) {
    const x = X.at + i * X.ld;
    for (let j = 0; j < cols; j++) out.data[out.at + j * out.ld + i] = X.data[x + j]!;
  }
}
