import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closedFormIO, lowerBound, simulate } from '@attnkit/io-complexity';
import { describe, expect, test } from 'vitest';
import { type IoCommandIo, ioCommand } from './io.js';

function captureIo(): IoCommandIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

const KEYS = ['algo', 'N', 'd', 'M', 'reads', 'writes', 'total', 'peakFast', 'lowerBound', 'ratio'];

describe('attnkit io --algo', () => {
  test('--json gives exactly the report keys, equal to the closed form and the bound', async () => {
    const io = captureIo();
    expect(
      await ioCommand(['--algo', 'fa2', '--N', '1024', '--d', '64', '--M', '8192', '--json'], io),
    ).toBe(0);
    expect(io.stderr).toEqual([]);
    const row = JSON.parse(io.stdout.join(''));
    expect(Object.keys(row)).toEqual(KEYS);
    const c = closedFormIO('fa2', { N: 1024, d: 64, M: 8192 });
    const lb = lowerBound(1024, 64, 8192);
    expect(row).toEqual({
      algo: 'fa2',
      N: 1024,
      d: 64,
      M: 8192,
      reads: c.reads,
      writes: c.writes,
      total: c.total,
      peakFast: c.peakFast,
      lowerBound: lb,
      ratio: c.total / lb,
    });
  });

  test('--simulate runs the loops and reports the same numbers', async () => {
    for (const algo of ['standard', 'fa1', 'fa2', 'fa2-backward', 'small-cache']) {
      const args = ['--algo', algo, '--N', '100', '--d', '16', '--M', '700', '--json'];
      const a = captureIo();
      const b = captureIo();
      expect(await ioCommand(args, a)).toBe(0);
      expect(await ioCommand([...args, '--simulate'], b)).toBe(0);
      expect(JSON.parse(b.stdout[0]!)).toEqual(JSON.parse(a.stdout[0]!));
      expect(JSON.parse(b.stdout[0]!).total).toBe(
        simulate(algo as never, { N: 100, d: 16, M: 700 }).total,
      );
    }
  });

  test('--causal (with --simulate) counts the causal mask rule: fewer reads than dense', async () => {
    const args = [
      '--algo',
      'fa2',
      '--N',
      '512',
      '--d',
      '32',
      '--M',
      '8192',
      '--simulate',
      '--json',
    ];
    const dense = captureIo();
    const causal = captureIo();
    expect(await ioCommand(args, dense)).toBe(0);
    expect(await ioCommand([...args, '--causal'], causal)).toBe(0);
    const d = JSON.parse(dense.stdout[0]!);
    const c = JSON.parse(causal.stdout[0]!);
    expect(c.reads).toBe(simulate('fa2', { N: 512, d: 32, M: 8192, causal: true }).reads);
    expect(c.reads).toBeLessThan(0.8 * d.reads);
    const bad = captureIo();
    expect(await ioCommand(args.filter((a) => a !== '--simulate').concat('--causal'), bad)).toBe(2);
    expect(bad.stderr.join('\n')).toMatch(/--causal: needs --simulate/);
  });

  test('text output: one labelled line per quantity', async () => {
    const io = captureIo();
    expect(
      await ioCommand(['--algo', 'small-cache', '--N', '512', '--d', '64', '--M', '1024'], io),
    ).toBe(0);
    const lines = io.stdout.join('\n').split('\n');
    expect(lines[0]).toMatch(
      /^small-cache: N = 512, d = 64, M = 1024, tile \d+, chunk \d+ \(closed form\)$/,
    );
    const c = closedFormIO('small-cache', { N: 512, d: 64, M: 1024 });
    expect(lines.slice(1, 5)).toEqual([
      `reads        ${c.reads}`,
      `writes       ${c.writes}`,
      `total        ${c.total}`,
      `peak fast    ${c.peakFast} of 1024 elements`,
    ]);
    expect(lines[5]).toBe(`lower bound  ${Math.ceil(lowerBound(512, 64, 1024))}`);
    expect(lines[6]).toMatch(/^ratio {8}\d+\.\d{3}$/);
    expect(Number(lines[6]!.split(/\s+/)[1])).toBeCloseTo(c.total / lowerBound(512, 64, 1024), 3);
  });

  test('bad input: exit 2 and one line naming the flag', async () => {
    const cases: [string[], RegExp][] = [
      [
        ['--algo', 'fa3', '--N', '8', '--d', '4', '--M', '100'],
        /^attnkit io: --algo: expected one of standard, fa1, fa2, fa2-backward, small-cache, got "fa3"$/,
      ],
      [['--N', '8', '--d', '4', '--M', '100'], /^attnkit io: --algo: .*got nothing$/],
      [
        ['--algo', 'fa2', '--d', '4', '--M', '100'],
        /^attnkit io: --N: expected a positive integer, got nothing$/,
      ],
      [
        ['--algo', 'fa2', '--N', '8', '--d', '0', '--M', '100'],
        /^attnkit io: --d: expected a positive integer, got "0"$/,
      ],
      [
        ['--algo', 'fa2', '--N', '8', '--d', '4', '--M', '1e3'],
        /^attnkit io: --M: expected a positive integer, got "1e3"$/,
      ],
      [
        ['--algo', 'fa1', '--N', '8', '--d', '64', '--M', '200'],
        /^attnkit io: --M: expected at least 263 elements for fa1/,
      ],
      [
        ['--algo', 'fa2', '--N', '8', '--d', '4', '--M', '100', '--bogus'],
        /^attnkit io: Unknown option '--bogus'/,
      ],
      [
        ['--algo', 'fa2', '--N', '8', '--d', '4', '--M', '100', '--svg', 'x.svg'],
        /^attnkit io: --svg: only used with --sweep$/,
      ],
      [['--sweep', '--algo', 'fa2'], /^attnkit io: --algo: not used with --sweep/],
      [
        ['--sweep', '--Mmin', '500', '--Mmax', '100'],
        /^attnkit io: --Mmax: expected at least Mmin = 500, got 100$/,
      ],
      [['--sweep', '--N', '2.5'], /^attnkit io: --N: /],
      [
        ['--sweep', '--N', '8', '--d', '2', '--points', '1'],
        /^attnkit io: --points: expected an integer >= 2 .*got "1"$/,
      ],
      [['--sweep', '--points', '0'], /^attnkit io: --points: /],
    ];
    for (const [args, message] of cases) {
      const io = captureIo();
      expect(await ioCommand(args, io), args.join(' ')).toBe(2);
      expect(io.stdout).toEqual([]);
      expect(io.stderr.length).toBe(1);
      expect(io.stderr[0]).not.toContain('\n');
      expect(io.stderr[0]).toMatch(message);
    }
  });
});

