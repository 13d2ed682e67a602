import { loadGolden } from '@attnkit/attention';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { getWebGpuContext } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { type CliIo, runCli } from './cli.js';
import { verifyGolden } from './verify.js';

// `attnkit verify --family gla --backend webgpu` (issue 13): the gla goldens through
// @attnkit/linear-attention's WGSL kernels, the chunk form and (--form recurrent) the recurrent
// form (h0 uploaded as initialState, dht beside dO).
// Needs an adapter (Dawn on llvmpipe in CI) unless ATTNKIT_ALLOW_NO_WEBGPU=1.
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

const gla = goldenFiles('gla');
const REFERENCES = ['o', 'dq', 'dk', 'dv', 'dgk', 'dh0', 'ht'];

describe.skipIf(!ctx)('attnkit verify --family gla --backend webgpu', () => {
  test.each(gla.map((f) => [goldenLabel(f), f]))(
    '%s: every tensor within tolerance (chunk form)',
    async (_label, f) => {
      const report = await verifyGolden(await loadGolden(f), { family: 'gla', backend: 'webgpu' });
      expect(report.backend).toBe('webgpu');
      expect(Object.keys(report.tensors).sort()).toEqual([...REFERENCES].sort());
      expect(report.ok, JSON.stringify(report)).toBe(true);
      for (const t of Object.values(report.tensors)) expect(t.relL2).toBeLessThan(2e-5);
    },
  );

  test.each(gla.map((f) => [goldenLabel(f), f]))(
    '%s: every tensor within tolerance (recurrent form)',
    async (_label, f) => {
      const report = await verifyGolden(await loadGolden(f), {
        family: 'gla',
        backend: 'webgpu',
        form: 'recurrent',
      });
      expect(report.backend).toBe('webgpu');
      expect(Object.keys(report.tensors).sort()).toEqual([...REFERENCES].sort());
      expect(report.ok, JSON.stringify(report)).toBe(true);
      for (const t of Object.values(report.tensors)) expect(t.relL2).toBeLessThan(1e-5);
    },
  );

  test('prints one line per tensor and exits 0, both forms', async () => {
    for (const form of [[], ['--form', 'recurrent']]) {
      const io = captureIo();
      expect(
        await runCli(['verify', gla[0]!, '--family', 'gla', ...form, '--backend', 'webgpu'], io),
        io.stderr.join('\n'),
      ).toBe(0);
      const lines = io.stdout.join('\n').split('\n');
      expect(lines.map((l) => l.split(' ')[0])).toEqual(REFERENCES);
    }
  });
});
