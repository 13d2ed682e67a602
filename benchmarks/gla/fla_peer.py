"""fla's Triton chunk_gla beside attnkit's WebGPU chunkGla (issue 13), on the GPU machine.

    python3 fla_peer.py --fla DIR [--fallback DIR] [--shapes "B,H,T,K;..."] [--out fla.json]

DIR holds a checkout of fla (github.com/fla-org/flash-linear-attention) with `fla/` in it,
brought for the run only (never committed). Its package __init__ files import every layer and
model (transformers, einops); the run reduces fla/__init__.py to its `__version__ = ...` line
(fla.ops imports that name: an empty file fails, 2026-12-04 run 7) and empties
fla/ops/__init__.py in that run-only copy, which `fla.ops.gla.chunk` does not otherwise need. --fallback is a
folder appended to sys.path (after the installed packages) for pure-Python modules the
machine may lack (`packaging`).

Inputs as fla's own benchmarks draw them: q, k, v normal, g = logsigmoid(normal) / 16, BTHK,
f16 (g in f16 too, as attnkit's bench-gla). Times are CUDA-event medians after warm-up of
chunk_gla forward and forward + backward (autograd through chunk_gla's backward, do normal).
Also a correctness check: fla's forward against a float64 recurrence on a small shape, so a
broken import or a wrong layout shows up as an error rather than as a fast time.
"""
import argparse
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--fla", required=True)
parser.add_argument("--fallback")
parser.add_argument("--shapes", default="4,16,2048,128;4,16,8192,128")
parser.add_argument("--repeats", type=int, default=20)
# Triton autotunes each fla kernel on first use at a shape (runs 1-2 on the H200: more than
# 270 s before the first timing): forward-only first, every row written as soon as it exists.
parser.add_argument("--passes", default="forward,forward+backward")
parser.add_argument("--out")
args = parser.parse_args()

sys.path.insert(0, args.fla)
if args.fallback:
    sys.path.append(args.fallback)
from fla.ops.gla import chunk_gla  # noqa: E402

# The run-only copy has no .git: the commit it was taken at travels as FLA_COMMIT beside fla/.
commit = ""
if os.path.exists(os.path.join(args.fla, "FLA_COMMIT")):
    commit = open(os.path.join(args.fla, "FLA_COMMIT")).read().strip()


def time_ms(fn):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def recurrence64(q, k, v, g, scale):
    """o_t = scale q_t S_t, S_t = diag(e^{g_t}) S_{t-1} + k_t^T v_t, in float64 (BTHK)."""
    q, k, v, g = (x.double() for x in (q, k, v, g))
    B, T, H, K = q.shape
    S = torch.zeros(B, H, K, v.shape[-1], dtype=torch.float64, device=q.device)
    o = torch.empty(B, T, H, v.shape[-1], dtype=torch.float64, device=q.device)
    for t in range(T):
        S = S * g[:, t].exp()[..., None] + k[:, t][..., None] * v[:, t][..., None, :]
        o[:, t] = scale * torch.einsum("bhk,bhkv->bhv", q[:, t], S)
    return o


def draw(B, T, H, K, V, dtype, grad):
    q, k = (torch.randn(B, T, H, K, device="cuda", dtype=dtype) for _ in range(2))
    v = torch.randn(B, T, H, V, device="cuda", dtype=dtype)
    g = (F.logsigmoid(torch.randn(B, T, H, K, device="cuda", dtype=torch.float32)) / 16).to(dtype)
    for x in (q, k, v, g):
        x.requires_grad_(grad)
    return q, k, v, g


torch.manual_seed(0)
q, k, v, g = draw(2, 200, 2, 64, 48, torch.float32, False)
o, _ = chunk_gla(q, k, v, g, scale=0.125)
ref = recurrence64(q, k, v, g, 0.125)
check = {"shape": [2, 200, 2, 64, 48], "dtype": "f32", "relL2": ((o.double() - ref).norm() / ref.norm()).item()}
print(f"fla chunk_gla check vs float64 recurrence: relL2 {check['relL2']:.2e}", flush=True)

rows = []


def write():
    result = {"fla_commit": commit, "torch": torch.__version__, "device": torch.cuda.get_device_name(),
              "check": check, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


write()
for pass_ in args.passes.split(","):
    for shape in args.shapes.split(";"):
        B, H, T, K = (int(x) for x in shape.split(","))
        V = K
        q, k, v, g = draw(B, T, H, K, V, torch.float16, pass_ != "forward")
        do = torch.randn(B, T, H, V, device="cuda", dtype=torch.float16)

        def fwd():
            with torch.no_grad():
                chunk_gla(q, k, v, g)

        def fwd_bwd():
            o, _ = chunk_gla(q, k, v, g)
            torch.autograd.grad(o, (q, k, v, g), do)

        ms = time_ms(fwd if pass_ == "forward" else fwd_bwd)
        row = {"impl": "fla chunk_gla (Triton)", "pass": pass_, "B": B, "H": H, "T": T, "K": K, "V": V,
               "dtype": "f16", "ms": ms}
        rows.append(row)
        print(f"fla chunk_gla {pass_:17s} B{B} H{H} T{T} K{K} V{V} f16 {ms:8.3f} ms", flush=True)
        write()
        del q, k, v, g, do
        torch.cuda.empty_cache()
