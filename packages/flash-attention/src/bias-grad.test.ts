import { accuracy, scoreBias, softcap } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type FlashAttentionOptions, flashAttention, flashAttentionBackward } from './index.js';

// scoreBias(bias, { grad: true }): the backward's dbias (the skeleton's bias gradient) against
// central finite differences on ts, and the native and webgpu backends against ts; BHND with
// GQA, the bias shared over (b, h), per head, or full; THD; a softcap after the bias.
const rng = new Rng(41);
const [B, Hq, Hkv, Nq, Nk, D] = [2, 4, 2, 9, 11, 16];
const q = rng.randn([B, Hq, Nq, D]);
const k = rng.randn([B, Hkv, Nk, D]);
const v = rng.randn([B, Hkv, Nk, D]);
const SHAPES: Record<string, number[]> = {
  shared: [Nq, Nk],
  'per head': [Hq, Nq, Nk],
  full: [B, Hq, Nq, Nk],
};

let ctx: WebGpuContext | undefined;
beforeAll(async () => {
  ctx = await webGpuTestContext();
});
afterAll(() => ctx?.destroy());

async function run(
  backend: 'ts' | 'native' | 'webgpu',
  bias: Tensor,
  extra: FlashAttentionOptions = {},
  inputs: { q: Tensor; k: Tensor; v: Tensor } = { q, k, v },
) {
  const dev = (t: Tensor) => (backend === 'webgpu' ? toWebGpu(t, ctx!) : t);
  const mods = [scoreBias(dev(bias), { grad: true }), ...[extra.scoreMod ?? []].flat()];
  const o: FlashAttentionOptions = { causal: true, ...extra, scoreMod: mods, backend };
  const [qq, kk, vv] = [dev(inputs.q), dev(inputs.k), dev(inputs.v)];
  const f = await flashAttention(qq, kk, vv, o);
  const dO = new Rng(3).randn(f.o.shape);
  const g = await flashAttentionBackward(qq, kk, vv, f.o, f.lse, dev(dO), o);
  const cpu = async (t: Tensor) => (t.device === 'cpu' ? t : t.toCpu());
  return { o: await cpu(f.o), dO, dbias: await cpu(g.dbias!) };
}

/** Central differences of sum(o * dO) w.r.t. a few bias elements (ts). */
async function finiteDifferences(
  bias: Tensor,
  at: readonly number[],
  extra: FlashAttentionOptions = {},
  inputs = { q, k, v },
): Promise<number[]> {
  const { dO } = await run('ts', bias, extra, inputs);
  const G = dO.toFloat32Array();
  const loss = async (b: Tensor) => {
    const mods = [scoreBias(b), ...[extra.scoreMod ?? []].flat()];
    const o = (
      await flashAttention(inputs.q, inputs.k, inputs.v, {
        causal: true,
        ...extra,
        scoreMod: mods,
        backend: 'ts',
      })
    ).o.toFloat32Array();
    let s = 0;
    for (let e = 0; e < o.length; e++) s += o[e]! * G[e]!;
    return s;
  };
  const eps = 1e-2;
  const out: number[] = [];
  for (const e of at) {
    const up = bias.toFloat32Array().slice();
    const dn = up.slice();
    up[e] = up[e]! + eps;
    dn[e] = dn[e]! - eps;
    out.push(
      ((await loss(Tensor.from(up, bias.shape))) - (await loss(Tensor.from(dn, bias.shape)))) /
        (2 * eps),
    );
  }
  return out;
}

