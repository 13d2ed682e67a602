import {
  type KernelRequest,
  type KernelTensors,
  registerKernel,
  selectKernel,
} from '@attnkit/attention';
import {
  flashAttention,
  flashAttentionBackward,
  loadNativeBackend,
} from '@attnkit/flash-attention';
import { nativeAvailable } from '@attnkit/skeleton';
import { describe, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { mergeSoftmaxRow } from './combine.js';
import { AngularLsh, isTensorLike, sortByBucket } from './lsh.js';
import {
  type HyperAttentionOptions,
  type HyperAttentionResult,
  type HyperBackend,
  type ResolvedHyper,
  resolveHyper,
} from './options.js';
import { diagonalBlocks, planHyperJobs } from './plan.js';
import { blockRun, sampleKeys } from './sampler.js';
import { hyperBackwardWebGpu, hyperForwardWebGpu } from './webgpu/host.js';

/** A growable Int32 list. */
class IntList {
  data = new Int32Array(1024);
  length = 0;
  push(x: number): void {
    if (this.length === this.data.length) {
      const next = new Int32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = x;
  }
  view(): Int32Array {
    return this.data.subarray(0, this.length);
  }
}

/**
 * One exact FlashAttention call over many small attention problems packed as THD sequences of
 * one head: sequence s reads the query rows qRows[cuQ[s]..cuQ[s+1]) and key rows
 * kRows[cuK[s]..cuK[s+1]) (global row indices of q [B*Hq*Nq, D] and k [B*Hkv*Nk, D]), and its
 * LSE is shifted by lseShift[s] (the log importance weight of a residual). The diagonal blocks
 * of every (batch, head, job) are one call: the blocks laid out as a batch dimension, so the
 * ts and native kernels of @attnkit/flash-attention run them as they run any varlen batch.
 */
class PackedCall {
  readonly qRows = new IntList();
  readonly kRows = new IntList();
  readonly cuQ = new IntList();
  readonly cuK = new IntList();
  readonly lseShift: number[] = [];
  constructor() {
    this.cuQ.push(0);
    this.cuK.push(0);
  }
  add(qRows: ArrayLike<number>, kRows: ArrayLike<number>, shift: number): void {
    if (qRows.length === 0 || kRows.length === 0) return;
    for (let i = 0; i < qRows.length; i++) this.qRows.push(qRows[i]!);
    for (let j = 0; j < kRows.length; j++) this.kRows.push(kRows[j]!);
    this.cuQ.push(this.qRows.length);
    this.cuK.push(this.kRows.length);
    this.lseShift.push(shift);
  }
}

function gatherRows(src: Float32Array, rows: Int32Array, width: number): Tensor {
  const out = new Float32Array(rows.length * width);
  // A plain loop: a subarray view per row costs more than copying its 64 floats.
  for (let r = 0, o = 0; r < rows.length; r++) {
    const at = rows[r]! * width;
    for (let c = 0; c < width; c++) out[o++] = src[at + c]!;
  }
  return Tensor.from(out, [rows.length, 1, width]);
}

const f32Of = (t: Tensor): Float32Array =>
  t.dtype === 'f32' ? (t.contiguous().data() as Float32Array) : t.toFloat32Array();

/** Sequence positions q0..q1 of the block-row starting at `base`, as global row indices. */
const rangeRows = (base: number, a: number, b: number): Int32Array => {
  const out = new Int32Array(b - a);
  for (let i = 0; i < out.length; i++) out[i] = base + a + i;
  return out;
};

/** The exact calls of one hyperAttention: causal leaves, non-causal rectangles + diagonal blocks, residuals. */
interface Packed {
  calls: { call: PackedCall; causal: boolean }[];
  Q: Float32Array;
  K: Float32Array;
  V: Float32Array;
}

/**
 * Every (batch, head) runs planHyperJobs' jobs; their pieces are packed into at most three
 * exact calls (causal squares; non-causal rectangles and diagonal blocks; residuals) whose rows
 * the forward merges through their LSEs. Deterministic for the seed, so the backward re-packs
 * the forward's very pieces (the same buckets and draws).
 */
function pack(q: Tensor, k: Tensor, v: Tensor, r: ResolvedHyper): Packed {
  const { p } = r;
  const { batch, hq, hkv, group, d } = p;
  const nq = p.maxSeqQ;
  const nk = p.maxSeqK;
  const Q = f32Of(q);
  const K = f32Of(k);
  const jobs = planHyperJobs(nq, nk, r.causal, r.minSeqLen);
  // One generator: the hyperplanes first, then the samples of each (batch, head, job) in order.
  const rng = new Rng(r.seed);
  const hyper = jobs.some((j) => j.kind === 'hyper');
  const lsh = hyper ? new AngularLsh({ numProjections: r.numProjections, dim: d, rng }) : undefined;
  // Hashed once per row: the recursion's jobs reuse the buckets (the paper re-hashes with the
  // same hyperplanes, which gives the same buckets). kv rows once per kv head (GQA).
  const qBucket = lsh?.hashRows(Q, 0, batch * hq * nq, new Int32Array(batch * hq * nq));
  const kBucket = lsh?.hashRows(K, 0, batch * hkv * nk, new Int32Array(batch * hkv * nk));
  const causalCall = new PackedCall();
  const fullCall = new PackedCall();
  const residualCall = new PackedCall();
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < hq; h++) {
      const qBase = (b * hq + h) * nq;
      const kBase = (b * hkv + Math.floor(h / group)) * nk;
      for (const job of jobs) {
        const qr = rangeRows(qBase, job.q0, job.q1);
        const kr = rangeRows(kBase, job.k0, job.k1);
        if (job.kind === 'exact') {
          (job.causal ? causalCall : fullCall).add(qr, kr, 0);
          continue;
        }
        const sq = sortByBucket(qr, qBucket!, r.numProjections);
        const sk = sortByBucket(kr, kBucket!, r.numProjections);
        const blocks = diagonalBlocks(qr.length, kr.length, r.blockSize);
        const samples =
          r.sampleSize > 0 && blocks.count > 1
            ? sampleKeys(kr.length, r.sampleSize, rng)
            : undefined;
        const logWeight = Math.log(kr.length / r.sampleSize);
        for (let c = 0; c < blocks.count; c++) {
          const [qa, qb] = blocks.q(c);
          const [ka, kb] = blocks.k(c);
          if (qa === qb) continue;
          const rows = sq.subarray(qa, qb);
          fullCall.add(rows, sk.subarray(ka, kb), 0);
          if (!samples) continue;
          // Draws in the query's own block are dropped: those keys are in the exact block.
          const [s0, s1] = blockRun(samples, ka, kb);
          const keys = new Int32Array(samples.length - (s1 - s0));
          for (let s = 0; s < s0; s++) keys[s] = sk[samples[s]!]!;
          for (let s = s1; s < samples.length; s++) keys[s - s1 + s0] = sk[samples[s]!]!;
          residualCall.add(rows, keys, logWeight);
        }
      }
    }
  }
  const calls = [
    { call: causalCall, causal: true },
    { call: fullCall, causal: false },
    { call: residualCall, causal: false },
  ].filter((c) => c.call.lseShift.length > 0);
  return { calls, Q, K, V: f32Of(v) };
}

