import { Rng } from '@attnkit/tensor';
import { AngularLsh } from '../lsh.js';
import type { ResolvedHyper } from '../options.js';
import { diagonalBlocks, type HyperJob, planHyperJobs } from '../plan.js';
import { blockRun, sampleKeys } from '../sampler.js';
import { RADIX_BITS, RADIX_CHUNK } from './kernels.js';

/**
 * The WebGPU plan of one hyperAttention call: what ../attention.ts `pack` builds on the CPU,
 * without the data. The sorted order of the rows is only known on the GPU, so a packed row is
 * a reference: >= 0 a global row (q [B*Hq*Nq], k [B*Hkv*Nk]), < 0 the position -1 - ref of the
 * sorted ids (./kernels.ts resolveKernel). Positions in the sorted order, the blocks, the draws
 * (the same seeded Rng, consumed in the same order as `pack`: the hyperplanes first, then the
 * draws of each (batch, head, job)) and so the packed calls' sequence lengths are all known
 * here, so the GPU work needs nothing read back.
 */

/** A segmented sort: the ids to sort in place, their chunks and segments (./kernels.ts). */
export interface SortPlan {
  /** Initial ids (global bucket indices: q rows, then qTotal + k rows), segment after segment. */
  ids: Uint32Array;
  /** 4 u32 per chunk: first position, length (<= RADIX_CHUNK), 0, 0. */
  chunks: Uint32Array;
  /** 4 u32 per segment: first chunk, chunk count, first position, 0. */
  segments: Uint32Array;
  numChunks: number;
  numSegments: number;
  /** Radix passes: ceil(numProjections / 8). */
  passes: number;
}

/** One packed FlashAttention call (THD, one head) and its merge layers. */
export interface GpuCall {
  causal: boolean;
  qRef: Int32Array;
  kRef: Int32Array;
  cuQ: Int32Array;
  cuK: Int32Array;
  /** Per packed query row: the log importance weight of its piece (0 for exact pieces). */
  shift: Float32Array;
  /** Packed query rows per merge layer: within a layer every output row appears once. */
  layers: Uint32Array[];
}

export interface GpuPlan {
  /** The hyperplanes [P, D] as f32 (absent when every job is exact). */
  projections?: Float32Array;
  sort?: SortPlan;
  /** B * Hq * Nq: where k's ids start in the bucket array. */
  qTotal: number;
  /** Calls grouped in waves of (batch, head) pairs, each wave's calls at most ~maxRows rows. */
  waves: GpuCall[][];
}

class Ints {
  data: Int32Array;
  length = 0;
  constructor(capacity = 1024) {
    this.data = new Int32Array(Math.max(16, capacity));
  }
  push(x: number): void {
    if (this.length === this.data.length) {
      const next = new Int32Array(this.data.length * 2);
      next.set(this.data);
      this.data = next;
    }
    this.data[this.length++] = x;
  }
  view(): Int32Array {
    return this.data.slice(0, this.length);
  }
}

class CallBuilder {
  readonly qRef = new Ints();
  readonly kRef = new Ints();
  readonly cuQ = new Ints(64);
  readonly cuK = new Ints(64);
  readonly shift: number[] = [];
  readonly layerRows: Ints[] = [];
  constructor(readonly causal: boolean) {
    this.cuQ.push(0);
    this.cuK.push(0);
  }
  get rows(): number {
    return Math.max(this.qRef.length, this.kRef.length);
  }
  add(q: ArrayLike<number>, k: ArrayLike<number>, shift: number, layer: number): void {
    if (q.length === 0 || k.length === 0) return;
    while (this.layerRows.length <= layer) this.layerRows.push(new Ints());
    const rows = this.layerRows[layer]!;
    for (let i = 0; i < q.length; i++) {
      rows.push(this.qRef.length);
      this.qRef.push(q[i]!);
      this.shift.push(shift);
    }
    for (let j = 0; j < k.length; j++) this.kRef.push(k[j]!);
    this.cuQ.push(this.qRef.length);
    this.cuK.push(this.kRef.length);
  }
  build(): GpuCall | undefined {
    if (this.cuQ.length === 1) return undefined;
    return {
      causal: this.causal,
      qRef: this.qRef.view(),
      kRef: this.kRef.view(),
      cuQ: this.cuQ.view(),
      cuK: this.cuK.view(),
      shift: Float32Array.from(this.shift),
      layers: this.layerRows.filter((l) => l.length > 0).map((l) => Uint32Array.from(l.view())),
    };
  }
}

/** Layer of each non-causal job: overlapping query ranges get different layers (greedy coloring). */
function jobLayers(jobs: HyperJob[]): number[] {
  const layer: number[] = [];
  jobs.forEach((job, i) => {
    if (job.causal) {
      layer.push(0);
      return;
    }
    const taken = new Set<number>();
    for (let j = 0; j < i; j++) {
      const o = jobs[j]!;
      if (!o.causal && o.q0 < job.q1 && job.q0 < o.q1) taken.add(layer[j]!);
    }
    let l = 0;
    while (taken.has(l)) l++;
    layer.push(l);
  });
  return layer;
}

const range = (base: number, a: number, b: number): Int32Array => {
  const out = new Int32Array(b - a);
  for (let i = 0; i < out.length; i++) out[i] = base + a + i;
  return out;
};

/** Sorted positions start + [a, b) as references (-1 - position). */
const sortedRefs = (start: number, a: number, b: number): Int32Array => {
  const out = new Int32Array(b - a);
  for (let i = 0; i < out.length; i++) out[i] = -1 - (start + a + i);
  return out;
};

/**
 * The sort plan of segments [base, base + len) of global ids: ids base..base+len-1 in place,
 * segment after segment.
 */
