import { constants as bufferConstants } from 'node:buffer';
import { freemem } from 'node:os';
import {
  accuracy,
  alibi,
  alibiSlopes,
  glaRecurrentReference,
  glaRecurrentReferenceBackward,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  type KernelTensors,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  type ScoreMod,
  selectKernel,
  softcap,
} from '@attnkit/attention';
import { type FlashAlgorithm, flashFlops } from '@attnkit/flash-attention';
import { glaFlops } from '@attnkit/linear-attention';
import { formatBytes, Rng, Tensor, ValueError } from '@attnkit/tensor';
import { toWebGpu } from '@attnkit/webgpu';
import { cliWebGpuContext, prepareBackends } from './backends.js';

/** Families `attnkit bench` times (registry names; 'flash' is softmax's alias). */
export const BENCH_FAMILIES = [
  'flash',
  'softmax',
  'sigmoid',
  'hstu',
  'sage',
  'gla',
  'hyper',
] as const;
export type BenchFamily = (typeof BENCH_FAMILIES)[number];

export interface BenchOptions {
  family: BenchFamily;
  /**
   * A registered backend (default: the registry's choice for cpu tensors). 'webgpu' uploads
   * the inputs first and times each call until the GPU has finished it.
   */
  backend: string | undefined;
  /** 'none', 'softcap:<cap>' or 'alibi' (the paper's slopes): the cost of a built-in mod. */
  scoreMod: string;
  /**
   * [B, H, N, D]. For hstu: B sequences of N tokens each, jagged LHD tensors [B*N, H, D] with
   * seqOffsets 0, N, 2N, ..., maxSeqLen N and alpha 1/sqrt(D) (see hstuBenchOptions).
   */
  shape: [number, number, number, number];
  /** Every family, hstu included, is timed with the full (non-causal) mask unless this is set. */
  causal: boolean;
  algorithm: FlashAlgorithm;
  warmup: number;
  repeats: number;
  /** Also time the float64 reference once per pass, as the peer. */
  reference: boolean;
  passes: ReadonlyArray<'forward' | 'backward'>;
  seed: number;
  /** --family sage: Q·K bits (default the family's, 8). */
  qkBits?: 4 | 8 | undefined;
  /** --family hyper: HyperAttention's own options (each defaults to the family's). */
  hyper?: { blockSize?: number; sampleSize?: number; minSeqLen?: number } | undefined;
}

export interface BenchRow {
  family: string;
  backend: string;
  algorithm: FlashAlgorithm;
  shape: [number, number, number, number];
  causal: boolean;
  pass: 'forward' | 'backward';
  flops: number;
  medianMs: number;
  minMs: number;
  gflops: number;
  referenceMs: number | null;
  referenceGflops: number | null;
  /** referenceMs / medianMs */
  speedup: number | null;
  /** --family sage with the reference: o's cosine similarity to the float64 reference. */
  cosine?: number;
  /** --family hyper with the reference: ||o - o_exact||_F / ||o_exact||_F (float64 exact). */
  relErr?: number;
}

export const DEFAULT_BENCH: BenchOptions = {
  family: 'flash',
  backend: undefined,
  scoreMod: 'none',
  shape: [1, 8, 1024, 64],
  causal: false,
  algorithm: 'fa2',
  warmup: 1,
  repeats: 5,
  reference: true,
  passes: ['forward', 'backward'],
  seed: 1,
};

/** --score-mod text -> the mod (undefined for 'none'). */
export function parseScoreMod(text: string, heads: number): ScoreMod | undefined {
  if (text === 'none') return undefined;
  if (text === 'alibi') return alibi(alibiSlopes(heads));
  const m = /^softcap:([0-9.]+)$/.exec(text);
  if (m && Number(m[1]) > 0) return softcap(Number(m[1]));
  throw new ValueError(
    `--score-mod: expected none, alibi or softcap:<cap>, got "${text}"`,
    'scoreMod',
  );
}

export function parseShape(text: string): [number, number, number, number] {
  const parts = text.split(',').map((s) => Number(s.trim()));
  if (parts.length !== 4 || !parts.every((x) => Number.isInteger(x) && x > 0)) {
    throw new ValueError(
      `--shape: expected B,H,N,D (four positive integers), got "${text}"`,
      'shape',
    );
  }
  return parts as [number, number, number, number];
}

