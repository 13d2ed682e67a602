import { createHash } from 'node:crypto';
import {
  alibi,
  resolveAttentionProblem,
  resolveScoreMods,
  type ScoreMod,
  scoreBias,
  softcap,
} from '@attnkit/attention';
import { Rng } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import type { TiledHooks } from '../hooks.js';
import { hookResources, PLAIN_HOOKS, type WgslHooks } from './hooks.js';
import { planWebGpuFlash, type WebGpuFlashKernel } from './plan.js';
import {
  combineShader,
  dkdvShader,
  dqShader,
  forwardShader,
  statsShader,
  type WgslKernel,
} from './shaders.js';

// The generators without a device: the declared bindings are the kernel's binding list, and
// hooks add code, bindings and uniform fields only when they need them.

const rng = new Rng(1);
const q = rng.randn([2, 2, 12, 8]);
const p = resolveAttentionProblem(q, q, q);
const CUSTOM: ScoreMod = {
  kind: 'custom',
  name: 'twice',
  ts: (s) => 2 * s,
  tsGrad: () => 2,
  wgsl: 'fn twice(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 { return 2.0 * s; }',
  wgslGrad: 'fn twice_grad(s: f32, b: u32, h: u32, i: u32, j: u32) -> f32 { return 2.0; }',
};

function generate(kernel: WebGpuFlashKernel, hooks: WgslHooks): WgslKernel {
  const plan = planWebGpuFlash({
    kernel,
    d: 8,
    dv: 8,
    maxComputeWorkgroupStorageSize: 16384,
    maxComputeInvocationsPerWorkgroup: 256,
  });
  const spec = { plan, dtype: 'f32' as const, vecD: true, vecV: true, blockSparse: false, hooks };
  return kernel === 'forward'
    ? forwardShader(spec)
    : kernel === 'dq'
      ? dqShader(spec)
      : dkdvShader(spec);
}

/** Names of the declared bindings in binding-number order. */
function declared(code: string): string[] {
  const out: string[] = [];
  for (const m of code.matchAll(/@group\(0\) @binding\((\d+)\) var<[^>]+> (\w+):/g))
    out[Number(m[1])] = m[2]!;
  return out;
}

function names(k: WgslKernel): string[] {
  return k.bindings.map((b) => b.name);
}

describe('WGSL generators', () => {
  test('plain softmax: no hook code, bindings as declared', () => {
    const fwd = generate('forward', PLAIN_HOOKS);
    expect(names(fwd)).toEqual(['P', 'q', 'k', 'v', 'aux', 'o', 'lse']);
    expect(names(generate('dq', PLAIN_HOOKS))).toEqual([
      'P',
      'q',
      'k',
      'v',
      'dout',
      'stats',
      'aux',
      'dq',
    ]);
    expect(names(generate('dkdv', PLAIN_HOOKS))).toEqual([
      'P',
      'q',
      'k',
      'v',
      'dout',
      'stats',
      'aux',
      'dk',
      'dv',
    ]);
    expect(names(statsShader('f16', false))).toEqual(['P', 'o', 'dout', 'lse', 'aux', 'stats']);
    for (const k of [
      fwd,
      generate('dq', PLAIN_HOOKS),
      generate('dkdv', PLAIN_HOOKS),
      statsShader('bf16', true),
    ]) {
      expect(declared(k.code)).toEqual(names(k));
      expect(k.code).not.toMatch(/hk_/);
    }
  });

  test('hooks add their bindings, uniform fields and functions only where needed', () => {
    const mods = resolveScoreMods(
      [softcap(3), alibi(new Float32Array(2)), scoreBias(rng.randn([12, 12])), CUSTOM],
      p,
      'cpu',
    );
    const softmax: TiledHooks = {
      normalize: { kind: 'softmax', sinks: new Float32Array(2) },
      scoreMods: mods,
    };
    const fwd = hookResources(softmax, undefined, 'forward');
    const bwd = hookResources(softmax, undefined, 'backward');
    expect(fwd.hooks.bindings.map((b) => b.name)).toEqual(['sinks', 'slopes1', 'bias2']);
    // The backward sees the sinks through LSE only.
    expect(bwd.hooks.bindings.map((b) => b.name)).toEqual(['slopes1', 'bias2']);
    expect(fwd.hooks.uniforms.map(([n]) => n)).toEqual([
      'cap0',
      'biasBatch2',
      'biasHead2',
      'biasRow2',
    ]);
    expect(fwd.values).toEqual({ cap0: 3, biasBatch2: 0, biasHead2: 0, biasRow2: 12 });
    const f = generate('forward', fwd.hooks);
    expect(names(f)).toEqual(['P', 'q', 'k', 'v', 'aux', 'o', 'lse', 'sinks', 'slopes1', 'bias2']);
    expect(declared(f.code)).toEqual(names(f));
    expect(f.code).toContain('  cap0: f32,');
    expect(f.code).toContain('fn twice(');
    expect(f.code).not.toContain('fn twice_grad(');
    const dq = generate('dq', bwd.hooks);
    expect(dq.code).toContain('fn twice_grad(');
    expect(dq.code).toContain('hk_score_bwd(');

    const sigmoid: TiledHooks = {
      normalize: { kind: 'sigmoid', bias: new Float32Array(2) },
      scoreMods: [],
    };
    const sf = hookResources(sigmoid, undefined, 'forward').hooks;
    const sb = hookResources(sigmoid, undefined, 'backward').hooks;
    expect(names(generate('forward', sf))).toEqual(['P', 'q', 'k', 'v', 'aux', 'o', 'sigmoidBias']);
    expect(names(generate('dkdv', sb))).toEqual([
      'P',
      'q',
      'k',
      'v',
      'dout',
      'aux',
      'dk',
      'dv',
      'sigmoidBias',
    ]);
    expect(generate('forward', sf).code).not.toMatch(/lse|enable subgroups/);
  });
});

