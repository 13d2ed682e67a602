import { UnsupportedError } from '@attnkit/attention';
import { Tensor, ValueError } from '@attnkit/tensor';
import {
  type CompiledProgram,
  type ComputeStep,
  type GpuProfiler,
  packUniform,
  type WebGpuContext,
  WebGpuStorage,
  webGpuStorageOf,
} from '@attnkit/webgpu';
import { checkGateValues, type GlaProblem } from '../options.js';
import { glaChunks } from '../plan.js';
import {
  CHUNK_META,
  castShader,
  GLA_STATE_BLOCK,
  type GlaKernel,
  type GlaStorage,
  glaDirectOutput,
  glaVec4,
  kTileOf,
  outGrid,
  outputShader,
  PARAMS_FIELDS,
  prepShader,
  qkGradShader,
  scoreGradShader,
  scoresShader,
  stateGrid,
  stateShader,
  workgroupBytes,
} from './kernels.js';
import { GLA_TC_SUBGROUP, type GlaTc } from './tc.js';

/**
 * The host side of GLA's chunkwise form on WebGPU (./kernels.ts): the chunk / sequence table,
 * the intermediate buffers (G, A, the chunk states; dA and the state gradients backward), the
 * passes in one command buffer, the gate check read back after it, and the outputs as webgpu
 * tensors (o, dq, dk, dv in q's dtype, dgk in gk's, dh0 in initialState's, hT in f32).
 */

type GpuBuffer = WebGpuStorage['buffer'];

export interface GlaWebGpuRunOptions {
  /** Times every pass (bench-gla); its read() gives the passes of this call. */
  profiler?: GpuProfiler;
  /**
   * The chunk products of the state passes (h, dh), of the o / dv passes, of dA and the inter
   * products of dq / dk (dO h^T, v dh^T) on f16 subgroup matrices (./tc.ts) instead of the SIMT
   * tile loops (the scores and the intra-chunk part of dq / dk stay SIMT): true (a ValueError naming tensorCores
   * where the adapter or the shape does not qualify), false, or 'auto' (default; glaTcAuto).
   */
  tensorCores?: boolean | 'auto';
  /**
   * Test aid: the tensor-core kernels with their subgroup matrices emulated in plain WGSL
   * (./tc.ts GlaTc.emulate), on any adapter (llvmpipe); implies tensorCores true. Not for speed.
   */
  emulateTensorCores?: boolean;
}

/** Whether the adapter has what the tensor-core kernels need: f16 x f16 -> f32 16x16x16, 32-wide subgroups. */
export function glaTcAdapterQualifies(ctx: WebGpuContext): boolean {
  const f = ctx.features;
  return (
    f.shaderF16 &&
    f.subgroupMinSize === GLA_TC_SUBGROUP &&
    f.subgroupMaxSize === GLA_TC_SUBGROUP &&
    f.subgroupMatrixConfigs.some(
      (c) => c.component === 'f16' && c.result === 'f32' && c.M === 16 && c.N === 16 && c.K === 16,
    )
  );
}

/**
 * Whether the tensor-core products have passed bench-gla's verification on a device with
 * subgroup matrices: yes, on the H200 (2026-12-03 runs 2, 3 and 6, BENCHMARKS.md: f32 and f16
 * storage, forward and backward, against the float64 recurrence on poisoned outputs).
 */
export const GLA_TC_VERIFIED_ON_DEVICE = true;

/**
 * Whether they were faster there: no. GPU time at B 4, H 16, T 8192, K = V = 128, f16: forward
 * 6.70 ms against SIMT's 2.64, forward + backward 25.3 against 22.0 (2026-12-04, session 17 run
 * 5; session 16 run 6: 7.15-7.16 against 3.76 and 55.5 against 50.8; 2026-12-03 runs 3 and 6:
 * 12.2-12.6 against 10.4-11.3 and 72-73 against 67-72). So 'auto' stays SIMT; `tensorCores:
 * true` opts in. Session 17 re-verified it (run 5), its scores and dq / dk passes being shared.
 */
export const GLA_TC_FASTER_ON_DEVICE = false;

/**
 * The automatic choice (tensorCores 'auto'), mirroring @attnkit/skeleton's tcAutoSelect: the
 * tensor-core products only where they were verified and measured faster (`enabled`: both
 * constants above; false now), on NVIDIA adapters (the skeleton's tensor-core kernels were
 * verified there alone, and their correctness turned on how the driver places workgroup
 * memory), f16 storage only (f32 inputs would lose precision as f16 operands; bf16 ones could
 * leave f16's range and were not part of the device verification), K and V multiples of 16,
 * and an adapter that qualifies (glaTcAdapterQualifies). Pure: unit-tested without a device.
 */
