import { bitsToBf16, bitsToF16 } from '@attnkit/tensor';
import { engineOrSkip } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { loadNative, type NativeEngine } from './index.js';

const base = engineOrSkip();
const engines: NativeEngine[] = base
  ? base.availableIsas.map((isa) => loadNative({ isa }) as NativeEngine)
  : [];

/** The halves' bytes as floats (two halves a float, an odd count padded), as nn.decodeHalf reads them. */
function asFloats(h: Uint16Array): Float32Array {
  const padded = new Uint16Array(h.length + (h.length % 2));
  padded.set(h);
  return new Float32Array(padded.buffer);
}

describe.runIf(base)('nn.decodeHalf: f16 / bf16 bit patterns to f32 on every ISA', () => {
  // Every pattern, in an order that puts specials inside vector blocks and at the tails, and an
  // odd count (the last float half padding).
  const all = Uint16Array.from({ length: 65537 }, (_, i) => (i * 40503) & 0xffff);
  for (const e of engines)
    for (const [kind, dec] of [
      ['f16', bitsToF16],
      ['bf16', bitsToBf16],
    ] as const)
      test(`${e.isa} ${kind}: all 65536 patterns equal the scalar decode (NaN as any NaN)`, () => {
        const out = new Float32Array(all.length + 1).fill(Number.NaN);
        out[all.length] = 7; // one past the end: must stay
        e.runSync(
          'nn.decodeHalf',
          { count: all.length, bf16: kind === 'bf16' ? 1 : 0 },
          { x: asFloats(all) },
          { out: out.subarray(0, all.length) },
        );
        const bad: number[] = [];
        for (let i = 0; i < all.length; i++) {
          const want = Math.fround(dec(all[i]!));
          const got = out[i]!;
          if (!(Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want))))
            bad.push(all[i]!);
        }
        expect(bad.slice(0, 5), `${bad.length} patterns differ`).toEqual([]);
        expect(out[all.length]).toBe(7);
      });

  test('every ISA gives the same bits, NaN payloads included (vector body and scalar tails alike)', () => {
    for (const bf16 of [0, 1]) {
      const bits = engines.map((e) => {
        const out = new Float32Array(all.length);
        e.runSync('nn.decodeHalf', { count: all.length, bf16 }, { x: asFloats(all) }, { out });
        return [...new Uint32Array(out.buffer)];
      });
      for (let i = 1; i < bits.length; i++)
        expect(bits[i], `${engines[i]!.isa} vs ${engines[0]!.isa}, bf16 ${bf16}`).toEqual(bits[0]);
    }
  });

  test('lengths are checked: x must hold ceil(count / 2) floats', () => {
    expect(() =>
      base!.runSync(
        'nn.decodeHalf',
        { count: 5, bf16: 0 },
        { x: new Float32Array(2) },
        { out: new Float32Array(5) },
      ),
    ).toThrow(/inputs\.x/);
  });
});
