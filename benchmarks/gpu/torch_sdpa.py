"""PyTorch SDPA on the same shapes as bench-webgpu.ts, for the side-by-side table.

    python3 torch_sdpa.py [--out torch.json] [--quick]

Backends: FlashAttention-2 (SDPBackend.FLASH_ATTENTION) in fp16, cuDNN (SDPBackend.CUDNN_ATTENTION)
in bf16, memory-efficient attention
(SDPBackend.EFFICIENT_ATTENTION) in fp32 without TF32. FLOPs as FlashAttention's benchmarks count
them (and as attnkit's flashFlops): forward 4 B H N^2 D, backward 2.5x, halved when causal.
Times are CUDA-event medians after warm-up, on random normal inputs.
"""
import argparse
import json
import statistics

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.functional import scaled_dot_product_attention as sdpa

parser = argparse.ArgumentParser()
parser.add_argument("--out")
parser.add_argument("--quick", action="store_true")
parser.add_argument("--repeats", type=int, default=10)
parser.add_argument("--shapes", help='B,H,N,D;B,H,N,D... (default: the bench-webgpu shapes)')
parser.add_argument("--forward-only", action="store_true", help="no backward timing (inference peers, e.g. Sage)")
args = parser.parse_args()

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
SHAPES = [(2, 4, 512, 64)] if args.quick else [(16, 16, 1024, 64), (4, 16, 4096, 128), (2, 16, 8192, 128)]
if args.shapes:
    SHAPES = [tuple(int(x) for x in s.split(",")) for s in args.shapes.split(";")]
IMPLS = [("flash_fp16", SDPBackend.FLASH_ATTENTION, torch.float16),
         ("cudnn_bf16", SDPBackend.CUDNN_ATTENTION, torch.bfloat16),
         ("mem_efficient_fp32", SDPBackend.EFFICIENT_ATTENTION, torch.float32)]


def time_ms(fn):
    for _ in range(3):
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


rows = []
for (b, h, n, d) in SHAPES:
    for causal in (False, True):
        for name, backend, dtype in IMPLS:
          try:
            q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
            do = torch.randn(b, h, n, d, device="cuda", dtype=dtype)
            flops = 4 * b * h * n * n * d * (0.5 if causal else 1.0)
            with sdpa_kernel(backend):
                fwd = time_ms(lambda: sdpa(q, k, v, is_causal=causal))
                if not args.forward_only:
                    o = sdpa(q, k, v, is_causal=causal)
                    bwd = time_ms(lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True))
            passes = [("forward", fwd, flops)] + ([] if args.forward_only else [("backward", bwd, 2.5 * flops)])
            for pass_, ms, f in passes:
                row = {"impl": name, "pass": pass_, "shape": [b, h, n, d], "causal": causal,
                       "ms": ms, "tflops": f / (ms * 1e9)}
                rows.append(row)
                print(f"{name:20s} {pass_:8s} {b},{h},{n},{d} causal={causal!s:5s} {ms:8.3f} ms {row['tflops']:7.1f} TFLOP/s", flush=True)
            del q, k, v, do
            torch.cuda.empty_cache()
          except RuntimeError as e:  # a backend this build or GPU lacks (cuDNN) is reported, not fatal
            rows.append({"impl": name, "shape": [b, h, n, d], "causal": causal, "error": str(e)[:300]})
            print(f"{name:20s} {b},{h},{n},{d} causal={causal!s:5s} error: {str(e)[:200]}", flush=True)

result = {"torch": torch.__version__, "device": torch.cuda.get_device_name(), "rows": rows}
if args.out:
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