export function glaTcAuto(
  problem: { K: number; V: number; dtype: string },
  vendor: string,
  adapterQualifies: boolean,
  enabled: boolean = GLA_TC_VERIFIED_ON_DEVICE && GLA_TC_FASTER_ON_DEVICE,
): boolean {
  if (!enabled) return false;
  if (!adapterQualifies || vendor.toLowerCase() !== 'nvidia') return false;
  if (problem.dtype !== 'f16') return false;
  return problem.K % 16 === 0 && problem.V % 16 === 0;
}

/** The tensor-core variant the passes run (undefined: SIMT), or a ValueError naming tensorCores. */
export function glaTcFor(
  ctx: WebGpuContext,
  p: { K: number; V: number },
  dtype: GlaStorage,
  opts: GlaWebGpuRunOptions,
): GlaTc | undefined {
  const want = opts.emulateTensorCores ? true : (opts.tensorCores ?? 'auto');
  if (want !== true && want !== false && want !== 'auto')
    throw new ValueError(
      `tensorCores: expected true, false or 'auto', got ${String(want)}`,
      'tensorCores',
    );
  if (want === false) return undefined;
  const qualifies = glaTcAdapterQualifies(ctx);
  if (want === 'auto')
    return glaTcAuto({ ...p, dtype }, ctx.adapterInfo.vendor, qualifies)
      ? { emulate: false }
      : undefined;
  if (p.K % 16 !== 0 || p.V % 16 !== 0)
    throw new ValueError(
      `tensorCores: expected K and V multiples of 16 (16x16x16 subgroup matrices), got K ${p.K}, V ${p.V}`,
      'tensorCores',
    );
  if (opts.emulateTensorCores) return { emulate: true };
  if (!qualifies)
    throw new ValueError(
      'tensorCores: expected an adapter with f16 x f16 -> f32 16x16x16 subgroup matrices and 32-wide subgroups, got one without',
      'tensorCores',
    );
  return { emulate: false };
}

export function storageOf(t: Tensor): GlaStorage {
  if (t.dtype === 'f32' || t.dtype === 'f16' || t.dtype === 'bf16') return t.dtype;
  throw new ValueError(`dtype: expected f32, f16 or bf16 on webgpu, got ${t.dtype}`, 'dtype');
}

/** The chunk and sequence tables (kernels.ts CHUNK_META / SEQ_META) and the chunk count. */
export function glaMeta(p: GlaProblem): { meta: Uint32Array; NC: number } {
  const chunks: number[] = [];
  const seqs: number[] = [];
  for (const seq of p.seqs) {
    const first = chunks.length / CHUNK_META;
    const cs = glaChunks(seq.eos - seq.bos, p.chunkSize);
    for (const [s, e] of cs) chunks.push(seq.batch * p.T + seq.bos + s, e - s, seq.index, 0);
    seqs.push(first, cs.length, 0, 0);
  }
  const NC = chunks.length / CHUNK_META;
  const meta = new Uint32Array(Math.max(4, chunks.length + seqs.length));
  meta.set(chunks, 0);
  meta.set(seqs, NC * CHUNK_META);
  return { meta, NC };
}

/** One call's passes in one command buffer, with the temporaries released after it (also ./recurrent-host.ts). */
export class Run {
  readonly steps: ComputeStep[] = [];
  private readonly temps: GpuBuffer[] = [];
  constructor(readonly ctx: WebGpuContext) {}

  /** A buffer of at least `bytes` (>= 4) released after the dispatch. */
  temp(bytes: number, label: string): GpuBuffer {
    const b = this.ctx.createOutput(Math.max(4, bytes), label);
    this.temps.push(b);
    return b;
  }

  data(view: ArrayBufferView, label: string): GpuBuffer {
    const b = this.ctx.createFromData(view, label);
    this.temps.push(b);
    return b;
  }

  uniform(
    values: Record<string, number>,
    fields: Parameters<typeof packUniform>[0] = PARAMS_FIELDS,
  ): GpuBuffer {
    const b = this.ctx.createUniform(new Uint8Array(packUniform(fields, values)));
    this.temps.push(b);
    return b;
  }

