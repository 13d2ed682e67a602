import { basename } from 'node:path';
import { accuracy, goldenGlaOptions, loadGolden } from '@attnkit/attention';
import { type Rng, Tensor } from '@attnkit/tensor';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { expect } from 'vitest';

/** A random GLA problem for the WebGPU tests (BTHK; fla's log-sigmoid gates or -20 ones). */
export interface ProblemSpec {
  B: number;
  T: number;
  H: number;
  K: number;
  V: number;
  dtype?: 'f32' | 'f16' | 'bf16';
  h0?: boolean;
  /** Sequence lengths packed along T (B must be 1; T their sum). */
  lengths?: number[];
  scale?: number;
  C?: number;
  /** 'strong': half of the channels at -20 per step. */
  gates?: 'logsigmoid' | 'strong';
}

export function makeProblem(rng: Rng, s: ProblemSpec) {
  const dtype = s.dtype ?? 'f32';
  const { B, T, H, K, V } = s;
  const n = B * T * H * K;
  const z = rng.randn([n], 'f64').toFloat64Array();
  const g = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const ls = -Math.log1p(Math.exp(-z[i]!));
    g[i] = s.gates === 'strong' && i % 2 === 0 ? -20 * (0.5 + 0.5 * rng.uniform()) : ls;
  }
  const N = s.lengths ? s.lengths.length : B;
  const options: {
    scale?: number;
    initialState?: Tensor;
    cuSeqlens?: Int32Array;
  } = {};
  if (s.scale !== undefined) options.scale = s.scale;
  if (s.h0) options.initialState = rng.randn([N, H, K, V], dtype);
  if (s.lengths) {
    const cu = [0];
    for (const l of s.lengths) cu.push(cu[cu.length - 1]! + l);
    options.cuSeqlens = Int32Array.from(cu);
  }
  return {
    q: rng.randn([B, T, H, K], dtype),
    k: rng.randn([B, T, H, K], dtype),
    v: rng.randn([B, T, H, V], dtype),
    gk: Tensor.from(g, [B, T, H, K]).astype(dtype),
    dO: rng.randn([B, T, H, V], dtype),
    dht: rng.randn([N, H, K, V], dtype),
    options,
  };
}

type GlaRun = (
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  options: Record<string, unknown>,
) => Promise<{ o: Tensor; finalState?: Tensor | undefined }>;
type GlaGrad = (
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  options: Record<string, unknown>,
) => Promise<Record<string, Tensor | undefined>>;

/**
 * One gla golden through a forward / backward pair on webgpu tensors (the golden's options plus
 * `extra`): o, ht and every gradient on the device, finite, within `tol(q)` relative L2 of the
 * golden's references (`inclusive`: <= rather than <); every tensor made is disposed.
 */
export async function checkGlaGoldenWebGpu(
  ctx: WebGpuContext,
  file: string,
  forward: GlaRun,
  backward: GlaGrad,
  o: { extra?: Record<string, unknown>; tol: (q: Tensor) => number; inclusive?: boolean },
): Promise<void> {
  const g = await loadGolden(file);
  const t = g.tensors;
  const made: Tensor[] = [];
  const up = (x: Tensor) => {
    const u = toWebGpu(x, ctx);
    made.push(u);
    return u;
  };
  const base = goldenGlaOptions(g) as Record<string, unknown>;
  const options = {
    ...base,
    ...(base.initialState ? { initialState: up(base.initialState as Tensor) } : {}),
    ...o.extra,
    backend: 'webgpu',
  };
  const [q, k, v, gk] = [t.q!, t.k!, t.v!, t.gk!].map(up) as [Tensor, Tensor, Tensor, Tensor];
  const r = await forward(q, k, v, gk, options);
  const grads = await backward(q, k, v, gk, up(t.do!), {
    ...options,
    ...(t.dht ? { dht: up(t.dht) } : {}),
  });
  const produced: Record<string, Tensor | undefined> = { o: r.o, ht: r.finalState, ...grads };
  const tol = o.tol(t.q!);
  expect(g.references.sort()).toEqual(['dgk', 'dh0', 'dk', 'dq', 'dv', 'ht', 'o']);
  for (const name of g.references) {
    const got = produced[name];
    expect(got?.device, name).toBe('webgpu');
    const acc = accuracy(await got!.toCpu(), t[name]!);
    expect(acc.nonFinite, name).toBe(0);
    const e = expect(acc.relL2, `${name} of ${basename(file)}`);
    if (o.inclusive) e.toBeLessThanOrEqual(tol);
    else e.toBeLessThan(tol);
  }
  for (const x of [...made, ...Object.values(produced)]) x?.dispose();
}
