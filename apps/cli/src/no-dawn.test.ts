import { readFileSync } from 'node:fs';
import { goldenFiles } from '@attnkit/vitest-config';
import { describe, expect, test, vi } from 'vitest';
import { DAWN_INSTALL_COMMAND } from './backends.js';
import { runCli } from './cli.js';

/**
 * Dawn (the npm package `webgpu`, ~132 MB) is an optional peer dependency of the CLI (issue 9
 * item 5): `attnkit io` and `verify --backend ts|native` run without it and never import it; a
 * WebGPU run without it is a one-line error with the install command. Here `webgpu` cannot be
 * imported, as when it is not installed, and every import attempt is counted.
 */
const dawn = vi.hoisted(() => ({ imports: 0 }));
vi.mock('webgpu', () => {
  dawn.imports += 1;
  throw Object.assign(
    new Error("Cannot find package 'webgpu' imported from @attnkit/webgpu/dist/index.js"),
    { code: 'ERR_MODULE_NOT_FOUND' },
  );
});

function capture() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { out: (t: string) => out.push(t), err: (t: string) => err.push(t) } };
}

const manifest = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
};

describe('the CLI without Dawn', () => {
  test('webgpu is an optional peer dependency, never installed with the CLI', () => {
    expect(Object.keys(manifest.dependencies ?? {})).not.toContain('webgpu');
    // npm and pnpm install optionalDependencies by default: that would still pull Dawn.
    expect(Object.keys(manifest.optionalDependencies ?? {})).not.toContain('webgpu');
    expect(manifest.peerDependencies?.webgpu).toBeDefined();
    expect(manifest.peerDependenciesMeta?.webgpu?.optional).toBe(true);
  });

  test('attnkit io runs and imports no Dawn', async () => {
    const c = capture();
    const code = await runCli(
      ['io', '--algo', 'fa2', '--N', '256', '--d', '16', '--M', '2048', '--json'],
      c.io,
    );
    expect(code, c.err.join('\n')).toBe(0);
    expect(JSON.parse(c.out.join('')).algo).toBe('fa2');
    expect(dawn.imports).toBe(0);
  });

  test.for(['ts', 'native'])(
    'attnkit verify --backend %s runs and imports no Dawn',
    async (backend) => {
      const [file] = goldenFiles('softmax_causal');
      const c = capture();
      const code = await runCli(['verify', file!, '--backend', backend, '--json'], c.io);
      if (backend === 'native' && code === 2 && process.env.ATTNKIT_ALLOW_NO_NATIVE === '1') {
        expect(c.err.join('\n')).toContain('native');
      } else {
        expect(code, c.err.join('\n')).toBe(0);
        expect(JSON.parse(c.out.join('')).ok).toBe(true);
      }
      expect(dawn.imports).toBe(0);
    },
  );

  test('verify without --backend (the default choice for cpu) imports no Dawn', async () => {
    const [file] = goldenFiles('softmax_causal');
    const c = capture();
    expect(await runCli(['verify', file!], c.io), c.err.join('\n')).toBe(0);
    expect(dawn.imports).toBe(0);
  });

  test('attnkit info lists the backends and says how to install Dawn (exit 0)', async () => {
    const c = capture();
    expect(await runCli(['info'], c.io), c.err.join('\n')).toBe(0);
    const text = c.out.join('\n');
    expect(text).toMatch(/^ {2}ts +available/m);
    expect(text).toMatch(/^ {2}webgpu +unavailable: webgpu: needs Dawn/m);
    expect(text).toContain(DAWN_INSTALL_COMMAND);
    expect(text).toContain('WebGPU: no adapter');

    const j = capture();
    expect(await runCli(['info', '--json'], j.io)).toBe(0);
    const report = JSON.parse(j.out.join(''));
    expect(report.webgpu).toBeNull();
    expect(report.webgpuError).toContain(DAWN_INSTALL_COMMAND);
  });

  test('a WebGPU run says Dawn is missing and how to install it', async () => {
    const [file] = goldenFiles('softmax_causal');
    const c = capture();
    expect(await runCli(['verify', file!, '--backend', 'webgpu'], c.io)).toBe(2);
    const message = c.err.join('\n');
    expect(message).toContain('--backend webgpu: needs Dawn');
    expect(message).toContain(DAWN_INSTALL_COMMAND);
    expect(message.split('\n')).toHaveLength(1);
    expect(dawn.imports).toBeGreaterThan(0);

    const b = capture();
    const args = ['bench', '--backend', 'webgpu', '--shape', '1,1,16,8', '--repeats', '1'];
    expect(await runCli(args, b.io)).toBe(2);
    expect(b.err.join('\n')).toContain(DAWN_INSTALL_COMMAND);
  });
});
