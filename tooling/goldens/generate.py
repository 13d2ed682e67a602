#!/usr/bin/env python3
"""Regenerates attnkit's own golden references: goldens/*.safetensors at the repository root.

    python3 tooling/goldens/generate.py --out goldens

Each file holds one small attention problem: inputs drawn from a fixed seed (a pure-Python
generator, so they are the same on every machine and for every backend) and stored as F32;
references computed by PyTorch in float64 from exactly those F32 inputs with explicit masks
(autograd for the gradients) and stored as F64. The kinds, tensor names and
`__metadata__.params` JSON follow the shared goldens (../shared/goldens/README.md), only
smaller (the whole set stays under 1.5 MB). Files are written by hand (8-byte header length,
JSON header padded to 8 bytes, raw little-endian data), so no safetensors package is needed.

--backend numpy computes the same references with hand-written NumPy formulas; it exists only
to test this script on a machine without PyTorch and its files must not be committed (their
`generator` metadata says numpy, and the golden tests require torch). With torch, every file is
also checked against the NumPy formulas when NumPy is importable (relative L2 <= 1e-12).
"""

import argparse
import json
import math
import os
import sys
import zlib
from array import array

# cuBLAS needs this for deterministic float64 GEMMs when --device cuda.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

SIZE_LIMIT = 1_500_000  # bytes, the whole set


# ---- inputs: a fixed, backend-independent generator ----------------------------------------


class Rng:
    """splitmix64 + Box-Muller: fully specified here, so inputs never depend on a library."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF
        self.spare = None

    def _next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def uniform(self):
        """In (0, 1): 53 random bits, never 0."""
        return ((self._next() >> 11) + 0.5) / 9007199254740992.0

    def normal(self):
        if self.spare is not None:
            x, self.spare = self.spare, None
            return x
        r = math.sqrt(-2.0 * math.log(self.uniform()))
        t = 2.0 * math.pi * self.uniform()
        self.spare = r * math.sin(t)
        return r * math.cos(t)


class Input:
    """An F32 input: `values` are the float32-rounded draws (as Python floats, exactly)."""

    def __init__(self, shape, values):
        self.shape = list(shape)
        self.f32 = array("f", values)
        self.values = list(self.f32)


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def randn(rng, shape, std=1.0):
    return Input(shape, [std * rng.normal() for _ in range(numel(shape))])


def log_gates(rng, shape):
    """GLA's log-space gates, as fla's tests draw them: logsigmoid(randn) / 16 (all < 0)."""
    out = []
    for _ in range(numel(shape)):
        x = rng.normal()
        out.append(-math.log1p(math.exp(-x)) / 16.0 if x > -30 else (x - math.log1p(math.exp(x))) / 16.0)
    return Input(shape, out)


# ---- masks (KERNELS.md): explicit boolean [Nq][Nk] -----------------------------------------


def softmax_mask(nq, nk, causal, window=None, block=None):
    """Bottom-right causal, window [left, right] (-1 = unbounded), block mask [blocksQ][blocksK]."""
    off = nk - nq
    rows = []
    for i in range(nq):
        row = []
        for j in range(nk):
            ok = True
            if causal and j > i + off:
                ok = False
            if window is not None:
                left, right = window
                if left >= 0 and j < i + off - left:
                    ok = False
                if right >= 0 and j > i + off + right:
                    ok = False
            if block is not None:
                mask, bq, bk = block
                if not mask[i // bq][j // bk]:
                    ok = False
            row.append(ok)
        rows.append(row)
    return rows


def tril(n):
    """HSTU's mask: j <= i within the sequence, diagonal included."""
    return [[j <= i for j in range(n)] for i in range(n)]


# ---- backends -------------------------------------------------------------------------------


