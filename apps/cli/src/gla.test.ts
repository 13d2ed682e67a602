import { loadGolden } from '@attnkit/attention';
import { glaNativeReady } from '@attnkit/linear-attention';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import { type CliIo, runCli } from './cli.js';
import { verifyGolden } from './verify.js';

// `attnkit verify --family gla` and `attnkit bench --family gla` (issue 13): the gla goldens
// through @attnkit/linear-attention's registrations, both forms; chunkGla timed beside the
// float64 recurrence.

function captureIo(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

const gla = goldenFiles('gla');
// In the loader's order (golden.ts REFERENCE_ORDER).
const REFERENCES = ['o', 'dq', 'dk', 'dv', 'dgk', 'dh0', 'ht'];

describe('attnkit verify --family gla', () => {
  test('the gla goldens are present (gla, gla_long)', () =>
    expect(gla.length).toBeGreaterThanOrEqual(2));
  for (const f of gla)
    for (const form of ['chunk', 'recurrent'] as const)
      test(`${goldenLabel(f)}: every tensor within tolerance on ts, form ${form}`, async () => {
        const report = await verifyGolden(await loadGolden(f), {
          family: 'gla',
          backend: 'ts',
          form,
        });
        expect(report.backend).toBe('ts');
        expect(Object.keys(report.tensors).sort()).toEqual([...REFERENCES].sort());
        expect(report.ok, JSON.stringify(report)).toBe(true);
        for (const t of Object.values(report.tensors)) expect(t.relL2).toBeLessThan(2e-5);
      });

  test('prints one line per tensor and exits 0; JSON; without --family too', async () => {
    const io = captureIo();
    expect(await runCli(['verify', gla[0]!, '--family', 'gla', '--backend', 'ts'], io)).toBe(0);
    const lines = io.stdout.join('\n').split('\n');
    expect(lines.map((l) => l.split(' ')[0])).toEqual(REFERENCES);
    for (const l of lines) expect(l).toMatch(/^\w+ rel_l2=\S+ max_abs=\S+ ok$/);
    const json = captureIo();
    expect(
      await runCli(['verify', gla[0]!, '--family', 'gla', '--form', 'recurrent', '--json'], json),
    ).toBe(0);
    const report = JSON.parse(json.stdout.join(''));
    // No --backend: the registry's highest priority for cpu tensors, native where the addon loads.
    const fallback = (await glaNativeReady()) === true ? 'native' : 'ts';
    expect([report.kind, report.backend, report.ok]).toEqual(['gla', fallback, true]);
    const plain = captureIo();
    expect(await runCli(['verify', ...gla], plain)).toBe(0);
    expect(plain.stdout.filter((l) => l.startsWith('=='))).toHaveLength(gla.length);
  });

  test('typed errors: --form without --family gla, an unknown form, kinds gla does not verify', async () => {
    const softmax = goldenFiles('softmax_full')[0]!;
    const cases: [string[], RegExp][] = [
      [
        [gla[0]!, '--form', 'chunk'],
        /^attnkit: --form: expected only with --family gla, got it with no --family$/,
      ],
      [
        [gla[0]!, '--family', 'gla', '--form', 'fused'],
        /^attnkit: --form: expected one of chunk, recurrent, got "fused"$/,
      ],
      [
        [softmax, '--family', 'gla'],
        /--family: "gla" verifies golden kinds gla, got a golden of kind "softmax"/,
      ],
      [
        [gla[0]!, '--family', 'gla', '--backend', 'reference'],
        /--backend: expected one of (\w+, )*ts(, \w+)* \(the "gla" registrations\), got "reference"/,
      ],
      [
        [gla[0]!, '--family', 'gla', '--partition', 'splitK'],
        /--partition: expected only with --family lean/,
      ],
    ];
    for (const [args, message] of cases) {
      const io = captureIo();
      expect(await runCli(['verify', ...args], io), args.join(' ')).toBe(2);
      expect(io.stderr.join('\n')).toMatch(message);
    }
  });
});

describe('attnkit bench --family gla', () => {
  test('times chunkGla forward and backward through the registry beside the float64 recurrence', async () => {
    const io = captureIo();
    const args = ['bench', '--family', 'gla', '--backend', 'ts', '--shape', '1,2,100,16'];
    expect(await runCli([...args, '--repeats', '1', '--warmup', '0', '--json'], io)).toBe(0);
    const rows = JSON.parse(io.stdout.join('\n')).rows;
    expect(rows.map((r: { family: string; pass: string }) => `${r.family} ${r.pass}`)).toEqual([
      'gla forward',
      'gla backward',
    ]);
    // The chunk form's own count: one ragged chunk pair of 64 + 36 tokens, 2 heads, K = V = 16.
    const tri = (n: number) => (n * (n + 1)) / 2;
    const fwd = (n: number) => tri(n) * 32 + 2 * n * 256;
    expect(rows[0].flops).toBe(2 * 2 * (fwd(64) + fwd(36)));
    expect(rows[0].causal).toBe(true);
    for (const r of rows) expect(r.medianMs).toBeGreaterThan(0);
    expect(rows[0].referenceMs).toBeGreaterThan(0);
    const table = captureIo();
    expect(
      await runCli(
        [...args, '--forward-only', '--no-reference', '--repeats', '1', '--warmup', '0'],
        table,
      ),
    ).toBe(0);
    expect(table.stdout.join('\n')).toMatch(/^gla\s+ts\s+fa2\s+1,2,100,16\s+yes\s+forward\s/m);
  });

  test('--causal and --score-mod are refused (GLA is causal and has no scores)', async () => {
    for (const [flag, message] of [
      [
        ['--causal'],
        /^attnkit: --causal: expected none with --family gla \(GLA is causal by construction\)/,
      ],
      [['--score-mod', 'alibi'], /^attnkit: --score-mod: expected none with --family gla/],
    ] as const) {
      const io = captureIo();
      expect(await runCli(['bench', '--family', 'gla', '--shape', '1,1,8,4', ...flag], io)).toBe(2);
      expect(io.stderr.join('\n')).toMatch(message);
    }
  });
});
