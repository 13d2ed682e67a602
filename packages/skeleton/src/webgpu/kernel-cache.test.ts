import { describe, expect, test } from 'vitest';
import { generatedKernel } from './host.js';
import type { WgslKernel } from './shaders.js';

// Kernels are generated once per spec (their WGSL text is the slow part of a small call) and
// found again by the spec's JSON; a different spec gets its own kernel.
describe('generatedKernel', () => {
  test('generates once per (name, arguments), returns the same kernel object after', () => {
    let made = 0;
    const make = (spec: { br: number; hooks: { normalize: string } }, vec: boolean): WgslKernel => {
      made++;
      return { code: `// ${spec.br} ${spec.hooks.normalize} ${vec} ${made}`, bindings: [] };
    };
    const a = generatedKernel('t-once', make, { br: 64, hooks: { normalize: 'softmax' } }, true);
    const b = generatedKernel('t-once', make, { br: 64, hooks: { normalize: 'softmax' } }, true);
    expect(b).toBe(a);
    expect(made).toBe(1);
    const c = generatedKernel('t-once', make, { br: 64, hooks: { normalize: 'silu' } }, true);
    const d = generatedKernel('t-once', make, { br: 64, hooks: { normalize: 'softmax' } }, false);
    const e = generatedKernel('t-other', make, { br: 64, hooks: { normalize: 'softmax' } }, true);
    expect(new Set([a, c, d, e]).size).toBe(4);
    expect(made).toBe(4);
    expect(c.code).toContain('silu');
  });
});
