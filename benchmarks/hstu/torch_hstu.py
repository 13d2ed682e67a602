"""The PyTorch side of the HSTU benchmark (issue 10 item 6): HSTU attention in PyTorch (the padded
dense form of generative-recommenders' PyTorch reference), eager and torch.compile'd, beside
PyTorch SDPA causal (flash) on the same jagged batch.

    python3 benchmarks/hstu/torch_hstu.py [--out hstu-torch.json]          # the H200 run
    python3 benchmarks/hstu/torch_hstu.py --device cpu --quick --no-compile  # a smoke test

HSTU (per sequence of the jagged batch, LHD layout): A = silu(alpha Q K^T) / N on j <= i
(diagonal included), Y = A V, N = max_seq_len. The jagged batch: lengths from lengths.py (seed,
uniform in [N/2, N]); q, k, v, dO drawn in that order by torch.randn (float32, CPU generator
seeded with --seed) and then cast, so every dtype sees the same values up to rounding.
Nothing is timed before the correctness checks pass (the script exits 1 on a mismatch).

Timing: CUDA events (perf_counter on CPU), one untimed call (compiles), then >= --warmup-s of
warm-up, then the median of --repeats calls. "forward" runs under no_grad; "forward+backward" is
o = f(q, k, v) then autograd.grad(o, (q, k, v), dO). FLOPs are those of the jagged causal work:
forward 2 * sum_b n_b (n_b + 1) / 2 * H * (D + V) (QK^T and AV), backward 2.5x forward, so
forward+backward 3.5x. SDPA runs on the padded [B, H, N, D] batch (flash takes no per-sequence
lengths; padding not timed): its tflops use the same jagged FLOPs ("effective"), tflops_padded
what it computes. fp32 rows are true fp32 (TF32 off).
"""
import argparse
import inspect
import json
import math
import os
import statistics
import struct
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ left beside the scripts in the work tree
sys.path.insert(0, HERE)
from lengths import jagged_lengths, seq_offsets  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, "fp64": torch.float64}
NAME = {v: k for k, v in DTYPES.items()}
# Relative L2 error allowed against float64 on the same (rounded) inputs. The PyTorch form rounds
# the [B, H, N, N] scores to the input dtype before A V, hence looser than KERNELS.md's kernels.
TOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: 1e-12}

p = argparse.ArgumentParser()
p.add_argument("--device", default="cuda")
p.add_argument("--quick", action="store_true", help="B 4, N 256, H 2, D 32, 5 repeats")
p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
p.add_argument("--out", help="write the rows as JSON")
p.add_argument("--seed", type=int, default=0, help="lengths seed (and q, k, v seed)")
p.add_argument("--batch", type=int)
p.add_argument("--max-seq-len", type=int)
p.add_argument("--heads", type=int)
p.add_argument("--dim", type=int)
p.add_argument("--alpha", type=float, help="default 1/D, as generative-recommenders' benchmark")
p.add_argument("--dtypes", help="HSTU dtypes, default bf16,fp16,fp32 (CUDA) or fp32,bf16 (CPU)")
p.add_argument("--repeats", type=int)
p.add_argument("--warmup-s", type=float, default=0.5)
args = p.parse_args()

dev = torch.device(args.device)
cuda = dev.type == "cuda"
B = args.batch or (4 if args.quick else 16)
N = args.max_seq_len or (256 if args.quick else 4096)
H = args.heads or (2 if args.quick else 4)
D = args.dim or (32 if args.quick else 128)
ALPHA = args.alpha if args.alpha is not None else 1.0 / D
REPEATS = max(args.repeats or (5 if args.quick else 10), 1)
dtype_names = (args.dtypes or ("bf16,fp16,fp32" if cuda else "fp32,bf16")).split(",")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False


# ---- the jagged batch ---------------------------------------------------------------------------


