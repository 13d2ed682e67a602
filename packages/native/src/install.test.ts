import { spawnSync } from 'node:child_process';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, test } from 'vitest';
import {
  decideInstall,
  failureWarning,
  prebuiltMessage,
  prebuiltSegments,
  STATUS_FILE,
  wantsSource,
} from '../scripts/addon-install.mjs';
import { nativeAddonPath, nativeAddonSource } from './index.js';

// The install script's decisions and messages (issue 9 item 6: native without a compiler).
const linux = { platform: 'linux', arch: 'x64', upToDate: false };
const present = { present: true, loadError: undefined };

describe('decideInstall: compile only where no usable prebuilt ships', () => {
  test('a prebuilt for this platform that loads: used, nothing compiled', () => {
    expect(decideInstall({ env: {}, ...linux, prebuilt: present })).toEqual({
      action: 'prebuilt',
      reason: 'a prebuilt addon for linux-x64 ships in the package',
    });
  });

  test('no prebuilt for this platform: compile', () => {
    const d = decideInstall({
      env: {},
      platform: 'darwin',
      arch: 'arm64',
      upToDate: false,
      prebuilt: { present: false },
    });
    expect(d.action).toBe('build');
    expect(d.reason).toBe('no prebuilt addon for darwin-arm64 (prebuilt: linux-x64)');
  });

  test('a prebuilt that does not load here (old glibc, musl): compile, saying why', () => {
    const d = decideInstall({
      env: {},
      ...linux,
      prebuilt: {
        present: true,
        loadError: "Error: /lib/libc.so.6: version `GLIBC_2.29' not found",
      },
    });
    expect(d.action).toBe('build');
    expect(d.reason).toContain('does not load here');
    expect(d.reason).toContain('GLIBC_2.29');
  });

  test('ATTNKIT_NATIVE_BUILD_FROM_SOURCE=1 or npm --build-from-source: compile anyway', () => {
    expect(
      decideInstall({
        env: { ATTNKIT_NATIVE_BUILD_FROM_SOURCE: '1' },
        ...linux,
        prebuilt: present,
      }),
    ).toEqual({ action: 'build', reason: 'ATTNKIT_NATIVE_BUILD_FROM_SOURCE=1' });
    expect(
      decideInstall({ env: { npm_config_build_from_source: 'true' }, ...linux, prebuilt: present })
        .action,
    ).toBe('build');
    expect(wantsSource({ npm_config_build_from_source: 'false' })).toBe(false);
    expect(wantsSource({ npm_config_build_from_source: '' })).toBe(false);
    expect(wantsSource({ npm_config_build_from_source: 'sharp,@attnkit/native' })).toBe(true);
    expect(wantsSource({ npm_config_build_from_source: 'sharp' })).toBe(false);
    expect(wantsSource({ ATTNKIT_NATIVE_BUILD_FROM_SOURCE: '0' })).toBe(false);
  });

  test('an up-to-date local build: nothing to do; ATTNKIT_SKIP_NATIVE_BUILD=1: skip', () => {
    expect(
      decideInstall({ env: {}, ...linux, upToDate: true, prebuilt: { present: false } }).action,
    ).toBe('up-to-date');
    expect(
      decideInstall({ env: { ATTNKIT_SKIP_NATIVE_BUILD: '1' }, ...linux, prebuilt: present })
        .action,
    ).toBe('skip');
  });

  test('--strict (build:addon) always compiles, whatever is there', () => {
    for (const env of [{}, { ATTNKIT_SKIP_NATIVE_BUILD: '1' }]) {
      expect(
        decideInstall({ env, strict: true, ...linux, upToDate: true, prebuilt: present }).action,
      ).toBe('build');
    }
  });
});

describe('install messages', () => {
  test('prebuilt used: the path, the N-API version, how to compile instead', () => {
    const m = prebuiltMessage('prebuilds/linux-x64/attnkit_native.node', {
      napiVersion: 8,
      node: 'v20.20.2',
    });
    expect(m).toContain('using the prebuilt addon prebuilds/linux-x64/attnkit_native.node');
    expect(m).toContain('N-API 8');
    expect(m).toContain('nothing compiled');
    expect(m).toContain('ATTNKIT_NATIVE_BUILD_FROM_SOURCE=1');
  });

  test('build failed: one paragraph with the reason, the log path and the fix', () => {
    const m = failureWarning({
      why: 'node-gyp exited with 1',
      log: '/app/node_modules/@attnkit/native/build-addon.log',
      scriptPath: '/app/node_modules/@attnkit/native/scripts/build-addon.mjs',
    });
    expect(m).not.toContain('\n');
    expect(m).toContain('(node-gyp exited with 1)');
    expect(m).toContain(
      "The build's output is in /app/node_modules/@attnkit/native/build-addon.log",
    );
    for (const fix of [
      'python3, make and a C++17 compiler',
      'npm rebuild @attnkit/native',
      'pnpm approve-builds',
    ])
      expect(m).toContain(fix);
    expect(failureWarning({ why: 'x', scriptPath: 's' })).not.toContain("build's output");
  });
});

