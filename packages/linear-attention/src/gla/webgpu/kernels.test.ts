import { loopVarsWithoutInitializer } from '@attnkit/webgpu';
import { describe, expect, test } from 'vitest';
import {
  castShader,
  GLA_WEBGPU_CHUNK_SIZES,
  type GlaKernel,
  outputShader,
  prepShader,
  qkGradShader,
  scoreGradShader,
  scoresShader,
  stateShader,
  workgroupBytes,
} from './kernels.js';
import { GLA_RECURRENT_BACKWARD_STORAGE_BUFFERS } from './recurrent-host.js';
import { recBackwardShader, recForwardShader, recSumShader } from './recurrent-kernels.js';

/**
 * Guards on the generated WGSL, for what llvmpipe (Dawn's GLES path) cannot show. On the H200
 * the SIMT state pass computed wrong states (runs 1 and 2, BENCHMARKS.md) while llvmpipe passed:
 * its per-chunk accumulator was a bare `var acc: array<f32, 4>;` in the chunk loop, which Dawn's
 * Vulkan path (Tint's SPIR-V; reproduced in Chromium's SwiftShader, browser.test.ts) did not
 * re-zero each chunk. Run 1 was first blamed on loop bounds read through 4-byte workgroup
 * variables (the skeleton's tensor-core FA2 had trouble with small workgroup variables); moving
 * them to the read-only table did not change run 2's numbers, the explicit initializer fixed
 * SwiftShader. Both rules stay: no scalar workgroup variables, no bare var in a loop body.
 */
function kernels(): GlaKernel[] {
  const out: GlaKernel[] = [
    prepShader('f32'),
    prepShader('f16'),
    castShader('f16'),
    castShader('bf16'),
  ];
  for (const C of GLA_WEBGPU_CHUNK_SIZES)
    for (const dtype of ['f32', 'f16', 'bf16'] as const) {
      for (const vec of [false, true]) {
        out.push(scoresShader(C, dtype, vec));
        for (const mode of ['h', 'dh'] as const)
          out.push(stateShader(mode, C, dtype, dtype, undefined, vec));
        for (const mode of ['o', 'dv'] as const)
          out.push(outputShader(mode, C, 128, dtype, undefined, vec));
      }
      for (const tc of [undefined, { emulate: false }, { emulate: true }]) {
        for (const mode of ['h', 'dh'] as const) out.push(stateShader(mode, C, dtype, dtype, tc));
        for (const mode of ['o', 'dv'] as const) out.push(outputShader(mode, C, 128, dtype, tc));
        out.push(
          scoreGradShader(C, dtype, tc),
          qkGradShader(C, dtype, tc),
          qkGradShader(C, dtype, tc, 'merged'),
          qkGradShader(C, dtype, tc, 'split', true),
          qkGradShader(C, dtype, tc, 'merged', true),
        );
      }
    }
  // The recurrent form (./recurrent-kernels.ts): its loop bounds come from the read-only table.
  out.push(recSumShader());
  for (const dtype of ['f32', 'f16', 'bf16'] as const)
    for (const [K, V] of [
      [8, 8],
      [64, 64],
      [128, 128],
      [160, 20],
      [256, 256],
    ] as const) {
      out.push(recForwardShader(dtype, dtype, dtype, K, V));
      out.push(recBackwardShader(dtype, dtype, dtype, dtype, K, V));
    }
  return out;
}

