/**
 * Subgroup-matrix configurations (Dawn's `chromium-experimental-subgroup-matrix`: tensor cores
 * from WGSL). With the feature, `adapter.info.subgroupMatrixConfigs` lists the shapes and types
 * the hardware multiplies: a left M x K and a right K x N matrix of `componentType` into an
 * M x N result of `resultComponentType` (Dawn's and Chromium's names; M, N, K may come as
 * BigInt, the IDL's `unsigned long long`). The H200 with Dawn's toggles reports f16>f16 and
 * f16>f32 at 16x16x16, 16x8x16, 16x8x8, and u8>u32 / i8>i32 at 16x16x32, 16x8x32.
 */

/** Component types of subgroup matrices (Dawn's GPUSubgroupMatrixComponentType). */
export type SubgroupMatrixComponent = 'f32' | 'f16' | 'u32' | 'i32' | 'u8' | 'i8';

const COMPONENTS: readonly SubgroupMatrixComponent[] = ['f32', 'f16', 'u32', 'i32', 'u8', 'i8'];

/** One multiply shape the adapter runs on subgroup matrices: (M x K) (K x N) -> (M x N). */
export interface SubgroupMatrixConfig {
  M: number;
  N: number;
  K: number;
  /** Element type of the left and right operands. */
  component: SubgroupMatrixComponent;
  /** Element type of the result (accumulator). */
  result: SubgroupMatrixComponent;
}

function dimension(value: unknown): number | undefined {
  const n = typeof value === 'bigint' ? Number(value) : value;
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

function component(value: unknown): SubgroupMatrixComponent | undefined {
  return COMPONENTS.includes(value as SubgroupMatrixComponent)
    ? (value as SubgroupMatrixComponent)
    : undefined;
}

/**
 * The subgroup-matrix configs of an adapter's info object (pure: tests pass plain objects).
 * Reads `subgroupMatrixConfigs` (an array or any iterable); each entry needs M, N, K (numbers or
 * BigInts) and `componentType` and `resultComponentType` (`resultType` is accepted too). Entries
 * with other types or shapes are skipped, not guessed: a kernel must never be planned on a
 * config the adapter did not name. Duplicates are dropped; the adapter's order is kept.
 */
export function parseSubgroupMatrixConfigs(info: unknown): SubgroupMatrixConfig[] {
  if (info === null || typeof info !== 'object') return [];
  const list = (info as { subgroupMatrixConfigs?: unknown }).subgroupMatrixConfigs;
  if (list === null || typeof list !== 'object' || !(Symbol.iterator in list)) return [];
  const out: SubgroupMatrixConfig[] = [];
  const seen = new Set<string>();
  for (const entry of list as Iterable<unknown>) {
    if (entry === null || typeof entry !== 'object') continue;
    const e = entry as Record<string, unknown>;
    const M = dimension(e.M);
    const N = dimension(e.N);
    const K = dimension(e.K);
    const comp = component(e.componentType);
    const result = component(e.resultComponentType ?? e.resultType);
    if (!M || !N || !K || !comp || !result) continue;
    const key = `${comp}>${result} ${M}x${N}x${K}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ M, N, K, component: comp, result });
  }
  return out;
}

/** `f16>f32 16x16x16`: how attnkit prints a config (component>result MxNxK). */
export function formatSubgroupMatrixConfig(c: SubgroupMatrixConfig): string {
  return `${c.component}>${c.result} ${c.M}x${c.N}x${c.K}`;
}
