import { basename } from 'node:path';
import { loadGolden } from '@attnkit/attention';
import { nativeAvailable } from '@attnkit/flash-attention';
import { Tensor } from '@attnkit/tensor';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { getWebGpuContext } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { prepareBackends } from './backends.js';
import { type CliIo, runCli } from './cli.js';
import { verifyFile, verifyGolden } from './verify.js';

// `attnkit verify --family lean`: the softmax_decode golden through the LeanAttention ('lean')
// registrations of @attnkit/lean-attention, on every backend here and every partition.
await prepareBackends();
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

const decode = goldenFiles().filter((f) => basename(f) === 'softmax_decode.safetensors');
const native = await nativeAvailable();
const backends = ['ts', ...(native ? ['native'] : []), ...(ctx ? ['webgpu'] : [])];

describe('attnkit verify --family lean', () => {
  test('softmax_decode is present', () => expect(decode.length).toBeGreaterThanOrEqual(1));

  const cases = decode.flatMap((f) =>
    backends.flatMap((b) =>
      ['fa2', 'splitK', 'streamK', undefined].map(
        (p) => [goldenLabel(f), b, p ?? 'default', f, p] as const,
      ),
    ),
  );
  test.each(cases)('%s on %s, partition %s', async (_l, backend, _p, file, partition) => {
    const io = captureIo();
    const args = ['verify', file, '--family', 'lean', '--backend', backend, '--json'];
    if (partition) args.push('--partition', partition);
    expect(await runCli(args, io)).toBe(0);
    const report = JSON.parse(io.stdout.join(''));
    expect(report).toMatchObject({ kind: 'softmax', backend, ok: true });
    expect(Object.keys(report.tensors)).toEqual(['o', 'lse']);
  });

  test('the default backend is the registry choice, and a perturbed o fails', async () => {
    const report = await verifyFile(decode[0]!, { family: 'lean' });
    expect(report.ok).toBe(true);
    expect(report.backend).toBe(native ? 'native' : 'ts');
    const golden = await loadGolden(decode[0]!);
    const o = golden.tensors.o!.toFloat64Array();
    o[Math.floor(Math.random() * o.length)]! += 0.5;
    golden.tensors.o = Tensor.from(o, golden.tensors.o!.shape);
    const bad = await verifyGolden(golden, { family: 'lean', backend: 'ts' });
    expect(bad.ok).toBe(false);
    expect(bad.tensors.o!.ok).toBe(false);
    expect(bad.tensors.lse!.ok).toBe(true);
  });

  test('usage errors name the flag', async () => {
    const file = decode[0]!;
    const run = async (args: string[], pattern: RegExp) => {
      const io = captureIo();
      expect(await runCli(['verify', file, ...args], io)).toBe(2);
      expect(io.stderr.join('\n')).toMatch(pattern);
    };
    await run(['--family', 'leen'], /--family: expected one of lean, sage, gla, hyper, got "leen"/);
    await run(
      ['--family', 'lean', '--partition', 'fa3'],
      /--partition: expected one of fa2, splitK, streamK/,
    );
    await run(['--partition', 'fa2'], /--partition: expected only with --family lean/);
    await run(
      ['--family', 'lean', '--algorithm', 'fa1'],
      /--algorithm: expected none with --family lean/,
    );
    await run(
      ['--family', 'lean', '--backend', 'reference'],
      /--backend: expected one of .*"lean" registrations/,
    );
    const sigmoid = goldenFiles().find((f) => basename(f).startsWith('sigmoid'))!;
    const io = captureIo();
    expect(await runCli(['verify', sigmoid, '--family', 'lean'], io)).toBe(2);
    expect(io.stderr.join('\n')).toMatch(
      /--family: "lean" verifies golden kinds softmax, softmax_varlen, got a golden of kind "sigmoid"/,
    );
  });
});