class Jagged:
    """Offsets of a jagged batch and the index that pads it: token t of sequence b at position
    p goes to row b * n + p of the padded [B * n, ...] tensor."""

    def __init__(self, offsets, n, alpha):
        self.offsets, self.n, self.alpha, self.batch = list(offsets), n, alpha, len(offsets) - 1
        self.lengths = [e - a for a, e in zip(self.offsets[:-1], self.offsets[1:])]
        rows = [b * n + i for b, m in enumerate(self.lengths) for i in range(m)]
        self.idx = torch.tensor(rows, dtype=torch.int64, device=dev)
        self.lengths_t = torch.tensor(self.lengths, dtype=torch.int64, device=dev)
        self.offsets_t = torch.tensor(self.offsets, dtype=torch.int32, device=dev)

    def causal_pairs(self):
        return sum(m * (m + 1) // 2 for m in self.lengths)


def draw(L, h, d, v, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(L, h, x, generator=g, dtype=torch.float32) for x in (d, d, v, v)]


# ---- HSTU in PyTorch ----------------------------------------------------------------------------


def hstu_padded(q, k, v, idx, lengths, n: int, alpha: float):
    """HSTU as generative-recommenders' PyTorch reference computes it: pad the jagged [L, H, D]
    to [B, H, n, D] with zeros, scores = alpha q k^T, silu, / n, multiply by the mask (causal
    with the diagonal, rows within the length), @ v, take the valid rows back to [L, H, V].
    The mask is rebuilt per call, as upstream does."""
    L, h, _ = q.shape
    b = lengths.shape[0]

    def pad(x):
        z = x.new_zeros(b * n, h, x.shape[2]).index_copy(0, idx, x)
        return z.view(b, n, h, x.shape[2]).transpose(1, 2)

    qp, kp, vp = pad(q), pad(k), pad(v)
    s = F.silu(alpha * torch.matmul(qp, kp.transpose(-1, -2))) / n
    pos = torch.arange(n, device=q.device)
    mask = (pos.view(1, n) <= pos.view(n, 1)).view(1, 1, n, n) & (pos.view(1, 1, n, 1) < lengths.view(b, 1, 1, 1))
    y = torch.matmul(s * mask, vp)  # [B, H, n, V]
    return y.transpose(1, 2).reshape(b * n, h, -1).index_select(0, idx)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def hstu_loop(q, k, v, do, jag):
    """A direct float64 loop over the allowed pairs (plain Python floats): o and the gradients
    dq, dk, dv of sum(o * do), by the formulas of attnkit's hstuAttentionReferenceBackward."""
    Q, K, V, G = (x.double().tolist() for x in (q, k, v, do))
    L, h, d, dv_ = q.shape[0], q.shape[1], q.shape[2], v.shape[2]
    O = [[[0.0] * dv_ for _ in range(h)] for _ in range(L)]
    dQ = [[[0.0] * d for _ in range(h)] for _ in range(L)]
    dK = [[[0.0] * d for _ in range(h)] for _ in range(L)]
    dV = [[[0.0] * dv_ for _ in range(h)] for _ in range(L)]
    n, alpha = jag.n, jag.alpha
    for a, e in zip(jag.offsets[:-1], jag.offsets[1:]):
        for hh in range(h):
            for i in range(a, e):
                for j in range(a, i + 1):
                    z = alpha * sum(x * y for x, y in zip(Q[i][hh], K[j][hh]))
                    sg = sigmoid(z)
                    att = z * sg / n
                    dA = 0.0
                    for c in range(dv_):
                        O[i][hh][c] += att * V[j][hh][c]
                        dV[j][hh][c] += att * G[i][hh][c]
                        dA += G[i][hh][c] * V[j][hh][c]
                    dz = dA * sg * (1 + z * sigmoid(-z)) / n
                    for c in range(d):
                        dQ[i][hh][c] += alpha * dz * K[j][hh][c]
                        dK[j][hh][c] += alpha * dz * Q[i][hh][c]
    t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    return {"o": t(O), "dq": t(dQ), "dk": t(dK), "dv": t(dV)}


def run_with_grads(fn, q, k, v, do):
    q, k, v = (x.detach().requires_grad_(True) for x in (q, k, v))
    o = fn(q, k, v)
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    return {"o": o, "dq": dq, "dk": dk, "dv": dv}


def rel_l2(x, ref):
    x, ref = x.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(x).all():
        return math.inf
    return (torch.linalg.norm(x - ref) / torch.linalg.norm(ref).clamp_min(1e-300)).item()


def check(label, got, ref, tol):
    errs = {name: rel_l2(got[name], ref[name]) for name in ref}
    worst = max(errs.values())
    text = " ".join(f"{n} {e:.1e}" for n, e in errs.items())
    print(f"  {label:42s} rel L2 {text}  (tol {tol:.0e}) {'ok' if worst <= tol else 'MISMATCH'}", flush=True)
    checks.append({"check": label, "errors": errs, "tol": tol, "ok": worst <= tol})
    if not worst <= tol:
        sys.exit(f"correctness check failed: {label}")


def read_safetensors(path):
    """A small safetensors reader (the format: u64 header size, JSON header, raw data)."""
    with open(path, "rb") as f:
        raw = f.read()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    kinds = {"F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "U8": torch.uint8}
    out = {}
    for name, e in header.items():
        if name != "__metadata__":
            a, b = e["data_offsets"]
            data = bytearray(raw[8 + size + a : 8 + size + b])
            out[name] = torch.frombuffer(data, dtype=kinds[e["dtype"]]).reshape(e["shape"])
    return header.get("__metadata__", {}), out


# ---- implementations ----------------------------------------------------------------------------

checks, rows, notes = [], [], []
impls = []  # (name, dtype, fn(q, k, v) -> o on the jagged batch given as make(jag))

compiled = None
if args.no_compile:
    notes.append("torch.compile: skipped (--no-compile)")
elif not hasattr(torch, "compile"):
    notes.append(f"torch.compile: not in torch {torch.__version__}, compiled rows skipped")
else:
    import torch._dynamo

    # One compiled graph per dtype, shape (check batch, timed batch) and grad mode: 9 or more,
    # past dynamo's default limit of 8, beyond which it would fall back to eager silently.
    for key in ("recompile_limit", "cache_size_limit"):  # the name changed in torch 2.7
        try:
            setattr(torch._dynamo.config, key, 64)
        except (AttributeError, KeyError):
            pass
    # fullgraph: a graph break raises instead of timing a partly eager function.
    compiled = torch.compile(hstu_padded, dynamic=False, fullgraph=True)


def hstu_impl(fn):
    return lambda jag: (lambda q, k, v: fn(q, k, v, jag.idx, jag.lengths_t, jag.n, jag.alpha))


for name in dtype_names:
    impls.append(("hstu_torch_eager", DTYPES[name], hstu_impl(hstu_padded)))
    if compiled is not None:
        impls.append(("hstu_torch_compile", DTYPES[name], hstu_impl(compiled)))

gr_hstu = None
try:  # generative-recommenders' Triton HSTU, only when it is installed (it is not by default)
    from generative_recommenders.common import HammerKernel
    from generative_recommenders.ops.hstu_attention import hstu_mha

    def gr_hstu(jag):
        offs = jag.offsets_t.long()
        return lambda q, k, v: hstu_mha(max_seq_len=jag.n, alpha=jag.alpha, q=q, k=k, v=v, seq_offsets=offs, causal=True,
                                        dropout_pr=0.0, training=True, num_targets=None, max_attn_len=0,
                                        contextual_seq_len=0, sort_by_length=True, kernel=HammerKernel.TRITON)

    if cuda:
        impls.append(("gr_triton_hstu", torch.bfloat16, gr_hstu))
except Exception as e:  # noqa: BLE001
    notes.append(f"generative-recommenders Triton HSTU: not available ({type(e).__name__}: {e})")

sdpa = getattr(F, "scaled_dot_product_attention", None)
SDPA_DTYPE = torch.float16 if cuda else torch.float32
try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:
    sdpa_kernel = None
if sdpa is None or sdpa_kernel is None:
    notes.append(f"PyTorch SDPA with a backend choice: not in torch {torch.__version__}")
    sdpa = None

varlen = None
try:
    from torch.nn.attention.varlen import varlen_attn

    # Causal is is_causal=True in torch 2.9, window_size=(-1, 0) from 2.10.
    kw = {"is_causal": True} if "is_causal" in inspect.signature(varlen_attn).parameters else {"window_size": (-1, 0)}

    def varlen(jag):
        return lambda q, k, v: varlen_attn(q, k, v, jag.offsets_t, jag.offsets_t, jag.n, jag.n, **kw)
except Exception as e:  # noqa: BLE001
    notes.append(f"PyTorch varlen_attn (jagged flash): not available ({type(e).__name__}: {e})")


def sdpa_padded(jag, q, k, v):
    """q, k, v [L, H, D] -> zero-padded [B, H, n, D] (what SDPA flash runs on)."""
    def pad(x):
        z = x.new_zeros(jag.batch * jag.n, x.shape[1], x.shape[2]).index_copy(0, jag.idx, x)
        return z.view(jag.batch, jag.n, x.shape[1], x.shape[2]).transpose(1, 2).contiguous()
    return pad(q), pad(k), pad(v)


# ---- correctness --------------------------------------------------------------------------------

print(f"torch {torch.__version__} on {torch.cuda.get_device_name(dev) if cuda else 'CPU'}", flush=True)
print("correctness (float64 unless named):", flush=True)

meta, g = read_safetensors(os.path.join(HERE, "..", "..", "goldens", "hstu_causal.safetensors"))
gp = json.loads(meta["params"])
gjag = Jagged(gp["seq_offsets"], gp["max_seq_len"], gp["alpha"])
gin = [g[x].double().to(dev) for x in ("q", "k", "v", "do")]
golden = {x: g[x] for x in ("o", "dq", "dk", "dv")}
check("torch HSTU vs goldens/hstu_causal", run_with_grads(hstu_impl(hstu_padded)(gjag), *gin), golden, 1e-12)

# alpha 0.5 with D 8: |alpha q.k| ~ 1.4, where silu is far from linear.
sjag = Jagged(seq_offsets(jagged_lengths(args.seed, 3, 37)), 37, 0.5)
small = [x.double() for x in draw(sjag.offsets[-1], 2, 8, 8, args.seed)]
ref = hstu_loop(*small, sjag)
check("direct loop vs goldens/hstu_causal", hstu_loop(*[x.cpu() for x in gin], gjag), golden, 1e-12)
sfn = hstu_impl(hstu_padded)(sjag)
check(f"torch HSTU vs direct loop {sjag.lengths}", run_with_grads(sfn, *[x.to(dev) for x in small]), ref, 1e-12)

failed = set()
for name, dt, make in impls:
    # Reference on the inputs rounded to dt, so only the computation's error is measured.
    xs = [x.to(dt).double() for x in small]
    r = hstu_loop(*xs, sjag)
    try:
        got = run_with_grads(make(sjag), *[x.to(dev, dt) for x in xs])
    except Exception as e:  # noqa: BLE001  (e.g. a dtype the device lacks): the row is skipped
        notes.append(f"{name} {NAME[dt]}: skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
        failed.add((name, dt))
        continue
    check(f"{name} {NAME[dt]} vs float64", got, r, TOL[dt])
impls = [x for x in impls if (x[0], x[1]) not in failed]

if varlen is not None and cuda and sdpa is not None:
    # varlen_attn (softmax) against SDPA causal on the padded batch: the valid rows must agree.
    xs = [x.to(dev, torch.float16) for x in small[:3]]
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            yp = sdpa(*sdpa_padded(sjag, *xs), is_causal=True)
        want = yp.transpose(1, 2).reshape(sjag.batch * sjag.n, 2, -1).index_select(0, sjag.idx)
        err = rel_l2(varlen(sjag)(*xs), want)
        print(f"  {'varlen_attn vs padded SDPA (fp16)':42s} rel L2 {err:.1e}", flush=True)
        if not err <= 2e-3:
            raise ValueError(f"rel L2 {err:.1e}")
    except Exception as e:  # noqa: BLE001
        notes.append(f"PyTorch varlen_attn: not used ({type(e).__name__}: {e})")
        varlen = None

# ---- timing -------------------------------------------------------------------------------------


def sync():
    if cuda:
        torch.cuda.synchronize(dev)


def bench(fn):
    """(median ms, seconds of the first call): one call, >= warmup-s of calls, median of repeats."""
    t0 = time.perf_counter()
    fn()
    sync()
    first = time.perf_counter() - t0
    t0, calls = time.perf_counter(), 0
    while calls < 3 or time.perf_counter() - t0 < args.warmup_s:
        fn()
        sync()
        calls += 1
    times = []
    for _ in range(REPEATS):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), first


lengths = jagged_lengths(args.seed, B, N)
jag = Jagged(seq_offsets(lengths), N, ALPHA)
L = jag.offsets[-1]
fwd_flops = 2 * jag.causal_pairs() * H * (D + D)
padded_flops = 2 * B * (N * (N + 1) // 2) * H * (D + D)
shape = {"B": B, "N": N, "H": H, "D": D, "V": D, "L": L}
base = draw(L, H, D, D, args.seed)
print(f"\nbatch: B {B}, N {N}, H {H}, D {D}, L {L}, alpha {ALPHA:g}, lengths (seed {args.seed}) {lengths}", flush=True)
print(f"jagged causal FLOPs: forward {fwd_flops / 1e9:.2f} G, forward+backward {3.5 * fwd_flops / 1e9:.2f} G "
      f"(padded causal: {padded_flops / fwd_flops:.2f}x)\n", flush=True)
print(f"{'impl':22s} {'dtype':6s} {'pass':17s} {'ms':>10s} {'TFLOP/s':>8s}  notes", flush=True)


def time_rows(name, dt, fn, inputs, flops, extra=None):
    q, k, v, do = inputs
    leaves = [x.detach().requires_grad_(True) for x in (q, k, v)]

    def forward():
        with torch.no_grad():
            fn(q, k, v)

    def forward_backward():
        torch.autograd.grad(fn(*leaves), leaves, do)

    for pass_, step, f in (("forward", forward, flops), ("forward+backward", forward_backward, 3.5 * flops)):
        try:
            ms, first = bench(step)
        except Exception as e:  # noqa: BLE001  (out of memory, a backend refusing the shape)
            print(f"{name:22s} {NAME[dt]:6s} {pass_:17s} {'-':>10s} {'-':>8s}  failed: {type(e).__name__}: "
                  f"{str(e).splitlines()[0] if str(e) else ''}", flush=True)
            if cuda:
                torch.cuda.empty_cache()
            continue
        row = {"impl": name, "dtype": NAME[dt], "pass": pass_, "ms": ms, "tflops": f / (ms * 1e9),
               "shape": shape, "lengths_seed": args.seed, "flops": f, "first_call_s": first}
        note = f"first call {first:.1f} s" if first > 1 else ""
        if extra:
            note = ", ".join(x for x in (note, extra(row, f / flops)) if x)
        rows.append(row)
        print(f"{name:22s} {row['dtype']:6s} {pass_:17s} {ms:10.3f} {row['tflops']:8.3g}  {note}", flush=True)


for name, dt, make in impls:
    time_rows(name, dt, make(jag), [x.to(dev, dt) for x in base], fwd_flops)
    sync()
    if cuda:
        torch.cuda.empty_cache()

if sdpa is not None:
    xs = [x.to(dev, SDPA_DTYPE) for x in base]
    qp, kp, vp = sdpa_padded(jag, *xs[:3])
    dop = sdpa_padded(jag, xs[3], xs[3], xs[3])[0]

    def run_sdpa(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return sdpa(q, k, v, is_causal=True)

    def padded(row, ratio):
        row["flops_padded"] = padded_flops * ratio
        row["tflops_padded"] = row["flops_padded"] / (row["ms"] * 1e9)
        return f"padded batch: {row['tflops_padded']:.3g} TFLOP/s on its padded work"

    time_rows("sdpa_flash_padded", SDPA_DTYPE, run_sdpa, [qp, kp, vp, dop], fwd_flops, padded)
    del qp, kp, vp, dop

if varlen is not None and cuda:
    time_rows("sdpa_varlen_jagged", torch.float16, varlen(jag), [x.to(dev, torch.float16) for x in base], fwd_flops)

print("")
for note in notes:
    print(note)

if args.out:
    result = {"torch": torch.__version__, "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
              "alpha": ALPHA, "lengths": lengths, "seq_offsets": jag.offsets, "checks": checks,
              "notes": notes, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}")
