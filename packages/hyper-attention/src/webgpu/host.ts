import { flashAttention, flashAttentionBackward } from '@attnkit/flash-attention';
import { Tensor, ValueError } from '@attnkit/tensor';
import {
  type ComputeStep,
  packUniform,
  type WebGpuContext,
  WebGpuStorage,
  webGpuStorageOf,
} from '@attnkit/webgpu';
import type { ResolvedHyper } from '../options.js';
import {
  gatherKernel,
  gatherLseKernel,
  HYPER_THREADS,
  type HyperKernel,
  hashKernel,
  initOutKernel,
  localIndexKernel,
  mergeKernel,
  RADIX_BITS,
  radixHistKernel,
  radixScanKernel,
  radixScatterKernel,
  resolveKernel,
  scatterAddKernel,
  zeroKernel,
} from './kernels.js';
import {
  type GpuCall,
  type GpuPlan,
  planHyperGpu,
  type SortPlan,
  segmentSortPlan,
} from './plan.js';

/**
 * The host side of HyperAttention on WebGPU: the LSH hash and the segmented radix sort on the
 * GPU (./kernels.ts), the packed pieces of ./plan.ts gathered on the GPU and run on
 * FlashAttention's WGSL kernels (THD, one head, as ../attention.ts runs them on ts / native),
 * the LSE combine (forward) or the gradient scatter (backward) on the GPU. Nothing is read
 * back: the plan (sorted positions, blocks, the seeded draws) is data-independent.
 */

type GpuBuffer = WebGpuStorage['buffer'];

/** Steps of one command buffer and the buffers released after it is submitted. */
class Run {
  readonly steps: ComputeStep[] = [];
  private readonly temps: GpuBuffer[] = [];
  constructor(readonly ctx: WebGpuContext) {}

  temp(bytes: number, label: string): GpuBuffer {
    const b = this.ctx.createStorageBuffer(Math.max(4, bytes), label);
    this.temps.push(b);
    return b;
  }

  data(view: ArrayBufferView, label: string): GpuBuffer {
    const b = this.ctx.createFromData(view.byteLength ? view : new Uint32Array(1), label);
    this.temps.push(b);
    return b;
  }

  /** Releases `b` with the temps once submitted. */
  adopt(b: GpuBuffer): void {
    this.temps.push(b);
  }

  /** Temps of this run that `to` releases instead (they outlive this run's submit). */
  handOver(buffers: readonly GpuBuffer[], to: Run): void {
    for (const b of buffers) {
      const i = this.temps.indexOf(b);
      if (i >= 0) this.temps.splice(i, 1);
      to.adopt(b);
    }
  }

  /**
   * One dispatch of `k`: `groups` workgroups (default one per 256 items), folded into x and y.
   */
  async step(
    k: HyperKernel,
    values: Record<string, number>,
    buffers: Record<string, GpuBuffer>,
    items: number,
    perGroup = HYPER_THREADS,
  ): Promise<void> {
    const groups = Math.ceil(items / perGroup);
    if (groups === 0) return;
    const program = await this.ctx.pipelines.get({
      code: k.code,
      bindings: k.bindings,
      label: k.label,
    });
    const uniform = this.ctx.createUniform(new Uint8Array(packUniform(k.fields, values)));
    this.temps.push(uniform);
    const list = k.names.map((n) => {
      const b = buffers[n];
      if (!b) throw new Error(`hyper webgpu: no buffer for binding ${n} of ${k.label}`);
      return b;
    });
    const maxX = this.ctx.limits.maxComputeWorkgroupsPerDimension;
    const x = Math.min(groups, maxX);
    this.steps.push({
      program,
      buffers: [uniform, ...list],
      workgroups: [x, Math.ceil(groups / x)],
      label: k.label,
    });
  }

  /** Releases the temps without dispatching (an error before the submit). */
  discard(): void {
    for (const b of this.temps) this.ctx.pool.release(b);
    this.temps.length = 0;
    this.steps.length = 0;
  }