class TorchBackend:
    """The references: PyTorch float64, gradients by autograd of sum(o * do) (+ sum(ht * dht))."""

    name = "torch"

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device
        torch.use_deterministic_algorithms(True)
        self.generator = f"torch {torch.__version__} float64 ({device}), explicit masks, attnkit tooling/goldens/generate.py"

    def t(self, x, grad=False):
        torch = self.torch
        out = torch.tensor(x.values, dtype=torch.float64, device=self.device).reshape(x.shape)
        return out.requires_grad_(grad)

    def mask(self, rows):
        return self.torch.tensor(rows, dtype=self.torch.bool, device=self.device)

    def out(self, x):
        return array("d", x.detach().cpu().reshape(-1).tolist())

    def grads(self, loss, leaves):
        return self.torch.autograd.grad(loss, leaves)

    # softmax, BHND, GQA by repeating kv heads; empty rows: O = 0, LSE = -inf, zero gradients.
    def _softmax(self, q, k, v, mask, scale):
        torch = self.torch
        group = q.shape[1] // k.shape[1]
        kk = k.repeat_interleave(group, dim=1)
        vv = v.repeat_interleave(group, dim=1)
        s = scale * torch.matmul(q, kk.transpose(-1, -2))
        has = mask.any(-1)
        # The row maximum only shifts the exponent (the result does not depend on it): no gradient.
        m = torch.where(mask, s, torch.full_like(s, -math.inf)).amax(-1).detach()
        m = torch.where(has, m, torch.zeros_like(m))
        e = torch.where(mask, torch.exp(s - m[..., None]), torch.zeros_like(s))
        den = e.sum(-1)
        safe = torch.where(has, den, torch.ones_like(den))
        p = e / safe[..., None]
        o = torch.matmul(p, vv)
        lse = torch.where(has, m + torch.log(safe), torch.full_like(m, -math.inf))
        return o, lse

    def softmax(self, q, k, v, do, mask, scale):
        qt, kt, vt = self.t(q, True), self.t(k, True), self.t(v, True)
        o, lse = self._softmax(qt, kt, vt, self.mask(mask), scale)
        res = {"o": o, "lse": lse}
        if do is not None:
            res.update(zip(("dq", "dk", "dv"), self.grads((o * self.t(do)).sum(), [qt, kt, vt])))
        return {n: self.out(x) for n, x in res.items()}

    def softmax_varlen(self, q, k, v, do, cu, scale):
        torch = self.torch
        qt, kt, vt = self.t(q, True), self.t(k, True), self.t(v, True)
        outs = []
        for a, b in zip(cu[:-1], cu[1:]):
            n = b - a
            per = [x[a:b].permute(1, 0, 2)[None] for x in (qt, kt, vt)]  # [1, H, n, D]
            o, _ = self._softmax(*per, self.mask(softmax_mask(n, n, True)), scale)
            outs.append(o[0].permute(1, 0, 2))
        o = torch.cat(outs, 0)
        res = {"o": o}
        res.update(zip(("dq", "dk", "dv"), self.grads((o * self.t(do)).sum(), [qt, kt, vt])))
        return {n: self.out(x) for n, x in res.items()}

    def sigmoid(self, q, k, v, do, mask, scale, bias):
        torch = self.torch
        qt, kt, vt = self.t(q, True), self.t(k, True), self.t(v, True)
        group = q.shape[1] // k.shape[1]
        kk = kt.repeat_interleave(group, dim=1)
        vv = vt.repeat_interleave(group, dim=1)
        s = scale * torch.matmul(qt, kk.transpose(-1, -2)) + bias
        p = torch.where(self.mask(mask), torch.sigmoid(s), torch.zeros_like(s))
        o = torch.matmul(p, vv)
        res = {"o": o}
        res.update(zip(("dq", "dk", "dv"), self.grads((o * self.t(do)).sum(), [qt, kt, vt])))
        return {n: self.out(x) for n, x in res.items()}

    def hstu(self, q, k, v, do, offsets, max_seq_len, alpha, rab):
        """generative-recommenders' pytorch_hstu_mha per sequence (its padding adds only zeros)."""
        torch = self.torch
        qt, kt, vt = self.t(q, True), self.t(k, True), self.t(v, True)
        rt = self.t(rab, True) if rab is not None else None
        outs = []
        for b, (a, e) in enumerate(zip(offsets[:-1], offsets[1:])):
            n = e - a
            qb, kb, vb = (x[a:e].permute(1, 0, 2) for x in (qt, kt, vt))  # [H, n, D]
            z = alpha * torch.matmul(qb, kb.transpose(-1, -2))
            if rt is not None:
                z = z + rt[b, :, :n, :n]
            att = torch.nn.functional.silu(z) / max_seq_len
            att = torch.where(self.mask(tril(n)), att, torch.zeros_like(att))
            outs.append(torch.matmul(att, vb).permute(1, 0, 2))
        o = torch.cat(outs, 0)
        leaves = [qt, kt, vt] + ([rt] if rt is not None else [])
        res = {"o": o}
        res.update(zip(("dq", "dk", "dv", "drab"), self.grads((o * self.t(do)).sum(), leaves)))
        return {n: self.out(x) for n, x in res.items()}

    def gla(self, q, k, v, gk, h0, do, dht, scale):
        """fla's naive_recurrent_gla, kept in float64 throughout (layout BTHK)."""
        torch = self.torch
        qt, kt, vt, gt, ht0 = (self.t(x, True) for x in (q, k, v, gk, h0))
        h = ht0
        outs = []
        for i in range(q.shape[1]):
            q_i = qt[:, i] * scale  # [B, H, K]
            kv = kt[:, i, :, :, None] * vt[:, i, :, None, :]  # [B, H, K, V]
            h = h * torch.exp(gt[:, i])[..., None] + kv
            outs.append((q_i[..., None] * h).sum(-2))  # [B, H, V]
        o = torch.stack(outs, 1)
        loss = (o * self.t(do)).sum() + (h * self.t(dht)).sum()
        res = {"o": o, "ht": h}
        res.update(zip(("dq", "dk", "dv", "dgk", "dh0"), self.grads(loss, [qt, kt, vt, gt, ht0])))
        return {n: self.out(x) for n, x in res.items()}


