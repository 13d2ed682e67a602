import { UnsupportedError } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import { type WebGpuStorage, webGpuStorageOf } from '@attnkit/webgpu';
import type { GlaProblem } from '../options.js';
import { checkFlag, type GlaWebGpuRunOptions, Run, storageOf, wrap } from './host.js';
import {
  GLA_REC_SEGMENT,
  REC_PARAMS_FIELDS,
  recBackwardScratch,
  recBackwardShader,
  recBackwardShape,
  recForwardShader,
  recForwardShape,
  recSumShader,
  SEQ_REC,
} from './recurrent-kernels.js';

/**
 * The host side of GLA's recurrent form on WebGPU (./recurrent-kernels.ts): the sequence table,
 * one forward pass (o, hT) or one backward pass (dq, dk, dgk as parts per V block, added up in
 * place by the sum pass where there are several; dv; dh0) in one command buffer, the gate check read back after it (the same
 * ValueError as the chunk form), and the outputs as webgpu tensors (o, dq, dk, dv in q's dtype,
 * dgk in gk's, dh0 in initialState's, hT in f32).
 */

type GpuBuffer = WebGpuStorage['buffer'];

/** The sequence table (SEQ_REC u32 each: first absolute row, length, first checkpoint). */
export function glaRecMeta(p: GlaProblem): { meta: Uint32Array; segments: number } {
  const meta = new Uint32Array(Math.max(4, p.seqs.length * SEQ_REC));
  let segments = 0;
  p.seqs.forEach((seq, n) => {
    const len = seq.eos - seq.bos;
    meta.set([seq.batch * p.T + seq.bos, len, segments, 0], n * SEQ_REC);
    segments += Math.ceil(len / GLA_REC_SEGMENT);
  });
  return { meta, segments };
}

/** The chunk kernels' uniform for the cast pass (castShader reads its n from NC). */
function castBase(p: GlaProblem) {
  return {
    H: p.H,
    K: p.K,
    V: p.V,
    NC: 0,
    scale: p.scale,
    hasInit: 0,
    hasFinal: 0,
    nbV: 0,
    nk: 0,
    srcOff: 0,
  };
}

function recParams(p: GlaProblem, nbV: number, hasInit: boolean, hasFinal: boolean) {
  return {
    H: p.H,
    K: p.K,
    V: p.V,
    nbV,
    scale: p.scale,
    hasInit: hasInit ? 1 : 0,
    hasFinal: hasFinal ? 1 : 0,
    reverse: p.reverse ? 1 : 0,
    n: p.B * p.T * p.H * p.K,
    parts: nbV,
    scrOff: 0,
    pad0: 0,
  };
}

/** fusedRecurrentGla's forward on webgpu tensors (validated problem p). */
export async function glaRecurrentForwardWebGpu(
  p: GlaProblem,
  t: { q: Tensor; k: Tensor; v: Tensor; gk: Tensor },
  opts: Pick<GlaWebGpuRunOptions, 'profiler'> = {},
): Promise<{ o: Tensor; ht?: Tensor }> {
  const sq = webGpuStorageOf(t.q, 'q');
  const ctx = sq.ctx;
  const run = new Run(ctx);
  const dtype = storageOf(t.q);
  const { B, T, H, K, V, N } = p;
  const { BV } = recForwardShape(K, V);
  const nbV = Math.ceil(V / BV);
  const h0 = p.initialState;
  const params = run.uniform(recParams(p, nbV, !!h0, p.outputFinalState), REC_PARAMS_FIELDS);
  const meta = run.data(glaRecMeta(p).meta, 'gla recurrent meta');
  const flag = ctx.createFromData(Uint32Array.of(0xffffffff), 'gla gate flag');
  const dummy = run.temp(16, 'gla dummy in');
  const n = B * T * H * V;
  const oF = ctx.createOutput(Math.max(4, n * 4), 'gla o');
  const ht = p.outputFinalState ? ctx.createOutput(N * H * K * V * 4 || 4, 'gla ht') : undefined;
  await run.step(
    recForwardShader(dtype, storageOf(t.gk), h0 ? storageOf(h0) : 'f32', K, V),
    params,
    {
      tab: meta,
      q: sq.buffer,
      k: webGpuStorageOf(t.k, 'k').buffer,
      v: webGpuStorageOf(t.v, 'v').buffer,
      gk: webGpuStorageOf(t.gk, 'gk').buffer,
      init: h0 ? webGpuStorageOf(h0, 'initialState').buffer : dummy,
      out: oF,
      fin: ht ?? run.temp(16, 'gla dummy out'),
      flag,
    },
    [nbV, H, N],
  );
  const oBuf = await run.output(oF, n, dtype, castBase(p));
  await run.submit(opts.profiler);
  const out: { o: Tensor; ht?: Tensor } = { o: wrap(ctx, oBuf, dtype, [B, T, H, V]) };
  if (ht) out.ht = wrap(ctx, ht, 'f32', [N, H, K, V]);
  await checkFlag(ctx, flag, t.gk, () => {
    out.o.dispose();
    out.ht?.dispose();
  });
  return out;
}

/** Storage buffers of the recurrent backward's pass (recBackwardShader's bindings). */
export const GLA_RECURRENT_BACKWARD_STORAGE_BUFFERS = 15;

