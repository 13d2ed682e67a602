import { allowed, resolveAttentionProblem } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import {
  bindBuffers,
  bindingKinds,
  declareBindings,
  packUniform,
  type WgslBinding,
} from '@attnkit/webgpu';
import { describe, expect, test } from 'vitest';
import { buildAux, buildParams } from './aux.js';
import { PARAM_FIELDS, packParams, paramsStruct } from './params.js';

describe('aux tables', () => {
  test('sequence table and block-sparse tile summary agree with a per-element check', () => {
    const rng = new Rng(3);
    for (let trial = 0; trial < 20; trial++) {
      const nq = rng.int(1, 80);
      const nk = rng.int(1, 80);
      const blockQ = rng.int(3, 20);
      const blockK = rng.int(3, 20);
      const nbq = Math.ceil(nq / blockQ);
      const nbk = Math.ceil(nk / blockK);
      const mask = Tensor.from(
        Uint8Array.from({ length: 2 * nbq * nbk }, () => (rng.uniform() < 0.5 ? 1 : 0)),
        [1, 2, nbq, nbk],
      );
      const q = rng.randn([1, 2, nq, 8]);
      const k = rng.randn([1, 2, nk, 8]);
      const p = resolveAttentionProblem(q, k, k, { blockSparse: { blockQ, blockK, mask } });
      const tileQ = rng.int(1, 40);
      const tileK = rng.int(1, 40);
      const t = buildAux(p, { tileQ, tileK });
      expect(Array.from(t.aux.subarray(0, 4))).toEqual([0, 0, nq, nk]);
      for (let h = 0; h < 2; h++) {
        for (let qt = 0; qt < t.ntq; qt++) {
          for (let kt = 0; kt < t.ntk; kt++) {
            let kept = 0;
            let total = 0;
            for (let i = qt * tileQ; i < Math.min((qt + 1) * tileQ, nq); i++) {
              for (let j = kt * tileK; j < Math.min((kt + 1) * tileK, nk); j++) {
                total++;
                if (allowed(p, 0, h, i, j)) kept++;
              }
            }
            const state = t.aux[t.tsOff + (h * t.ntq + qt) * t.ntk + kt];
            if (kept === 0) expect(state).toBe(0);
            else if (kept === total) expect(state).toBe(2);
            else expect(state).toBe(1);
          }
        }
      }
      expect(Array.from(t.aux.subarray(t.bsOff))).toEqual(Array.from(mask.data()));
    }
  });

  test('with a mask mod, skipped tiles have no passing pair and mask-free tiles only passing ones', () => {
    const rng = new Rng(5);
    for (let trial = 0; trial < 20; trial++) {
      const nq = rng.int(1, 60);
      const nk = rng.int(1, 60);
      const len = rng.int(2, 12);
      const q = rng.randn([1, 2, nq, 8]);
      const k = rng.randn([1, 2, nk, 8]);
      const p = resolveAttentionProblem(q, k, k, {
        maskMod: {
          name: 'doc',
          ts: (_b, h, i, j) => Math.floor(i / (len + h)) === Math.floor(j / (len + h)),
          perHead: true,
          blockSize: rng.int(2, 10),
        },
      });
      const tileQ = rng.int(1, 24);
      const tileK = rng.int(1, 24);
      const t = buildAux(p, { tileQ, tileK });
      for (let h = 0; h < 2; h++) {
        for (let qt = 0; qt < t.ntq; qt++) {
          for (let kt = 0; kt < t.ntk; kt++) {
            let pass = 0;
            let total = 0;
            for (let i = qt * tileQ; i < Math.min((qt + 1) * tileQ, nq); i++) {
              for (let j = kt * tileK; j < Math.min((kt + 1) * tileK, nk); j++) {
                total++;
                if (allowed(p, 0, h, i, j)) pass++;
              }
            }
            const state = t.aux[t.tsOff + (h * t.ntq + qt) * t.ntk + kt];
            if (state === 0) expect(pass).toBe(0);
            if (state === 2) expect(pass).toBe(total);
          }
        }
      }
      // The block mask keeps its 0 / 1 / 2 values (the kernels call the mod in blocks of 1).
      expect(Array.from(t.aux.subarray(t.bsOff))).toEqual(Array.from(p.blockSparse!.mask));
    }
  });

  test('THD strides and offsets', () => {
    const rng = new Rng(4);
    const q = rng.randn([10, 4, 8]);
    const k = rng.randn([7, 2, 8]);
    const v = rng.randn([7, 2, 6]);
    const p = resolveAttentionProblem(q, k, v, {
      layout: 'THD',
      cuSeqlensQ: [0, 4, 10],
      cuSeqlensK: [0, 0, 7],
    });
    const t = buildAux(p, { tileQ: 8, tileK: 8 });
    expect(Array.from(t.aux.subarray(0, 8))).toEqual([0, 0, 4, 0, 4, 0, 6, 7]);
    const params = buildParams(p, t);
    expect([params.qBatch, params.qHead, params.qRow]).toEqual([0, 8, 32]);
    expect([params.vBatch, params.vHead, params.vRow]).toEqual([0, 6, 12]);
    expect([params.oBatch, params.oHead, params.oRow]).toEqual([0, 6, 24]);
    expect([params.lBatch, params.lHead]).toEqual([0, 10]);
    expect(params.group).toBe(2);
  });

  test('the uniform struct and its packing agree field by field', () => {
    const struct = paramsStruct();
    const values = Object.fromEntries(
      PARAM_FIELDS.map(([name], i) => [name, name === 'left' ? -1 : i + 0.5]),
    );
    const buf = packParams(values as never);
    expect(buf.byteLength % 16).toBe(0);
    const f = new Float32Array(buf);
    const u = new Uint32Array(buf);
    const s = new Int32Array(buf);
    PARAM_FIELDS.forEach(([name, type], i) => {
      expect(struct).toContain(`  ${name}: ${type},`);
      if (type === 'f32') expect(f[i]).toBe(i + 0.5);
      else if (type === 'i32') expect(s[i]).toBe(name === 'left' ? -1 : i);
      else expect(u[i]).toBe(i);
    });
  });

  test('packParams with extra fields equals packUniform over both lists; a missing value is a ValueError naming it', () => {
    const values = Object.fromEntries(
      PARAM_FIELDS.map(([name], i) => [name, name === 'left' ? -3 : i * 1.25]),
    ) as Record<string, number>;
    const extra = [
      ['pgSize', 'u32'],
      ['bias', 'f32'],
      ['shift', 'i32'],
    ] as const;
    const extraValues = { pgSize: 16, bias: -0.75, shift: -2 };
    const got = new Uint8Array(packParams(values as never, extra, extraValues));
    const want = new Uint8Array(
      packUniform([...PARAM_FIELDS, ...extra], { ...extraValues, ...values }),
    );
    expect(got.byteLength).toBe(Math.ceil((PARAM_FIELDS.length + 3) / 4) * 16);
    expect([...got]).toEqual([...want]);
    expect(() => packParams(values as never, extra, { pgSize: 16, bias: 1 })).toThrow(
      expect.objectContaining({ name: 'ValueError', argument: 'values.shift' }),
    );
    const { scale: _, ...noScale } = values;
    expect(() => packParams(noScale as never)).toThrow(/values\.scale: expected a number/);
  });

  test('bindings: declarations numbered in list order, layout and buffers by name', () => {
    const list: WgslBinding[] = [
      { name: 'P', kind: 'uniform', type: 'Params' },
      { name: 'x', kind: 'read', type: { dtype: 'f16', vec: true } },
      { name: 'aux', kind: 'read', type: 'array<u32>' },
      { name: 'y', kind: 'storage', type: { dtype: 'f32', vec: false } },
    ];
    const code = declareBindings(list);
    expect(code).toContain('@group(0) @binding(0) var<uniform> P: Params;');
    expect(code).toContain('@group(0) @binding(1) var<storage, read> x: array<vec2<u32>>;');
    expect(code).toContain('fn ld4_x(');
    expect(code).toContain('@group(0) @binding(2) var<storage, read> aux: array<u32>;');
    expect(code).toContain('@group(0) @binding(3) var<storage, read_write> y: array<f32>;');
    expect(code).toContain('fn st_y(');
    expect(bindingKinds(list)).toEqual(['uniform', 'read', 'read', 'storage']);
    expect(bindBuffers(list, { y: 4, aux: 3, x: 2, P: 1, unused: 9 })).toEqual([1, 2, 3, 4]);
    expect(() => bindBuffers(list, { P: 1, x: 2, y: 4 })).toThrow(/buffers\.aux/);
  });
});
