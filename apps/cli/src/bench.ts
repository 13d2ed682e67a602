import {
  alibi,
  alibiSlopes,
  type KernelTensors,
  moddedAttentionReference,
  moddedAttentionReferenceBackward,
  type ScoreMod,
  selectKernel,
  softcap,
} from '@attnkit/attention';
import { type FlashAlgorithm, flashFlops } from '@attnkit/flash-attention';
import { Rng, type Tensor, ValueError } from '@attnkit/tensor';
import { toWebGpu } from '@attnkit/webgpu';
import { cliWebGpuContext, prepareBackends } from './backends.js';

/** Families `attnkit bench` times (registry names; 'flash' is softmax's alias). */
export const BENCH_FAMILIES = ['flash', 'softmax', 'sigmoid'] as const;
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
  /** [B, H, N, D] */
  shape: [number, number, number, number];
  causal: boolean;
  algorithm: FlashAlgorithm;
  warmup: number;
  repeats: number;
  /** Also time the float64 reference once per pass, as the peer. */
  reference: boolean;
  passes: ReadonlyArray<'forward' | 'backward'>;
  seed: number;
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
 * Times FlashAttention forward and backward on random normal inputs (median of `repeats`
 * after `warmup`), beside the float64 reference on the same shape. GFLOP/s use the
 * conventional count: 4*B*H*N^2*D forward, 2.5x backward, halved when causal.
 */
export async function runBench(
  opts: BenchOptions,
  log: (line: string) => void = () => {},
): Promise<BenchRow[]> {
  const [B, H, N, D] = opts.shape;
  const rng = new Rng(opts.seed);
  const q = rng.randn([B, H, N, D]);
  const k = rng.randn([B, H, N, D]);
  const v = rng.randn([B, H, N, D]);
  const dO = rng.randn([B, H, N, D]);
  const family = opts.family === 'flash' ? 'softmax' : opts.family;
  const scoreMod = parseScoreMod(opts.scoreMod, H);
  const options: Record<string, unknown> = {
    causal: opts.causal,
    algorithm: opts.algorithm,
    scoreMod,
  };
  const normalize = family === 'sigmoid' ? ('sigmoid' as const) : ('softmax' as const);
  await prepareBackends();
  const ctx = opts.backend === 'webgpu' ? await cliWebGpuContext() : undefined;
  const on = (t: Tensor) => (ctx ? toWebGpu(t, ctx) : t);
  const [xq, xk, xv, xdO] = [q, k, v, dO].map(on) as [Tensor, Tensor, Tensor, Tensor];
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
  const backward = request('backward');
  const inputs: KernelTensors = { q: xq, k: xk, v: xv };
  const fwd = await forward.run(inputs, options);
  const bwdInputs: KernelTensors = { ...inputs, ...fwd, do: xdO };
  const rows: BenchRow[] = [];
  const dims = { batch: B, hq: H, nq: N, nk: N, d: D, causal: opts.causal };
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
            async () => settle(await backward.run(bwdInputs, options)),
            opts.warmup,
            opts.repeats,
          );
    let referenceMs: number | null = null;
    if (opts.reference) {
      log(`timing the float64 reference ${pass} (once)...`);
      const r = await time(
        () =>
          pass === 'forward'
            ? moddedAttentionReference(q, k, v, { causal: opts.causal, scoreMod, normalize })
            : moddedAttentionReferenceBackward(q, k, v, dO, {
                causal: opts.causal,
                scoreMod,
                normalize,
              }),
        0,
        1,
      );
      referenceMs = r.medianMs;
    }
    const flops = flashFlops(dims, pass);
    rows.push({
      family: opts.scoreMod === 'none' ? family : `${family}+${opts.scoreMod}`,
      backend: forward.backend,
      algorithm: opts.algorithm,
      shape: opts.shape,
      causal: opts.causal,
      pass,
      flops,
      medianMs: t.medianMs,
      minMs: t.minMs,
      gflops: flops / (t.medianMs * 1e6),
      referenceMs,
      referenceGflops: referenceMs === null ? null : flops / (referenceMs * 1e6),
      speedup: referenceMs === null ? null : referenceMs / t.medianMs,
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
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}
