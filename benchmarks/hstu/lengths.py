"""The HSTU benchmark's jagged lengths, bit-identical to lengths.mjs (see there for the rule:
mulberry32 from `seed`, n_b = lo + floor(u * (N - lo + 1) / 2^32), lo = max(1, floor(N / 2))).

    python3 benchmarks/hstu/lengths.py [--seed 0] [--batch 16] [--max-seq-len 4096]

prints {"seed", "batch", "max_seq_len", "lengths", "seq_offsets"} as JSON, as lengths.mjs does.
"""
import argparse
import json

M32 = 0xFFFFFFFF


def mulberry32(seed):
    """The uint32 stream of lengths.mjs's mulberry32 (every operation mod 2^32)."""
    s = seed & M32
    while True:
        s = (s + 0x6D2B79F5) & M32
        t = s
        t = ((t ^ (t >> 15)) * (t | 1)) & M32
        t ^= (t + (((t ^ (t >> 7)) * (t | 61)) & M32)) & M32
        yield t ^ (t >> 14)


def jagged_lengths(seed, batch, max_seq_len):
    """B lengths uniform on [max(1, N // 2), N]."""
    lo = max(1, max_seq_len // 2)
    span = max_seq_len - lo + 1
    rng = mulberry32(seed)
    return [lo + ((next(rng) * span) >> 32) for _ in range(batch)]


def seq_offsets(lengths):
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--max-seq-len", type=int, default=4096)
    a = p.parse_args()
    lengths = jagged_lengths(a.seed, a.batch, a.max_seq_len)
    out = {"seed": a.seed, "batch": a.batch, "max_seq_len": a.max_seq_len, "lengths": lengths, "seq_offsets": seq_offsets(lengths)}
    print(json.dumps(out, separators=(",", ":")))
