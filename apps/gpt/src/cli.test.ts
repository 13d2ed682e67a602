import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { registerNativeKernels } from '@attnkit/nn';
import { ValueError } from '@attnkit/tensor';
import { repoRoot } from '@attnkit/vitest-config';
import { afterAll, describe, expect, test } from 'vitest';
import { type CliIo, runCli } from './cli.js';
import { train } from './train.js';

const nativeLoads = registerNativeKernels() === true;
const dir = mkdtempSync(join(tmpdir(), 'attnkit-gpt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const data = join(dir, 'shakespeare-slice.txt');
// A small slice of Tiny Shakespeare (../shared/data beside the repository); where shared/ is
// absent (a fresh clone in CI), a passage of it repeated (the tests need text, not that file).
// Prompts use only characters both texts have: a character outside the vocabulary is an error.
const corpus = join(repoRoot, '..', 'shared', 'data', 'tinyshakespeare.txt');
const passage =
  'First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n\n';
writeFileSync(
  data,
  existsSync(corpus) ? readFileSync(corpus, 'utf8').slice(0, 12_000) : passage.repeat(100),
);

function captureIo(): CliIo & { written: string[]; errors: string[] } {
  const written: string[] = [];
  const errors: string[] = [];
  return { written, errors, write: (t) => written.push(t), err: (l) => errors.push(l) };
}

// Tiny runs: 2 cores are shared in CI.
const quick = ['--batch-size', '2', '--eval-interval', '2', '--eval-iters', '1'];

describe('attnkit-gpt', () => {
  test('train writes a checkpoint and a loss-curve SVG; sample streams text from it', async () => {
    const out = join(dir, 'a.safetensors');
    const io = captureIo();
    const code = await runCli(
      ['train', '--data', data, '--steps', '3', ...quick, '--out', out],
      io,
    );
    // No --backend: the best available on the cpu, and the progress output says which.
    expect(io.errors.join('\n')).toMatch(
      /parameters \(4 layers.*backend (native|ts) \(default: the best available\)/,
    );
    expect(code).toBe(0);
    expect(io.errors.at(-1)).toMatch(
      /step 3: train loss [\d.]+, val loss [\d.]+, \d+ tokens\/s \((native|ts)\)/,
    );
    const svg = readFileSync(join(dir, 'a.svg'), 'utf8');
    expect(svg).toMatch(/^<svg/);
    expect(svg).toContain('</svg>');
    expect(readFileSync(out).length).toBeGreaterThan(3 * 200_000 * 4);

    const s = captureIo();
    expect(
      await runCli(['sample', '--ckpt', out, '--prompt', 'Citizen:', '--tokens', '12'], s),
    ).toBe(0);
    // The prompt, then one piece per token as it is drawn (char tokens), then a newline.
    expect(s.written[0]).toBe('Citizen:');
    expect(s.written).toHaveLength(1 + 12 + 1);
    expect(s.written.slice(1, 13).every((t) => [...t].length === 1)).toBe(true);
    const plain = captureIo();
    await runCli(
      ['sample', '--ckpt', out, '--prompt', 'Citizen:', '--tokens', '12', '--no-cache'],
      plain,
    );
    expect(plain.written.join('')).toBe(s.written.join(''));
  });

  test('--resume continues exactly: the same losses as one uninterrupted run', async () => {
    const straight = await train(
      {
        data,
        steps: 4,
        batchSize: 2,
        evalInterval: 2,
        evalIters: 1,
        out: join(dir, 's.safetensors'),
      },
      () => {},
    );
    await train(
      {
        data,
        steps: 2,
        batchSize: 2,
        evalInterval: 2,
        evalIters: 1,
        out: join(dir, 'r.safetensors'),
      },
      () => {},
    );
    const resumed = await train(
      { data, steps: 4, resume: join(dir, 'r.safetensors'), out: join(dir, 'r2.safetensors') },
      () => {},
    );
    expect(resumed.steps).toBe(4);
    expect(resumed.history).toEqual(straight.history);
    // The same bytes: weights, AdamW state and run state (a Buffer compare: toEqual walks bytes).
    const same = readFileSync(join(dir, 'r2.safetensors')).equals(
      readFileSync(join(dir, 's.safetensors')),
    );
    expect(same).toBe(true);
  });

  test.skipIf(!nativeLoads)(
    'checkpoints move between backends: webgpu <-> native <-> ts sample the same text',
    async () => {
      // The smallest run that exercises every part on llvmpipe (WGSL on the CPU).
      const small = ['--steps', '2', '--batch-size', '1', '--eval-interval', '2'];
      const gpu = join(dir, 'gpu.safetensors');
      const cpu = join(dir, 'cpu.safetensors');
      const io = captureIo();
      expect(
        await runCli(
          [
            'train',
            '--data',
            data,
            '--backend',
            'webgpu',
            ...small,
            '--eval-iters',
            '1',
            '--out',
            gpu,
          ],
          io,
        ),
        io.errors.join('\n'),
      ).toBe(0);
      expect(io.errors.join('\n')).toMatch(/backend webgpu \(/);
      expect(io.errors.at(-1)).toMatch(/tokens\/s \(webgpu\)/);
      // Resume the webgpu run on native: the checkpoint (safetensors) does not care.
      const resumed = await train(
        { data, backend: 'native', resume: gpu, steps: 3, out: cpu },
        () => {},
      );
      expect(resumed.steps).toBe(3);
      expect(resumed.backend).toBe('native');
      const text = async (ckpt: string, backend: string) => {
        const s = captureIo();
        const args = ['--prompt', 'Citizen:', '--tokens', '8', '--top-k', '1'];
        expect(await runCli(['sample', '--ckpt', ckpt, '--backend', backend, ...args], s)).toBe(0);
        return s.written.join('');
      };
      const native = await text(cpu, 'native');
      expect(native).toMatch(/^Citizen:.{8}\n$/s);
      expect(await text(cpu, 'ts')).toBe(native);
      expect(await text(cpu, 'webgpu')).toBe(native);
    },
  );

  test('a missing data file, a bad config or backend: typed errors and exit code 2', async () => {
    const missing = join(dir, 'nope.txt');
    await expect(train({ data: missing }, () => {})).rejects.toMatchObject({
      name: 'ValueError',
      argument: 'data',
    });
    await expect(train({ data, config: 'huge' }, () => {})).rejects.toBeInstanceOf(ValueError);
    await expect(train({ data, config: 'huge' }, () => {})).rejects.toThrow(/tiny, small/);
    await expect(train({ data, backend: 'cuda' }, () => {})).rejects.toMatchObject({
      name: 'ValueError',
      argument: 'backend',
    });
    await expect(train({ data, backend: 'cuda' }, () => {})).rejects.toThrow(
      /--backend expected one of ts, native, webgpu, got "cuda"/,
    );
    await expect(train({ data, attention: 'linear' }, () => {})).rejects.toMatchObject({
      name: 'ValueError',
      argument: 'attention',
    });
    await expect(train({ data, steps: 0 }, () => {})).rejects.toThrow(/--steps/);
    const io = captureIo();
    expect(await runCli(['train', '--data', missing], io)).toBe(2);
    expect(io.errors[0]).toContain(`ValueError: --data: no such file "${missing}"`);
    const s = captureIo();
    expect(await runCli(['sample', '--ckpt', missing], s)).toBe(2);
    expect(s.errors[0]).toContain('--ckpt: no such file');
    expect(await runCli(['train', '--data', data, '--bogus'], captureIo())).toBe(2);
    const b = captureIo();
    expect(
      await runCli(['sample', '--ckpt', join(dir, 'a.safetensors'), '--backend', 'gpu'], b),
    ).toBe(2);
    expect(b.errors[0]).toMatch(/ValueError: --backend expected one of ts, native, webgpu/);
    expect(await runCli(['train'], captureIo())).toBe(2);
    expect(await runCli(['nope'], captureIo())).toBe(2);
  });
});