/**
 * Bytes `runBench` holds at its peak, as the code allocates (n = B*H*N*D elements, r = B*H*N
 * rows): the f32 inputs q, k, v, dO (16n); the forward result kept for the backward (o, lse:
 * 4n + 4r); per pass, the timed call's results with the previous call's not yet collected
 * (forward 2 (4n + 4r), backward dq, dk, dv and D: 2 (12n + 4r)); and with the reference, its
 * float64 copies and results (forward q, k, v, O, L: 32n + 8r; backward q, k, v, dO, dq, dk, dv:
 * 56n). Kernel tile scratch is bounded and small; webgpu buffers live on the GPU, not here.
 * `largest` is the element count of the largest single array (one [B, H, N, D] tensor).
 */
export function benchMemoryBytes(opts: Pick<BenchOptions, 'shape' | 'reference' | 'passes'>): {
  bytes: number;
  largest: number;
} {
  const [B, H, N, D] = opts.shape;
  const r = B * H * N;
  const n = r * D;
  let pass = 0;
  for (const p of opts.passes) {
    const timed = p === 'forward' ? 2 * (4 * n + 4 * r) : 2 * (12 * n + 4 * r);
    const reference = !opts.reference ? 0 : p === 'forward' ? 32 * n + 8 * r : 56 * n;
    pass = Math.max(pass, timed + reference);
  }
  return { bytes: 16 * n + 4 * n + 4 * r + pass, largest: n };
}

/** Memory this process can still get: the cgroup-aware figure where Node has it (20.13+), else the OS's free memory. */
export function availableMemoryBytes(): number {
  const available = (process as { availableMemory?: () => number }).availableMemory;
  return typeof available === 'function' ? available.call(process) : freemem();
}

/**
 * Refuses a --shape the run cannot hold, before anything is allocated: a [B, H, N, D] tensor
 * past the engine's typed-array length (buffer.constants.MAX_LENGTH, 2^32 in Node 20), or a
 * peak (benchMemoryBytes) above the memory available. Otherwise the inputs fill memory first
 * and the run dies minutes later (`--shape 1e9,1,1,1` grew to 12 GB before failing).
 */
export function checkBenchMemory(
  opts: Pick<BenchOptions, 'shape' | 'reference' | 'passes'>,
  available: number = availableMemoryBytes(),
  maxLength: number = bufferConstants.MAX_LENGTH,
): void {
  const { bytes, largest } = benchMemoryBytes(opts);
  const shape = opts.shape.join(',');
  if (!(largest <= maxLength)) {
    throw new ValueError(
      `--shape: ${shape} makes tensors of ${largest} elements (B*H*N*D), past this runtime's typed-array limit of ${maxLength}; use a smaller shape`,
      'shape',
    );
  }
  if (!(bytes <= available)) {
    const hint = opts.reference ? ' (--no-reference drops the float64 reference copies)' : '';
    throw new ValueError(
      `--shape: ${shape} needs about ${formatBytes(bytes)} for inputs, outputs${opts.reference ? ' and the float64 reference' : ''}, more than the ${formatBytes(available)} of memory available; use a smaller shape${hint}`,
      'shape',
    );
  }
}

/**
 * The HSTU problem `bench --family hstu` times for a [B, H, N, D] shape: B sequences of full
 * length N packed on the L axis (seqOffsets 0, N, ..., B*N; so the same work as a BHND problem of
 * that shape, and FlashAttention's FLOP count applies), maxSeqLen N (the 1/N normalisation),
 * alpha 1/sqrt(D) (the usual scale of q.k) and the CLI's causal flag. These are the options of
 * hstuAttention, which the family's registered kernels take (its toTiled maps them to THD).
 */