describe('scoreBias(bias, { grad: true }): dbias', () => {
  for (const [name, shape] of Object.entries(SHAPES)) {
    test(`bias ${name} [${shape}], GQA, causal: ts vs finite differences, native and webgpu vs ts`, async (c) => {
      const bias = rng.randn(shape);
      const ts = await run('ts', bias);
      expect(ts.dbias.shape).toEqual(shape);
      const d = ts.dbias.toFloat32Array();
      // Elements of allowed pairs (row 8 sees every key of the causal bottom-right band) and
      // one masked pair (row 0, key 10: j > i + Nk - Nq) which must be 0.
      const row = (i: number, j: number) => bias.size - Nq * Nk + i * Nk + j;
      const at = [row(8, 0), row(8, 10), row(4, 3), row(0, 2), row(0, 10)];
      const fd = await finiteDifferences(bias, at);
      at.forEach((e, n) => {
        expect(Math.abs(d[e]! - fd[n]!), `element ${e}`).toBeLessThanOrEqual(
          2e-3 * Math.max(1, Math.abs(fd[n]!)),
        );
      });
      expect(Math.abs(d[row(0, 10)]!)).toBe(0);
      for (const backend of ['native', 'webgpu'] as const) {
        if (backend === 'webgpu' && !ctx) continue;
        const other = await run(backend, bias);
        expect(accuracy(other.dbias, ts.dbias).relL2, backend).toBeLessThanOrEqual(1e-5);
      }
      if (!ctx) c.skip('no WebGPU adapter (native checked)');
    });
  }

  test('a softcap after the bias: dbias carries its derivative (finite differences)', async () => {
    const bias = rng.randn([Hq, Nq, Nk]);
    const extra: FlashAttentionOptions = { scoreMod: softcap(1.5) };
    const ts = await run('ts', bias, extra);
    const at = [Nq * Nk + 8 * Nk + 1, 3 * Nq * Nk + 5 * Nk + 4];
    const fd = await finiteDifferences(bias, at, extra);
    const d = ts.dbias.toFloat32Array();
    at.forEach((e, n) => {
      expect(Math.abs(d[e]! - fd[n]!)).toBeLessThanOrEqual(2e-3 * Math.max(1, Math.abs(fd[n]!)));
    });
    const native = await run('native', bias, extra);
    expect(accuracy(native.dbias, ts.dbias).relL2).toBeLessThanOrEqual(1e-5);
  });

  test('THD varlen, bias shared over the batch: every backend agrees with finite differences', async () => {
    const cu = [0, 5, 12];
    const tq = rng.randn([12, 2, D]);
    const tk = rng.randn([12, 2, D]);
    const tv = rng.randn([12, 2, D]);
    const bias = rng.randn([2, 7, 7]);
    const extra: FlashAttentionOptions = { layout: 'THD', cuSeqlensQ: cu, cuSeqlensK: cu };
    const inputs = { q: tq, k: tk, v: tv };
    const ts = await run('ts', bias, extra, inputs);
    const at = [0, 4 * 7 + 2, 49 + 6 * 7 + 6, 49 + 6 * 7 + 5];
    const fd = await finiteDifferences(bias, at, extra, inputs);
    const d = ts.dbias.toFloat32Array();
    at.forEach((e, n) => {
      expect(Math.abs(d[e]! - fd[n]!)).toBeLessThanOrEqual(2e-3 * Math.max(1, Math.abs(fd[n]!)));
    });
    for (const backend of ['native', 'webgpu'] as const) {
      if (backend === 'webgpu' && !ctx) continue;
      const other = await run(backend, bias, extra, inputs);
      expect(accuracy(other.dbias, ts.dbias).relL2, backend).toBeLessThanOrEqual(1e-5);
    }
  });

  test('a bias with grad after a softcap, or two: ValueError naming the mod', async () => {
    const bias = rng.randn([Nq, Nk]);
    await expect(
      flashAttentionBackward(q, k, v, q, q, q, {
        scoreMod: [softcap(2), scoreBias(bias, { grad: true })],
        backend: 'ts',
      }),
    ).rejects.toMatchObject({ name: 'ValueError', argument: 'scoreMod[1].grad' });
    await expect(
      flashAttention(q, k, v, {
        scoreMod: [scoreBias(bias, { grad: true }), scoreBias(bias, { grad: true })],
      }),
    ).rejects.toMatchObject({ name: 'ValueError', argument: 'scoreMod[1].grad' });
    await expect(
      flashAttention(q, k, v, { scoreMod: { kind: 'bias', bias, grad: 1 as unknown as boolean } }),
    ).rejects.toMatchObject({ name: 'ValueError', argument: 'scoreMod.grad' });
  });

  test('without grad the backward returns no dbias', async () => {
    const bias = rng.randn([Nq, Nk]);
    const o: FlashAttentionOptions = { causal: true, scoreMod: scoreBias(bias), backend: 'ts' };
    const f = await flashAttention(q, k, v, o);
    const g = await flashAttentionBackward(q, k, v, f.o, f.lse, f.o, o);
    expect(g.dbias).toBeUndefined();
  });
});
