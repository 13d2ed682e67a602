import { Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type AttentionOptions,
  attention,
  ConcatKvCache,
  deviceBackendOf,
  MultiHeadAttention,
  noGrad,
  Param,
  setDeviceBackend,
  slice,
  type Var,
} from './index.js';
import { registerNativeKernels } from './kernels/native/index.js';

/**
 * attention() with paged K/V (forward only): each sequence's keys scattered over a shuffled page
 * pool and read through the block table equal the same sequence attended contiguously, on every
 * cpu backend; Nq 1 and 3, GQA, lengths that are not multiples of the page, causal and window.
 */
const backends = ['ts', ...(registerNativeKernels() === true ? ['native'] : [])];
const initial = deviceBackendOf('cpu');
afterAll(() => {
  if (initial !== undefined) setDeviceBackend('cpu', initial);
});

function pooled(rng: Rng, lengths: number[], hkv: number, d: number, pageSize: number) {
  const maxPages = Math.max(...lengths.map((n) => Math.ceil(n / pageSize)));
  const numPages = lengths.reduce((a, n) => a + Math.ceil(n / pageSize), 0) + 2;
  // Pages handed out in a shuffled order, so a sequence's pages are not consecutive.
  const order = Array.from({ length: numPages }, (_, i) => i);
  for (let i = numPages - 1; i > 0; i--) {
    const j = rng.int(0, i);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const blockTable = new Int32Array(lengths.length * maxPages).fill(-1);
  const kPool = rng.randn([numPages, pageSize, hkv, d]);
  const vPool = rng.randn([numPages, pageSize, hkv, d]);
  const kp = kPool.toFloat32Array();
  const vp = vPool.toFloat32Array();
  let next = 0;
  // Each sequence's contiguous [1, Hkv, L, D] copy, read back out of its pages.
  const seqs = lengths.map((n, b) => {
    const k = new Float32Array(hkv * n * d);
    const v = new Float32Array(hkv * n * d);
    for (let s = 0; s < Math.ceil(n / pageSize); s++) blockTable[b * maxPages + s] = order[next++]!;
    for (let t = 0; t < n; t++)
      for (let h = 0; h < hkv; h++)
        for (let c = 0; c < d; c++) {
          const page = blockTable[b * maxPages + Math.floor(t / pageSize)]!;
          const src = ((page * pageSize + (t % pageSize)) * hkv + h) * d + c;
          k[(h * n + t) * d + c] = kp[src]!;
          v[(h * n + t) * d + c] = vp[src]!;
        }
    return { k: Tensor.from(k, [1, hkv, n, d]), v: Tensor.from(v, [1, hkv, n, d]) };
  });
  return {
    kPool,
    vPool,
    seqs,
    paged: { pageSize, blockTable, lengths: Int32Array.from(lengths) },
  };
}

describe.each(backends)('attention with paged K/V on %s', (backend) => {
  it.each([
    { nq: 1, hq: 4, hkv: 2, lengths: [37, 50, 16], causal: true },
    { nq: 3, hq: 6, hkv: 3, lengths: [5, 33], causal: true },
    { nq: 1, hq: 2, hkv: 2, lengths: [70], causal: true, window: [20, 0] as const },
    { nq: 2, hq: 4, hkv: 1, lengths: [19, 48], causal: false },
    // More rows than the decode path takes (prefill): the FA2 forward through the block table.
    { nq: 9, hq: 4, hkv: 2, lengths: [9, 40], causal: true },
  ])('nq $nq, Hq $hq / Hkv $hkv, lengths $lengths', (c) => {
    setDeviceBackend('cpu', backend);
    const rng = new Rng(7 + c.nq * 31 + c.hq);
    const d = 16;
    const pageSize = 16;
    const { kPool, vPool, seqs, paged } = pooled(rng, c.lengths, c.hkv, d, pageSize);
    const q = rng.randn([c.lengths.length, c.hq, c.nq, d]);
    const opts = { causal: c.causal, ...(c.window ? { window: c.window } : {}) };
    const got = noGrad(() => attention(q, kPool, vPool, { ...opts, paged })).data.toFloat32Array();
    const perRow = c.hq * c.nq * d;
    seqs.forEach((s, b) => {
      const want = noGrad(() =>
        attention(slice(q, 0, b, b + 1) as Var, s.k, s.v, opts),
      ).data.toFloat32Array();
      let worst = 0;
      for (let i = 0; i < perRow; i++)
        worst = Math.max(worst, Math.abs(got[b * perRow + i]! - want[i]!));
      expect(worst, `sequence ${b}`).toBeLessThan(1e-5);
    });
  });

  it('refuses a gradient and the standard family, naming paged', () => {
    setDeviceBackend('cpu', backend);
    const rng = new Rng(3);
    const { kPool, vPool, paged } = pooled(rng, [20], 1, 8, 16);
    const q = new Param(rng.randn([1, 1, 1, 8]));
    expect(() => attention(q, kPool, vPool, { paged })).toThrow(ValueError);
    expect(() => attention(q, kPool, vPool, { paged })).toThrow(
      /^attention: paged expected without a gradient/,
    );
    expect(() => noGrad(() => attention(q, kPool, vPool, { paged, family: 'standard' }))).toThrow(
      /^attention: paged expected a kernel family, got family 'standard'/,
    );
  });

  it('a block table entry outside the pool and a v pool of another shape are typed errors naming them', () => {
    setDeviceBackend('cpu', backend);
    const rng = new Rng(4);
    const { kPool, vPool, paged } = pooled(rng, [20], 1, 8, 16);
    const q = rng.randn([1, 1, 1, 8]);
    const outside = { ...paged, blockTable: Int32Array.from([0, kPool.shape[0]!]) };
    expect(() => noGrad(() => attention(q, kPool, vPool, { paged: outside }))).toThrow(ValueError);
    expect(() => noGrad(() => attention(q, kPool, vPool, { paged: outside }))).toThrow(
      /^paged\.blockTable: expected/,
    );
    const narrowV = rng.randn([vPool.shape[0]!, 8, 1, 8]);
    expect(() => noGrad(() => attention(q, kPool, narrowV, { paged }))).toThrow(ShapeError);
    expect(() => noGrad(() => attention(q, kPool, narrowV, { paged }))).toThrow(/^v: expected/);
  });
});

describe('MultiHeadAttention with a hook that attends', () => {
  it('calls attend, not update and its own attention op, and decodes what the full forward gives', () => {
    // A hook that keeps its K/V by concatenation and attends itself; update must not be used.
    class Attending extends ConcatKvCache {
      calls = 0;
      override update(): { k: Var; v: Var } {
        throw new Error('update called beside attend');
      }
      attend(q: Var, k: Var, v: Var, options: AttentionOptions): Var {
        this.calls++;
        const kv = ConcatKvCache.prototype.update.call(this, k, v);
        return attention(q, kv.k, kv.v, options);
      }
    }
    const mha = new MultiHeadAttention(16, 4, { kvHeads: 2, rng: new Rng(11) });
    const x = new Rng(12).randn([1, 5, 16]);
    const full = noGrad(() => mha.forward(x)).data.toFloat32Array();
    const cache = new Attending();
    const a = noGrad(() => mha.forward(slice(x, 1, 0, 3) as Var, { kvCache: cache }));
    const b = noGrad(() => mha.forward(slice(x, 1, 3, 5) as Var, { kvCache: cache }));
    expect(cache.calls).toBe(2);
    const got = [...a.data.toFloat32Array(), ...b.data.toFloat32Array()];
    for (let i = 0; i < full.length; i++) expect(got[i]).toBeCloseTo(full[i]!, 5);
  });
});