  async step(
    k: GlaKernel,
    params: GpuBuffer,
    buffers: Record<string, GpuBuffer>,
    workgroups: [number, number?, number?],
  ): Promise<void> {
    const program: CompiledProgram = await this.ctx.pipelines.get({
      code: k.code,
      bindings: k.bindings,
      label: k.label,
    });
    const list = k.names.map((n) => {
      const b = buffers[n];
      if (!b) throw new Error(`gla webgpu: no buffer for binding ${n} of ${k.label}`);
      return b;
    });
    this.steps.push({ program, buffers: [params, ...list], workgroups, label: k.label });
  }

  /**
   * f32 src (n elements from element `at`; src itself for f32 at undefined) into a new output
   * of `dtype`; src goes back to the pool after the dispatch unless `keep`.
   */
  async output(
    src: GpuBuffer,
    n: number,
    dtype: GlaStorage,
    base: Record<string, number>,
    at?: number,
    keep = false,
  ) {
    if (dtype === 'f32' && at === undefined) return src;
    if (!keep) this.temps.push(src);
    const bytes = dtype === 'f32' ? n * 4 : Math.ceil(n / 2) * 4;
    const dst = this.ctx.createOutput(Math.max(4, bytes), `gla ${dtype} output`);
    const words = Math.ceil(n / 2);
    const groups = Math.ceil(words / 256);
    const x = Math.min(groups, 65535);
    await this.step(
      castShader(dtype),
      this.uniform({ ...base, NC: n, srcOff: at ?? 0 }),
      { src, dst },
      [x, Math.ceil(groups / x)],
    );
    return dst;
  }

  async submit(profiler?: GpuProfiler): Promise<void> {
    try {
      await this.ctx.dispatch(this.steps, profiler);
    } finally {
      for (const b of this.temps) this.ctx.pool.release(b);
      this.temps.length = 0;
    }
  }
}

export function wrap(
  ctx: WebGpuContext,
  buffer: GpuBuffer,
  dtype: GlaStorage,
  shape: number[],
): Tensor {
  const n = shape.reduce((a, x) => a * x, 1);
  return new Tensor(new WebGpuStorage(ctx, dtype, n, buffer), shape);
}

/** Reads the gate flag; on a bad gate, throws checkGateValues's ValueError (with its index). */
export async function checkFlag(
  ctx: WebGpuContext,
  flag: GpuBuffer,
  gk: Tensor,
  dispose: () => void,
) {
  const bad = new Uint32Array(await ctx.readBuffer(flag, 4))[0]!;
  ctx.pool.release(flag);
  if (bad === 0xffffffff) return;
  dispose();
  checkGateValues((await gk.toCpu()).toFloat32Array(), gk.shape);
  throw new ValueError(
    `gk: expected finite log-space gates <= 0, got a bad gate at flat index ${bad}`,
    'gk',
  );
}

/**
 * The buffer the o / dv pass writes n elements into: in the output's dtype where it stores it
 * directly (glaDirectOutput), else f32 for run.output's cast.
 */
function passOutput(
  ctx: WebGpuContext,
  n: number,
  dtype: GlaStorage,
  direct: boolean,
  label: string,
) {
  return ctx.createOutput(Math.max(4, n * (direct && dtype !== 'f32' ? 2 : 4)), label);
}

/** The chunk-form kernels of a pass, generated once: checked against the limits, then run. */
interface GlaPassKernels {
  prep: GlaKernel;
  scores: GlaKernel;
  states: GlaKernel;
  output?: GlaKernel;
  dstates?: GlaKernel;
  dA?: GlaKernel;
  dv?: GlaKernel;
  qkg?: GlaKernel;
}

/**
 * Three dq / dk / dgk output buffers where the context grants that pass's 12 storage buffers;
 * else one [3, nk] buffer (10), its slices copied or cast out after the pass.
 */
const mergedQkg = (ctx: WebGpuContext) => ctx.limits.maxStorageBuffersPerShaderStage < 12;

