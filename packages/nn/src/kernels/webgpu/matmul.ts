import { UnsupportedError } from '@attnkit/attention';
import { formatShape, numel, ShapeError, type Tensor } from '@attnkit/tensor';
import type { WebGpuStorage } from '@attnkit/webgpu';
import { broadcastShapes } from '../ts/util.js';
import { gpuContext } from './context.js';
import { cast } from './elementwise.js';
import { broadcastStrides, coalesce, Params, PRELUDE, readDecl, writeDecl } from './program.js';
import { output, queueOf, storageOf } from './queue.js';

/** Tile: 64 x 64 outputs per workgroup of 256 threads (4 x 4 each), K in steps of 16. */
const TILE = 64;
const MAX_BATCH_DIMS = 4;

/**
 * The tiled SIMT matmul: op(A) [M, K] x op(B) [K, N] per batch element, both tiles staged in
 * workgroup memory (k-major, as vec4 of 4 rows / columns), f32 accumulators; f16 storage is
 * decoded on load and encoded on store (math in f32). Transposes change only which index walks
 * the tile loads.
 */
function shader(
  ta: boolean,
  tb: boolean,
  dtA: 'f32' | 'f16',
  dtB: 'f32' | 'f16',
  dtC: 'f32' | 'f16',
) {
  const loadA = ta
    ? 'let mm = i % 64u; let kk = i / 64u; let at = (k0 + kk) * M + m0 + mm;'
    : 'let kk = i % 16u; let mm = i / 16u; let at = (m0 + mm) * K + k0 + kk;';
  const loadB = tb
    ? 'let kk = i % 16u; let nn = i / 16u; let at = (n0 + nn) * K + k0 + kk;'
    : 'let nn = i % 64u; let kk = i / 64u; let at = (k0 + kk) * N + n0 + nn;';
  const store =
    dtC === 'f32'
      ? `for (var j = 0u; j < 4u; j = j + 1u) {
        let c = n0 + tx * 4u + j;
        if (c < N) { C[cOff + r * N + c] = acc[i][j]; }
      }`
      : `for (var j = 0u; j < 4u; j = j + 2u) {
        let c = n0 + tx * 4u + j;
        if (c < N) { C[(cOff + r * N + c) >> 1u] = pack2x16float(vec2<f32>(acc[i][j], acc[i][j + 1u])); }
      }`;
  return `${PRELUDE}
${readDecl('A', 1, dtA)}
${readDecl('B', 2, dtB)}
${writeDecl('C', 3, dtC)}
var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let M = pu(4u);
  let N = pu(5u);
  let K = pu(6u);
  var rem = wid.z;
  var aOff = 0u;
  var bOff = 0u;
  for (var q = 0u; q < ${MAX_BATCH_DIMS}u; q = q + 1u) {
    let d = ${MAX_BATCH_DIMS - 1}u - q;
    let size = pu(8u + d);
    let c = rem % size;
    rem = rem / size;
    aOff = aOff + c * pu(12u + d);
    bOff = bOff + c * pu(16u + d);
  }
  aOff = aOff * M * K;
  bOff = bOff * K * N;
  let cOff = wid.z * M * N;
  let tx = li % 16u;
  let ty = li / 16u;
  let m0 = wid.y * 64u;
  let n0 = wid.x * 64u;
  var acc = array<vec4<f32>, 4>();
  for (var k0 = 0u; k0 < K; k0 = k0 + 16u) {
    for (var q = 0u; q < 4u; q = q + 1u) {
      let i = li + q * 256u;
      {
        ${loadA}
        var v = 0.0;
        if (m0 + mm < M && k0 + kk < K) { v = ld_A(aOff + at); }
        As[kk * 16u + mm / 4u][mm % 4u] = v;
      }
      {
        ${loadB}
        var v = 0.0;
        if (n0 + nn < N && k0 + kk < K) { v = ld_B(bOff + at); }
        Bs[kk * 16u + nn / 4u][nn % 4u] = v;
      }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {
      let a = As[kk * 16u + ty];
      let b = Bs[kk * 16u + tx];
      acc[0] = acc[0] + a.x * b;
      acc[1] = acc[1] + a.y * b;
      acc[2] = acc[2] + a.z * b;
      acc[3] = acc[3] + a.w * b;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i = i + 1u) {
    let r = m0 + ty * 4u + i;
    if (r < M) {
      ${store}
    }
  }
}`;
}

export function matmul(a: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  if (a.ndim < 2 || b.ndim < 2)
    throw new ShapeError(
      `matmul: expected a and b with at least 2 dims, got ${formatShape(a.shape)} and ${formatShape(b.shape)}`,
      'matmul',
    );
  const ctx = gpuContext('matmul');
  storageOf(a, 'matmul', 'a', ctx);
  storageOf(b, 'matmul', 'b', ctx);
  const [ra, ca] = a.shape.slice(-2) as [number, number];
  const [rb, cb] = b.shape.slice(-2) as [number, number];
  const [m, k] = transA ? [ca, ra] : [ra, ca];
  const [k2, n] = transB ? [cb, rb] : [rb, cb];
  if (k !== k2)
    throw new ShapeError(
      `matmul: inner dims differ: a ${formatShape(a.shape)}${transA ? '^T' : ''} has K = ${k}, b ${formatShape(b.shape)}${transB ? '^T' : ''} has K = ${k2}`,
      'matmul',
    );
  const batchA = a.shape.slice(0, -2);
  const batchB = b.shape.slice(0, -2);
  const batch = broadcastShapes('matmul', batchA, batchB);
  const nb = numel(batch);
  const c = coalesce(batch, [broadcastStrides(batchA, batch), broadcastStrides(batchB, batch)]);
  if (c.shape.length > MAX_BATCH_DIMS || nb > 65535) {
    const why = `backend 'webgpu' runs at most 65535 batch elements in ${MAX_BATCH_DIMS} merged batch dims, got batch ${formatShape(batch)}`;
    throw new UnsupportedError(`matmul: ${why}`, 'matmul', { webgpu: why });
  }
  // Batch dims padded in front with size 1 (stride 0) to MAX_BATCH_DIMS.
  const pad = MAX_BATCH_DIMS - c.shape.length;
  const fill = (xs: readonly number[], v: number) => [...new Array<number>(pad).fill(v), ...xs];
  const p = new Params()
    .u(4, m)
    .u(5, n)
    .u(6, k)
    .arr(8, fill(c.shape, 1))
    .arr(12, fill(c.strides[0]!, 0))
    .arr(16, fill(c.strides[1]!, 0));
  const dtype = a.dtype as 'f32' | 'f16';
  // f16 outputs are stored a u32 word (two columns) per store: an odd N goes through f32.
  const direct = dtype === 'f32' || n % 2 === 0;
  const out = output(ctx, [...batch, m, n], direct ? dtype : 'f32');
  if (out.size > 0) {
    queueOf(ctx).pass(
      {
        code: shader(transA, transB, dtype, b.dtype as 'f32' | 'f16', out.dtype as 'f32' | 'f16'),
        bindings: ['uniform', 'read', 'read', 'storage'],
        label: `nn matmul${transA ? ' A^T' : ''}${transB ? ' B^T' : ''}`,
      },
      p.words,
      [a, b, out].map((t) => t.storage as WebGpuStorage),
      [Math.ceil(n / TILE), Math.ceil(m / TILE), nb],
      [out.storage as WebGpuStorage],
    );
  }
  if (direct) return out;
  const half = cast(out, 'f16');
  out.dispose();
  return half;
}