/** THD options of one packed call. */
const thd = (call: PackedCall, causal: boolean, scale: number, backend: HyperBackend) => ({
  layout: 'THD' as const,
  cuSeqlensQ: call.cuQ.view(),
  cuSeqlensK: call.cuK.view(),
  scale,
  causal,
  backend,
});

/** The forward on cpu tensors, the exact pieces on `exact` (FlashAttention's ts or native kernels). */
async function hyperForwardCpu(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  r: ResolvedHyper,
  exact: HyperBackend,
): Promise<HyperAttentionResult> {
  const { batch, hq, d, dv, scale } = r.p;
  const nq = r.p.maxSeqQ;
  const { calls, Q, K, V } = pack(q, k, v, r);
  const o = new Float32Array(batch * hq * nq * dv);
  const lse = new Float64Array(batch * hq * nq).fill(Number.NEGATIVE_INFINITY);
  for (const { call, causal } of calls) {
    const qRows = call.qRows.view();
    const kRows = call.kRows.view();
    const cuQ = call.cuQ.view();
    const res = await flashAttention(
      gatherRows(Q, qRows, d),
      gatherRows(K, kRows, d),
      gatherRows(V, kRows, dv),
      thd(call, causal, scale, exact),
    );
    const po = f32Of(res.o);
    const pl = f32Of(res.lse);
    for (let s = 0; s < call.lseShift.length; s++) {
      const shift = call.lseShift[s]!;
      for (let t = cuQ[s]!; t < cuQ[s + 1]!; t++)
        mergeSoftmaxRow(o, lse, qRows[t]!, dv, po, t * dv, pl[t]! + shift);
    }
  }
  const oT = Tensor.from(o, [batch, hq, nq, dv]);
  return {
    o: q.dtype === 'f32' ? oT : oT.astype(q.dtype),
    ...(r.returnLse ? { lse: Tensor.from(Float32Array.from(lse), [batch, hq, nq]) } : {}),
  };
}