function glaPassKernels(
  ctx: WebGpuContext,
  p: GlaProblem,
  t: { q: Tensor; gk: Tensor; dht?: Tensor | undefined },
  tc: GlaTc | undefined,
  pass: 'forward' | 'backward',
): GlaPassKernels {
  const dtype = storageOf(t.q);
  const { K, V, chunkSize: C } = p;
  const vec = glaVec4(K, V);
  const initDType = p.initialState ? storageOf(p.initialState) : 'f32';
  const common = {
    prep: prepShader(storageOf(t.gk)),
    scores: scoresShader(C, dtype, vec),
    states: stateShader('h', C, dtype, initDType, tc, vec),
  };
  if (pass === 'forward') return { ...common, output: outputShader('o', C, V, dtype, tc, vec) };
  const merged = mergedQkg(ctx);
  return {
    ...common,
    dstates: stateShader('dh', C, dtype, t.dht ? storageOf(t.dht) : 'f32', tc, vec),
    dA: scoreGradShader(C, dtype, tc),
    dv: outputShader('dv', C, V, dtype, tc, vec),
    // Emulated at C >= 64 its workgroup memory (sm alone 26 KiB there) leaves no room for the
    // emulation's scratch within llvmpipe's 32 KiB: SIMT there (the tests reach it at C 16 / 32).
    qkg: qkGradShader(
      C,
      dtype,
      tc && !(tc.emulate && C >= 64) ? tc : undefined,
      merged ? 'merged' : 'split',
      vec,
    ),
  };
}

/**
 * An UnsupportedError, before any buffer is made, where a kernel of the pass needs more
 * workgroup memory or storage buffers than the context grants (a context made with
 * `limits: 'default'`, or a small adapter), naming chunkSize where a smaller one would fit.
 */
function checkGlaLimits(ctx: WebGpuContext, ks: GlaPassKernels, C: number, what: string): void {
  const lim = ctx.limits;
  for (const k of Object.values(ks) as GlaKernel[]) {
    const bytes = workgroupBytes(k.code);
    if (bytes > lim.maxComputeWorkgroupStorageSize)
      throw new UnsupportedError(
        `${what}: the '${k.label}' pass at chunkSize ${C} needs ${bytes} bytes of workgroup memory, this context grants ${lim.maxComputeWorkgroupStorageSize}; use a smaller chunkSize or a context with the adapter's limits`,
        'chunkSize',
        { webgpu: `${k.label}: workgroup memory ${bytes} > ${lim.maxComputeWorkgroupStorageSize}` },
      );
    const storage = k.bindings.filter((b) => b !== 'uniform').length;
    if (storage > lim.maxStorageBuffersPerShaderStage)
      throw new UnsupportedError(
        `${what}: the '${k.label}' pass binds ${storage} storage buffers, this context grants ${lim.maxStorageBuffersPerShaderStage} per shader stage; use a context with the adapter's limits`,
        'backend',
        {
          webgpu: `${k.label}: ${storage} storage buffers > ${lim.maxStorageBuffersPerShaderStage}`,
        },
      );
  }
}

interface Common {
  ctx: WebGpuContext;
  run: Run;
  dtype: GlaStorage;
  base: Record<string, number>;
  params: GpuBuffer;
  meta: GpuBuffer;
  NC: number;
  G: GpuBuffer;
  A: GpuBuffer;
  Hs: GpuBuffer;
  flag: GpuBuffer;
  dummy: GpuBuffer;
  dummyOut: GpuBuffer;
  q: GpuBuffer;
  k: GpuBuffer;
  v: GpuBuffer;
}

