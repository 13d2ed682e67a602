import { decodeHalfArray, Rng } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { afterAll, describe, expect, test } from 'vitest';
import { SPLIT_F16_WORKGROUPS, splitF16Layout, splitF16Shader } from './split-f16.js';

const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

// The pass is plain WGSL (no shader-f16), so llvmpipe runs the same code the device does.
describe.skipIf(!ctx)('splitF16Shader: [hi | lo] halves of an f32 buffer', () => {
  test('hi has the bits a half holds, hi + lo 2^-11 holds x to 2^-21 (2^-36 absolute below 2^-14), the padding untouched', async () => {
    const rng = new Rng(5);
    // Odd n; normals, probabilities down to e^-12, values in (1e-4, 1e-2), exact halves, zeros,
    // values in (1e-9, 6e-5) (subnormal halves and below: V with std 1e-5 is such a tensor).
    const n = 4099;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const c = i % 6;
      x[i] =
        c === 0
          ? rng.normal()
          : c === 1
            ? Math.exp(-12 * rng.uniform())
            : c === 2
              ? 10 ** (-4 + 2 * rng.uniform()) * (rng.uniform() < 0.5 ? -1 : 1)
              : c === 3
                ? Math.round(rng.normal() * 64) / 64
                : c === 4
                  ? 0
                  : 10 ** (-9 + 4.78 * rng.uniform()) * (rng.uniform() < 0.5 ? -1 : 1);
    }
    const lay = splitF16Layout(x.byteLength);
    expect(lay).toEqual({ n, loOff: 4104, bytes: 4 * 4104 });
    const kernel = splitF16Shader();
    const prog = await ctx!.pipelines.get({
      code: kernel.code,
      bindings: ['uniform', 'read', 'storage', 'storage'],
      label: 'split-f16 test',
    });
    const bx = ctx!.createFromData(x, 'x');
    // Poisoned: NaN halves everywhere, so a word the pass skips or a padding it writes shows.
    const by = ctx!.createFromData(new Uint16Array(lay.bytes / 2).fill(0x7e00), 'y');
    const bu = ctx!.createUniform(new Uint32Array([lay.n, lay.loOff, lay.n, 0]), 'U');
    const bf = ctx!.createFromData(new Uint32Array([0]), 'flag');
    try {
      await ctx!.dispatch([
        {
          program: prog,
          buffers: [bu, bx, by, bf],
          workgroups: [Math.min(SPLIT_F16_WORKGROUPS, Math.ceil(n / 512))],
        },
      ]);
      const bits = new Uint16Array(await ctx!.readBuffer(by, lay.bytes));
      const h = decodeHalfArray('f16', bits, new Float64Array(bits.length));
      let worst = 0;
      let tiny = 0;
      const xb = new Uint32Array(x.buffer);
      for (let i = 0; i < n; i++) {
        const hi = h[i]!;
        const lo = h[lay.loOff + i]!;
        // hi: x with its low 13 mantissa bits cleared (exact in f16 for |x| >= 2^-14).
        if (Math.abs(x[i]!) >= 2 ** -14) {
          const masked = new Float32Array(
            new Uint32Array([new Uint32Array(x.buffer)[i]! & 0xffffe000]).buffer,
          )[0]!;
          expect(hi).toBe(masked);
        } else {
          // Below it a subnormal half keeps one bit fewer per binade (none but 0 below 2^-24):
          // hi is x with those bits cleared, so f16(hi) rounded nothing away that lo lacks.
          const e = (xb[i]! >>> 23) & 0xff;
          const drop = 126 - Math.min(Math.max(e, 103), 113);
          const kept = new Float32Array(
            new Uint32Array([((xb[i]! >>> drop) << drop) >>> 0]).buffer,
          )[0]!;
          expect(Math.abs(hi)).toBe(e < 103 ? 0 : Math.abs(kept));
          // lo (a half, maybe subnormal) holds x - hi to 2^-25, so x to 2^-36 absolute.
          const err = Math.abs(hi + lo / 2048 - x[i]!);
          expect(err).toBeLessThanOrEqual(2 ** -36);
          if (x[i] !== 0) tiny++;
        }
        const scale = Math.max(Math.abs(x[i]!), 2 ** -14);
        worst = Math.max(worst, Math.abs(hi + lo / 2048 - x[i]!) / scale);
      }
      expect(worst).toBeLessThanOrEqual(2 ** -21);
      // The probabilities down to e^-12 and the last class include values below 2^-14.
      expect(tiny).toBeGreaterThan(500);
      // The halves between n and loOff (hi's padding): the last word's second half is 0 (n is
      // odd), the rest as poisoned.
      expect(bits[n]).toBe(0);
      expect(Array.from(bits.subarray(n + 1, lay.loOff))).toEqual([0x7e00, 0x7e00, 0x7e00, 0x7e00]);
      // Every value within split-f16's domain: the range flag stays 0.
      expect(new Uint32Array(await ctx!.readBuffer(bf, 4))[0]).toBe(0);
    } finally {
      for (const b of [bx, by, bu, bf]) b.destroy();
    }
  });

  // The range flag (host.ts runs the SIMT kernel after the tensor-core one when it is set).
  test('the range flag: set by |x| >= 32768, infinities and NaN among the checked elements, not below 32768', async () => {
    const kernel = splitF16Shader();
    const prog = await ctx!.pipelines.get({
      code: kernel.code,
      bindings: ['uniform', 'read', 'storage', 'storage'],
      label: 'split-f16 flag test',
    });
    const flagOf = async (special: number, at: number, checked = 1001) => {
      const n = 1001;
      const rng = new Rng(at);
      const x = Float32Array.from({ length: n }, () => rng.normal() * 100);
      x[at] = special;
      const lay = splitF16Layout(x.byteLength);
      const bx = ctx!.createFromData(x, 'x');
      const by = ctx!.createStorageBuffer(lay.bytes, 'y');
      const bu = ctx!.createUniform(new Uint32Array([lay.n, lay.loOff, checked, 0]), 'U');
      const bf = ctx!.createFromData(new Uint32Array([0]), 'flag');
      try {
        await ctx!.dispatch([{ program: prog, buffers: [bu, bx, by, bf], workgroups: [1] }]);
        return new Uint32Array(await ctx!.readBuffer(bf, 4))[0];
      } finally {
        for (const b of [bx, by, bu, bf]) b.destroy();
      }
    };
    // First, an odd position (a word's second half), the last element (the odd n's lone half).
    for (const at of [0, 777, 1000]) {
      // From 32768 lo can overflow f16 (32799.992: x - hi = 8191 / 256, times 2^11 = 65528).
      for (const bad of [
        32768,
        32799.992,
        -65504,
        65520,
        -70000,
        3e38,
        Number.POSITIVE_INFINITY,
        -Infinity,
        Number.NaN,
      ])
        expect({ at, bad, flag: await flagOf(bad, at) }).toEqual({ at, bad, flag: 1 });
      for (const ok of [32767.998, -32767, 1e-30, 0])
        expect({ at, ok, flag: await flagOf(ok, at) }).toEqual({ at, ok, flag: 0 });
    }
    // Past the tensor's elements (U.z; a pooled buffer's stale tail): not checked. The element
    // just before the limit, in the same word as the one after it, still is.
    expect(await flagOf(Number.NaN, 900, 900)).toBe(0);
    expect(await flagOf(Number.NaN, 1000, 900)).toBe(0);
    expect(await flagOf(Number.NaN, 899, 900)).toBe(1);
    expect(await flagOf(1e5, 898, 899)).toBe(1);
    expect(await flagOf(1e5, 899, 899)).toBe(0);
  });
});
