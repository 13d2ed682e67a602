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
 * hi of split-f16 (WGSL): x with the low mantissa bits cleared that a half cannot hold, so that
 * f16(hi) is exact and x - hi is exact f32 arithmetic that no conversion can fold away (the
 * compiler folds f32(f16(x)) back to x: session 28). In f16's normal range (|x| >= 2^-14,
 * biased f32 exponent 113 up) a half keeps 11 significant bits: 13 of f32's 24 go. Below it a
 * half is subnormal, with one significant bit fewer per binade, down to 2^-24 (exponent 103)
 * with one; below that no half but 0 is near, so hi is 0 and lo carries all of x. Clearing
 * only 13 bits there (the mask before session 30) left hi with bits f16(hi) rounded away, and
 * lo, computed from the unrounded hi, did not hold them: on the H100, V with std 1e-5 gave o
 * 1.7e-3 from float64 (bench-tc 'small V'). That run also showed the tensor cores keep
 * subnormal halves (flushed, hi would have been lost and o with it).
 */
export const HI_BITS_WGSL = `fn hiBits(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  let e = (b >> 23u) & 0xffu;
  let h = bitcast<f32>(b & (0xffffffffu << (126u - clamp(e, 103u, 113u))));
  return select(h, 0.0, e < 103u);
}`;

/**
 * The split pass: hi = hiBits(x) (f16's significant bits of x: exact as a half, subnormal ones
 * included), packed by pack2x16float, and lo = f16((x - hi') 2^11) with hi' the half read back,
 * so hi' + lo 2^-11 holds x to ~2^-22 relative in f16's normal range (to ~2^-36 absolute
 * below it). lo is scaled by 2^11 because unscaled it would be an f16 subnormal for |x| <
 * 2^-3. Plain WGSL (no shader-f16): the emulated kernels run it on llvmpipe.
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
${HI_BITS_WGSL}
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