/** The passes both directions share: G (with the gate check), the scores A and the chunk states. */
async function common(
  p: GlaProblem,
  t: { q: Tensor; k: Tensor; v: Tensor; gk: Tensor },
  final: GpuBuffer | undefined,
  tc: GlaTc | undefined,
  ks: GlaPassKernels,
): Promise<Common> {
  const sq = webGpuStorageOf(t.q, 'q');
  const ctx = sq.ctx;
  const run = new Run(ctx);
  const dtype = storageOf(t.q);
  const { H, K, V, N, T, B, chunkSize: C } = p;
  const { meta: metaData, NC } = glaMeta(p);
  // The tensor-core state passes' column blocks (the SIMT passes derive their own from V).
  const nbV = Math.ceil(V / GLA_STATE_BLOCK);
  const base = {
    H,
    K,
    V,
    NC,
    scale: p.scale,
    hasInit: p.initialState ? 1 : 0,
    hasFinal: final ? 1 : 0,
    nbV,
    nk: B * T * H * K,
    srcOff: 0,
  };
  const params = run.uniform(base);
  const meta = run.data(metaData, 'gla meta');
  const flag = ctx.createFromData(Uint32Array.of(0xffffffff), 'gla gate flag');
  // Stand-ins for absent states: one read, one written (a buffer may not be both in a pass).
  const dummy = run.temp(16, 'gla dummy in');
  const dummyOut = run.temp(16, 'gla dummy out');
  // Rounded up to whole vec4s: the SIMT state / o / dv passes read G four floats a load.
  const G = run.temp(Math.ceil((B * T * H * K) / 4) * 16, 'gla G');
  const A = run.temp(NC * H * C * C * 4, 'gla A');
  const Hs = run.temp(NC * H * K * V * 4, 'gla states');
  const q = sq.buffer;
  const k = webGpuStorageOf(t.k, 'k').buffer;
  const v = webGpuStorageOf(t.v, 'v').buffer;
  const gk = webGpuStorageOf(t.gk, 'gk').buffer;
  const init = p.initialState ? webGpuStorageOf(p.initialState, 'initialState').buffer : dummy;
  await run.step(ks.prep, params, { tab: meta, gk, Gb: G, flag }, [NC, H, Math.ceil(K / 64)]);
  await run.step(ks.scores, params, { tab: meta, q, k, Gb: G, Ab: A }, [NC, H]);
  await run.step(
    ks.states,
    params,
    { tab: meta, k, v, Gb: G, init, Hs, fin: final ?? dummyOut },
    stateGrid(K, V, H, N, !!tc),
  );
  return { ctx, run, dtype, base, params, meta, NC, G, A, Hs, flag, dummy, dummyOut, q, k, v };
}

/** chunkGla's forward on webgpu tensors (validated problem p). */
export async function glaForwardWebGpu(
  p: GlaProblem,
  t: { q: Tensor; k: Tensor; v: Tensor; gk: Tensor },
  opts: GlaWebGpuRunOptions = {},
): Promise<{ o: Tensor; ht?: Tensor }> {
  const ctx = webGpuStorageOf(t.q, 'q').ctx;
  const { B, T, H, K, V, N, chunkSize: C } = p;
  const tc = glaTcFor(ctx, p, storageOf(t.q), opts);
  const ks = glaPassKernels(ctx, p, t, tc, 'forward');
  checkGlaLimits(ctx, ks, C, 'chunkGla');
  const ht = p.outputFinalState ? ctx.createOutput(N * H * K * V * 4 || 4, 'gla ht') : undefined;
  const c = await common(p, t, ht, tc, ks);
  const { run, dtype, params, meta, NC, G, A, Hs, q, v } = c;
  const n = B * T * H * V;
  // SIMT with 4-element loads (glaVec4): the o pass stores o in its dtype itself; else f32, cast after.
  const direct = glaDirectOutput(K, V, tc);
  const oF = passOutput(ctx, n, dtype, direct, 'gla o');
  await run.step(ks.output!, params, { tab: meta, q, v, Gb: G, Hs, Ab: A, out: oF }, [
    NC,
    H,
    outGrid(V, !!tc),
  ]);
  const oBuf = direct ? oF : await run.output(oF, n, dtype, c.base);
  await run.submit(opts.profiler);
  const out: { o: Tensor; ht?: Tensor } = { o: wrap(ctx, oBuf, dtype, [B, T, H, V]) };
  if (ht) out.ht = wrap(ctx, ht, 'f32', [N, H, K, V]);
  await checkFlag(ctx, c.flag, t.gk, () => {
    out.o.dispose();
    out.ht?.dispose();
  });
  return out;
}

