// The inputs both Sage CPU benchmarks time (cpu.mjs, ab.mjs): standard-normal q, k, v drawn from
// `rng` in that order for a (B, H, N, D) shape with Hkv = H and Nq = Nk = N, and issue 11's
// configuration (INT8 Q.K at warp granularity, smoothK and smoothQ, 8-bit P~.V).
export function sageCase(rng, [B, H, N, D]) {
  const fill = () =>
    rng
      .randn([B * H * N * D])
      .toFloat32Array()
      .slice();
  const [q, k, v] = [fill(), fill(), fill()];
  const dims = { batch: B, hq: H, hkv: H, nq: N, nk: N, d: D, dv: D };
  const config = {
    qBits: new Uint8Array(H).fill(8),
    granularity: 'warp',
    smoothK: true,
    smoothQ: true,
    pvBits: 8,
  };
  return { q, k, v, dims, config };
}
