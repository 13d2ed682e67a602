"""PyTorch SDPA decode on the shapes of bench-lean.ts (issue 12 item 7), for the side-by-side table.

    python3 torch_decode.py [--out torch-decode.json] [--quick] [--repeats 20]
                            [--nk 8192,32768,...] [--batch 1,8] [--hkv 32,8] [--no-flush]

Decode: q [B, 32, 1, 128] fp16 against K, V [B, Hkv, Nk, 128] fp16, no mask (Nq = 1: causal
changes nothing). GQA through SDPA's enable_gqa=True (torch >= 2.5): K/V keep their Hkv heads,
nothing is repeated, so every backend reads the same K/V bytes as LeanAttention does (a
repeat_interleave before the call would add a copy of Hq/Hkv x the cache to the traffic).
Backends, each tried and its error printed, none fatal: the default dispatcher ("auto"), FLASH_ATTENTION,
EFFICIENT_ATTENTION, CUDNN_ATTENTION (some reject enable_gqa or Nq = 1 on a given build: printed).
Times are CUDA-event medians of single calls after warm-up; before each timed call a 256 MiB
write (outside the events) evicts the L2 (50 MB on the H200), as bench-lean.ts does. Bandwidth
counts K and V bytes read: 2 * B * Hkv * Nk * D * 2 bytes / time.
Every shape runs here (CUDA has no 2 GiB binding limit), including those bench-lean.ts skips.
"""
import argparse
import json
import statistics
import sys

import torch
from torch.nn.functional import scaled_dot_product_attention as sdpa

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # very old torch: only the default dispatcher
    SDPBackend = None
    sdpa_kernel = None

parser = argparse.ArgumentParser()
parser.add_argument("--out")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--repeats", type=int, default=20)
parser.add_argument("--nk")
parser.add_argument("--batch")
parser.add_argument("--hkv")
parser.add_argument("--no-flush", action="store_true")
args = parser.parse_args()


def ints(s, default):
    return [int(x) for x in s.split(",")] if s else default


HQ, D = (8, 64) if args.quick else (32, 128)
BATCHES = ints(args.batch, [1, 2] if args.quick else [1, 8])
HKVS = ints(args.hkv, [8, 2] if args.quick else [32, 8])
NKS = ints(args.nk, [512, 2048] if args.quick else [8192, 32768, 131072, 262144])

IMPLS = [("auto", None)]
if SDPBackend is not None:
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION"):
        if hasattr(SDPBackend, name):
            IMPLS.append((name.lower(), getattr(SDPBackend, name)))

flush_buf = None if args.no_flush else torch.empty(256 * 2**20 // 4, dtype=torch.int32, device="cuda")


def flush():
    if flush_buf is not None:
        flush_buf.fill_(1)


def time_ms(fn):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.repeats):
        flush()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times)


def run(q, k, v, backend, hkv):
    gqa = {"enable_gqa": True} if hkv != q.shape[1] else {}
    if backend is None:
        return sdpa(q, k, v, **gqa)
    with sdpa_kernel(backend):
        return sdpa(q, k, v, **gqa)


print(f"torch {torch.__version__} cuda {torch.version.cuda} device {torch.cuda.get_device_name()}", flush=True)
print(f"{'impl':20s} {'B':>2s} {'Hkv':>3s} {'Nk':>7s} {'ms':>9s} {'GB/s':>8s}  maxdiff vs math(f32)", flush=True)
rows = []
for b in BATCHES:
    for hkv in HKVS:
        for nk in NKS:
            kv_bytes = b * hkv * nk * D * 2
            try:
                gen = torch.Generator(device="cuda").manual_seed(nk + hkv + b)
                q = torch.randn(b, HQ, 1, D, device="cuda", dtype=torch.float16, generator=gen)
                k = torch.randn(b, hkv, nk, D, device="cuda", dtype=torch.float16, generator=gen)
                v = torch.randn(b, hkv, nk, D, device="cuda", dtype=torch.float16, generator=gen)
            except Exception as e:  # out of memory: every impl of this shape reports it
                msg = f"allocation: {e}"[:300]
                print(f"{'all':20s} {b:2d} {hkv:3d} {nk:7d} error: {msg}", flush=True)
                rows.append({"impl": "all", "B": b, "hq": HQ, "hkv": hkv, "nk": nk, "error": msg})
                torch.cuda.empty_cache()
                continue
            # A float32 reference of one batch's output (math in f32, K/V heads repeated: small).
            try:
                g = HQ // hkv
                ref = torch.softmax((q[:1].float() @ k[:1].float().repeat_interleave(g, 1).transpose(-1, -2))
                                    / D**0.5, -1) @ v[:1].float().repeat_interleave(g, 1)
            except Exception:
                ref = None
            for name, backend in IMPLS:
                row = {"impl": name, "B": b, "hq": HQ, "hkv": hkv, "nk": nk, "d": D}
                try:
                    o = run(q, k, v, backend, hkv)
                    torch.cuda.synchronize()
                    diff = float((o[:1].float() - ref).abs().max()) if ref is not None else None
                    ms, mn = time_ms(lambda: run(q, k, v, backend, hkv))
                    row.update(ms=ms, minMs=mn, gbps=2 * kv_bytes / (ms * 1e6), maxDiff=diff)
                    print(f"{name:20s} {b:2d} {hkv:3d} {nk:7d} {ms:9.4f} {row['gbps']:8.1f}  {diff}", flush=True)
                    del o
                except Exception as e:  # a backend this build rejects for these inputs: reported
                    msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                    row["error"] = msg
                    print(f"{name:20s} {b:2d} {hkv:3d} {nk:7d} error: {msg[:200]}", flush=True)
                rows.append(row)
            del q, k, v, ref
            torch.cuda.empty_cache()

print("\nbest per shape (by median ms):")
best = {}
for r in rows:
    if "ms" in r:
        key = (r["B"], r["hkv"], r["nk"])
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
for (b, hkv, nk), r in sorted(best.items()):
    print(f"  B {b} Hkv {hkv} Nk {nk}: {r['impl']} {r['ms']:.4f} ms {r['gbps']:.1f} GB/s", flush=True)

result = {
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "device": torch.cuda.get_device_name(),
    "gqa": "enable_gqa=True (K/V not repeated)",
    "flushL2": not args.no_flush,
    "rows": rows,
}
if args.out:
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
if not best:
    print("no backend ran", file=sys.stderr)
    sys.exit(1)