/** chunkGlaBackward on webgpu tensors. */
export async function glaBackwardWebGpu(
  p: GlaProblem,
  t: { q: Tensor; k: Tensor; v: Tensor; gk: Tensor; do: Tensor; dht?: Tensor | undefined },
  opts: GlaWebGpuRunOptions = {},
): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor }> {
  const ctx = webGpuStorageOf(t.q, 'q').ctx;
  const { B, T, H, K, V, N, chunkSize: C } = p;
  const tc = glaTcFor(ctx, p, storageOf(t.q), opts);
  const nk = B * T * H * K;
  // Checked before any buffer is made (mergedQkg: dq, dk, dgk in one buffer on small contexts).
  const merged = mergedQkg(ctx);
  if (merged && 3 * nk * 4 > ctx.limits.maxStorageBufferBindingSize) {
    throw new UnsupportedError(
      `chunkGlaBackward: this adapter grants ${ctx.limits.maxStorageBuffersPerShaderStage} storage buffers per shader stage, so dq, dk and dgk share one buffer of 3 * ${nk} floats (${3 * nk * 4} bytes), over its maxStorageBufferBindingSize ${ctx.limits.maxStorageBufferBindingSize}; split the batch or the heads`,
      'q',
      { webgpu: 'dq/dk/dgk buffer over maxStorageBufferBindingSize' },
    );
  }
  const ks = glaPassKernels(ctx, p, t, tc, 'backward');
  checkGlaLimits(ctx, ks, C, 'chunkGlaBackward');
  const c = await common(p, t, undefined, tc, ks);
  const { run, dtype, params, meta, NC, G, A, Hs, q, k, v, dummy } = c;
  const dO = webGpuStorageOf(t.do, 'dO').buffer;
  const h0 = p.initialState;
  // Outputs in f32 (the final buffers for f32, else cast by run.output).
  const f32Out = (n: number, what: string) => ctx.createOutput(Math.max(4, n * 4), `gla ${what}`);
  const dh0F = h0 ? f32Out(N * H * K * V, 'dh0') : undefined;
  const dHs = run.temp(NC * H * K * V * 4, 'gla state gradients');
  const dA = run.temp(NC * H * C * C * 4, 'gla dA');
  const dparams = run.uniform({ ...c.base, hasInit: t.dht ? 1 : 0, hasFinal: h0 ? 1 : 0 });
  await run.step(
    ks.dstates!,
    dparams,
    {
      tab: meta,
      q,
      dO,
      Gb: G,
      init: t.dht ? webGpuStorageOf(t.dht, 'dht').buffer : dummy,
      Hs: dHs,
      fin: dh0F ?? c.dummyOut,
    },
    stateGrid(K, V, H, N, !!tc),
  );
  await run.step(ks.dA!, params, { tab: meta, dO, v, dAb: dA }, [NC, H]);
  const nv = B * T * H * V;
  const gkType = storageOf(t.gk);
  const direct = glaDirectOutput(K, V, tc);
  const dvF = passOutput(ctx, nv, dtype, direct, 'gla dv');
  const dqkg = merged ? run.temp(3 * nk * 4, 'gla dq dk dgk') : undefined;
  const dqF = merged ? undefined : f32Out(nk, 'dq');
  const dkF = merged ? undefined : f32Out(nk, 'dk');
  const dgF = merged ? undefined : f32Out(nk, 'dgk');
  await run.step(ks.dv!, params, { tab: meta, k, dO, Gb: G, Hs: dHs, Ab: A, out: dvF }, [
    NC,
    H,
    outGrid(V, !!tc),
  ]);
  await run.step(
    ks.qkg!,
    params,
    merged
      ? { tab: meta, q, k, v, dO, Gb: G, Hs, dHs, dAb: dA, dqkg: dqkg! }
      : { tab: meta, q, k, v, dO, Gb: G, Hs, dHs, dAb: dA, dq: dqF!, dk: dkF!, dg: dgF! },
    [NC, H, Math.ceil(K / kTileOf(C))],
  );
  // Merged: dqkg is a temp (released after the dispatch), each slice copied or cast out of it.
  const dq = dqkg
    ? await run.output(dqkg, nk, dtype, c.base, 0, true)
    : await run.output(dqF!, nk, dtype, c.base);
  const dk = dqkg
    ? await run.output(dqkg, nk, dtype, c.base, nk, true)
    : await run.output(dkF!, nk, dtype, c.base);
  const dv = direct ? dvF : await run.output(dvF, nv, dtype, c.base);
  const dg = dqkg
    ? await run.output(dqkg, nk, gkType, c.base, 2 * nk, true)
    : await run.output(dgF!, nk, gkType, c.base);
  const dh0 = h0 && dh0F ? await run.output(dh0F, N * H * K * V, storageOf(h0), c.base) : undefined;
  await run.submit(opts.profiler);
  const out: { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor } = {
    dq: wrap(ctx, dq, dtype, [B, T, H, K]),
    dk: wrap(ctx, dk, dtype, [B, T, H, K]),
    dv: wrap(ctx, dv, dtype, [B, T, H, V]),
    dgk: wrap(ctx, dg, gkType, [B, T, H, K]),
  };
  if (h0 && dh0) out.dh0 = wrap(ctx, dh0, storageOf(h0), [...h0.shape]);
  await checkFlag(ctx, c.flag, t.gk, () => {
    for (const x of Object.values(out)) x.dispose();
  });
  return out;
}
