import { describe, ValueError } from '@attnkit/tensor';

/**
 * Whether sageForwardWebGpu runs the f16 tensor-core engine (./tensor-cores-f16.ts) when the
 * caller left `tensorCores` unset: only where the H200 measured it faster than the portable
 * dot4I8Packed kernel in the same run (BENCHMARKS.md "SageAttention2 on the f16 tensor-core
 * engine", session 25: 32.1 against 27.2 TOPS at (4, 32, 4096, 128) without a mask, 30.1 against
 * 26.6 causal; its O within 1e-5 of the portable kernel's on every one of 524,288 rows). So:
 * NVIDIA adapters (the engine is the FA2 tensor-core forward's, verified there alone), D = Dv =
 * 128, 8-bit P~ V, and query and key sequences of 4096 rows at least (the length measured; a
 * decode step's few rows would fill 1/16 of a 16-row tile and were never timed). The adapter
 * must also qualify (f16 16x16x16 configs, 32-wide subgroups, workgroup memory): the caller
 * checks that and keeps the portable kernel otherwise. Pure: unit-tested without a device.
 */
export function sageTcAutoSelect(
  problem: { d: number; dv: number; nq: number; nk: number; pvBits: number },
  vendor: string,
): boolean {
  if (problem === null || typeof problem !== 'object')
    throw new ValueError(
      `problem: expected { d, dv, nq, nk, pvBits }, got ${describe(problem)}`,
      'problem',
    );
  for (const key of ['d', 'dv', 'nq', 'nk', 'pvBits'] as const) {
    const x = problem[key];
    if (!Number.isSafeInteger(x) || x < 0)
      throw new ValueError(
        `problem.${key}: expected a non-negative integer, got ${describe(x)}`,
        `problem.${key}`,
      );
  }
  if (typeof vendor !== 'string')
    throw new ValueError(`vendor: expected a string, got ${describe(vendor)}`, 'vendor');
  if (vendor.toLowerCase() !== 'nvidia' || problem.pvBits !== 8) return false;
  if (problem.nq < SAGE_TC_AUTO_MIN_ROWS || problem.nk < SAGE_TC_AUTO_MIN_ROWS) return false;
  return problem.d === 128 && problem.dv === 128;
}

/** Shortest query and key sequences the automatic choice takes (the shortest measured). */
export const SAGE_TC_AUTO_MIN_ROWS = 4096;
