"""PyTorch's peer of bench-nn-block.ts: one training step (forward + backward + AdamW) of the same
pre-norm TransformerBlock as @attnkit/nn's: x + attn(LN(x)), then h + mlp(LN(h)); attention with
bias-free q/k/v/o projections, rotate-half RoPE (base 10000) on q and k, causal SDPA; MLP
Linear(C, 4C) -> GELU (tanh form) -> Linear(4C, C) with biases; LayerNorm eps 1e-5 with affine.
The upstream gradient is a fixed random dy (y.backward(dy)), as in the attnkit bench.

    python3 torch_nn_block.py [--shape 8,1024,768,12] [--steps 10] [--warmup 3] [--out torch-nn.json]

Modes: eager fp32 (TF32 off for matmuls and cuDNN, as the fp32 peers of the other benches), and
bf16 autocast (fp32 weights and AdamW, bf16 matmuls and SDPA). Times are CUDA-event medians of
whole steps after warm-up.
"""
import argparse
import json
import statistics

import torch
import torch.nn as nn
import torch.nn.functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--shape", default="8,1024,768,12")
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--warmup", type=int, default=3)
parser.add_argument("--out")
args = parser.parse_args()
B, T, C, H = (int(x) for x in args.shape.split(","))

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


def rope(x, base=10000.0):
    # x [B, H, T, D]: pairs (i, i + D/2) turn by t * base^(-2i/D) (GPT-NeoX / Llama layout).
    d = x.shape[-1]
    half = d // 2
    freqs = base ** (-torch.arange(0, half, device=x.device, dtype=torch.float32) * 2 / d)
    theta = torch.arange(x.shape[-2], device=x.device, dtype=torch.float32)[:, None] * freqs[None, :]
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.norm1 = nn.LayerNorm(c, eps=1e-5)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(c, c, bias=False) for _ in range(4))
        self.norm2 = nn.LayerNorm(c, eps=1e-5)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)

    def attn(self, x):
        b, t, c = x.shape
        split = lambda y: y.view(b, t, self.h, c // self.h).transpose(1, 2)
        q, k, v = split(self.wq(x)), split(self.wk(x)), split(self.wv(x))
        o = F.scaled_dot_product_attention(rope(q), rope(k), v, is_causal=True)
        return self.wo(o.transpose(1, 2).reshape(b, t, c))

    def forward(self, x):
        h = x + self.attn(self.norm1(x))
        return h + self.fc2(F.gelu(self.fc1(self.norm2(h)), approximate="tanh"))


def run(mode):
    torch.manual_seed(0)
    block = Block(C, H).cuda()
    opt = torch.optim.AdamW(block.parameters(), lr=1e-4)
    x = torch.randn(B, T, C, device="cuda")
    dy = torch.randn(B, T, C, device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        if mode == "bf16_autocast":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                y = block(x)
        else:
            y = block(x)
        y.backward(dy.to(y.dtype))
        opt.step()

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(args.steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


flops = 6 * B * T * 12 * C * C + 3.5 * 2 * B * T * T * C
rows = []
print(f"torch {torch.__version__} {torch.cuda.get_device_name()}")
for mode in ("eager_fp32", "bf16_autocast"):
    try:
        ms = run(mode)
        med = statistics.median(ms)
        row = {"impl": f"torch {mode}", "medianMs": med, "minMs": min(ms), "ms": ms,
               "tflops": flops / med / 1e9, "tokensPerS": B * T / (med / 1e3)}
    except Exception as e:  # noqa: BLE001 - a failed mode is a row, not a crash
        row = {"impl": f"torch {mode}", "error": str(e)[:600]}
    rows.append(row)
    print(f"row {json.dumps({k: v for k, v in row.items() if k != 'ms'})}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"shape": {"B": B, "T": T, "C": C, "H": H}, "flopsPerStep": flops, "rows": rows}, f, indent=2)
print("| impl | median ms | min ms | TFLOP/s | tokens/s |")
print("| --- | --- | --- | --- | --- |")
for r in rows:
    if "error" in r:
        print(f"| {r['impl']} | error: {r['error'][:80]} | | | |")
    else:
        print(f"| {r['impl']} | {r['medianMs']:.2f} | {r['minMs']:.2f} | {r['tflops']:.2f} | {r['tokensPerS']:.0f} |")
