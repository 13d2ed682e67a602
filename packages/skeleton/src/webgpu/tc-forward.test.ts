import { resolveAttentionProblem } from '@attnkit/attention';
import { Rng } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { SOFTMAX_HOOKS } from '../hooks.js';
import { tiledForwardWebGpu } from './host.js';
import { tcForwardShader, tcForwardWorkgroupBytes } from './tc-forward.js';

// What CI can check of the tensor-core forward (llvmpipe has no subgroup matrices): the
// generator's text and validation, the workgroup-memory model, and that a request on an adapter
// without the configs is a ValueError naming tensorCores (nothing falls through silently). The
// kernel itself is verified on the device (benchmarks/gpu/bench-tc.ts; results committed).
describe('tensor-core forward generator', () => {
  test('unrolls one named matrix per 16 columns, no arrays of matrices', () => {
    const { code, bindings } = tcForwardShader({
      d: 64,
      dv: 32,
      subgroups: 4,
      keyMatrices: 2,
      lazy: 8,
    });
    expect(code).toContain('enable chromium_experimental_subgroup_matrix;');
    expect(code).toContain('@workgroup_size(128)');
    expect(
      code.match(/let qa = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>\(&qs,/g),
    ).toHaveLength(4);
    // Q is staged into its own region (once), K and V into kv (per tile).
    expect(code.match(/qs\[d \+ 0u\] = h0\.x;/g)).toHaveLength(1);
    expect(code.match(/kv\[kvK \+ d \+ 0u\] = h0\.x;/g)).toHaveLength(1);
    expect(code.match(/kv\[kvV \+ d \+ 0u\] = h0\.x;/g)).toHaveLength(1);
    expect(code).toContain('let kvK = (ct & 1u) * 2048u;');
    const split = tcForwardShader({
      d: 64,
      dv: 32,
      subgroups: 4,
      keyMatrices: 2,
      lazy: 8,
      kvLayout: 'split',
    }).code;
    expect(split).toContain('let kvV = 2048u;');
    expect(code).toContain('var o1 = subgroup_matrix_result<f32, 16, 16>();');
    expect(code).not.toContain('var o2 ');
    expect(code).toContain('var s1 = ');
    expect(code).not.toContain('var s2 ');
    expect(code).toContain('tmax > m + 8.0');
    expect(code).not.toMatch(/array<subgroup_matrix/);
    expect(bindings.map((b) => b.name)).toEqual(['P', 'q', 'k', 'v', 'aux', 'o', 'lse']);
    expect(
      tcForwardShader({ d: 16, dv: 16, subgroups: 1, keyMatrices: 1, lazy: 0 }).code,
    ).toContain('if (tmax > m)');
  });

  test('validation names the field', () => {
    const ok = { d: 64, dv: 64, subgroups: 4, keyMatrices: 4, lazy: 8 };
    expect(() => tcForwardShader({ ...ok, d: 72 })).toThrow(
      /^d: expected a positive multiple of 16, got 72/,
    );
    expect(() => tcForwardShader({ ...ok, dv: 0 })).toThrow(/^dv:/);
    expect(() => tcForwardShader({ ...ok, subgroups: 0 })).toThrow(/^subgroups:/);
    expect(() => tcForwardShader({ ...ok, keyMatrices: 9 })).toThrow(/^keyMatrices:/);
    expect(() => tcForwardShader({ ...ok, lazy: -1 })).toThrow(/^lazy:/);
  });

  test('workgroup memory: K/V staging, the Q block, S scratch, P, exchange, alphas and flag', () => {
    // K/V staging 2 x BC 32 x max(D, Dv) f16 (two halves), the Q block BR 64 x D f16, then per
    // subgroup 16 x 32 f32 S, 16 x 32 f16 P, 32 exchange floats and 16 alphas, then the flag.
    expect(
      tcForwardWorkgroupBytes({ d: 128, dv: 128, subgroups: 4, keyMatrices: 2, lazy: 8 }),
    ).toBe(2 * 32 * 128 * 2 + 64 * 128 * 2 + 4 * (16 * 32 * 4 + 16 * 32 * 2 + 32 * 4 + 16 * 4) + 4);
  });
});

const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

describe.skipIf(!ctx)('tensorCores on an adapter without subgroup matrices', () => {
  test('is a ValueError naming tensorCores, with the reason', async () => {
    const rng = new Rng(3);
    const [q, k, v] = [0, 1, 2].map(() => rng.randn([1, 2, 20, 32]).astype('f16'));
    const p = resolveAttentionProblem(q!, k!, v!);
    const g = [q!, k!, v!].map((t) => toWebGpu(t, ctx!));
    const run = tiledForwardWebGpu(p, SOFTMAX_HOOKS, g[0]!, g[1]!, g[2]!, { tensorCores: true });
    if (ctx!.features.subgroupMatrixConfigs.length === 0)
      await expect(run).rejects.toThrow(
        /^tensorCores: expected a problem and adapter the tensor-core forward runs, got one where the adapter has no f16 x f16 -> f32 16x16x16 subgroup matrices/,
      );
    else await run;
  });
});
