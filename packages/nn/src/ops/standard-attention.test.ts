import { Rng } from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import { Param } from '../autograd.js';
import { setDeviceBackend } from '../dispatch.js';
import { registerNativeKernels } from '../kernels/native/index.js';
import { attention } from './attention.js';
import { mul } from './elementwise.js';
import { sum } from './reduce.js';

/**
 * family 'standard' (scores materialised through ops) against 'flash' (FA2's kernels), f32,
 * on ts and (when its engine loads) native.
 */
const backends = registerNativeKernels() === true ? ['ts', 'native'] : ['ts'];
describe.each(backends)("attention family 'standard' on %s", (backend) => {
  const cases = [
    { name: 'causal, GQA', b: 2, hq: 4, hkv: 2, nq: 9, nk: 9, d: 8, causal: true },
    { name: 'causal, Nq < Nk (decoding)', b: 1, hq: 2, hkv: 1, nq: 3, nk: 11, d: 4, causal: true },
    { name: 'window [3, 1]', b: 1, hq: 2, hkv: 2, nq: 7, nk: 7, d: 4, window: [3, 1] as const },
    { name: 'full', b: 1, hq: 2, hkv: 2, nq: 5, nk: 6, d: 4 },
  ];
  for (const c of cases)
    it(`${c.name}: output and gradients match flash`, () => {
      setDeviceBackend('cpu', backend);
      const rng = new Rng(3);
      const q0 = rng.randn([c.b, c.hq, c.nq, c.d]);
      const k0 = rng.randn([c.b, c.hkv, c.nk, c.d]);
      const v0 = rng.randn([c.b, c.hkv, c.nk, c.d]);
      const w = rng.randn([c.b, c.hq, c.nq, c.d]);
      const run = (family: string) => {
        const [q, k, v] = [new Param(q0), new Param(k0), new Param(v0)];
        const o = attention(q, k, v, {
          family,
          ...(c.causal ? { causal: true } : {}),
          ...(c.window ? { window: c.window } : {}),
        });
        sum(mul(o, w)).backward();
        return [o.data, q.grad!, k.grad!, v.grad!].map((t) => t.toFloat32Array());
      };
      const [flash, standard] = [run('flash'), run('standard')];
      standard.forEach((got, i) => {
        const want = flash[i]!;
        for (let j = 0; j < want.length; j++) expect(got[j]).toBeCloseTo(want[j]!, 4);
      });
    });
});
