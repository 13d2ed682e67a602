import { basename } from 'node:path';
import { loadNative, nativeLoadError } from '@attnkit/native';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import { type CliIo, runCli } from './cli.js';
import { verifyFile } from './verify.js';

// `attnkit verify --backend native` and `attnkit bench --backend native`. Without the addon
// this file fails, unless ATTNKIT_ALLOW_NO_NATIVE=1 (then one visibly skipped test says why).
const engine = loadNative();
if (!engine) {
  const why = nativeLoadError();
  if (process.env.ATTNKIT_ALLOW_NO_NATIVE === '1') {
    test.skip(`native backend unavailable (ATTNKIT_ALLOW_NO_NATIVE=1): ${why}`, () => {});
  } else {
    test('the native backend loads', () => {
      throw new Error(`@attnkit/native did not load: ${why}`);
    });
  }
}

function captureIo(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

const softmax = goldenFiles().filter((f) => basename(f).startsWith('softmax'));
const hstu = goldenFiles().filter((f) => basename(f).startsWith('hstu'));

describe.runIf(engine)('attnkit verify --backend native', () => {
  test('there are softmax goldens', () => {
    expect(softmax.length).toBeGreaterThan(0);
  });
  test.each(softmax.map((f) => [goldenLabel(f), f] as const))('%s', async (_name, file) => {
    const report = await verifyFile(file, { backend: 'native' });
    expect(report.backend).toBe('native');
    expect(report.ok, JSON.stringify(report)).toBe(true);
  });

  test('there are hstu goldens (hstu_causal and hstu_rab)', () => {
    expect(hstu.map((f) => basename(f))).toEqual(
      expect.arrayContaining(['hstu_causal.safetensors', 'hstu_rab.safetensors']),
    );
  });
  test.each(hstu.map((f) => [goldenLabel(f), f] as const))('%s', async (_name, file) => {
    const report = await verifyFile(file, { backend: 'native' });
    expect(report.backend).toBe('native');
    expect(report.ok, JSON.stringify(report)).toBe(true);
    if (basename(file) === 'hstu_rab.safetensors') expect(report.tensors.drab?.ok).toBe(true);
  });

  test('exit 0 through the command line; FA1 is a usage error', async () => {
    const io = captureIo();
    expect(await runCli(['verify', softmax[0]!, '--backend', 'native'], io)).toBe(0);
    const bad = captureIo();
    expect(
      await runCli(['verify', softmax[0]!, '--backend', 'native', '--algorithm', 'fa1'], bad),
    ).toBe(2);
    expect(bad.stderr.join('\n')).toMatch(/algorithm/);
  });
});

describe.runIf(engine)('attnkit bench --backend native', () => {
  test('times forward and backward and prints the table', async () => {
    const io = captureIo();
    const code = await runCli(
      [
        'bench',
        '--backend',
        'native',
        '--shape',
        '1,2,128,32',
        '--causal',
        '--repeats',
        '2',
        '--json',
      ],
      io,
    );
    expect(code).toBe(0);
    const { rows } = JSON.parse(io.stdout.join(''));
    expect(rows.map((r: { pass: string }) => r.pass)).toEqual(['forward', 'backward']);
    for (const r of rows) {
      expect(r.backend).toBe('native');
      expect(r.gflops).toBeGreaterThan(0);
    }
  });

  test('--family hstu times the native HSTU kernels', async () => {
    const io = captureIo();
    const args = ['--shape', '2,2,77,16', '--repeats', '2', '--json', '--no-reference'];
    expect(await runCli(['bench', '--family', 'hstu', '--backend', 'native', ...args], io)).toBe(0);
    const { rows } = JSON.parse(io.stdout.join(''));
    expect(rows.map((r: { pass: string }) => r.pass)).toEqual(['forward', 'backward']);
    for (const r of rows) {
      expect(r).toMatchObject({ family: 'hstu', backend: 'native', referenceMs: null });
      expect(r.gflops).toBeGreaterThan(0);
    }
  });
});
