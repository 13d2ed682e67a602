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
} from './kernels.js';
import { recBackwardShader, recForwardShader, recSumShader } from './recurrent-kernels.js';

/**
 * A guard on the generated WGSL, for what llvmpipe cannot show: on the H200 (NVIDIA driver
 * 580) the state passes once read their loop bounds through 4-byte workgroup variables
 * (workgroupUniformLoad of a u32 written by invocation 0) and the chunk loop never ran (run 1,
 * BENCHMARKS.md: final state = h0), while llvmpipe computed them right; the skeleton's
 * tensor-core FA2 hit the same driver behaviour (tc-forward.ts smallFirst). No GLA kernel
 * declares a scalar workgroup variable or needs workgroupUniformLoad: uniform values come from
 * the uniform Params or the read-only chunk table.
 */
function kernels(): GlaKernel[] {
  const out: GlaKernel[] = [
    prepShader('f32'),
    prepShader('f16'),
    castShader('f16'),
    castShader('bf16'),
  ];
  for (const C of GLA_WEBGPU_CHUNK_SIZES)
    for (const dtype of ['f32', 'f16', 'bf16'] as const)
      for (const tc of [undefined, { emulate: false }, { emulate: true }]) {
        out.push(scoresShader(C, dtype));
        for (const mode of ['h', 'dh'] as const) out.push(stateShader(mode, C, dtype, dtype, tc));
        for (const mode of ['o', 'dv'] as const) out.push(outputShader(mode, C, 128, dtype, tc));
        out.push(scoreGradShader(C, dtype, tc), qkGradShader(C, dtype, tc));
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

  test('the pattern catches the construct that failed on the H200', () => {
    const bad = 'var<workgroup> wCount: u32;\nlet count = workgroupUniformLoad(&wCount);';
    expect(bad).toMatch(/var<workgroup>\s+\w+\s*:\s*(atomic<)?(u32|i32|f32|f16)\b/);
  });
});