class NumpyBackend:
    """Hand-written float64 forward and backward: a test double for TorchBackend and its check."""

    name = "numpy"

    def __init__(self):
        import numpy as np

        self.np = np
        self.generator = f"numpy {np.__version__} float64, explicit masks (test only: not for commit)"

    def t(self, x):
        return self.np.array(x.values, dtype=self.np.float64).reshape(x.shape)

    def out(self, x):
        return array("d", self.np.ascontiguousarray(x, dtype=self.np.float64).reshape(-1).tolist())

    def _softmax(self, q, k, v, do, mask, scale):
        np = self.np
        group = q.shape[1] // k.shape[1]
        kk, vv = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        s = scale * q @ np.swapaxes(kk, -1, -2)
        mask = np.broadcast_to(mask, s.shape)
        has = mask.any(-1)
        m = np.where(has, np.where(mask, s, -np.inf).max(-1), 0.0)
        e = np.where(mask, np.exp(s - m[..., None]), 0.0)
        den = np.where(has, e.sum(-1), 1.0)
        p = e / den[..., None]
        o = p @ vv
        lse = np.where(has, m + np.log(den), -np.inf)
        res = {"o": o, "lse": lse}
        if do is not None:
            dp = do @ np.swapaxes(vv, -1, -2)
            ds = p * (dp - (do * o).sum(-1, keepdims=True))
            dq = scale * ds @ kk
            dkk = scale * np.swapaxes(ds, -1, -2) @ q
            dvv = np.swapaxes(p, -1, -2) @ do
            fold = lambda x: x.reshape(x.shape[0], k.shape[1], group, *x.shape[2:]).sum(2)
            res.update(dq=dq, dk=fold(dkk), dv=fold(dvv))
        return res

    def softmax(self, q, k, v, do, mask, scale):
        np = self.np
        res = self._softmax(self.t(q), self.t(k), self.t(v), None if do is None else self.t(do), np.array(mask), scale)
        return {n: self.out(x) for n, x in res.items()}

    def softmax_varlen(self, q, k, v, do, cu, scale):
        np = self.np
        qt, kt, vt, dot = self.t(q), self.t(k), self.t(v), self.t(do)
        res = {n: np.zeros(qt.shape[:2] + (vt.shape[2] if n in ("o", "dv") else qt.shape[2],)) for n in ("o", "dq", "dk", "dv")}
        for a, b in zip(cu[:-1], cu[1:]):
            n = b - a
            per = [x[a:b].transpose(1, 0, 2)[None] for x in (qt, kt, vt, dot)]
            r = self._softmax(*per, np.array(softmax_mask(n, n, True)), scale)
            for name in res:
                res[name][a:b] = r[name][0].transpose(1, 0, 2)
        return {n: self.out(x) for n, x in res.items()}

    def sigmoid(self, q, k, v, do, mask, scale, bias):
        np = self.np
        qt, kt, vt, dot = self.t(q), self.t(k), self.t(v), self.t(do)
        group = qt.shape[1] // kt.shape[1]
        kk, vv = np.repeat(kt, group, axis=1), np.repeat(vt, group, axis=1)
        s = scale * qt @ np.swapaxes(kk, -1, -2) + bias
        sig = 1.0 / (1.0 + np.exp(-s))
        p = np.where(np.array(mask), sig, 0.0)
        o = p @ vv
        dp = dot @ np.swapaxes(vv, -1, -2)
        ds = dp * p * (1.0 - sig)
        fold = lambda x: x.reshape(x.shape[0], kt.shape[1], group, *x.shape[2:]).sum(2)
        res = {
            "o": o,
            "dq": scale * ds @ kk,
            "dk": fold(scale * np.swapaxes(ds, -1, -2) @ qt),
            "dv": fold(np.swapaxes(p, -1, -2) @ dot),
        }
        return {n: self.out(x) for n, x in res.items()}

    def hstu(self, q, k, v, do, offsets, max_seq_len, alpha, rab):
        np = self.np
        qt, kt, vt, dot = self.t(q), self.t(k), self.t(v), self.t(do)
        rt = self.t(rab) if rab is not None else None
        res = {"o": np.zeros(vt.shape), "dq": np.zeros(qt.shape), "dk": np.zeros(kt.shape), "dv": np.zeros(vt.shape)}
        if rt is not None:
            res["drab"] = np.zeros(rt.shape)
        for b, (a, e) in enumerate(zip(offsets[:-1], offsets[1:])):
            n = e - a
            qb, kb, vb, dob = (x[a:e].transpose(1, 0, 2) for x in (qt, kt, vt, dot))
            z = alpha * qb @ np.swapaxes(kb, -1, -2)
            if rt is not None:
                z = z + rt[b, :, :n, :n]
            mask = np.array(tril(n))
            sig = 1.0 / (1.0 + np.exp(-z))
            att = np.where(mask, z * sig / max_seq_len, 0.0)
            res["o"][a:e] = (att @ vb).transpose(1, 0, 2)
            da = dob @ np.swapaxes(vb, -1, -2)
            dz = np.where(mask, da * sig * (1.0 + z * (1.0 - sig)) / max_seq_len, 0.0)
            res["dq"][a:e] = (alpha * dz @ kb).transpose(1, 0, 2)
            res["dk"][a:e] = (alpha * np.swapaxes(dz, -1, -2) @ qb).transpose(1, 0, 2)
            res["dv"][a:e] = (np.swapaxes(att, -1, -2) @ dob).transpose(1, 0, 2)
            if rt is not None:
                res["drab"][b, :, :n, :n] = dz
        return {n: self.out(x) for n, x in res.items()}

    def gla(self, q, k, v, gk, h0, do, dht, scale):
        np = self.np
        qt, kt, vt, gt, h, dot = (self.t(x) for x in (q, k, v, gk, h0, do))
        T = qt.shape[1]
        states = [h]
        o = np.zeros(vt.shape)
        for i in range(T):
            h = h * np.exp(gt[:, i])[..., None] + kt[:, i, :, :, None] * vt[:, i, :, None, :]
            states.append(h)
            o[:, i] = ((qt[:, i] * scale)[..., None] * h).sum(-2)
        dq, dk, dv, dg = (np.zeros(x.shape) for x in (qt, kt, vt, gt))
        dh = self.t(dht)
        for i in reversed(range(T)):
            dh = dh + (qt[:, i] * scale)[..., None] * dot[:, i, :, None, :]
            dq[:, i] = scale * (states[i + 1] * dot[:, i, :, None, :]).sum(-1)
            dk[:, i] = (dh * vt[:, i, :, None, :]).sum(-1)
            dv[:, i] = (dh * kt[:, i, :, :, None]).sum(-2)
            decay = np.exp(gt[:, i])
            dg[:, i] = (dh * states[i]).sum(-1) * decay
            dh = dh * decay[..., None]
        res = {"o": o, "ht": states[-1], "dq": dq, "dk": dk, "dv": dv, "dgk": dg, "dh0": dh}
        return {n: self.out(x) for n, x in res.items()}