/** fusedRecurrentGlaBackward on webgpu tensors. */
export async function glaRecurrentBackwardWebGpu(
  p: GlaProblem,
  t: { q: Tensor; k: Tensor; v: Tensor; gk: Tensor; do: Tensor; dht?: Tensor | undefined },
  opts: Pick<GlaWebGpuRunOptions, 'profiler'> = {},
): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor }> {
  const sq = webGpuStorageOf(t.q, 'q');
  const ctx = sq.ctx;
  // One pass binds 15 storage buffers: refused up front, with the way out, on adapters that
  // grant fewer (browsers: WebGPU's default 8, SwiftShader 10), before any buffer is made.
  const granted = ctx.limits.maxStorageBuffersPerShaderStage;
  if (granted < GLA_RECURRENT_BACKWARD_STORAGE_BUFFERS) {
    const why = `needs ${GLA_RECURRENT_BACKWARD_STORAGE_BUFFERS} storage buffers per shader stage, the adapter grants ${granted}`;
    throw new UnsupportedError(
      `fusedRecurrentGlaBackward on webgpu: ${why}; chunkGlaBackward (the chunk form) runs within 10`,
      'q',
      { webgpu: why },
    );
  }
  const run = new Run(ctx);
  const dtype = storageOf(t.q);
  const gkType = storageOf(t.gk);
  const { B, T, H, K, V, N } = p;
  const { BV } = recBackwardShape(K, V);
  const nbV = Math.ceil(V / BV);
  const h0 = p.initialState;
  const { meta: metaData, segments } = glaRecMeta(p);
  // The workspace: the checkpoints, then one segment of states per workgroup from scrOff on.
  const scrOff = segments * H * K * V;
  // hasInit: h0 given (and so dh0 written); hasFinal: dht given.
  const values = { ...recParams(p, nbV, !!h0, !!t.dht), scrOff };
  const params = run.uniform(values, REC_PARAMS_FIELDS);
  const meta = run.data(metaData, 'gla recurrent meta');
  const flag = ctx.createFromData(Uint32Array.of(0xffffffff), 'gla gate flag');
  const dummy = run.temp(16, 'gla dummy in');
  const nk = B * T * H * K;
  const nv = B * T * H * V;
  const ws = run.temp(
    (scrOff + N * H * nbV * recBackwardScratch(K, V)) * 4,
    'gla recurrent checkpoints and segment states',
  );
  const f32Out = (n: number, what: string) => ctx.createOutput(Math.max(4, n * 4), `gla ${what}`);
  // dq, dk, dgk: one part per V block each; the sum pass leaves the total in the first nk floats,
  // so each part buffer is the f32 output (for halves the cast reads it and it is released).
  const [pq, pk, pg] = ['dq', 'dk', 'dgk'].map((w) => f32Out(nbV * nk, w)) as [
    GpuBuffer,
    GpuBuffer,
    GpuBuffer,
  ];
  const dvF = f32Out(nv, 'dv');
  const dh0F = h0 ? f32Out(N * H * K * V, 'dh0') : undefined;
  await run.step(
    recBackwardShader(
      dtype,
      gkType,
      h0 ? storageOf(h0) : 'f32',
      t.dht ? storageOf(t.dht) : 'f32',
      K,
      V,
    ),
    params,
    {
      tab: meta,
      q: sq.buffer,
      k: webGpuStorageOf(t.k, 'k').buffer,
      v: webGpuStorageOf(t.v, 'v').buffer,
      gk: webGpuStorageOf(t.gk, 'gk').buffer,
      dO: webGpuStorageOf(t.do, 'dO').buffer,
      init: h0 ? webGpuStorageOf(h0, 'initialState').buffer : dummy,
      dht: t.dht ? webGpuStorageOf(t.dht, 'dht').buffer : dummy,
      ws,
      pq,
      pk,
      pg,
      dv: dvF,
      fin: dh0F ?? run.temp(16, 'gla dummy out'),
      flag,
    },
    [nbV, H, N],
  );
  if (nbV > 1) {
    const groups = Math.ceil(nk / 256);
    const x = Math.max(1, Math.min(groups, 65535));
    for (const buf of [pq, pk, pg])
      await run.step(recSumShader(), params, { buf }, [x, Math.max(1, Math.ceil(groups / x))]);
  }
  const base = castBase(p);
  const dq = await run.output(pq, nk, dtype, base);
  const dk = await run.output(pk, nk, dtype, base);
  const dg = await run.output(pg, nk, gkType, base);
  const dv = await run.output(dvF, nv, dtype, base);
  const dh0 = h0 && dh0F ? await run.output(dh0F, N * H * K * V, storageOf(h0), base) : undefined;
  await run.submit(opts.profiler);
  const out: { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor } = {
    dq: wrap(ctx, dq, dtype, [B, T, H, K]),
    dk: wrap(ctx, dk, dtype, [B, T, H, K]),
    dv: wrap(ctx, dv, dtype, [B, T, H, V]),
    dgk: wrap(ctx, dg, gkType, [B, T, H, K]),
  };
  if (h0 && dh0) out.dh0 = wrap(ctx, dh0, storageOf(h0), [...h0.shape]);
  await checkFlag(ctx, flag, t.gk, () => {
    for (const x of Object.values(out)) x.dispose();
  });
  return out;
}