export function segmentSortPlan(
  segs: readonly { base: number; len: number }[],
  numProjections: number,
): SortPlan {
  const total = segs.reduce((a, s) => a + s.len, 0);
  const ids = new Uint32Array(total);
  const chunks: number[] = [];
  const segments: number[] = [];
  let at = 0;
  for (const s of segs) {
    const first = chunks.length / 4;
    for (let i = 0; i < s.len; i++) ids[at + i] = s.base + i;
    for (let c = 0; c < s.len; c += RADIX_CHUNK)
      chunks.push(at + c, Math.min(RADIX_CHUNK, s.len - c), 0, 0);
    segments.push(first, chunks.length / 4 - first, at, 0);
    at += s.len;
  }
  return {
    ids,
    chunks: Uint32Array.from(chunks.length ? chunks : [0, 0, 0, 0]),
    segments: Uint32Array.from(segments.length ? segments : [0, 0, 0, 0]),
    numChunks: chunks.length / 4,
    numSegments: segments.length / 4,
    passes: Math.ceil(numProjections / RADIX_BITS),
  };
}

/** The plan (see the module comment); `maxRows` bounds the packed rows of a wave's calls. */
export function planHyperGpu(r: ResolvedHyper, maxRows: number): GpuPlan {
  const { batch, hq, hkv, group, d } = r.p;
  const nq = r.p.maxSeqQ;
  const nk = r.p.maxSeqK;
  const jobs = planHyperJobs(nq, nk, r.causal, r.minSeqLen);
  const layers = jobLayers(jobs);
  const rng = new Rng(r.seed);
  const hyperIdx = jobs.flatMap((j, i) => (j.kind === 'hyper' ? [i] : []));
  const qTotal = batch * hq * nq;
  const plan: GpuPlan = { qTotal, waves: [] };
  // Sorted positions of each hyper job's q rows per (b, h) and k rows per (b, kv head).
  const qSeg = new Map<string, number>();
  const kSeg = new Map<string, number>();
  if (hyperIdx.length > 0) {
    const lsh = new AngularLsh({ numProjections: r.numProjections, dim: d, rng });
    plan.projections = Float32Array.from(lsh.projections);
    const segs: { base: number; len: number }[] = [];
    let at = 0;
    for (let b = 0; b < batch; b++)
      for (let h = 0; h < hq; h++)
        for (const ji of hyperIdx) {
          const job = jobs[ji]!;
          qSeg.set(`${b},${h},${ji}`, at);
          segs.push({ base: (b * hq + h) * nq + job.q0, len: job.q1 - job.q0 });
          at += job.q1 - job.q0;
        }
    for (let b = 0; b < batch; b++)
      for (let g = 0; g < hkv; g++)
        for (const ji of hyperIdx) {
          const job = jobs[ji]!;
          kSeg.set(`${b},${g},${ji}`, at);
          segs.push({ base: qTotal + (b * hkv + g) * nk + job.k0, len: job.k1 - job.k0 });
          at += job.k1 - job.k0;
        }
    plan.sort = segmentSortPlan(segs, r.numProjections);
  }
  let wave = [new CallBuilder(true), new CallBuilder(false), new CallBuilder(false)] as const;
  const flush = () => {
    const calls = wave.map((c) => c.build()).filter((c): c is GpuCall => c !== undefined);
    if (calls.length > 0) plan.waves.push(calls);
    wave = [new CallBuilder(true), new CallBuilder(false), new CallBuilder(false)] as const;
  };
  let perHead = 0;
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < hq; h++) {
      const before = Math.max(...wave.map((c) => c.rows));
      if (before > 0 && before + perHead > maxRows) flush();
      const start = Math.max(...wave.map((c) => c.rows));
      const [causalCall, fullCall, residualCall] = wave;
      const qBase = (b * hq + h) * nq;
      const g = Math.floor(h / group);
      const kBase = (b * hkv + g) * nk;
      jobs.forEach((job, ji) => {
        if (job.kind === 'exact') {
          (job.causal ? causalCall : fullCall).add(
            range(qBase, job.q0, job.q1),
            range(kBase, job.k0, job.k1),
            0,
            layers[ji]!,
          );
          return;
        }
        const qs = qSeg.get(`${b},${h},${ji}`)!;
        const ks = kSeg.get(`${b},${g},${ji}`)!;
        const nqJob = job.q1 - job.q0;
        const nkJob = job.k1 - job.k0;
        const blocks = diagonalBlocks(nqJob, nkJob, r.blockSize);
        const samples =
          r.sampleSize > 0 && blocks.count > 1 ? sampleKeys(nkJob, r.sampleSize, rng) : undefined;
        const logWeight = Math.log(nkJob / r.sampleSize);
        for (let c = 0; c < blocks.count; c++) {
          const [qa, qb] = blocks.q(c);
          const [ka, kb] = blocks.k(c);
          if (qa === qb) continue;
          const rows = sortedRefs(qs, qa, qb);
          fullCall.add(rows, sortedRefs(ks, ka, kb), 0, layers[ji]!);
          if (!samples) continue;
          // Draws in the query's own block are dropped (as `pack`): those keys are exact.
          const [s0, s1] = blockRun(samples, ka, kb);
          const keys = new Int32Array(samples.length - (s1 - s0));
          for (let s = 0; s < s0; s++) keys[s] = -1 - (ks + samples[s]!);
          for (let s = s1; s < samples.length; s++) keys[s - s1 + s0] = -1 - (ks + samples[s]!);
          residualCall.add(rows, keys, logWeight, layers[ji]!);
        }
      });
      perHead = Math.max(...wave.map((c) => c.rows)) - start;
    }
  }
  flush();
  return plan;
}