# ---- the problems ---------------------------------------------------------------------------


def seeded(name):
    return Rng(zlib.crc32(name.encode()) + 0x5EED)


def softmax_case(name, B, Hq, Hkv, Nq, Nk, D, causal, window=None, block=None, grads=True):
    rng = seeded(name)
    Dv = D
    q = randn(rng, [B, Hq, Nq, D])
    k = randn(rng, [B, Hkv, Nk, D])
    v = randn(rng, [B, Hkv, Nk, Dv])
    do = randn(rng, [B, Hq, Nq, Dv]) if grads else None
    scale = 1 / math.sqrt(D)
    params = {"kind": "softmax", "layout": "BHND", "B": B, "Hq": Hq, "Hkv": Hkv, "Nq": Nq, "Nk": Nk, "D": D, "Dv": Dv}
    params.update(causal=causal, causal_alignment="bottom_right")
    if window is not None or block is not None:
        params["window"] = list(window) if window is not None else [-1, -1]
    params["scale"] = scale
    extra = {}
    if block is not None:
        mask, bq, bk = block
        params["block_sparse"] = {"blockQ": bq, "blockK": bk, "mask_tensor": "block_mask"}
        extra["block_mask"] = ("U8", [len(mask), len(mask[0])], bytes(int(x) for row in mask for x in row))
    else:
        params["gqa"] = "kv_head = q_head // (Hq/Hkv)"
    inputs = {"q": q, "k": k, "v": v}
    if do is not None:
        inputs["do"] = do
    m = softmax_mask(Nq, Nk, causal, window, block)
    shapes = {"o": [B, Hq, Nq, Dv], "lse": [B, Hq, Nq], "dq": q.shape, "dk": k.shape, "dv": v.shape}
    return params, inputs, extra, shapes, lambda be: be.softmax(q, k, v, do, m, scale)


