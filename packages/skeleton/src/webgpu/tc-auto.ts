/**
 * Whether the tiled kernels use the tensor-core (subgroup-matrix) passes when the caller left
 * `tensorCores` unset: only where the H200 measured them faster than the SIMT kernels in the
 * same run (BENCHMARKS.md "WebGPU tensor cores"). Since the kernels address their matrices at
 * compile-time constant offsets (tc-forward.ts `constOffsets`, 2026-12-04 session 18, run 3),
 * robust access no longer costs them much, and both passes win at D = Dv = 64 and 128 with it:
 * forward 2.0-3.7x the SIMT f16 kernel, backward 2.1-2.4x (run 7; without robustness likewise). Before
 * (robust: runs 15 and 22) only the forward at D = Dv = 128 and the backward at 64 won; the
 * `robustAccess` argument is kept for callers and no longer changes the answer. f32 inputs:
 * split-f16 (presplit, masked P, with its range guard), the forward only (the backward has no
 * split-f16 passes), at D = Dv = 64 and 128 with 4096 query and key rows at least: measured there at
 * the f32 tolerance (o 5e-7 to 1e-5 against float64) and 2.1-2.5x the SIMT f32 kernel at D 128
 * (H100, 2026-12-05, session 28: 54.8 against 25.8 TFLOP/s at (4, 16, 4096, 128)), 1.9x
 * non-causal and 1.27x causal at (4, 16, 4096, 64) (H100, session 31: 44.2 against 23.4 with
 * the 4 x 1 qDirect tile, 28.3 against 22.3 with the staged-Q tiles causal takes at D <= 64).
 * Shorter sequences stay on SIMT: at (16, 16, 1024, 64) causal it about tied SIMT (19.4-20.2
 * in session 31 against SIMT's 20.2 in session 30). NVIDIA adapters only: the kernels were
 * verified there alone, and their correctness turned on how the driver places workgroup memory
 * (tc-forward.ts `smallFirst`). Sequences of 1024 query and key rows at least, the lengths
 * measured (1024-8192): a decode step (a few query rows) would fill 1/16 of a tensor-core tile
 * of 16 rows per subgroup, and was never measured against the SIMT kernels. The adapter must
 * also qualify (f16 x f16 -> f32 16x16x16 configs, 32-wide subgroups): the caller checks that
 * and falls back. Never for paged K/V (a prefill through the paged cache: the kernels read
 * contiguous K/V). Pure: unit-tested without a device.
 */
export function tcAutoSelect(
  _pass: 'forward' | 'backward',
  problem: {
    d: number;
    dv: number;
    dtype: string;
    maxSeqQ: number;
    maxSeqK: number;
    /** K/V through a block table: the tensor-core passes read contiguous K/V. */
    paged?: boolean;
  },
  vendor: string,
  _robustAccess = true,
): boolean {
  if (vendor.toLowerCase() !== 'nvidia' || problem.paged) return false;
  const { d, dv, maxSeqQ, maxSeqK } = problem;
  if (problem.dtype === 'f32')
    return (
      _pass === 'forward' &&
      d === dv &&
      (d === 64 || d === 128) &&
      maxSeqQ >= TC_AUTO_MIN_ROWS_F32 &&
      maxSeqK >= TC_AUTO_MIN_ROWS_F32
    );
  if (problem.dtype !== 'f16') return false;
  if (maxSeqQ < TC_AUTO_MIN_ROWS || maxSeqK < TC_AUTO_MIN_ROWS) return false;
  return d === dv && (d === 64 || d === 128);
}

/** Shortest query and key sequences the automatic choice takes (the shortest measured). */
export const TC_AUTO_MIN_ROWS = 1024;
/** f32 (split-f16): the shortest sequences where it was measured faster than SIMT f32. */
export const TC_AUTO_MIN_ROWS_F32 = 4096;
