import { ValueError } from '@attnkit/tensor';
import { declareBindings, type WgslBinding } from '@attnkit/webgpu';
import type { WgslKernel } from './shaders.js';

/**
 * split-f16's operands made once, before the attention kernel (TcForwardConfig.presplit): an f32
 * buffer of n elements becomes one buffer of halves [hi | lo], element i's hi at half i and its
 * lo at half loOff + i, so the kernel stages both with the f16 kernel's 16-byte loads and the
 * uniform's row strides hold for either part. loOff is n rounded up to 8 halves, so lo's rows
 * keep hi's 16-byte alignment.
 */
export interface SplitF16Layout {
  /** f32 elements split. */
  n: number;
  /** Where lo starts, in halves. */
  loOff: number;
  /** Bytes of the [hi | lo] buffer. */
  bytes: number;
}

/** The [hi | lo] buffer of an f32 buffer of `bytes` bytes (pure; a multiple of 4). */
export function splitF16Layout(bytes: number): SplitF16Layout {
  if (!Number.isInteger(bytes) || bytes < 4 || bytes % 4 !== 0)
    throw new ValueError(
      `bytes: expected a positive multiple of 4 (an f32 buffer), got ${bytes}`,
      'bytes',
    );
  const n = bytes / 4;
  const loOff = Math.ceil(n / 8) * 8;
  return { n, loOff, bytes: 4 * loOff };
}

/** Workgroups of the split pass: a grid-stride loop keeps them within the per-dimension limit. */
export const SPLIT_F16_WORKGROUPS = 4096;

/**
 * The split pass: hi = x with its 13 low mantissa bits cleared (f16's 11 significant bits:
 * f16(hi) is exact in f16's normal range), rounded to a half by pack2x16float, and lo =
 * f16((x - hi') 2^11) with hi' the half read back, so hi' + lo 2^-11 holds x to ~2^-22
 * relative. Masking rather than rounding makes x - hi exact f32 arithmetic that no conversion
 * can fold away; lo is scaled by 2^11 because unscaled it would be an f16 subnormal for |x| <
 * 2^-3. Below f16's normal range (|x| < 2^-14) hi is a subnormal half: exact only if the tensor
 * cores keep subnormal inputs, which no device run has measured yet (session 14's reading that
 * they flush them was confounded by the fold of f32(f16(x)) found in session 28); bench-tc's
 * 'small V' case measures it. Plain WGSL (no shader-f16): the emulated kernels run it on
 * llvmpipe.
 *
 * The domain is |x| < 2^15: from 32768 up, lo = (x - hi) 2^11 can reach 65528 and round to an
 * infinite half (e.g. x = 32799.992), and from 65520 hi itself has no half (pack2x16float's
 * result is indeterminate there); NaN and infinities have no split either. The pass sets
 * `flag[0]` to 1 when it meets such an element (compared as bits, which no fast-math assumption
 * can fold), and the host then runs the SIMT kernel after the tensor-core one, which overwrites
 * o and lse (host.ts forwardLaunch).
 */
export function splitF16Shader(): WgslKernel {
  const bindings: WgslBinding[] = [
    { name: 'U', kind: 'uniform', type: 'vec4<u32>' },
    { name: 'x', kind: 'read', type: 'array<f32>' },
    { name: 'y', kind: 'storage', type: 'array<u32>' },
    { name: 'flag', kind: 'storage', type: 'array<atomic<u32>>' },
  ];
  const code = `${declareBindings(bindings)}
fn hiBits(v: f32) -> f32 { return bitcast<f32>(bitcast<u32>(v) & 0xffffe000u); }
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  // U.x = n (f32 elements), U.y = loOff (halves, a multiple of 8), U.z = elements checked.
  let n = U.x;
  let loW = U.y / 2u;
  for (var w = g.x; w < (n + 1u) / 2u; w += nw.x * 256u) {
    let i = 2u * w;
    let a = x[i];
    let b = select(0.0, x[min(i + 1u, n - 1u)], i + 1u < n);
    // |a| or |b| >= 32768 (where lo can overflow f16), an infinity or a NaN: bits 0x47000000
    // up. Only the tensor's U.z elements: past them a pooled buffer holds stale words.
    let ab = select(0u, bitcast<u32>(a) & 0x7fffffffu, i < U.z);
    let bb = select(0u, bitcast<u32>(b) & 0x7fffffffu, i + 1u < U.z);
    if (max(ab, bb) >= 0x47000000u) {
      atomicStore(&flag[0], 1u);
    }
    let hw = pack2x16float(vec2<f32>(hiBits(a), hiBits(b)));
    y[w] = hw;
    y[loW + w] = pack2x16float((vec2<f32>(a, b) - unpack2x16float(hw)) * 2048.0);
  }
}
`;
  return { code, bindings };
}