// The plain kernels (no schedule) are pinned byte for byte: measured numbers depend on them.
describe('WGSL generators are pinned', () => {
  const mods = resolveScoreMods([softcap(3), alibi(new Float32Array(2)), CUSTOM], p, 'cpu');
  const hooked: TiledHooks = {
    normalize: { kind: 'softmax', sinks: new Float32Array(2) },
    scoreMods: mods,
  };
  const sigmoid: TiledHooks = {
    normalize: { kind: 'sigmoid', bias: new Float32Array(2) },
    scoreMods: [],
  };
  function all(): string {
    const out: string[] = [];
    for (const kernel of ['forward', 'dq', 'dkdv'] as const) {
      for (const [d, sub] of [
        [8, 0],
        [64, 32],
        [6, 0],
      ] as const) {
        const plan = planWebGpuFlash({
          kernel,
          d,
          dv: d,
          maxComputeWorkgroupStorageSize: 16384,
          maxComputeInvocationsPerWorkgroup: 256,
          subgroupMinSize: sub,
        });
        for (const dtype of ['f32', 'f16'] as const) {
          for (const blockSparse of [false, true]) {
            for (const tiled of [undefined, hooked, sigmoid]) {
              const hooks = tiled
                ? hookResources(tiled, undefined, kernel === 'forward' ? 'forward' : 'backward')
                    .hooks
                : PLAIN_HOOKS;
              const spec = {
                plan,
                dtype,
                vecD: d % 4 === 0,
                vecV: d % 4 === 0,
                blockSparse,
                hooks,
              };
              const gen =
                kernel === 'forward' ? forwardShader : kernel === 'dq' ? dqShader : dkdvShader;
              out.push(gen(spec).code);
            }
          }
        }
      }
    }
    return out.join('\n////\n');
  }
  test('split-K: its forward and combine declare their bindings; band is the plain kernel', () => {
    const plan = planWebGpuFlash({
      kernel: 'forward',
      d: 8,
      dv: 8,
      maxComputeWorkgroupStorageSize: 16384,
      maxComputeInvocationsPerWorkgroup: 256,
    });
    const hooks = hookResources(hooked, undefined, 'forward').hooks;
    const spec = { plan, dtype: 'f16' as const, vecD: true, vecV: true, blockSparse: true, hooks };
    expect(forwardShader({ ...spec, schedule: 'band' }).code).toBe(forwardShader(spec).code);
    const fwd = forwardShader({ ...spec, schedule: 'splitK' });
    const comb = combineShader({ ...spec, schedule: 'splitK' });
    expect(names(fwd)).toEqual(['P', 'q', 'k', 'v', 'aux', 'pstat', 'pacc', 'slopes1']);
    expect(names(comb)).toEqual(['P', 'aux', 'pstat', 'pacc', 'o', 'lse', 'sinks']);
    for (const k of [fwd, comb]) {
      expect(declared(k.code)).toEqual(names(k));
      expect(k.code).toContain('  splits: u32,');
    }
  });
  test('stream-K: split-K bindings (no new storage buffer), its plan fields, no block sparsity', () => {
    const plan = planWebGpuFlash({
      kernel: 'forward',
      d: 8,
      dv: 8,
      maxComputeWorkgroupStorageSize: 16384,
      maxComputeInvocationsPerWorkgroup: 256,
    });
    const hooks = hookResources(hooked, undefined, 'forward').hooks;
    const spec = { plan, dtype: 'f16' as const, vecD: true, vecV: true, blockSparse: false, hooks };
    const fwd = forwardShader({ ...spec, schedule: 'streamK' });
    const fix = combineShader({ ...spec, schedule: 'streamK' });
    expect(names(fwd)).toEqual(names(forwardShader({ ...spec, schedule: 'splitK' })));
    expect(names(fix)).toEqual(names(combineShader({ ...spec, schedule: 'splitK' })));
    for (const k of [fwd, fix]) {
      expect(declared(k.code)).toEqual(names(k));
      for (const f of ['splits', 'skWorkers', 'skRecords', 'skUnits', 'skCounts', 'skHeads'])
        expect(k.code).toContain(`  ${f}: u32,`);
    }
    // One workgroup per worker, looping over its pieces; the fix-up merges the unit's count.
    expect(fwd.code).toContain('for (var pc = aux[P.skWorkers + wg.x]; pc < pcEnd; pc++)');
    expect(fwd.code).toContain('var ct = ctBegin; ct < ctEnd; ct++');
    expect(fix.code).toContain(`+ i / ${plan.br}u];`);
    expect(() => forwardShader({ ...spec, blockSparse: true, schedule: 'streamK' })).toThrow(
      expect.objectContaining({ argument: 'schedule' }),
    );
  });
  test('sha256 of the band kernels', () => {
    expect(createHash('sha256').update(all()).digest('hex')).toBe(
      'ca8fc90715ac188f5811cc73271b40fbc3104bff5349eb219cc9daa1d7e09cce',
    );
  });
});
