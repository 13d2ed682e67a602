/**
 * A device's heads in token-major (THD) order: a row tile's query rows, and a causal tile's key
 * prefix, are then one contiguous range of the device's own copy.
 */

/** src [B, H, N, X] (heads [h0, h1)) -> dst [B N, h1 - h0, X]. */
export function gatherHeads(
  src: Float32Array,
  dims: { batch: number; heads: number; n: number; x: number },
  h0: number,
  h1: number,
): Float32Array {
  const { batch, heads, n, x } = dims;
  const hp = h1 - h0;
  const dst = new Float32Array(batch * n * hp * x);
  for (let b = 0; b < batch; b++) {
    for (let h = h0; h < h1; h++) {
      for (let i = 0; i < n; i++) {
        const from = ((b * heads + h) * n + i) * x;
        dst.set(src.subarray(from, from + x), ((b * n + i) * hp + (h - h0)) * x);
      }
    }
  }
  return dst;
}
