import {
  type CompiledProgram,
  declareBindings,
  halfCodec,
  type StorageDType,
  type UniformField,
  uniformStruct,
  type WebGpuContext,
  type WgslBinding,
} from '@attnkit/webgpu';

/**
 * The two small kernels of streaming attention besides the skeleton's FA2 forward: `merge`
 * folds one key chunk's (o_c, lse_c) into a work group's running state (acc f32, lse f32) by
 * the associative LSE rule (o and LSE of a union of key sets:
 *   lse = log(e^lse_a + e^lse_b),  o = e^(lse_a - lse) o_a + e^(lse_b - lse) o_b),
 * exact up to the rounding of o_c to its dtype; `finish` stores acc in the output dtype. A row
 * without any allowed key keeps acc 0 and lse -Infinity (KERNELS.md "Common").
 */

const FIELDS: readonly UniformField[] = [
  ['rows', 'u32'],
  ['dv', 'u32'],
];

const WG = 64;

function chunkBindings(dtype: StorageDType): WgslBinding[] {
  return [
    { name: 'P', kind: 'uniform', type: 'Params' },
    { name: 'oc', kind: 'read', type: dtype === 'f32' ? 'array<f32>' : 'array<u32>' },
    { name: 'lc', kind: 'read', type: 'array<f32>' },
    { name: 'acc', kind: 'storage', type: 'array<f32>' },
    { name: 'lse', kind: 'storage', type: 'array<f32>' },
  ];
}

function finishBindings(dtype: StorageDType): WgslBinding[] {
  return [
    { name: 'P', kind: 'uniform', type: 'Params' },
    { name: 'acc', kind: 'read', type: 'array<f32>' },
    { name: 'o', kind: 'storage', type: dtype === 'f32' ? 'array<f32>' : 'array<u32>' },
  ];
}

/** Columns c and c + 1 of o_c at element e (Dv is even for packed dtypes). */
function loadPair(dtype: StorageDType): string {
  return dtype === 'f32'
    ? 'fn ld2(e: u32) -> vec2<f32> { return vec2<f32>(oc[e], oc[e + 1u]); }'
    : 'fn ld2(e: u32) -> vec2<f32> { return h2f(oc[e >> 1u]); }';
}

function mergeShader(dtype: StorageDType): string {
  // A workgroup per row (grid-strided): its threads read the row's two LSEs (one broadcast
  // load) and walk the columns in pairs, so neighbouring threads touch neighbouring words.
  return `${halfCodec(dtype)}
${uniformStruct('Params', FIELDS)}
${declareBindings(chunkBindings(dtype))}
${loadPair(dtype)}
// -Infinity (a row the chunk does not reach, or no chunk yet) compares below every finite f32.
const EMPTY: f32 = -3.0e38;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {
  for (var r = wid.x; r < P.rows; r += nwg.x) {
    let a = lse[r];
    let b = lc[r];
    var wa = 1.0;
    var wb = 0.0;
    var m = a;
    if (b >= EMPTY && a < EMPTY) {
      wa = 0.0;
      wb = 1.0;
      m = b;
    } else if (b >= EMPTY) {
      let hi = max(a, b);
      let ea = exp(a - hi);
      let eb = exp(b - hi);
      m = hi + log(ea + eb);
      wa = ea / (ea + eb);
      wb = eb / (ea + eb);
    }
    let base = r * P.dv;
    for (var c = 2u * lid; c < P.dv; c += ${2 * WG}u) {
      let x = ld2(base + c);
      acc[base + c] = wa * acc[base + c] + wb * x.x;
      acc[base + c + 1u] = wa * acc[base + c + 1u] + wb * x.y;
    }
    // Every thread has read lse[r] before it is overwritten.
    storageBarrier();
    if (lid == 0u) { lse[r] = m; }
  }
}`;
}

function finishShader(dtype: StorageDType): string {
  const store =
    dtype === 'f32'
      ? 'o[e] = acc[e]; o[e + 1u] = acc[e + 1u];'
      : 'o[e >> 1u] = f2h(vec2<f32>(acc[e], acc[e + 1u]));';
  // One pair of elements per thread, grid-strided (rows x Dv is even: Dv is, for packed dtypes).
  return `${halfCodec(dtype)}
${uniformStruct('Params', FIELDS)}
${declareBindings(finishBindings(dtype))}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let pairs = (P.rows * P.dv) / 2u;
  for (var i = gid.x; i < pairs; i += nwg.x * ${WG}u) {
    let e = 2u * i;
    ${store}
  }
}`;
}

export interface MergeKernels {
  merge: CompiledProgram;
  finish: CompiledProgram;
  mergeBindings: WgslBinding[];
  finishBindings: WgslBinding[];
}

/** The merge and finish pipelines for `dtype` (the context's pipeline cache keeps them). */
export async function mergeKernels(ctx: WebGpuContext, dtype: StorageDType): Promise<MergeKernels> {
  const mb = chunkBindings(dtype);
  const fb = finishBindings(dtype);
  const [merge, finish] = await Promise.all([
    ctx.pipelines.get({
      code: mergeShader(dtype),
      bindings: mb.map((b) => b.kind),
      label: `streaming attention merge ${dtype}`,
    }),
    ctx.pipelines.get({
      code: finishShader(dtype),
      bindings: fb.map((b) => b.kind),
      label: `streaming attention finish ${dtype}`,
    }),
  ]);
  return { merge, finish, mergeBindings: mb, finishBindings: fb };
}

/** The uniform of both kernels for `rows` rows of Dv columns. */
export function mergeParams(rows: number, dv: number): Uint32Array {
  return new Uint32Array([rows, dv, 0, 0]);
}

/** Workgroups of the merge (one per row) and the finish (one per 2 x 64 elements), grid-strided past the per-dimension limit. */
export function mergeWorkgroups(
  kernel: 'merge' | 'finish',
  rows: number,
  dv: number,
  maxPerDimension: number,
): [number, number, number] {
  const n = kernel === 'merge' ? rows : Math.ceil((rows * dv) / (2 * WG));
  return [Math.max(1, Math.min(n, maxPerDimension)), 1, 1];
}

/** For the WGSL lint in tests. */
export const MERGE_SHADERS = { mergeShader, finishShader };
