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
import { nativeAvailable, nativeEngine } from '@attnkit/skeleton';
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

type Engine = NonNullable<ReturnType<typeof nativeEngine>>;

/** [first, first + n) when `rows` is one run of consecutive row indices, else undefined. */
function runOf(rows: Int32Array): number | undefined {
  const first = rows[0]!;
  for (let i = 1; i < rows.length; i++) if (rows[i] !== first + i) return undefined;
  return first;
}

/**
 * Gathers rows of q, k, v (and of o, dO in the backward) into the packed calls' inputs. One
 * scratch array per role, grown on demand and reused by the next packed call of the same
 * hyperAttention (fresh pages cost this VM as much as the copy); nothing outlives the call.
 * A single run of rows (the causal leaves of an MHA head, in order) is a view, no copy; on
 * the native backend the engine's nn.gather copies, else a copy per run of consecutive rows
 * (a subarray each: V8's element loop ran at ~4 ns a float).
 */
class Gatherer {
  private readonly scratch = new Map<string, Float32Array>();
  constructor(private readonly engine: Engine | undefined) {}

  rows(role: string, src: Float32Array, rows: Int32Array, width: number): Tensor {
    const n = rows.length * width;
    const first = rows.length > 0 ? runOf(rows) : 0;
    if (first !== undefined)
      return Tensor.from(src.subarray(first * width, first * width + n), [rows.length, 1, width]);
    let buf = this.scratch.get(role);
    if (!buf || buf.length < n) {
      buf = new Float32Array(n);
      this.scratch.set(role, buf);
    }
    const out = buf.subarray(0, n);
    if (this.engine) {
      this.engine.runSync(
        'nn.gather',
        { rows: src.length / width, dim: width, count: rows.length },
        { weight: src, ids: rows },
        { y: out },
      );
    } else {
      for (let r = 0; r < rows.length; ) {
        const at = rows[r]!;
        let end = r + 1;
        while (end < rows.length && rows[end] === at + (end - r)) end++;
        out.set(src.subarray(at * width, (at + end - r) * width), r * width);
        r = end;
      }
    }
    return Tensor.from(out, [rows.length, 1, width]);
  }
}

const f32Of = (t: Tensor): Float32Array =>
  t.dtype === 'f32' ? (t.contiguous().data() as Float32Array) : t.toFloat32Array();

/** Sequence positions q0..q1 of the block-row starting at `base`, as global row indices. */
const rangeRows = (base: number, a: number, b: number): Int32Array => {
  const out = new Int32Array(b - a);
  for (let i = 0; i < out.length; i++) out[i] = base + a + i;
  return out;
};

/** Bytes of one packed call's gathered q (or o): the cap on its query rows. */
const DEFAULT_CHUNK_BYTES = 16 << 20;
let CHUNK_BYTES = DEFAULT_CHUNK_BYTES;

/**
 * Sets the bytes of one packed call's gathered q (default 16 MiB; no argument restores it):
 * tests make calls of a few rows to run the chunked path on small shapes.
 * @internal
 */
export function setPackedCallBytes(bytes?: number): void {
  if (bytes !== undefined && !(Number.isInteger(bytes) && bytes > 0))
    throw new ValueError(
      `bytes: expected an integer > 0 or undefined, got ${describe(bytes)}`,
      'bytes',
    );
  CHUNK_BYTES = bytes ?? DEFAULT_CHUNK_BYTES;
}

/** The exact calls of one hyperAttention: causal leaves, non-causal rectangles + diagonal blocks, residuals. */
interface Packed {
  calls: { call: PackedCall; causal: boolean }[];
  Q: Float32Array;
  K: Float32Array;
  V: Float32Array;
}

/**
 * Every (batch, head) runs planHyperJobs' jobs; their pieces are packed into a few exact calls
 * (causal squares; non-causal rectangles; diagonal blocks and their residuals) whose rows
 * the forward merges through their LSEs. Deterministic for the seed, so the backward re-packs
 * the forward's very pieces (the same buckets and draws).
 */