  async submit(): Promise<void> {
    try {
      if (this.steps.length > 0) await this.ctx.dispatch(this.steps);
    } finally {
      for (const b of this.temps) this.ctx.pool.release(b);
      this.temps.length = 0;
      this.steps.length = 0;
    }
  }
}

const wrap = (ctx: WebGpuContext, buffer: GpuBuffer, dtype: 'f32' | 'i32', shape: number[]) =>
  new Tensor(
    new WebGpuStorage(
      ctx,
      dtype,
      shape.reduce((a, x) => a * x, 1),
      buffer,
    ),
    shape,
  );

function f32Buffer(t: Tensor, name: string): GpuBuffer {
  const s = webGpuStorageOf(t, name);
  s.checkLive(name, 'hyperAttention');
  if (t.dtype !== 'f32')
    throw new ValueError(
      `${name}: expected f32 on webgpu (the WebGPU hyperAttention reads f32 storage), got ${t.dtype}`,
      name,
    );
  return s.buffer;
}

/** Buckets of `rows` rows of x [rows, D] into bucket[out0 ..] (hyperplanes R [P, D] f32). */
async function hash(
  run: Run,
  x: GpuBuffer,
  R: GpuBuffer,
  bucket: GpuBuffer,
  rows: number,
  d: number,
  np: number,
  out0: number,
): Promise<void> {
  await run.step(hashKernel, { rows, D: d, NP: np, out0 }, { x, R, bucket }, rows);
}

/** The segmented stable radix sort of `sort` by `bucket`; returns the sorted ids (caller releases). */
async function radixSort(run: Run, sort: SortPlan, bucket: GpuBuffer): Promise<GpuBuffer> {
  const ctx = run.ctx;
  let a = ctx.createFromData(sort.ids.length ? sort.ids : new Uint32Array(1), 'hyper ids');
  let b = ctx.createStorageBuffer(Math.max(4, sort.ids.byteLength), 'hyper ids');
  const chunks = run.data(sort.chunks, 'hyper chunks');
  const segments = run.data(sort.segments, 'hyper segments');
  const counts = run.temp(sort.numChunks * 256 * 4, 'hyper counts');
  for (let pass = 0; pass < sort.passes; pass++) {
    const shift = pass * RADIX_BITS;
    const c = { numChunks: sort.numChunks, shift };
    await run.step(radixHistKernel, c, { chunks, ids: a, bucket, counts }, sort.numChunks, 1);
    await run.step(
      radixScanKernel,
      { numSegments: sort.numSegments },
      { segments, counts },
      sort.numSegments,
      1,
    );
    await run.step(
      radixScatterKernel,
      c,
      { chunks, src: a, bucket, counts, dst: b },
      sort.numChunks,
      1,
    );
    [a, b] = [b, a];
  }
  run.adopt(b);
  return a;
}

/**
 * AngularLsh.sortOnDevice for a webgpu x [..., N, D] (f32): the buckets [..., N] and the
 * stable sort of each leading slice by bucket [..., N], as i32 webgpu tensors.
 */
export async function lshSortWebGpu(
  x: Tensor,
  projections: Float64Array,
  numProjections: number,
): Promise<{ buckets: Tensor; perm: Tensor }> {
  const ctx = webGpuStorageOf(x, 'x').ctx;
  const xb = f32Buffer(x, 'x');
  const d = x.shape[x.ndim - 1]!;
  const n = x.shape[x.ndim - 2]!;
  const rows = x.size / d;
  const run = new Run(ctx);
  const R = run.data(Float32Array.from(projections), 'hyper hyperplanes');
  const bucket = ctx.createOutput(Math.max(4, rows * 4), 'hyper buckets');
  const perm = ctx.createOutput(Math.max(4, rows * 4), 'hyper perm');
  await hash(run, xb, R, bucket, rows, d, numProjections, 0);
  const segs = Array.from({ length: n > 0 ? rows / n : 0 }, (_, s) => ({ base: s * n, len: n }));
  const sort = segmentSortPlan(segs, numProjections);
  const sorted = await radixSort(run, sort, bucket);
  run.adopt(sorted);
  await run.step(localIndexKernel, { n: rows, N: Math.max(1, n) }, { sorted, out: perm }, rows);
  await run.submit();
  const shape = x.shape.slice(0, -1);
  return { buckets: wrap(ctx, bucket, 'i32', shape), perm: wrap(ctx, perm, 'i32', shape) };
}

