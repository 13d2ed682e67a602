import { basename } from 'node:path';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { getWebGpuContext } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { type CliIo, runCli } from './cli.js';
import type { InfoReport } from './info.js';
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
  // HSTU's goldens too: rab is uploaded beside q, k, v, and drab read back.
  const hstu = goldenFiles().filter((f) => basename(f).startsWith('hstu'));

  test.each([...softmax, ...hstu].map((f) => [goldenLabel(f), f]))('verify %s', async (_, file) => {
    const report = await verifyFile(file, { backend: 'webgpu' });
    expect(report.backend).toBe('webgpu');
    expect(report.ok, JSON.stringify(report)).toBe(true);
  });

  test('verify runs the gla goldens too (the WGSL chunk kernels; gla-webgpu.test.ts)', async () => {
    const gla = goldenFiles().find((f) => basename(f).startsWith('gla'))!;
    const io = captureIo();
    expect(await runCli(['verify', gla, '--backend', 'webgpu'], io)).toBe(0);
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

  test('bench --family hstu times the WGSL HSTU kernels', async () => {
    const io = captureIo();
    const args = ['--shape', '2,2,40,16', '--causal', '--repeats', '1', '--no-reference', '--json'];
    expect(await runCli(['bench', '--family', 'hstu', '--backend', 'webgpu', ...args], io)).toBe(0);
    const { rows } = JSON.parse(io.stdout.join('\n'));
    expect(rows.map((r: { family: string; pass: string }) => `${r.family} ${r.pass}`)).toEqual([
      'hstu forward',
      'hstu backward',
    ]);
    for (const r of rows) expect(r.backend).toBe('webgpu');
  });
});

describe.skipIf(!ctx)('attnkit info', () => {
  test('prints the adapter, backend, toggles, features, subgroup matrices and limits', async () => {
    const io = captureIo();
    expect(await runCli(['info'], io), io.stderr.join('\n')).toBe(0);
    const text = io.stdout.join('\n');
    expect(text).toMatch(/^attnkit info \(node v/);
    expect(text).toMatch(/^ {2}ts +available: pure TypeScript/m);
    expect(text).toMatch(/^ {2}webgpu +available: /m);
    expect(text).toMatch(/^ {2}native +(available|unavailable): /m);
    for (const key of ['vendor', 'architecture', 'device', 'description', 'subgroup sizes']) {
      expect(text).toMatch(new RegExp(`^ {2}${key} `, 'm'));
    }
    expect(text).toContain(`${ctx!.backend} (Dawn)`);
    expect(text).toMatch(/^ {2}dawn toggles +allow_unsafe_apis, vulkan_enable_f16_on_nvidia$/m);
    expect(text).toMatch(
      /^ {2}features +shader-f16 (yes|no), subgroups (yes|no), subgroup-matrix/m,
    );
    expect(text).toMatch(/^ {2}subgroup matrices /m);
    expect(text).toMatch(/^ {4}maxComputeWorkgroupStorageSize +\d+$/m);
  });

  test('--json: the same as JSON; --dawn-toggles "" creates the adapter with none', async () => {
    const io = captureIo();
    expect(await runCli(['info', '--json', '--dawn-toggles', ''], io)).toBe(0);
    const report = JSON.parse(io.stdout.join('\n')) as InfoReport;
    expect(report.webgpu).not.toBeNull();
    const w = report.webgpu!;
    expect(w.backend).toBe(ctx!.backend);
    expect(w.dawnToggles).toEqual([]);
    expect(w.robustAccess).toBe(true);
    expect(w.adapter).toEqual(ctx!.adapterInfo);
    expect(w.features.shaderF16).toBe(ctx!.features.shaderF16);
    expect(w.subgroupMatrixConfigs).toEqual(ctx!.features.subgroupMatrixConfigs);
    expect(w.limits).toEqual(ctx!.limits);
    expect(report.backends.find((b) => b.name === 'webgpu')?.available).toBe(true);
    expect(report.backends.find((b) => b.name === 'ts')?.available).toBe(true);
  });

  test('--dawn-toggles with disable_robustness reports robust access off', async () => {
    const io = captureIo();
    expect(await runCli(['info', '--json', '--dawn-toggles', 'disable_robustness'], io)).toBe(0);
    const w = (JSON.parse(io.stdout.join('\n')) as InfoReport).webgpu!;
    expect(w.dawnToggles).toEqual(['disable_robustness']);
    expect(w.robustAccess).toBe(false);
  });

  test('a bad toggle name or backend is a usage error naming the option', async () => {
    const io = captureIo();
    expect(await runCli(['info', '--dawn-toggles', 'Not-A-Toggle'], io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(/^attnkit: dawnToggles: expected an array of Dawn/);
    const b = captureIo();
    expect(await runCli(['info', '--webgpu-backend', 'cuda'], b)).toBe(2);
    expect(b.stderr.join('\n')).toMatch(/backend: expected one of vulkan/);
  });
});
