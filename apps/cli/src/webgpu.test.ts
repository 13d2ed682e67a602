import { basename } from 'node:path';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { getWebGpuContext } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { type CliIo, runCli } from './cli.js';
import { verifyFile } from './verify.js';

// `--backend webgpu` needs an adapter (Dawn on Mesa llvmpipe in CI): without one this file
// fails, unless ATTNKIT_ALLOW_NO_WEBGPU=1 declares a machine without WebGPU.
const ctx = await getWebGpuContext().catch((e) => {
  if (process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1') return undefined;
  throw e;
});
afterAll(() => ctx?.destroy());

function captureIo(): CliIo & { stdout: string[]; stderr: string[] } {
  const stdout: string[] = [];
  const stderr: string[] = [];
  return { stdout, stderr, out: (t) => stdout.push(t), err: (t) => stderr.push(t) };
}

describe.skipIf(!ctx)('attnkit --backend webgpu', () => {
  const softmax = goldenFiles().filter((f) => basename(f).startsWith('softmax'));

  test.each(softmax.map((f) => [goldenLabel(f), f]))('verify %s', async (_, file) => {
    const report = await verifyFile(file, { backend: 'webgpu' });
    expect(report.backend).toBe('webgpu');
    expect(report.ok, JSON.stringify(report)).toBe(true);
  });

  test('verify refuses kinds the WGSL kernels do not implement', async () => {
    const gla = goldenFiles().find((f) => basename(f).startsWith('gla'))!;
    const io = captureIo();
    expect(await runCli(['verify', gla, '--backend', 'webgpu'], io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(/"webgpu" does not implement golden kind "gla"/);
  });

  test('bench times forward and backward on the GPU', async () => {
    const io = captureIo();
    const code = await runCli(
      [
        'bench',
        '--backend',
        'webgpu',
        '--shape',
        '1,2,96,32',
        '--repeats',
        '2',
        '--no-reference',
        '--json',
      ],
      io,
    );
    expect(code).toBe(0);
    const { rows } = JSON.parse(io.stdout.join('\n'));
    expect(rows.map((r: { pass: string }) => r.pass)).toEqual(['forward', 'backward']);
    for (const r of rows) {
      expect(r.backend).toBe('webgpu');
      expect(r.medianMs).toBeGreaterThan(0);
    }
  });
});