/** Plans by shape and options: repeated calls (a training loop, a benchmark) plan once. */
const PLANS = new Map<string, GpuPlan>();
const PLAN_CACHE = 4;

function planFor(r: ResolvedHyper, maxRows: number): GpuPlan {
  const p = r.p;
  const key = JSON.stringify([
    p.batch,
    p.hq,
    p.hkv,
    p.maxSeqQ,
    p.maxSeqK,
    p.d,
    p.dv,
    r.causal,
    r.blockSize,
    r.sampleSize,
    r.numProjections,
    r.minSeqLen,
    r.seed,
    maxRows,
  ]);
  let plan = PLANS.get(key);
  if (plan) {
    PLANS.delete(key);
  } else {
    plan = planHyperGpu(r, maxRows);
    if (PLANS.size >= PLAN_CACHE) PLANS.delete(PLANS.keys().next().value!);
  }
  PLANS.set(key, plan);
  return plan;
}

export interface HyperWebGpuRunOptions {
  /**
   * Packed rows per wave of heads (default: what keeps a packed [rows, 1, max(D, Dv)] f32
   * tensor within half the binding limit). Tests set it small to run several waves.
   */
  maxRows?: number;
}

/** Packed rows per call so that a packed [rows, 1, max(D, Dv)] f32 tensor stays bindable. */
function maxRowsOf(ctx: WebGpuContext, width: number): number {
  const bytes = Math.min(ctx.limits.maxStorageBufferBindingSize, ctx.limits.maxBufferSize);
  return Math.max(1, Math.floor(bytes / (8 * width)));
}

/** The hash and the sort of every hyper job's rows (steps of `run`); the sorted ids, or undefined. */
async function sortJobs(
  run: Run,
  plan: GpuPlan,
  r: ResolvedHyper,
  q: GpuBuffer,
  k: GpuBuffer,
): Promise<GpuBuffer | undefined> {
  if (!plan.sort || !plan.projections) return undefined;
  const { batch, hkv, d } = r.p;
  const kRows = batch * hkv * r.p.maxSeqK;
  const R = run.data(plan.projections, 'hyper hyperplanes');
  const bucket = run.temp((plan.qTotal + kRows) * 4, 'hyper buckets');
  await hash(run, q, R, bucket, plan.qTotal, d, r.numProjections, 0);
  await hash(run, k, R, bucket, kRows, d, r.numProjections, plan.qTotal);
  return radixSort(run, plan.sort, bucket);
}

interface CallRows {
  qRows: GpuBuffer;
  kRows: GpuBuffer;
  shift: GpuBuffer;
}

/** The call's references resolved to global rows (steps of `run`, buffers released with it). */
async function resolveRows(
  run: Run,
  call: GpuCall,
  sorted: GpuBuffer | undefined,
  qTotal: number,
): Promise<CallRows> {
  const s = sorted ?? run.temp(4, 'hyper no sort');
  const qRows = run.temp(call.qRef.length * 4, 'hyper q rows');
  const kRows = run.temp(call.kRef.length * 4, 'hyper k rows');
  const qRefs = run.data(call.qRef, 'hyper q refs');
  const kRefs = run.data(call.kRef, 'hyper k refs');
  const n = call.qRef.length;
  await run.step(resolveKernel, { n, sub: 0 }, { refs: qRefs, sorted: s, rows: qRows }, n);
  const m = call.kRef.length;
  await run.step(resolveKernel, { n: m, sub: qTotal }, { refs: kRefs, sorted: s, rows: kRows }, m);
  return { qRows, kRows, shift: run.data(call.shift, 'hyper shift') };
}

