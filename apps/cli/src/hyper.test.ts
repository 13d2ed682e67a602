import { basename } from 'node:path';
import { goldenAttentionOptions, loadGolden } from '@attnkit/attention';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import { runBench } from './bench.js';
import { type CliIo, runCli } from './cli.js';
import { verifyGolden } from './verify.js';

// `attnkit verify --family hyper` and `attnkit bench --family hyper` (issue 14): HyperAttention
// in its exact limit on the BHND softmax goldens (LSH sort, permutations, causal recursion and
// LSE merges all run; the result must be the golden's), and timed with its error column.

function captureIo(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

// Hyper takes no window or block mask (BHND only): the softmax goldens whose options have none.
const softmax: string[] = [];
for (const f of goldenFiles('softmax')) {
  const o = goldenAttentionOptions(await loadGolden(f));
  if (!o.window && !o.blockSparse && o.layout !== 'THD') softmax.push(f);
}

describe('attnkit verify --family hyper', () => {
  test('the BHND softmax goldens without window or mask are present', () =>
    expect(softmax.length).toBeGreaterThanOrEqual(6));
  for (const f of softmax)
    test(`${goldenLabel(f)}: the exact limit equals the golden on ts (o, lse, dq, dk, dv)`, async () => {
      const report = await verifyGolden(await loadGolden(f), { family: 'hyper', backend: 'ts' });
      expect(report.backend).toBe('ts');
      expect(Object.keys(report.tensors)).toEqual(expect.arrayContaining(['o', 'lse']));
      expect(report.ok, JSON.stringify(report)).toBe(true);
    });

  test('typed errors: a window golden (hyper takes none), a varlen golden, --partition', async () => {
    const window = goldenFiles('softmax').find(
      (f) => basename(f) === 'softmax_window.safetensors',
    )!;
    const io = captureIo();
    expect(await runCli(['verify', window, '--family', 'hyper', '--backend', 'ts'], io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(/window: expected one of .*got an unknown option/);
    const varlen = goldenFiles('softmax_varlen')[0]!;
    const io2 = captureIo();
    expect(await runCli(['verify', varlen, '--family', 'hyper'], io2)).toBe(2);
    expect(io2.stderr.join('\n')).toMatch(/"hyper" verifies golden kinds softmax/);
    const io3 = captureIo();
    expect(
      await runCli(['verify', softmax[0]!, '--family', 'hyper', '--partition', 'splitK'], io3),
    ).toBe(2);
    expect(io3.stderr.join('\n')).toMatch(/--partition: expected only with --family lean/);
  });
});

describe('attnkit bench --family hyper', () => {
  test('times forward and backward and reports the error against exact attention', async () => {
    const rows = await runBench({
      family: 'hyper',
      backend: 'ts',
      scoreMod: 'none',
      shape: [1, 2, 256, 16],
      causal: true,
      algorithm: 'fa2',
      warmup: 0,
      repeats: 1,
      reference: true,
      passes: ['forward', 'backward'],
      seed: 3,
      hyper: { blockSize: 32, sampleSize: 16, minSeqLen: 64 },
    });
    expect(rows.map((r) => [r.family, r.backend, r.pass, r.causal])).toEqual([
      ['hyper', 'ts', 'forward', true],
      ['hyper', 'ts', 'backward', true],
    ]);
    for (const r of rows) {
      expect(r.medianMs).toBeGreaterThan(0);
      // An approximation on random inputs: an error, but a bounded one (not exact, not garbage).
      expect(r.relErr).toBeGreaterThan(1e-4);
      expect(r.relErr).toBeLessThan(3);
    }
    // The exact limit through the same path: the error is f32 rounding.
    const [exact] = await runBench({
      family: 'hyper',
      backend: 'ts',
      scoreMod: 'none',
      shape: [1, 2, 96, 16],
      causal: false,
      algorithm: 'fa2',
      warmup: 0,
      repeats: 1,
      reference: true,
      passes: ['forward'],
      seed: 3,
      hyper: { blockSize: 96, sampleSize: 0, minSeqLen: 1 },
    });
    expect(exact!.relErr).toBeLessThan(1e-5);
  });

  test('prints the error column; hyper flags only with --family hyper; bad values', async () => {
    const io = captureIo();
    const code = await runCli(
      [
        'bench',
        '--family',
        'hyper',
        '--backend',
        'ts',
        '--shape',
        '1,1,128,16',
        '--repeats',
        '1',
        '--warmup',
        '0',
        '--forward-only',
        '--block-size',
        '32',
        '--sample-size',
        '8',
        '--min-seq-len',
        '32',
      ],
      io,
    );
    expect(code, io.stderr.join('\n')).toBe(0);
    expect(io.stdout.join('\n')).toMatch(/rel err vs f64/);
    expect(io.stdout.join('\n')).toMatch(/^hyper\s+ts\s/m);
    const cases: [string[], RegExp][] = [
      [
        ['--block-size', '32'],
        /--block-size: expected only with --family hyper, got --family flash/,
      ],
      [['--family', 'hyper', '--block-size', '0'], /--block-size: expected an integer >= 1/],
      [['--family', 'hyper', '--sample-size', 'x'], /--sample-size: expected an integer >= 0/],
      [
        ['--family', 'hyper', '--score-mod', 'alibi'],
        /--score-mod: expected none with --family hyper/,
      ],
    ];
    for (const [args, message] of cases) {
      const e = captureIo();
      expect(await runCli(['bench', '--shape', '1,1,32,8', '--repeats', '1', ...args], e)).toBe(2);
      expect(e.stderr.join('\n')).toMatch(message);
    }
  });
});
