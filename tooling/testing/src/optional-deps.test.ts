import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { goldenFiles, repoRoot } from '@attnkit/vitest-config';
import { afterAll, describe, expect, test } from 'vitest';

/**
 * The optional dependencies as installed packages see them (issue 9 item 5): the built dists run
 * in a Node process whose resolver cannot find `@attnkit/native` or Dawn (`webgpu`), exactly as
 * when they are not installed (Node's own ERR_MODULE_NOT_FOUND), and every attempt to resolve
 * them is logged.
 */
const dir = mkdtempSync(join(tmpdir(), 'attnkit-optional-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const log = join(dir, 'attempts.log');
// Resolving from a directory with no node_modules gives Node's real "Cannot find package" error.
writeFileSync(
  join(dir, 'hide.mjs'),
  `import { appendFileSync } from 'node:fs';
const hidden = (process.env.ATTNKIT_HIDE ?? '').split(',');
export async function resolve(spec, ctx, next) {
  if (hidden.includes(spec)) {
    appendFileSync(${JSON.stringify(log)}, spec + '\\n');
    return next(spec, { ...ctx, parentURL: ${JSON.stringify(pathToFileURL(join(dir, 'nowhere.js')).href)} });
  }
  return next(spec, ctx);
}
`,
);
writeFileSync(
  join(dir, 'register.mjs'),
  `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(join(dir, 'hide.mjs')).href)});\n`,
);

function node(args: string[], hide: string[]) {
  rmSync(log, { force: true });
  const r = spawnSync(process.execPath, ['--import', join(dir, 'register.mjs'), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ATTNKIT_HIDE: hide.join(',') },
    timeout: 120_000,
  });
  const attempts = existsSync(log)
    ? (spawnSync('cat', [log], { encoding: 'utf8' }).stdout.trim().split('\n') as string[])
    : [];
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, attempts };
}

const dist = (p: string) => join(repoRoot, p, 'dist');

describe('@attnkit/flash-attention without @attnkit/native', () => {
  test('native is declined with the install command; auto runs ts; explicit native is a typed error', () => {
    const script = join(dir, 'flash.mjs');
    writeFileSync(
      script,
      `const fa = await import(${JSON.stringify(pathToFileURL(join(dist('packages/flash-attention'), 'index.js')).href)});
const { Tensor } = await import(${JSON.stringify(pathToFileURL(join(dist('packages/tensor'), 'index.js')).href)});
const t = Tensor.from(Float32Array.from({ length: 32 }, (_, i) => Math.sin(i)), [1, 1, 4, 8]);
const out = { load: await fa.loadNativeBackend(), available: await fa.nativeAvailable() };
out.auto = Array.from((await fa.flashAttention(t, t, t)).o.toFloat32Array());
out.ts = Array.from((await fa.flashAttention(t, t, t, { backend: 'ts' })).o.toFloat32Array());
try { await fa.flashAttention(t, t, t, { backend: 'native' }); out.native = 'ran'; }
catch (e) { out.native = { name: e.name, argument: e.argument, message: e.message }; }
console.log(JSON.stringify(out));
`,
    );
    const r = node([script], ['@attnkit/native']);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(r.attempts).toContain('@attnkit/native');
    expect(out.load).toBe(
      'the native engine is unavailable: @attnkit/native is not installed (an optional dependency; install it with `npm install @attnkit/native`)',
    );
    expect(out.available).toBe(false);
    expect(out.auto).toEqual(out.ts);
    expect(out.native.name).toBe('BackendUnavailableError');
    expect(out.native.argument).toBe('backend');
    expect(out.native.message).toContain('`npm install @attnkit/native`');
  });
});

describe('the attnkit command without Dawn', () => {
  const main = join(dist('apps/cli'), 'main.js');
  const [golden] = goldenFiles('softmax_causal');

  test('io runs and never resolves webgpu', () => {
    const r = node(
      [main, 'io', '--algo', 'fa2', '--N', '256', '--d', '16', '--M', '2048', '--json'],
      ['webgpu'],
    );
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).algo).toBe('fa2');
    expect(r.attempts).toEqual([]);
  });

  test.for(['ts', 'native'])('verify --backend %s runs and never resolves webgpu', (backend) => {
    const r = node([main, 'verify', golden!, '--backend', backend, '--json'], ['webgpu']);
    if (backend === 'native' && r.status === 2 && process.env.ATTNKIT_ALLOW_NO_NATIVE === '1')
      return;
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).ok).toBe(true);
    expect(r.attempts).toEqual([]);
  });

  test('verify --backend webgpu says Dawn is missing and how to install it', () => {
    const r = node([main, 'verify', golden!, '--backend', 'webgpu'], ['webgpu']);
    expect(r.status).toBe(2);
    expect(r.attempts).toContain('webgpu');
    expect(r.stderr).toContain('--backend webgpu: needs Dawn');
    expect(r.stderr).toContain('npm install -g webgpu');
    expect(r.stderr).toContain('`npm install webgpu` in your project');
    // One line of the command's own (Node may add its warnings).
    expect(
      r.stderr.split('\n').filter((l) => l.startsWith('attnkit:')),
      r.stderr,
    ).toHaveLength(1);
  });
});