/**
 * The gradient of the estimator (as the paper's implementation differentiates it: through its
 * exact attention calls and their LSE merge). The estimate of row i is one softmax over the
 * multiset of its keys with log weights (0 in exact pieces, log(Nk / m) for draws):
 * O_i = sum_j e^(S_ij + w_j - LSE_i) v_j. So each packed call's FlashAttention backward, given the
 * final O, the final LSE minus the call's shift and dO, yields exactly that softmax's dS on its
 * keys (D_i = dO_i . O_i of the whole estimate); its dq, dk, dv rows are scattered-added back
 * (dk, dv summed over the query heads of a kv head and over repeated draws).
 */
async function hyperBackwardCpu(
  t: { q: Tensor; k: Tensor; v: Tensor; o: Tensor; lse: Tensor; dO: Tensor },
  r: ResolvedHyper,
  exact: HyperBackend,
): Promise<HyperGrads> {
  const { batch, hq, hkv, d, dv, scale } = r.p;
  const nq = r.p.maxSeqQ;
  const nk = r.p.maxSeqK;
  const { calls, Q, K, V } = pack(t.q, t.k, t.v, r);
  const O = f32Of(t.o);
  const L = f32Of(t.lse);
  const dOf = f32Of(t.dO);
  const dq = new Float32Array(batch * hq * nq * d);
  const dk = new Float32Array(batch * hkv * nk * d);
  const dvAcc = new Float32Array(batch * hkv * nk * dv);
  const scatterAdd = (dst: Float32Array, rows: Int32Array, src: Float32Array, width: number) => {
    for (let i = 0, at = 0; i < rows.length; i++) {
      const base = rows[i]! * width;
      for (let c = 0; c < width; c++) dst[base + c]! += src[at++]!;
    }
  };
  for (const { call, causal } of calls) {
    const qRows = call.qRows.view();
    const kRows = call.kRows.view();
    const cuQ = call.cuQ.view();
    const lse = new Float32Array(qRows.length);
    for (let s = 0; s < call.lseShift.length; s++)
      for (let i = cuQ[s]!; i < cuQ[s + 1]!; i++) lse[i] = L[qRows[i]!]! - call.lseShift[s]!;
    const g = await flashAttentionBackward(
      gatherRows(Q, qRows, d),
      gatherRows(K, kRows, d),
      gatherRows(V, kRows, dv),
      gatherRows(O, qRows, dv),
      Tensor.from(lse, [1, qRows.length]),
      gatherRows(dOf, qRows, dv),
      thd(call, causal, scale, exact),
    );
    scatterAdd(dq, qRows, f32Of(g.dq), d);
    scatterAdd(dk, kRows, f32Of(g.dk), d);
    scatterAdd(dvAcc, kRows, f32Of(g.dv), dv);
  }
  const cast = (x: Float32Array, shape: number[]) => {
    const out = Tensor.from(x, shape);
    return t.q.dtype === 'f32' ? out : out.astype(t.q.dtype);
  };
  return {
    dq: cast(dq, [batch, hq, nq, d]),
    dk: cast(dk, [batch, hkv, nk, d]),
    dv: cast(dvAcc, [batch, hkv, nk, dv]),
  };
}

export interface HyperGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

function checkLike(t: unknown, name: string, shape: readonly number[]): Tensor {
  if (!isTensorLike(t))
    throw new ValueError(`${name}: expected a Tensor, got ${describe(t)}`, name);
  if (t.shape.length !== shape.length || t.shape.some((x, i) => x !== shape[i]))
    throw new ShapeError(
      `${name}: expected shape [${shape.join(', ')}], got [${t.shape.join(', ')}]`,
      name,
    );
  return t;
}

const BACKENDS: readonly Exclude<HyperBackend, 'webgpu'>[] = ['native', 'ts'];

for (const backend of BACKENDS) {
  const common = {
    family: 'hyper',
    backend,
    priority: backend === 'native' ? 20 : 10,
    devices: ['cpu'],
    ...(backend === 'native' ? { available: nativeAvailable } : {}),
    supports: (req: KernelRequest) =>
      req.dtype === 'f64'
        ? 'f64 inputs: the kernels compute in f32 (softmaxAttentionReference is the float64 path)'
        : true,
  } as const;
  registerKernel({
    ...common,
    pass: 'forward',
    // The estimator's o is what callers compare (its lse only with returnLse).
    outputs: ['o'],
    run: async (t, options) => {
      const { q, k, v } = t as { q: Tensor; k: Tensor; v: Tensor };
      const res = await hyperForwardCpu(q, k, v, resolveHyper(q, k, v, options), backend);
      const out: KernelTensors = { o: res.o };
      if (res.lse) out.lse = res.lse;
      return out;
    },
  });
  registerKernel({
    ...common,
    pass: 'backward',
    outputs: ['dq', 'dk', 'dv'],
    run: async (t, options) => {
      const { q, k, v } = t as { q: Tensor; k: Tensor; v: Tensor };
      const r = resolveHyper(q, k, v, options);
      const { batch, hq, dv } = r.p;
      const oShape = [batch, hq, r.p.maxSeqQ, dv];
      const grads = await hyperBackwardCpu(
        {
          q,
          k,
          v,
          o: checkLike(t.o, 'o', oShape),
          lse: checkLike(t.lse, 'lse', oShape.slice(0, 3)),
          dO: checkLike(t.do, 'dO', oShape),
        },
        r,
        backend,
      );
      return { ...grads };
    },
  });
}