def varlen_case(name, cu, H, D):
    rng = seeded(name)
    T = cu[-1]
    q, k, v, do = (randn(rng, [T, H, D]) for _ in range(4))
    scale = 1 / math.sqrt(D)
    params = {"kind": "softmax_varlen", "layout": "THD", "cu_seqlens": cu, "H": H, "D": D, "causal": True, "scale": scale}
    shapes = {n: [T, H, D] for n in ("o", "dq", "dk", "dv")}
    return params, {"q": q, "k": k, "v": v, "do": do}, {}, shapes, lambda be: be.softmax_varlen(q, k, v, do, cu, scale)


def sigmoid_case(name, B, Hq, Hkv, N, D, causal, window=None):
    rng = seeded(name)
    q = randn(rng, [B, Hq, N, D])
    k = randn(rng, [B, Hkv, N, D])
    v = randn(rng, [B, Hkv, N, D])
    do = randn(rng, [B, Hq, N, D])
    scale, bias = 1 / math.sqrt(D), -math.log(N)
    params = {"kind": "sigmoid", "layout": "BHND", "B": B, "H": Hq}
    if Hq != Hkv:
        params.update(Hq=Hq, Hkv=Hkv)
    params.update(Nq=N, Nk=N, D=D, causal=causal, causal_alignment="bottom_right", scale=scale, bias=bias)
    if window is not None:
        params["window"] = list(window)
    m = softmax_mask(N, N, causal, window)
    shapes = {"o": do.shape, "dq": q.shape, "dk": k.shape, "dv": v.shape}
    return params, {"q": q, "k": k, "v": v, "do": do}, {}, shapes, lambda be: be.sigmoid(q, k, v, do, m, scale, bias)