/** A tag-balance check: every element closed in order, one root, nothing after it. */
function checkWellFormed(svg: string): { root: string; tags: string[] } {
  const body = svg.replace(/<\?xml[^>]*\?>/, '').trim();
  const stack: string[] = [];
  const tags: string[] = [];
  let root = '';
  const tagRe = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g;
  let last = 0;
  for (let m = tagRe.exec(body); m !== null; m = tagRe.exec(body)) {
    const between = body.slice(last, m.index);
    expect(between, 'no stray markup between tags').not.toMatch(/[<>]/);
    expect(between.replace(/&(#\d+|amp|lt|gt|quot|apos);/g, ''), 'entities escaped').not.toContain(
      '&',
    );
    last = tagRe.lastIndex;
    const [, close, name, , selfClose] = m;
    if (stack.length === 0 && root !== '') throw new Error(`content after the root: <${name}>`);
    if (close) {
      expect(stack.pop(), `</${name}> closes the open element`).toBe(name);
    } else {
      if (root === '') root = name!;
      tags.push(name!);
      if (!selfClose) stack.push(name!);
    }
  }
  expect(body.slice(last).trim()).toBe('');
  expect(stack).toEqual([]);
  return { root, tags };
}

describe('attnkit io: sizes', () => {
  test('--window 64,0 at N = 1e7 simulates (the count bound is the band, not N^2)', async () => {
    // Before: no --window flag, and the library refused N = 1e7 outright ("N: ... < 2^50").
    const args = ['--algo', 'fa2', '--N', '10000000', '--d', '64', '--M', '100000'];
    const io = captureIo();
    // An N^2 simulation (1e14 pairs) would not finish within the test's limit: the limit is
    // the check, not a wall-clock bound that CI's load can break.
    expect(await ioCommand([...args, '--simulate', '--window', '64,0', '--json'], io)).toBe(0);
    expect(io.stderr).toEqual([]);
    const row = JSON.parse(io.stdout[0]!);
    const problem = { N: 1e7, d: 64, M: 100_000, window: [64, 0] as const };
    expect(row.reads).toBe(simulate('fa2', problem).reads);
    expect(row.reads).toBeLessThan(1e7 * 64 + 1e7 * 1000 * 128);
    // The dense closed form at the same N answers too.
    const dense = captureIo();
    expect(await ioCommand([...args, '--json'], dense)).toBe(0);
    expect(JSON.parse(dense.stdout[0]!).total).toBe(
      closedFormIO('fa2', { N: 1e7, d: 64, M: 100_000 }).total,
    );
  }, 60_000);

  test('size errors: exit 2 at once, one line naming the flags, the limit and the value', async () => {
    const cases: [string[], RegExp][] = [
      [
        // standard writes S and P: 3 N^2 at N = 1e8 is past 2^53.
        ['--algo', 'standard', '--N', '100000000', '--d', '64', '--M', '1000'],
        /^attnkit io: --N\/--d: standard with blockQ \d+, blockK \d+ at M = 1000 counts up to \d\.\d{3}e\+17 elements, past exact integer counts \(at most 2\^53 - 1 = 9007199254740991\); got N = 100000000, d = 64$/,
      ],
      [
        // A dense simulation at N = 1e7 would visit ~1e11 blocks (hours): refused, not hung.
        ['--algo', 'fa2', '--N', '10000000', '--d', '64', '--M', '100000', '--simulate'],
        /^attnkit io: --simulate: fa2 at --N 10000000 would visit about \d\.\d\de\+\d+ blocks, more than 2e7 .*drop --simulate for the closed form/,
      ],
      [
        ['--algo', 'fa2', '--N', '8', '--d', '4', '--M', '100', '--window', '2,0'],
        /^attnkit io: --window: needs --simulate/,
      ],
      [
        ['--algo', 'fa2', '--N', '8', '--d', '4', '--M', '100', '--simulate', '--window', '2'],
        /^attnkit io: --window: expected left,right \(integers >= -1, -1 = unbounded\), got "2"$/,
      ],
      [
        ['--algo', 'fa1', '--N', '8', '--d', '4', '--M', '100', '--simulate', '--window', '2,0'],
        /^attnkit io: --causal\/window: .*fa1 models dense attention only/,
      ],
      [['--sweep', '--window', '2,0'], /^attnkit io: --window: not used with --sweep/],
      [
        ['--sweep', '--N', '8', '--d', '2', '--points', '1001'],
        /^attnkit io: --points: expected at most 1000 \(more than the plot's pixels\), got "1001"$/,
      ],
      [
        ['--sweep', '--points', '99999999999999999999'],
        /^attnkit io: --points: expected at most 1000 .*got "99999999999999999999"$/,
      ],
    ];
    for (const [args, message] of cases) {
      const io = captureIo();
      const t0 = performance.now();
      expect(await ioCommand(args, io), args.join(' ')).toBe(2);
      expect(performance.now() - t0, args.join(' ')).toBeLessThan(2000);
      expect(io.stdout).toEqual([]);
      expect(io.stderr.length).toBe(1);
      expect(io.stderr[0]).toMatch(message);
    }
    const ok = captureIo();
    expect(await ioCommand(['--sweep', '--N', '8', '--d', '2', '--points', '1000'], ok)).toBe(0);
  });
});

describe('attnkit io --sweep', () => {
  test('writes a well-formed SVG: root <svg>, one path per series, axis labels, legend', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnkit-io-'));
    const file = join(dir, 'io.svg');
    const io = captureIo();
    expect(await ioCommand(['--sweep', '--N', '1024', '--d', '64', '--svg', file], io)).toBe(0);
    expect(io.stdout.at(-1)).toBe(`wrote ${file}`);
    const svg = readFileSync(file, 'utf8');
    const { root, tags } = checkWellFormed(svg);
    expect(root).toBe('svg');
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    const series = [...svg.matchAll(/<path class="series" data-series="([^"]+)" d="([^"]+)"/g)];
    expect(series.map((m) => m[1])).toEqual([
      'standard',
      'fa1',
      'fa2',
      'fa2-backward',
      'small-cache',
      'lower bound',
    ]);
    expect(tags.filter((t) => t === 'path').length).toBe(6);
    for (const [, name, d] of series) {
      const pts = d!.split(' ');
      expect(pts.length, name).toBeGreaterThan(20);
      expect(pts[0]).toMatch(/^M\d+(\.\d)?,\d+(\.\d)?$/);
      for (const p of pts.slice(1)) expect(p).toMatch(/^L\d+(\.\d)?,\d+(\.\d)?$/);
    }
    expect(svg).toContain('fast memory M (elements)');
    expect(svg).toContain('slow-memory I/O (elements read + written)');
    expect(svg).toContain('M = d²');
    for (const name of ['standard', 'fa1', 'fa2', 'fa2-backward', 'small-cache', 'lower bound']) {
      expect(svg).toContain(`<text class="legend"`);
      expect(svg).toMatch(new RegExp(`dominant-baseline="middle">${name}</text>`));
    }
    // M from d = 64 to N d = 65536: x ticks at 10^2, 10^3, 10^4.
    const xTicks = [
      ...svg.matchAll(/<text class="tick" x="[\d.]+" y="(\d+)" text-anchor="middle">([^<]+)</g),
    ];
    expect(xTicks.map((m) => m[2])).toEqual(['10²', '10³', '10⁴']);
  });

  test('the table lists every M with each algorithm or "-" where it does not fit; --json gives rows', async () => {
    const io = captureIo();
    expect(await ioCommand(['--sweep', '--N', '256', '--d', '32', '--points', '5'], io)).toBe(0);
    const lines = io.stdout.join('\n').split('\n');
    expect(lines[0]!.trim().split(/\s{2,}/)).toEqual([
      'M',
      'lower bound',
      'standard',
      'fa1',
      'fa2',
      'fa2-backward',
      'small-cache',
    ]);
    expect(lines.length).toBe(6);
    // M = d = 32 is below every tiled algorithm's minimum: only the small-cache one runs.
    expect(lines[1]!.trim().split(/\s+/).slice(2, 6)).toEqual(['-', '-', '-', '-']);
    expect(lines[5]!.trim().split(/\s+/)[0]).toBe('8192');
    const json = captureIo();
    expect(
      await ioCommand(['--sweep', '--N', '256', '--d', '32', '--points', '5', '--json'], json),
    ).toBe(0);
    const rows = JSON.parse(json.stdout.join(''));
    for (const r of rows) expect(Object.keys(r)).toEqual(KEYS);
    expect(rows.filter((r: { M: number }) => r.M === 8192).length).toBe(5);
  });

  test('the lower bound is printed where no algorithm fits (M = d), not NaN', async () => {
    const io = captureIo();
    expect(await ioCommand(['--sweep', '--N', '8', '--d', '2', '--points', '2'], io)).toBe(0);
    const lines = io.stdout.join('\n').split('\n');
    expect(lines.length).toBe(3);
    const first = lines[1]!.trim().split(/\s+/);
    expect(first[0]).toBe('2');
    expect(first.slice(2)).toEqual(['-', '-', '-', '-', '-']);
    expect(first[1]).toBe(String(Math.ceil(lowerBound(8, 2, 2))));
    expect(lines[2]!.trim().split(/\s+/)[1]).toBe(String(Math.ceil(lowerBound(8, 2, 16))));
  });

  test('an unwritable --svg path is exit 2 with one line', async () => {
    const io = captureIo();
    expect(
      await ioCommand(['--sweep', '--N', '64', '--d', '8', '--svg', '/nonexistent-dir/x.svg'], io),
    ).toBe(2);
    expect(io.stderr[0]).toMatch(/^attnkit io: ENOENT/);
  });
});
