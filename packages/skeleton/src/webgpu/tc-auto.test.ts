import { describe, expect, test } from 'vitest';
import { tcAutoSelect } from './tc-auto.js';

describe('tcAutoSelect: tensor cores without being asked, where the H200 measured them faster', () => {
  test('forward: f16 at D = Dv = 64 and 128 on NVIDIA only', () => {
    expect(
      tcAutoSelect(
        'forward',
        { d: 128, dv: 128, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'nvidia',
      ),
    ).toBe(true);
    expect(
      tcAutoSelect(
        'forward',
        { d: 128, dv: 128, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'NVIDIA',
      ),
    ).toBe(true);
    expect(
      tcAutoSelect(
        'forward',
        { d: 64, dv: 64, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'nvidia',
      ),
    ).toBe(true);
    expect(
      tcAutoSelect(
        'forward',
        { d: 128, dv: 64, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'nvidia',
      ),
    ).toBe(false);
    expect(
      tcAutoSelect(
        'forward',
        { d: 128, dv: 128, dtype: 'bf16', maxSeqQ: 4096, maxSeqK: 4096 },
        'nvidia',
      ),
    ).toBe(false);
    expect(
      tcAutoSelect(
        'forward',
        { d: 128, dv: 128, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'apple',
      ),
    ).toBe(false);
    expect(
      tcAutoSelect('forward', { d: 128, dv: 128, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 }, ''),
    ).toBe(false);
  });
  test('never for paged K/V (the kernels read contiguous K/V), whatever else qualifies', () => {
    for (const pass of ['forward', 'backward'] as const) {
      const problem = { d: 64, dv: 64, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 };
      expect(tcAutoSelect(pass, problem, 'nvidia')).toBe(true);
      expect(tcAutoSelect(pass, { ...problem, paged: false }, 'nvidia')).toBe(true);
      expect(tcAutoSelect(pass, { ...problem, paged: true }, 'nvidia')).toBe(false);
      expect(tcAutoSelect(pass, { ...problem, paged: true }, 'nvidia', false)).toBe(false);
    }
  });
  test('f32 (split-f16): the forward at D = Dv = 64 and 128 with 4096 rows at least, on NVIDIA only', () => {
    const at = (
      pass: 'forward' | 'backward',
      d: number,
      dv: number,
      q: number,
      k: number,
      vendor = 'nvidia',
    ) => tcAutoSelect(pass, { d, dv, dtype: 'f32', maxSeqQ: q, maxSeqK: k }, vendor);
    expect(at('forward', 128, 128, 4096, 4096)).toBe(true);
    expect(at('forward', 128, 128, 8192, 65536)).toBe(true);
    // Measured 1.27-1.9x SIMT f32 at (4, 16, 4096, 64) (H100, session 31).
    expect(at('forward', 64, 64, 4096, 4096)).toBe(true);
    // Under 4096 rows (it about tied SIMT f32 at (16, 16, 1024, 64) causal); unmeasured D.
    expect(at('forward', 64, 64, 2048, 4096)).toBe(false);
    expect(at('forward', 96, 96, 4096, 4096)).toBe(false);
    expect(at('forward', 64, 128, 4096, 4096)).toBe(false);
    expect(at('forward', 128, 128, 4095, 4096)).toBe(false);
    expect(at('forward', 128, 128, 4096, 2048)).toBe(false);
    expect(at('forward', 128, 64, 4096, 4096)).toBe(false);
    // No split-f16 backward; other vendors; paged K/V.
    expect(at('backward', 128, 128, 4096, 4096)).toBe(false);
    expect(at('forward', 128, 128, 4096, 4096, 'apple')).toBe(false);
    expect(
      tcAutoSelect(
        'forward',
        { d: 128, dv: 128, dtype: 'f32', maxSeqQ: 4096, maxSeqK: 4096, paged: true },
        'nvidia',
      ),
    ).toBe(false);
  });
  test('sequences of 1024 rows at least (a decode step stays on SIMT)', () => {
    const at = (maxSeqQ: number, maxSeqK: number) =>
      tcAutoSelect('forward', { d: 128, dv: 128, dtype: 'f16', maxSeqQ, maxSeqK }, 'nvidia');
    expect(at(1024, 1024)).toBe(true);
    expect(at(1, 262144)).toBe(false);
    expect(at(1023, 4096)).toBe(false);
    expect(at(4096, 1000)).toBe(false);
  });
  test('backward: f16 at D = Dv = 64 and 128 on NVIDIA only', () => {
    expect(
      tcAutoSelect(
        'backward',
        { d: 64, dv: 64, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'nvidia',
      ),
    ).toBe(true);
    expect(
      tcAutoSelect(
        'backward',
        { d: 128, dv: 128, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'nvidia',
      ),
    ).toBe(true);
    expect(
      tcAutoSelect(
        'backward',
        { d: 64, dv: 64, dtype: 'f32', maxSeqQ: 4096, maxSeqK: 4096 },
        'nvidia',
      ),
    ).toBe(false);
    expect(
      tcAutoSelect(
        'backward',
        { d: 64, dv: 64, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'intel',
      ),
    ).toBe(false);
  });
  test('robust access or not: the same choice (constant matrix offsets made robustness cheap)', () => {
    const at = (pass: 'forward' | 'backward', d: number, dv: number, robust: boolean) =>
      tcAutoSelect(pass, { d, dv, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 }, 'nvidia', robust);
    for (const pass of ['forward', 'backward'] as const)
      for (const robust of [false, true]) {
        expect(at(pass, 64, 64, robust)).toBe(true);
        expect(at(pass, 128, 128, robust)).toBe(true);
        expect(at(pass, 128, 64, robust)).toBe(false);
        expect(at(pass, 32, 32, robust)).toBe(false);
      }
    // f32's rule, short sequences and other vendors alike, robust or not.
    expect(
      tcAutoSelect(
        'forward',
        { d: 128, dv: 128, dtype: 'f32', maxSeqQ: 4096, maxSeqK: 4096 },
        'nvidia',
        false,
      ),
    ).toBe(true);
    expect(
      tcAutoSelect(
        'forward',
        { d: 128, dv: 128, dtype: 'f16', maxSeqQ: 16, maxSeqK: 4096 },
        'nvidia',
        false,
      ),
    ).toBe(false);
    expect(
      tcAutoSelect(
        'backward',
        { d: 64, dv: 64, dtype: 'f16', maxSeqQ: 4096, maxSeqK: 4096 },
        'amd',
        false,
      ),
    ).toBe(false);
  });
});
