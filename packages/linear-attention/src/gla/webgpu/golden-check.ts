import { basename } from 'node:path';
import { accuracy, goldenGlaOptions, loadGolden } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { expect } from 'vitest';

// Node-only test support (node:path, the golden loader, vitest's expect): kept out of
// ./testing.ts, which the headless-Chromium page (./browser-entry.ts) bundles.
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
