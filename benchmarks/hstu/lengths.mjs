/**
 * The HSTU benchmark's jagged lengths, bit-identical to lengths.py (so the JS and PyTorch sides
 * time the same batch).
 *
 * Generator: mulberry32 on a uint32 state s, starting at s = seed:
 *   s = (s + 0x6D2B79F5) mod 2^32; t = s
 *   t = imul(t ^ (t >>> 15), t | 1)
 *   t = t ^ (t + imul(t ^ (t >>> 7), t | 61))
 *   u = t ^ (t >>> 14)                       (a uint32)
 * imul and + are mod 2^32. Length b (b = 0 .. B-1) takes the next u:
 *   n_b = lo + floor(u * (N - lo + 1) / 2^32), lo = max(1, floor(N / 2))
 * i.e. uniform on [floor(N/2), N], both ends included. u * span < 2^53, so it is exact in doubles.
 *
 *   node benchmarks/hstu/lengths.mjs [--seed 0] [--batch 16] [--max-seq-len 4096]
 * prints {"seed", "batch", "max_seq_len", "lengths", "seq_offsets"} as JSON.
 */
import process from 'node:process';
import { pathToFileURL } from 'node:url';

/** The mulberry32 stream of `seed` (uint32 outputs). */
export function* mulberry32(seed) {
  let s = seed >>> 0;
  for (;;) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    yield (t ^ (t >>> 14)) >>> 0;
  }
}

/** B lengths uniform on [max(1, floor(N/2)), N]. */
export function jaggedLengths(seed, batch, maxSeqLen) {
  const lo = Math.max(1, Math.floor(maxSeqLen / 2));
  const span = maxSeqLen - lo + 1;
  const rng = mulberry32(seed);
  return Array.from({ length: batch }, () => lo + Math.floor((rng.next().value * span) / 2 ** 32));
}

/** int32 offsets [B+1]: 0, then the running sums of the lengths. */
export function seqOffsets(lengths) {
  const out = new Int32Array(lengths.length + 1);
  lengths.forEach((n, b) => {
    out[b + 1] = out[b] + n;
  });
  return out;
}

// (Bundled into another program, import.meta.url is that program's: the name check keeps this
// block to direct runs.)
if (
  import.meta.url === pathToFileURL(process.argv[1] ?? '').href &&
  /lengths\.mjs$/.test(process.argv[1] ?? '')
) {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(name);
    return i < 0 ? fallback : Number(process.argv[i + 1]);
  };
  const seed = arg('--seed', 0);
  const batch = arg('--batch', 16);
  const maxSeqLen = arg('--max-seq-len', 4096);
  const lengths = jaggedLengths(seed, batch, maxSeqLen);
  const offsets = Array.from(seqOffsets(lengths));
  const out = { seed, batch, max_seq_len: maxSeqLen, lengths, seq_offsets: offsets };
  console.log(JSON.stringify(out));
}
