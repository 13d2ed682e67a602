/**
 * Merging two partial softmax results over disjoint key sets (the associative rule of
 * FlashAttention's online softmax and LeanAttention's fix-up, as the paper's
 * `add_self_attentions`): with Z = e^LSE,
 *
 *     LSE = log(e^LSE_a + e^LSE_b),   O = (e^LSE_a O_a + e^LSE_b O_b) / e^LSE,
 *
 * evaluated against the larger LSE so nothing overflows; a side with LSE = -inf (no keys)
 * contributes nothing, and two such sides stay O = 0, LSE = -inf (never NaN); a NaN (from NaN
 * inputs) propagates, as in the float64 reference.
 *
 * Row `row` of the accumulator (o: rows x dv, lse: rows) absorbs `src[srcOff .. srcOff + dv)`
 * with log-sum-exp `srcLse`.
 */
export function mergeSoftmaxRow(
  o: Float32Array,
  lse: Float64Array,
  row: number,
  dv: number,
  src: ArrayLike<number>,
  srcOff: number,
  srcLse: number,
): void {
  const a = lse[row]!;
  if (srcLse === Number.NEGATIVE_INFINITY) return;
  const base = row * dv;
  if (a === Number.NEGATIVE_INFINITY) {
    for (let c = 0; c < dv; c++) o[base + c] = src[srcOff + c]!;
    lse[row] = srcLse;
    return;
  }
  const m = Math.max(a, srcLse);
  const wa = Math.exp(a - m);
  const wb = Math.exp(srcLse - m);
  const z = wa + wb;
  // The weights normalised once per row: two multiplies an element instead of a division
  // (the division made this loop the forward's largest JS cost at long N).
  const ca = wa / z;
  const cb = wb / z;
  for (let c = 0; c < dv; c++) o[base + c] = ca * o[base + c]! + cb * src[srcOff + c]!;
  lse[row] = m + Math.log(z);
}