/**
 * WebGPU (webgpu tensors, f32): the hash, the sort, the gathers and the combine in WGSL
 * (./webgpu), the exact pieces on FlashAttention's WGSL kernels; nothing read back.
 */
const webgpuCommon = {
  family: 'hyper',
  backend: 'webgpu',
  priority: 30,
  devices: ['webgpu'],
  supports: (req: KernelRequest) =>
    req.dtype === 'f32'
      ? true
      : `${req.dtype} inputs: the WebGPU hyperAttention reads f32 storage (convert with astype('f32') before toWebGpu)`,
} as const;

registerKernel({
  ...webgpuCommon,
  pass: 'forward',
  outputs: ['o'],
  run: async (t, options) => {
    const { q, k, v } = t as { q: Tensor; k: Tensor; v: Tensor };
    const r = resolveHyper(q, k, v, options);
    const res = await hyperForwardWebGpu({ q, k, v }, r);
    const out: KernelTensors = { o: res.o };
    if (r.returnLse) out.lse = res.lse;
    else res.lse.dispose();
    return out;
  },
});

registerKernel({
  ...webgpuCommon,
  pass: 'backward',
  outputs: ['dq', 'dk', 'dv'],
  run: async (t, options) => {
    const { q, k, v } = t as { q: Tensor; k: Tensor; v: Tensor };
    const r = resolveHyper(q, k, v, options);
    const { batch, hq, dv } = r.p;
    const oShape = [batch, hq, r.p.maxSeqQ, dv];
    return {
      ...(await hyperBackwardWebGpu(
        {
          q,
          k,
          v,
          o: checkLike(t.o, 'o', oShape),
          lse: checkLike(t.lse, 'lse', oShape.slice(0, 3)),
          dO: checkLike(t.do, 'dO', oShape),
        },
        r,
      )),
    };
  },
});

async function dispatch(
  pass: 'forward' | 'backward',
  inputs: KernelTensors,
  options: HyperAttentionOptions,
): Promise<KernelTensors> {
  const { q, k, v } = inputs as { q: Tensor; k: Tensor; v: Tensor };
  const r = resolveHyper(q, k, v, options);
  if (q.device === 'cpu') await loadNativeBackend();
  const reg = selectKernel(
    {
      family: 'hyper',
      pass,
      device: q.device,
      dtype: q.dtype,
      options: options as Record<string, unknown>,
    },
    options.backend,
  );
  return reg.run(inputs, { ...options, returnLse: r.returnLse });
}

/**
 * HyperAttention (Han et al. 2023): softmax attention approximated in near-linear time. Queries
 * and keys are sorted by an angular LSH (AngularLsh, Gray-ordered buckets) and attention is exact
 * inside the diagonal blocks of `blockSize` keys of the sorted order; the rest of each row's
 * softmax is estimated from `sampleSize` uniformly drawn keys with importance weight
 * Nk / sampleSize (draws in the query's own block dropped); the two partial softmax results are
 * merged through their LSEs. Causal runs the paper's recursion (two causal halves + the
 * non-causal bottom-left block), exact below `minSeqLen`.
 *
 * q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (BHND) cpu tensors in f32, f16 or
 * bf16; GQA (query head h reads kv head floor(h / (Hq / Hkv))), Nq != Nk. The exact pieces run on
 * FlashAttention's kernels (native when its addon loads, else ts; `backend` overrides). A row
 * without keys gives O = 0 and LSE = -Infinity. Deterministic for a `seed`.
 */
export async function hyperAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: HyperAttentionOptions = {},
): Promise<HyperAttentionResult> {
  const out = await dispatch('forward', { q, k, v }, options);
  return out.lse ? { o: out.o!, lse: out.lse } : { o: out.o! };
}

/**
 * Gradients dq, dk, dv of the estimate hyperAttention computed with the same options (the same
 * seed: the same buckets and draws), given its o and lse (`returnLse: true`) and the upstream
 * gradient dO [B, Hq, Nq, Dv]: the gradient of the estimator, not of exact attention.
 */
export async function hyperAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: HyperAttentionOptions = {},
): Promise<HyperGrads> {
  const out = await dispatch('backward', { q, k, v, o, lse, do: dO }, options);
  return { dq: out.dq!, dk: out.dk!, dv: out.dv! };
}