export function hstuBenchOptions(
  shape: readonly [number, number, number, number],
  causal: boolean,
): { seqOffsets: Int32Array; maxSeqLen: number; alpha: number; causal: boolean } {
  const [B, , N, D] = shape;
  return {
    seqOffsets: Int32Array.from({ length: B + 1 }, (_, b) => b * N),
    maxSeqLen: N,
    alpha: 1 / Math.sqrt(D),
    causal,
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function time(fn: () => Promise<unknown> | unknown, warmup: number, repeats: number) {
  for (let i = 0; i < warmup; i++) await fn();
  const ms: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return { medianMs: median(ms), minMs: Math.min(...ms) };
}

/**
 * Times a family's forward and backward on random normal inputs (median of `repeats` after
 * `warmup`), beside the float64 reference on the same shape. GFLOP/s use the conventional count
 * (FlashAttention's, for every family: HSTU's silu and softmax's exp alike are not counted):
 * 4*B*H*N^2*D forward, 2.5x backward, halved when causal; GLA, linear in N, counts its chunk
 * form's own products (glaFlops).
 */
export async function runBench(
  opts: BenchOptions,
  log: (line: string) => void = () => {},
): Promise<BenchRow[]> {
  const [B, H, N, D] = opts.shape;
  const family = opts.family === 'flash' ? 'softmax' : opts.family;
  const sage = family === 'sage';
  if (sage && opts.passes.includes('backward'))
    throw new ValueError(
      '--family: expected --forward-only with sage (an inference kernel: no backward), got both passes',
      'family',
    );
  if (sage && opts.scoreMod !== 'none')
    throw new ValueError(
      `--score-mod: expected none with --family sage (its scores are dequantized int32 dots), got "${opts.scoreMod}"`,
      'scoreMod',
    );
  const gla = family === 'gla';
  if (gla && opts.causal)
    throw new ValueError(
      '--causal: expected none with --family gla (GLA is causal by construction), got --causal',
      'causal',
    );
  if (gla && opts.scoreMod !== 'none')
    throw new ValueError(
      `--score-mod: expected none with --family gla (it has no scores to modify), got "${opts.scoreMod}"`,
      'scoreMod',
    );
  const hyper = family === 'hyper';
  if (hyper && opts.scoreMod !== 'none')
    throw new ValueError(
      `--score-mod: expected none with --family hyper (HyperAttention takes no score mods), got "${opts.scoreMod}"`,
      'scoreMod',
    );
  if (!hyper && opts.hyper !== undefined && Object.keys(opts.hyper).length > 0)
    throw new ValueError(
      `hyper: expected HyperAttention's options only with --family hyper, got them with --family ${opts.family}`,
      'hyper',
    );
  const hstu = family === 'hstu' ? hstuBenchOptions(opts.shape, opts.causal) : undefined;
  const scoreMod = parseScoreMod(opts.scoreMod, H);
  // HSTU's kernels take score mods (after alpha q.k), but its float64 peer has none: a peer
  // time for a different function would be misleading.
  if (hstu && scoreMod && opts.reference) {
    throw new ValueError(
      `--score-mod: expected none with --family hstu (its float64 reference, hstuAttentionReference, has no score mods), got "${opts.scoreMod}"; add --no-reference to time the kernels alone`,
      'scoreMod',
    );
  }
  // Before any allocation: a shape that cannot fit fails now, not after filling memory (HSTU's
  // [B*N, H, D] tensors hold as many elements as the BHND ones, and it keeps no lse).
  checkBenchMemory(opts);
  const rng = new Rng(opts.seed);
  // GLA's layout is BTHK ([B, N, H, D], K = V = D).
  const dims = hstu ? [B * N, H, D] : gla ? [B, N, H, D] : [B, H, N, D];
  const q = rng.randn(dims);
  const k = rng.randn(dims);
  const v = rng.randn(dims);
  const dO = rng.randn(dims);
  // GLA's gates as fla's tests draw them: log sigmoid(normal) / 16 (slow decays).
  const gk = gla
    ? Tensor.from(
        rng
          .randn(dims)
          .toFloat32Array()
          .map((x) => -Math.log1p(Math.exp(-x)) / 16),
        dims,
      )
    : undefined;
  // The family's own options, as its public function takes them (hstuAttention's for hstu,
  // sageAttention's for sage: it has no loop-order or score-mod options).
  const options: Record<string, unknown> = gla
    ? { form: 'chunk' }
    : hyper
      ? // returnLse: the backward takes the forward's lse.
        { causal: opts.causal, seed: opts.seed, returnLse: true, ...opts.hyper }
      : sage
        ? { causal: opts.causal, ...(opts.qkBits === undefined ? {} : { qkBits: opts.qkBits }) }
        : {
            ...(hstu ?? { causal: opts.causal }),
            algorithm: opts.algorithm,
            scoreMod,
          };
  const normalize = family === 'sigmoid' ? ('sigmoid' as const) : ('softmax' as const);
  const referencePass = (pass: 'forward' | 'backward') => {
    if (gk)
      return pass === 'forward'
        ? glaRecurrentReference(q, k, v, gk)
        : glaRecurrentReferenceBackward(q, k, v, gk, dO);
    if (hstu)
      return pass === 'forward'
        ? hstuAttentionReference(q, k, v, hstu)
        : hstuAttentionReferenceBackward(q, k, v, dO, hstu);
    const o = { causal: opts.causal, scoreMod, normalize };
    return pass === 'forward'
      ? moddedAttentionReference(q, k, v, o)
      : moddedAttentionReferenceBackward(q, k, v, dO, o);
  };
  await prepareBackends();
  const ctx = opts.backend === 'webgpu' ? await cliWebGpuContext() : undefined;
  const on = (t: Tensor) => (ctx ? toWebGpu(t, ctx) : t);
  const [xq, xk, xv, xdO] = [q, k, v, dO].map(on) as [Tensor, Tensor, Tensor, Tensor];
  const xgk = gk ? on(gk) : undefined;
  // GPU calls return once the work is queued: wait for it, and free the results each round.
  const settle = async (results: Record<string, Tensor>) => {
    if (!ctx) return;
    await ctx.sync();
    for (const t of Object.values(results)) t.dispose();
  };
  // The registry's kernels, exactly as the family functions dispatch (an unsupported
  // combination is a typed error saying why).
  const request = (pass: 'forward' | 'backward') =>
    selectKernel(
      { family, pass, device: ctx ? 'webgpu' : 'cpu', dtype: 'f32', options },
      opts.backend,
    );
  const forward = request('forward');
  const backward = opts.passes.includes('backward') ? request('backward') : undefined;
  const inputs: KernelTensors = xgk ? { q: xq, k: xk, v: xv, gk: xgk } : { q: xq, k: xk, v: xv };
  const fwd = await forward.run(inputs, options);
  const bwdInputs: KernelTensors = { ...inputs, ...fwd, do: xdO };
  // Sage and Hyper are approximate: each row says how close o is to the float64 reference.
  let cosine: number | undefined;
  let relErr: number | undefined;
  if ((sage || hyper) && opts.reference) {
    const o = ctx ? await fwd.o!.toCpu() : fwd.o!;
    const a = accuracy(o, moddedAttentionReference(q, k, v, { causal: opts.causal }).o);
    if (sage) cosine = a.cosine;
    else relErr = a.relL2;
  }
  const rows: BenchRow[] = [];
  const problem = { batch: B, hq: H, nq: N, nk: N, d: D, causal: opts.causal };
  for (const pass of opts.passes) {
    log(`timing ${pass} (${opts.warmup} warm-up, ${opts.repeats} repeats)...`);
    const t =
      pass === 'forward'
        ? await time(
            async () => settle(await forward.run(inputs, options)),
            opts.warmup,
            opts.repeats,
          )
        : await time(
            async () => settle(await backward!.run(bwdInputs, options)),
            opts.warmup,
            opts.repeats,
          );
    let referenceMs: number | null = null;
    if (opts.reference) {
      log(`timing the float64 reference ${pass} (once)...`);
      const r = await time(() => referencePass(pass), 0, 1);
      referenceMs = r.medianMs;
    }
    const flops = gla
      ? glaFlops({ lengths: Array<number>(B).fill(N), H, K: D, V: D }, 'chunk', pass)
      : flashFlops(problem, pass);
    rows.push({
      family: opts.scoreMod === 'none' ? family : `${family}+${opts.scoreMod}`,
      backend: forward.backend,
      algorithm: opts.algorithm,
      shape: opts.shape,
      causal: gla || opts.causal,
      pass,
      flops,
      medianMs: t.medianMs,
      minMs: t.minMs,
      gflops: flops / (t.medianMs * 1e6),
      referenceMs,
      referenceGflops: referenceMs === null ? null : flops / (referenceMs * 1e6),
      speedup: referenceMs === null ? null : referenceMs / t.medianMs,
      ...(cosine === undefined ? {} : { cosine }),
      ...(relErr === undefined ? {} : { relErr }),
    });
  }
  return rows;
}

export function formatBenchTable(rows: BenchRow[]): string {
  const head = [
    'family',
    'backend',
    'algo',
    'B,H,N,D',
    'causal',
    'pass',
    'median ms',
    'GFLOP/s',
    'ref f64 ms',
    'ref GFLOP/s',
    'vs ref',
  ];
  const body = rows.map((r) => [
    r.family,
    r.backend,
    r.algorithm,
    r.shape.join(','),
    r.causal ? 'yes' : 'no',
    r.pass,
    r.medianMs.toFixed(1),
    r.gflops.toFixed(2),
    r.referenceMs === null ? '-' : r.referenceMs.toFixed(1),
    r.referenceGflops === null ? '-' : r.referenceGflops.toFixed(2),
    r.speedup === null ? '-' : `${r.speedup.toFixed(1)}x`,
  ]);
  // Approximate families (sage): how close o is to the float64 reference.
  if (rows.some((r) => r.cosine !== undefined)) {
    head.push('cos vs f64');
    for (const [i, r] of rows.entries())
      body[i]!.push(r.cosine === undefined ? '-' : r.cosine.toFixed(6));
  }
  // Hyper: its o's relative Frobenius error against exact attention (float64).
  if (rows.some((r) => r.relErr !== undefined)) {
    head.push('rel err vs f64');
    for (const [i, r] of rows.entries())
      body[i]!.push(r.relErr === undefined ? '-' : r.relErr.toExponential(2));
  }
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}