/** A packed [n, 1, W] f32 tensor of rows of src (the caller disposes it). */
async function gather(
  run: Run,
  src: GpuBuffer,
  rows: GpuBuffer,
  n: number,
  W: number,
): Promise<Tensor> {
  const out = run.ctx.createOutput(Math.max(4, n * W * 4), 'hyper packed');
  await run.step(gatherKernel, { n, W }, { src, rows, out }, n * W);
  return wrap(run.ctx, out, 'f32', [n, 1, W]);
}

const thd = (call: GpuCall, scale: number) => ({
  layout: 'THD' as const,
  cuSeqlensQ: call.cuQ,
  cuSeqlensK: call.cuK,
  scale,
  causal: call.causal,
  backend: 'webgpu' as const,
});

/** hyperAttention's forward on webgpu tensors (f32): o [B, Hq, Nq, Dv] and lse [B, Hq, Nq]. */
export async function hyperForwardWebGpu(
  t: { q: Tensor; k: Tensor; v: Tensor },
  r: ResolvedHyper,
  opts: HyperWebGpuRunOptions = {},
): Promise<{ o: Tensor; lse: Tensor }> {
  const q = f32Buffer(t.q, 'q');
  const k = f32Buffer(t.k, 'k');
  const v = f32Buffer(t.v, 'v');
  const ctx = webGpuStorageOf(t.q, 'q').ctx;
  const { batch, hq, d, dv, scale } = r.p;
  const nq = r.p.maxSeqQ;
  const plan = planFor(r, opts.maxRows ?? maxRowsOf(ctx, Math.max(d, dv)));
  const rows = batch * hq * nq;
  const O = ctx.createOutput(Math.max(4, rows * dv * 4), 'hyper o');
  const L = ctx.createOutput(Math.max(4, rows * 4), 'hyper lse');
  const head = new Run(ctx);
  const sorted = await sortJobs(head, plan, r, q, k);
  await head.step(initOutKernel, { rows, DV: dv, negInf: 0xff800000 }, { O, LSE: L }, rows * dv);
  await head.submit();
  try {
    for (const wave of plan.waves) {
      for (const call of wave) {
        const run = new Run(ctx);
        // The resolved rows and shifts live on until the merge (`held`).
        const held = new Run(ctx);
        const tensors: Tensor[] = [];
        try {
          const cr = await resolveRows(run, call, sorted, plan.qTotal);
          const nQ = call.qRef.length;
          const nK = call.kRef.length;
          const pq = await gather(run, q, cr.qRows, nQ, d);
          const pk = await gather(run, k, cr.kRows, nK, d);
          const pv = await gather(run, v, cr.kRows, nK, dv);
          tensors.push(pq, pk, pv);
          run.handOver([cr.qRows, cr.kRows, cr.shift], held);
          await run.submit();
          const res = await flashAttention(pq, pk, pv, thd(call, scale));
          tensors.push(res.o, res.lse);
          const po = webGpuStorageOf(res.o, 'o').buffer;
          const pl = webGpuStorageOf(res.lse, 'lse').buffer;
          for (const layer of call.layers) {
            const pos = held.data(layer, 'hyper layer');
            await held.step(
              mergeKernel,
              { n: layer.length, DV: dv },
              { pos, rows: cr.qRows, po, pl, shift: cr.shift, O, LSE: L },
              layer.length,
            );
          }
          await held.submit();
        } finally {
          run.discard();
          held.discard();
          for (const x of tensors) x.dispose();
        }
      }
    }
  } catch (e) {
    ctx.pool.release(O);
    ctx.pool.release(L);
    throw e;
  } finally {
    if (sorted) ctx.pool.release(sorted);
  }
  return { o: wrap(ctx, O, 'f32', [batch, hq, nq, dv]), lse: wrap(ctx, L, 'f32', [batch, hq, nq]) };
}

/**
 * hyperAttentionBackward on webgpu tensors (f32): each packed call's FlashAttention backward
 * (given the final O, the final LSE minus the piece's log weight, dO; see ../attention.ts
 * hyperBackwardCpu), its dq, dk, dv rows added back at their global rows.
 */