function pack(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  r: ResolvedHyper,
  engine: Engine | undefined,
): Packed {
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
  const hash = (x: Float32Array, rows: number): Int32Array | undefined => {
    if (!lsh) return undefined;
    const out = new Int32Array(rows);
    if (!engine) return lsh.hashRows(x, 0, rows, out);
    // On the native backend the dot products run on the engine's GEMM (same buckets).
    return lsh.hashRowsWith(
      {
        gemm: (m, a, b, c) =>
          engine.runSync('gemm', { m, n: r.numProjections, k: d, transB: true }, { a, b }, { c }),
        sumSquares: (m, a, squares) => {
          // nn.sumSquares' partials: one chunk of D per row, at most 2^20 chunks a call.
          for (let i0 = 0; i0 < m; i0 += 1 << 20) {
            const n = Math.min(m - i0, 1 << 20);
            engine.runSync(
              'nn.sumSquares',
              { count: n * d, chunks: n },
              { x: a.subarray(i0 * d, (i0 + n) * d) },
              { partials: squares.subarray(i0, i0 + n) },
            );
          }
        },
      },
      x,
      rows,
      out,
    );
  };
  const qBucket = hash(Q, batch * hq * nq);
  const kBucket = hash(K, batch * hkv * nk);
  // The non-causal pieces go into calls of at most `cap` query rows, so the gathers' scratch
  // and each call's output stay bounded (about 16 MiB a tensor) however long the sequence and
  // many the heads: all at once they were several times q's size (each query row is in a
  // block of every recursion level above it). A diagonal-blocks call and its residuals call
  // hold the same rows (the forward merges them in place).
  const cap = Math.max(r.blockSize, Math.floor(CHUNK_BYTES / (4 * Math.max(d, p.dv))));
  const causalCall = new PackedCall();
  const rectCalls = [new PackedCall()];
  const diagCalls = [new PackedCall()];
  const residualCalls = [new PackedCall()];
  const rectCall = (rows: number): PackedCall => {
    if (rectCalls.at(-1)!.qRows.length + rows > cap) rectCalls.push(new PackedCall());
    return rectCalls.at(-1)!;
  };
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < hq; h++) {
      const qBase = (b * hq + h) * nq;
      const kBase = (b * hkv + Math.floor(h / group)) * nk;
      for (const job of jobs) {
        const qr = rangeRows(qBase, job.q0, job.q1);
        const kr = rangeRows(kBase, job.k0, job.k1);
        if (job.kind === 'exact') {
          (job.causal ? causalCall : rectCall(qr.length)).add(qr, kr, 0);
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
          if (diagCalls.at(-1)!.qRows.length + rows.length > cap) {
            diagCalls.push(new PackedCall());
            residualCalls.push(new PackedCall());
          }
          diagCalls.at(-1)!.add(rows, sk.subarray(ka, kb), 0);
          if (!samples) continue;
          // Draws in the query's own block are dropped: those keys are in the exact block.
          const [s0, s1] = blockRun(samples, ka, kb);
          const keys = new Int32Array(samples.length - (s1 - s0));
          for (let s = 0; s < s0; s++) keys[s] = sk[samples[s]!]!;
          for (let s = s1; s < samples.length; s++) keys[s - s1 + s0] = sk[samples[s]!]!;
          residualCalls.at(-1)!.add(rows, keys, logWeight);
        }
      }
    }
  }
  const calls = [
    { call: causalCall, causal: true },
    ...rectCalls.map((call) => ({ call, causal: false })),
    ...diagCalls.flatMap((call, i) => [
      { call, causal: false },
      { call: residualCalls[i]!, causal: false },
    ]),
  ].filter((c) => c.call.lseShift.length > 0);
  return { calls, Q, K, V: f32Of(v) };
}

const sameRows = (a: Int32Array, b: Int32Array): boolean => {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
};

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
  const engine = exact === 'native' ? nativeEngine() : undefined;
  const { calls, Q, K, V } = pack(q, k, v, r, engine);
  const gather = new Gatherer(engine);
  const rowsTotal = batch * hq * nq;
  let o: Float32Array | undefined;
  let lse: Float64Array | undefined;
  // Fresh rows: O = 0, LSE = -inf (no keys yet), what every merge starts from.
  const fresh = (): [Float32Array, Float64Array] => [
    new Float32Array(rowsTotal * dv),
    new Float64Array(rowsTotal).fill(Number.NEGATIVE_INFINITY),
  ];
  // A call's rows wait here: the residuals' rows are the diagonal blocks' (same order), so
  // their results merge row by row in place before one scattered merge into o (the scattered
  // pass over o, rows in LSH order, is the costly one).
  let pending: { rows: Int32Array; t: Tensor; o: Float32Array; lse: Float64Array } | undefined;
  const flush = () => {
    if (!pending) return;
    if (!o || !lse) [o, lse] = fresh();
    const { rows, o: po, lse: pl } = pending;
    for (let t = 0; t < rows.length; t++) mergeSoftmaxRow(o, lse, rows[t]!, dv, po, t * dv, pl[t]!);
    pending = undefined;
  };
  for (const { call, causal } of calls) {
    const qRows = call.qRows.view();
    const kRows = call.kRows.view();
    const cuQ = call.cuQ.view();
    const same = pending !== undefined && sameRows(pending.rows, qRows);
    const qt = same ? pending!.t : gather.rows('q', Q, qRows, d);
    const res = await flashAttention(
      qt,
      gather.rows('k', K, kRows, d),
      gather.rows('v', V, kRows, dv),
      thd(call, causal, scale, exact),
    );
    const po = f32Of(res.o);
    const pl = f32Of(res.lse);
    // Each row's LSE with its piece's shift (the residuals' log importance weight).
    const rowLse = new Float64Array(qRows.length);
    for (let sq = 0; sq < call.lseShift.length; sq++) {
      const shift = call.lseShift[sq]!;
      for (let t = cuQ[sq]!; t < cuQ[sq + 1]!; t++) rowLse[t] = pl[t]! + shift;
    }
    if (same) {
      const p = pending!;
      for (let t = 0; t < qRows.length; t++)
        mergeSoftmaxRow(p.o, p.lse, t, dv, po, t * dv, rowLse[t]!);
      continue;
    }
    flush();
    if (!o && qRows.length === rowsTotal && runOf(qRows) === 0) {
      // The first call covers every row in order (the causal leaves of MHA heads, one exact
      // job): its output is the accumulator, nothing to merge.
      o = po;
      lse = rowLse;
      continue;
    }
    // qt may view the q scratch: only the next call reads it (when its rows are these),
    // before any new gather of q.
    pending = { rows: qRows, t: qt, o: po, lse: rowLse };
  }
  flush();
  if (!o || !lse) [o, lse] = fresh();
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
  const engine = exact === 'native' ? nativeEngine() : undefined;
  const { calls, Q, K, V } = pack(t.q, t.k, t.v, r, engine);
  const gather = new Gatherer(engine);
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
      gather.rows('q', Q, qRows, d),
      gather.rows('k', K, kRows, d),
      gather.rows('v', V, kRows, dv),
      gather.rows('o', O, qRows, dv),
      Tensor.from(lse, [1, qRows.length]),
      gather.rows('do', dOf, qRows, dv),
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
