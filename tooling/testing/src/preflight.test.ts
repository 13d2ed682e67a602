import { describe, expect, test } from 'vitest';
import {
  APT_PACKAGES,
  gatherFacts,
  type PreflightFacts,
  preflight,
} from '../../scripts/preflight.mjs';

// The root `pretest` (tooling/scripts/preflight.mjs): the README's test command must stop at
// once with the one command that installs what the WebGPU tests need.
const all = { egl: true, eglMesa: true, gles: true, dri: true };
const none = { egl: false, eglMesa: false, gles: false, dri: false };
const facts = (over: Partial<PreflightFacts> = {}): PreflightFacts => ({
  platform: 'linux',
  env: {},
  root: false,
  chromium: true,
  libs: all,
  ...over,
});

describe('test preflight', () => {
  test('everything present: ok and silent', () => {
    const v = preflight(facts());
    expect(v.ok).toBe(true);
    expect(v.missing).toEqual([]);
    expect(v.lines).toEqual([]);
  });

  test('nothing present: fails with the one apt command of .ci/run packages', () => {
    const v = preflight(facts({ chromium: false, libs: none }));
    expect(v.ok).toBe(false);
    expect(v.missing).toEqual(APT_PACKAGES);
    expect(APT_PACKAGES).toEqual([
      'libegl1',
      'libegl-mesa0',
      'libgles2',
      'libgl1-mesa-dri',
      'chromium',
    ]);
    expect(v.command).toBe(
      'sudo apt-get update && sudo apt-get install -y libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri chromium',
    );
    expect(v.lines).toContain(`  ${v.command}`);
    expect(v.lines.join('\n')).toMatch(/ATTNKIT_ALLOW_NO_WEBGPU=1/);
  });

  test('only what is missing is installed; root needs no sudo', () => {
    const v = preflight(facts({ root: true, libs: { ...all, dri: false } }));
    expect(v.ok).toBe(false);
    expect(v.command).toBe('apt-get update && apt-get install -y libgl1-mesa-dri');
    const c = preflight(facts({ chromium: false }));
    expect(c.missing).toEqual(['chromium']);
  });

  test('ATTNKIT_ALLOW_NO_WEBGPU=1 goes on, saying so', () => {
    const v = preflight(
      facts({ chromium: false, libs: none, env: { ATTNKIT_ALLOW_NO_WEBGPU: '1' } }),
    );
    expect(v.ok).toBe(true);
    expect(v.lines.join('\n')).toMatch(/skip visibly/);
  });

  test('a missing ATTNKIT_CHROMIUM names the variable, not a package', () => {
    const v = preflight(facts({ chromium: false, env: { ATTNKIT_CHROMIUM: '/opt/chrome' } }));
    expect(v.ok).toBe(false);
    expect(v.missing).toEqual([]);
    expect(v.lines[0]).toMatch(/no Chromium at \/opt\/chrome.*ATTNKIT_CHROMIUM/);
  });

  test('outside Linux no Mesa is needed; EGL_PLATFORM other than surfaceless is only a note', () => {
    expect(preflight(facts({ platform: 'darwin', libs: none })).ok).toBe(true);
    const v = preflight(facts({ env: { EGL_PLATFORM: 'x11' } }));
    expect(v.ok).toBe(true);
    expect(v.lines.join('\n')).toMatch(/EGL_PLATFORM=x11/);
  });

  test('gatherFacts reads this machine without throwing', () => {
    const f = gatherFacts({ ATTNKIT_CHROMIUM: '/no/such/chromium' });
    expect(f.chromium).toBe(false);
    expect(Object.keys(f.libs).sort()).toEqual(['dri', 'egl', 'eglMesa', 'gles']);
  });
});