export async function hyperBackwardWebGpu(
  t: { q: Tensor; k: Tensor; v: Tensor; o: Tensor; lse: Tensor; dO: Tensor },
  r: ResolvedHyper,
  opts: HyperWebGpuRunOptions = {},
): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor }> {
  const q = f32Buffer(t.q, 'q');
  const k = f32Buffer(t.k, 'k');
  const v = f32Buffer(t.v, 'v');
  const o = f32Buffer(t.o, 'o');
  const L = f32Buffer(t.lse, 'lse');
  const dO = f32Buffer(t.dO, 'dO');
  const ctx = webGpuStorageOf(t.q, 'q').ctx;
  const { batch, hq, hkv, d, dv, scale } = r.p;
  const nq = r.p.maxSeqQ;
  const nk = r.p.maxSeqK;
  const plan = planFor(r, opts.maxRows ?? maxRowsOf(ctx, Math.max(d, dv)));
  const nQ = batch * hq * nq * d;
  const nK = batch * hkv * nk * d;
  const nV = batch * hkv * nk * dv;
  const dq = ctx.createOutput(Math.max(4, nQ * 4), 'hyper dq');
  const dk = ctx.createOutput(Math.max(4, nK * 4), 'hyper dk');
  const dvB = ctx.createOutput(Math.max(4, nV * 4), 'hyper dv');
  const head = new Run(ctx);
  const sorted = await sortJobs(head, plan, r, q, k);
  await head.step(zeroKernel, { n: nQ }, { a: dq }, nQ);
  await head.step(zeroKernel, { n: nK }, { a: dk }, nK);
  await head.step(zeroKernel, { n: nV }, { a: dvB }, nV);
  await head.submit();
  try {
    for (const wave of plan.waves) {
      for (const call of wave) {
        const run = new Run(ctx);
        // The resolved rows live on until the scatter (`held`).
        const held = new Run(ctx);
        const tensors: Tensor[] = [];
        try {
          const cr = await resolveRows(run, call, sorted, plan.qTotal);
          const rq = call.qRef.length;
          const rk = call.kRef.length;
          const pq = await gather(run, q, cr.qRows, rq, d);
          const pk = await gather(run, k, cr.kRows, rk, d);
          const pv = await gather(run, v, cr.kRows, rk, dv);
          const po = await gather(run, o, cr.qRows, rq, dv);
          const pdo = await gather(run, dO, cr.qRows, rq, dv);
          const lseB = ctx.createOutput(Math.max(4, rq * 4), 'hyper packed lse');
          const lse = wrap(ctx, lseB, 'f32', [1, rq]);
          tensors.push(pq, pk, pv, po, pdo, lse);
          await run.step(
            gatherLseKernel,
            { n: rq },
            { L, rows: cr.qRows, shift: cr.shift, out: lseB },
            rq,
          );
          run.handOver([cr.qRows, cr.kRows], held);
          await run.submit();
          const g = await flashAttentionBackward(pq, pk, pv, po, lse, pdo, thd(call, scale));
          tensors.push(g.dq, g.dk, g.dv);
          const add = (dst: GpuBuffer, rows: GpuBuffer, src: Tensor, n: number, W: number) =>
            held.step(
              scatterAddKernel,
              { n, W },
              { rows, src: webGpuStorageOf(src, 'grad').buffer, dst },
              n * W,
            );
          await add(dq, cr.qRows, g.dq, rq, d);
          await add(dk, cr.kRows, g.dk, rk, d);
          await add(dvB, cr.kRows, g.dv, rk, dv);
          await held.submit();
        } finally {
          run.discard();
          held.discard();
          for (const x of tensors) x.dispose();
        }
      }
    }
  } catch (e) {
    for (const b of [dq, dk, dvB]) ctx.pool.release(b);
    throw e;
  } finally {
    if (sorted) ctx.pool.release(sorted);
  }
  return {
    dq: wrap(ctx, dq, 'f32', [batch, hq, nq, d]),
    dk: wrap(ctx, dk, 'f32', [batch, hkv, nk, d]),
    dv: wrap(ctx, dvB, 'f32', [batch, hkv, nk, dv]),
  };
}