def hstu_case(name, offsets, max_seq_len, H, D, V, with_rab):
    rng = seeded(name)
    L, B = offsets[-1], len(offsets) - 1
    q, k = randn(rng, [L, H, D]), randn(rng, [L, H, D])
    v, do = randn(rng, [L, H, V]), randn(rng, [L, H, V])
    rab = randn(rng, [B, H, max_seq_len, max_seq_len], std=0.5) if with_rab else None
    params = {"kind": "hstu", "layout": "LHD", "seq_offsets": offsets, "max_seq_len": max_seq_len, "H": H, "D": D, "V": V, "alpha": 0.25, "causal": True}
    if with_rab:
        params["rab"] = "dense [B, H, max_seq_len, max_seq_len], added to alpha*q.k before silu, indexed by positions within each sequence"
        params["norm"] = "silu(alpha*qk + rab)/max_seq_len, mask includes diagonal"
    else:
        params["norm"] = "silu(alpha*qk)/max_seq_len, mask includes diagonal"
    inputs = {"q": q, "k": k, "v": v, "do": do}
    shapes = {"o": do.shape, "dq": q.shape, "dk": k.shape, "dv": v.shape}
    if rab is not None:
        inputs["rab"] = rab
        shapes["drab"] = rab.shape
    return params, inputs, {}, shapes, lambda be: be.hstu(q, k, v, do, offsets, max_seq_len, 0.25, rab)


def gla_case(name, B, T, H, K, V, h0_std):
    rng = seeded(name)
    q, k = randn(rng, [B, T, H, K]), randn(rng, [B, T, H, K])
    v = randn(rng, [B, T, H, V])
    gk = log_gates(rng, [B, T, H, K])
    h0 = randn(rng, [B, H, K, V], std=h0_std)
    do, dht = randn(rng, [B, T, H, V]), randn(rng, [B, H, K, V])
    scale = K**-0.5
    params = {"kind": "gla", "layout": "BTHK", "B": B, "T": T, "H": H, "K": K, "V": V, "scale": scale}
    params["gate"] = "log-space per-key decay gk (h_t = h_{t-1} * exp(gk_t) + k_t^T v_t)"
    inputs = {"q": q, "k": k, "v": v, "gk": gk, "h0": h0, "do": do, "dht": dht}
    shapes = {"o": v.shape, "ht": h0.shape, "dq": q.shape, "dk": k.shape, "dv": v.shape, "dgk": gk.shape, "dh0": h0.shape}
    return params, inputs, {}, shapes, lambda be: be.gla(q, k, v, gk, h0, do, dht, scale)


BLOCK_MASK = [[1, 0, 0], [1, 1, 0], [0, 1, 1]]

CASES = {
    # Odd lengths (no tile divides them), Nq != Nk both ways, GQA, empty rows, windows.
    "softmax_full": lambda n: softmax_case(n, 2, 2, 2, 29, 29, 16, False),
    "softmax_causal": lambda n: softmax_case(n, 1, 2, 2, 45, 45, 16, True),
    "softmax_causal_bottom_right": lambda n: softmax_case(n, 1, 2, 2, 13, 61, 16, True),
    "softmax_gqa": lambda n: softmax_case(n, 1, 8, 2, 21, 21, 16, False),
    "softmax_decode": lambda n: softmax_case(n, 1, 2, 2, 1, 201, 16, True, grads=False),
    "softmax_long": lambda n: softmax_case(n, 1, 1, 1, 257, 257, 16, True, grads=False),
    "softmax_varlen": lambda n: varlen_case(n, [0, 5, 38, 55], 2, 16),
    "softmax_window": lambda n: softmax_case(n, 1, 2, 2, 49, 49, 16, False, window=(10, 7)),
    "softmax_window_causal": lambda n: softmax_case(n, 1, 2, 2, 53, 53, 16, True, window=(20, -1)),
    "softmax_empty_rows": lambda n: softmax_case(n, 1, 2, 2, 40, 25, 16, True, window=(-1, -1)),
    "softmax_blocksparse": lambda n: softmax_case(n, 1, 2, 2, 96, 96, 8, False, block=(BLOCK_MASK, 32, 32)),
    "sigmoid_full": lambda n: sigmoid_case(n, 1, 2, 2, 45, 16, False),
    "sigmoid_causal": lambda n: sigmoid_case(n, 1, 2, 2, 40, 16, True),
    "sigmoid_gqa_window": lambda n: sigmoid_case(n, 1, 6, 2, 29, 16, True, window=(16, 0)),
    "hstu_causal": lambda n: hstu_case(n, [0, 7, 30, 48], 23, 2, 16, 12, False),
    "hstu_rab": lambda n: hstu_case(n, [0, 9, 27, 40], 18, 2, 16, 16, True),
    "gla": lambda n: gla_case(n, 2, 21, 2, 16, 16, 0.1),
    # Longer than one 256-token chunk (a ragged last chunk for any chunk size), K != V.
    "gla_long": lambda n: gla_case(n, 1, 263, 1, 8, 12, 1.0),
}


