import { describe, expect, test } from 'vitest';
import { ioReport } from './closed-form.js';
import { ioSweep, sweepSvg } from './plot.js';

describe('ioSweep', () => {
  test('geometric M from d to N d by default, each with the report rows', () => {
    const s = ioSweep({ N: 128, d: 16 });
    expect(s.Ms[0]).toBe(16);
    expect(s.Ms.at(-1)).toBe(2048);
    expect(s.Ms.length).toBe(49);
    for (let i = 1; i < s.Ms.length; i++) expect(s.Ms[i]).toBeGreaterThan(s.Ms[i - 1]!);
    const M = s.Ms[30]!;
    expect(s.rows.filter((r) => r.M === M)).toEqual(ioReport({ N: 128, d: 16, M }));
  });

  test('a narrow integer range yields each M once', () => {
    expect(ioSweep({ N: 8, d: 2, Mmin: 10, Mmax: 13, points: 40 }).Ms).toEqual([10, 11, 12, 13]);
    expect(ioSweep({ N: 8, d: 2, Mmin: 10, Mmax: 10, points: 1 }).Ms).toEqual([10]);
  });

  test('invalid arguments throw ValueError naming them', () => {
    expect(() => ioSweep({ N: 8, d: 0 })).toThrow(/^d: /);
    expect(() => ioSweep({ N: 8, d: 2, Mmin: 0 })).toThrow(/^Mmin: /);
    expect(() => ioSweep({ N: 8, d: 2, Mmin: 9, Mmax: 8 })).toThrow(
      /^Mmax: expected at least Mmin = 9, got 8/,
    );
    expect(() => ioSweep({ N: 8, d: 2, points: 2.5 })).toThrow(/^points: /);
    expect(() => ioSweep(undefined as never)).toThrow(/^options: /);
  });
});

describe('sweepSvg', () => {
  test('one series path per algorithm that runs somewhere in the range, plus the bound', () => {
    // M up to 60 < 4d + 7 = 71: FA1 never fits, FA2 (4d + 3 = 67) neither.
    const svg = sweepSvg(ioSweep({ N: 64, d: 16, Mmin: 20, Mmax: 60, points: 9 }));
    const names = [...svg.matchAll(/<path class="series" data-series="([^"]+)"/g)].map((m) => m[1]);
    expect(names).toEqual(['standard', 'small-cache', 'lower bound']);
    expect(svg.startsWith('<svg ')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(svg).not.toContain('dv = ');
  });

  test('rejects what is not a sweep of at least two points', () => {
    expect(() => sweepSvg({} as never)).toThrow(/^sweep: /);
    expect(() => sweepSvg(ioSweep({ N: 8, d: 2, Mmin: 10, Mmax: 10, points: 1 }))).toThrow(
      /^sweep: expected at least 2 values of M/,
    );
  });
});