describe('generated GLA kernels', () => {
  test('declare no scalar workgroup variable and use no workgroupUniformLoad', () => {
    const all = kernels();
    expect(all.length).toBeGreaterThan(100);
    for (const k of all) {
      expect(k.code, k.label).not.toMatch(/workgroupUniformLoad/);
      expect(k.code, k.label).not.toMatch(
        /var<workgroup>\s+\w+\s*:\s*(atomic<)?(u32|i32|f32|f16)\b/,
      );
      expect(k.code, k.label).toMatch(/var<workgroup>|@compute/);
    }
  });

  test('declare every var in a loop body with an initializer (wgsl.ts loopVarsWithoutInitializer)', () => {
    for (const k of kernels()) expect(loopVarsWithoutInitializer(k.code), k.label).toEqual([]);
    // The per-chunk accumulator of the tensor-core state pass, the kind the H200 kept across
    // chunks (run 2); the SIMT pass has none since session 16 (the products add into the state
    // after its decay), every register array of its chunk walk declared with an initializer.
    const tcStates = stateShader('h', 64, 'f16', 'f32', { emulate: true });
    expect(tcStates.code).toMatch(/for \(var ci = 0u;[\s\S]*var mAcc = [\w<>, ]+\(\);/);
    const states = stateShader('h', 64, 'f32', 'f32');
    expect(states.code).toMatch(/var S = array<f32, 16>\(\);[\s\S]*for \(var ci = 0u;/);
    expect(states.code).not.toMatch(/var acc/);
  });

  test('store whole vec4s into workgroup arrays, never one component (a race under Tint HLSL)', () => {
    // Writing one component of a vector may touch the whole vector (WGSL; Tint's HLSL emits a
    // read-modify-write): threads writing different components of one workgroup vec4 race.
    const componentStores = (code: string) => {
      const names = [...code.matchAll(/var<workgroup>\s+(\w+)\s*:/g)].map((m) => m[1]!);
      return names.filter((n) =>
        new RegExp(`\\b${n}\\[[^\\]]*\\](\\[[^\\]]*\\]|\\.[xyzw])\\s*=[^=]`).test(code),
      );
    };
    for (const k of kernels()) expect(componentStores(k.code), k.label).toEqual([]);
    // The pattern catches what the o pass did before (2026-12-04 review).
    expect(
      componentStores(
        'var<workgroup> sa: array<vec4<f32>, 8>;\nsa[(4u * xq) * 17u + t / 4u][t % 4u] = g[0];',
      ),
    ).toEqual(['sa']);
    expect(componentStores('var<workgroup> sa: array<vec4<f32>, 8>;\nsa[i].x = 1.0;')).toEqual([
      'sa',
    ]);
  });

  test('workgroupBytes counts the declared arrays as Dawn does (16-byte rounded)', () => {
    // Dawn's own figures for these (pipeline-creation errors on llvmpipe, 2026-12-04 review).
    expect(workgroupBytes(scoresShader(32, 'f32', true).code)).toBe(11520);
    expect(workgroupBytes(scoresShader(64, 'f32', true).code)).toBe(21760);
    expect(workgroupBytes(stateShader('h', 64, 'f16', 'f32', undefined, true).code)).toBe(16384);
    expect(
      workgroupBytes('var<workgroup> a: array<f32, 3>;\nvar<workgroup> b: array<vec4<f32>, 2>;'),
    ).toBe(48);
    expect(() => workgroupBytes('var<workgroup> a: array<mat4x4<f32>, 2>;')).toThrow(
      /unknown element type/,
    );
    // Every declared array is counted (none has an element type the table lacks).
    for (const k of kernels())
      if (k.code.includes('var<workgroup>'))
        expect(workgroupBytes(k.code), k.label).toBeGreaterThan(0);
  });

  test('the chunk form runs in 10 storage buffers per pass (the merged dq/dk/dgk variant)', () => {
    const storage = (k: GlaKernel) => k.bindings.filter((b) => b !== 'uniform').length;
    for (const k of kernels().filter((x) => !x.label.startsWith('gla recurrent'))) {
      // The split dq/dk/dgk pass (12) runs only where the adapter grants 12 (host.ts).
      if (/^gla dq dk dgk( tc)?$/.test(k.label)) expect(storage(k), k.label).toBe(12);
      else expect(storage(k), k.label).toBeLessThanOrEqual(10);
    }
    expect(storage(qkGradShader(64, 'f16', undefined, 'merged'))).toBe(10);
  });

  test('the recurrent backward binds what its host checks the adapter for', () => {
    const k = recBackwardShader('f32', 'f32', 'f32', 'f32', 64, 64);
    expect(k.bindings.filter((b) => b !== 'uniform').length).toBe(
      GLA_RECURRENT_BACKWARD_STORAGE_BUFFERS,
    );
  });

  test('the pattern catches the construct that failed on the H200', () => {
    const bad = 'var<workgroup> wCount: u32;\nlet count = workgroupUniformLoad(&wCount);';
    expect(bad).toMatch(/var<workgroup>\s+\w+\s*:\s*(atomic<)?(u32|i32|f32|f16)\b/);
  });
});
