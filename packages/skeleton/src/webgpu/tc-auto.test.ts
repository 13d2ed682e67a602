import { describe, expect, test } from 'vitest';
import { tcAutoSelect } from './tc-auto.js';

describe('tcAutoSelect: tensor cores without being asked, where the H200 measured them faster', () => {
  test('forward: f16 at D = Dv = 128 on NVIDIA only', () => {
    expect(tcAutoSelect('forward', { d: 128, dv: 128, dtype: 'f16' }, 'nvidia')).toBe(true);
    expect(tcAutoSelect('forward', { d: 128, dv: 128, dtype: 'f16' }, 'NVIDIA')).toBe(true);
    expect(tcAutoSelect('forward', { d: 64, dv: 64, dtype: 'f16' }, 'nvidia')).toBe(false);
    expect(tcAutoSelect('forward', { d: 128, dv: 64, dtype: 'f16' }, 'nvidia')).toBe(false);
    expect(tcAutoSelect('forward', { d: 128, dv: 128, dtype: 'f32' }, 'nvidia')).toBe(false);
    expect(tcAutoSelect('forward', { d: 128, dv: 128, dtype: 'bf16' }, 'nvidia')).toBe(false);
    expect(tcAutoSelect('forward', { d: 128, dv: 128, dtype: 'f16' }, 'apple')).toBe(false);
    expect(tcAutoSelect('forward', { d: 128, dv: 128, dtype: 'f16' }, '')).toBe(false);
  });
  test('backward: f16 at D = Dv = 64 on NVIDIA only', () => {
    expect(tcAutoSelect('backward', { d: 64, dv: 64, dtype: 'f16' }, 'nvidia')).toBe(true);
    expect(tcAutoSelect('backward', { d: 128, dv: 128, dtype: 'f16' }, 'nvidia')).toBe(false);
    expect(tcAutoSelect('backward', { d: 64, dv: 64, dtype: 'f32' }, 'nvidia')).toBe(false);
    expect(tcAutoSelect('backward', { d: 64, dv: 64, dtype: 'f16' }, 'intel')).toBe(false);
  });
});
