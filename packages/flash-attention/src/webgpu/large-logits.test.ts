import {
  expectLargeLogitGrads,
  LARGE_LOGITS,
  largeLogitCase,
  largeLogitReference,
  webGpuTestContext,
} from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { flashAttentionBackwardWebGpu, flashAttentionWebGpu } from '../index.js';

// Issue 9 item 2 on WGSL (the CPU backends: ../large-logits.test.ts): max |logit| over
// 1e1..1e6, odd lengths, Nq != Nk, GQA, causal and not, poisoned outputs.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());
const DIMS = { hq: 4, hkv: 2, nq: 37, nk: 45, d: 32 };

describe.skipIf(ctx === undefined)('large logits, backend webgpu', () => {
  for (const causal of [false, true]) {
    test.each([...LARGE_LOGITS])(`causal ${causal}, max |logit| %d`, async (maxLogit) => {
      const c = largeLogitCase(11 + Math.round(Math.log10(maxLogit) * 10), DIMS, maxLogit, {
        causal,
      });
      const ref = largeLogitReference(c);
      const [q, k, v, dO] = [c.q, c.k, c.v, c.dO].map((t) => toWebGpu(t, ctx!));
      const { o, lse } = await flashAttentionWebGpu(q!, k!, v!, { causal });
      const g = await flashAttentionBackwardWebGpu(q!, k!, v!, o, lse, dO!, { causal });
      const got = {
        dq: await g.dq.toCpu(),
        dk: await g.dk.toCpu(),
        dv: await g.dv.toCpu(),
      };
      expect(got.dq.dtype).toBe('f32');
      expectLargeLogitGrads(c, got, ref, `webgpu causal ${causal} ${maxLogit}`);
      for (const t of [q, k, v, dO, o, lse, g.dq, g.dk, g.dv]) t!.dispose();
    });
  }
});