# ---- safetensors, by hand -------------------------------------------------------------------


def to_le(arr):
    if sys.byteorder != "little":
        arr = array(arr.typecode, arr)
        arr.byteswap()
    return arr.tobytes()


def safetensors_bytes(tensors, metadata):
    """tensors: name -> (dtype, shape, bytes). Data in name order, U8 last; header padded to 8."""
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors, key=lambda n: (tensors[n][0] == "U8", n)):
        dtype, shape, data = tensors[name]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(blobs)


def build(name, backend):
    params, inputs, extra, shapes, compute = CASES[name](name)
    refs = compute(backend)
    tensors = {n: ("F32", x.shape, to_le(x.f32)) for n, x in inputs.items()}
    tensors.update(extra)
    for n, arr in refs.items():
        if len(arr) != numel(shapes[n]):
            raise AssertionError(f"{name}: {n} has {len(arr)} values, expected shape {shapes[n]}")
        tensors[n] = ("F64", shapes[n], to_le(arr))
    meta = {"params": json.dumps(params), "generator": backend.generator}
    return safetensors_bytes(tensors, meta), refs


def rel_l2(a, b):
    num = den = 0.0
    for x, y in zip(a, b):
        if math.isinf(x) or math.isinf(y):
            if x != y:
                return math.inf
            continue
        num += (x - y) ** 2
        den += y * y
    return math.sqrt(num / den) if den > 0 else math.sqrt(num)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="goldens", help="output folder (default: goldens)")
    ap.add_argument("--backend", choices=("torch", "numpy"), default="torch", help="numpy: only to test this script")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu: the same bits on every machine)")
    ap.add_argument("--only", nargs="*", help="names of the files to write (default: all)")
    args = ap.parse_args(argv)

    backend = TorchBackend(args.device) if args.backend == "torch" else NumpyBackend()
    check = None
    if args.backend == "torch":
        try:
            check = NumpyBackend()
        except ImportError:
            print("numpy not importable: skipping the independent NumPy check", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for name in args.only or list(CASES):
        if name not in CASES:
            ap.error(f"--only: unknown golden {name!r} (known: {', '.join(CASES)})")
        data, refs = build(name, backend)
        if check is not None:
            other = CASES[name](name)[4](check)
            for n, arr in refs.items():
                err = rel_l2(other[n], arr)
                if not err <= 1e-12:
                    raise SystemExit(f"{name}: {n}: torch and the NumPy formulas differ (relative L2 {err:.3g})")
        with open(os.path.join(args.out, f"{name}.safetensors"), "wb") as f:
            f.write(data)
        total += len(data)
        print(f"{name}.safetensors {len(data)} bytes")
    print(f"{total} bytes in all ({backend.generator})")
    if not args.only and total > SIZE_LIMIT:
        raise SystemExit(f"the set is {total} bytes, over the {SIZE_LIMIT} byte budget: shrink a problem")


if __name__ == "__main__":
    main()