// The script itself, in a copy of the package (the real one's build/ stays untouched).
const pkgRoot = fileURLToPath(new URL('..', import.meta.url));
const tmp: string[] = [];
afterEach(() => {
  for (const dir of tmp.splice(0)) rmSync(dir, { recursive: true, force: true });
});

function copyPackage(withModules: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'attnkit-native-install-'));
  tmp.push(dir);
  for (const p of ['package.json', 'binding.gyp', 'scripts', 'src/engine'])
    cpSync(join(pkgRoot, p), join(dir, p), { recursive: true });
  if (withModules) symlinkSync(join(pkgRoot, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

function install(dir: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [join(dir, 'scripts', 'build-addon.mjs')], {
    cwd: dir,
    encoding: 'utf8',
    // vitest's NODE_PATH would let the copy find the workspace's node-gyp.
    env: { ...process.env, NODE_PATH: '', ATTNKIT_SKIP_NATIVE_BUILD: '', ...env },
  });
  const record = existsSync(join(dir, STATUS_FILE))
    ? JSON.parse(readFileSync(join(dir, STATUS_FILE), 'utf8'))
    : undefined;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, record };
}

const addon = nativeAddonPath();
const onLinux = process.platform === 'linux';

describe.runIf(onLinux && addon !== undefined && existsSync(addon))('build-addon.mjs', () => {
  test('with a loadable prebuilt: uses it, compiles nothing, records "prebuilt"', () => {
    const dir = copyPackage(false); // no node_modules: a compile could not even start
    const target = join(dir, ...prebuiltSegments(process.platform, process.arch));
    mkdirSync(join(target, '..'), { recursive: true });
    cpSync(addon!, target);
    const r = install(dir);
    expect(r.code).toBe(0);
    expect(r.record).toMatchObject({ outcome: 'prebuilt', addon: target });
    expect(r.stdout).toContain('using the prebuilt addon');
    expect(existsSync(join(dir, 'build'))).toBe(false);
  });

  test('a failing compile: exit 0, the warning names the log, the status records it', () => {
    const dir = copyPackage(true);
    // `false` as the compiler: node-gyp configures, then every compile fails at once.
    const r = install(dir, { CXX: 'false', CC: 'false' });
    expect(r.code).toBe(0);
    expect(r.record?.outcome).toBe('failed');
    const log = join(dir, 'build-addon.log');
    expect(r.record?.log).toBe(log);
    expect(existsSync(log)).toBe(true);
    expect(r.stderr).toContain(`The build's output is in ${log}`);
    expect(r.stderr).toContain('npm rebuild @attnkit/native');
    expect(r.stderr).toContain('pnpm approve-builds');
  }, 120_000);

  test('nativeAddonSource(): the addon that loaded, where it came from', () => {
    const source = nativeAddonSource();
    expect(source?.path).toBe(addon);
    expect(['local', 'prebuilt', 'env']).toContain(source?.source);
  });
});

test.runIf(onLinux)('no prebuilt, no node-gyp: a failed install is a warning, not an error', () => {
  const dir = copyPackage(false);
  const r = install(dir);
  expect(r.code).toBe(0);
  expect(r.record).toMatchObject({ outcome: 'failed', reason: 'node-gyp is not installed' });
  expect(r.stderr).toContain(
    'warning: @attnkit/native: the native addon was not built (node-gyp is not installed)',
  );
});

test.runIf(onLinux)(
  'ATTNKIT_SKIP_NATIVE_BUILD=1: a note and a "skipped" record, no failure paragraph',
  () => {
    const dir = copyPackage(false);
    const r = install(dir, { ATTNKIT_SKIP_NATIVE_BUILD: '1' });
    expect(r.code).toBe(0);
    expect(r.record).toMatchObject({ outcome: 'skipped', reason: 'ATTNKIT_SKIP_NATIVE_BUILD=1' });
    expect(r.stderr).toContain('nothing compiled or checked');
    expect(r.stderr).not.toContain('was not built');
  },
);
