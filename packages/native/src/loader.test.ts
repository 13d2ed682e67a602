import { posix } from 'node:path';
import { describe, expect, test } from 'vitest';
import {
  describeNativeLoadFailure,
  type NativeAddonCandidate,
  type NativeAddonResolution,
  nativeAddonCandidates,
  resolveNativeAddon,
} from './index.js';

// The loader's path resolution and its messages, as pure functions (issue 9 item 6): no addon,
// no file system.
const root = '/app/node_modules/@attnkit/native';
const local = `${root}/build/Release/attnkit_native.node`;
const prebuilt = `${root}/prebuilds/linux-x64/attnkit_native.node`;
const candidates = (override?: string) =>
  nativeAddonCandidates({ root, platform: 'linux', arch: 'x64', override, join: posix.join });

describe('nativeAddonCandidates: the order the loader tries', () => {
  test('the local build, then the prebuilt for this platform-arch', () => {
    expect(candidates()).toEqual([
      { source: 'local', path: local },
      { source: 'prebuilt', path: prebuilt },
    ]);
    expect(
      nativeAddonCandidates({ root, platform: 'darwin', arch: 'arm64', join: posix.join })[1],
    ).toEqual({ source: 'prebuilt', path: `${root}/prebuilds/darwin-arm64/attnkit_native.node` });
  });

  test('ATTNKIT_NATIVE_ADDON alone (an explicit choice never falls back); empty = unset', () => {
    expect(candidates('/x/a.node')).toEqual([{ source: 'env', path: '/x/a.node' }]);
    expect(candidates('')).toHaveLength(2);
  });
});

describe('resolveNativeAddon: the first candidate that exists and loads', () => {
  const loadAll = (path: string) => `addon at ${path}`;

  test('a local build wins over the prebuilt', () => {
    const r = resolveNativeAddon(candidates(), () => true, loadAll);
    expect(r.loaded).toEqual({
      candidate: { source: 'local', path: local },
      addon: `addon at ${local}`,
    });
  });

  test('no local build: the prebuilt is used', () => {
    const r = resolveNativeAddon(candidates(), (p) => p === prebuilt, loadAll);
    expect(r.loaded?.candidate).toEqual({ source: 'prebuilt', path: prebuilt });
    expect(r.missing).toEqual([{ source: 'local', path: local }]);
  });

  test('a local build that does not load (another Node, a broken file) falls through', () => {
    const r = resolveNativeAddon(
      candidates(),
      () => true,
      (p) => {
        if (p === local) throw new Error('invalid ELF header');
        return 'ok';
      },
    );
    expect(r.loaded?.candidate.source).toBe('prebuilt');
    expect(r.failed).toEqual([
      { candidate: { source: 'local', path: local }, error: 'invalid ELF header' },
    ]);
  });

  test('nothing exists: nothing loaded, every candidate missing, load never called', () => {
    const r = resolveNativeAddon(
      candidates(),
      () => false,
      () => {
        throw new Error('must not load');
      },
    );
    expect(r.loaded).toBeUndefined();
    expect(r.missing.map((c) => c.source)).toEqual(['local', 'prebuilt']);
  });
});

describe('describeNativeLoadFailure: what happened and the fix, in one paragraph', () => {
  const missingAll: NativeAddonResolution<unknown> = {
    missing: candidates(),
    failed: [],
  };
  const base = {
    statusPath: `${root}/build-addon-status.json`,
    logExists: false,
    platform: 'linux',
    arch: 'x64',
    scriptPath: `${root}/scripts/build-addon.mjs`,
  };
  const fixes = (m: string) => {
    expect(m).toContain('pnpm --filter @attnkit/native build:addon');
    expect(m).toContain('npm rebuild @attnkit/native');
    expect(m).toContain(`node ${root}/scripts/build-addon.mjs --strict`);
  };

  test('never built (no status file: pnpm blocked the install script)', () => {
    const m = describeNativeLoadFailure({ ...base, resolution: missingAll, status: undefined });
    expect(m).toMatch(/^not built: /);
    // Every path tried, in order.
    expect(m).toContain(`the local build ${local}, then the prebuilt for linux-x64 ${prebuilt}`);
    expect(m).toContain(`the install script never ran (no ${root}/build-addon-status.json)`);
    expect(m).toContain('pnpm approve-builds');
    expect(m).toContain('onlyBuiltDependencies');
    expect(m).toContain('--ignore-scripts');
    fixes(m);
    expect(m).not.toContain('\n');
  });

  test('build failed, its log exists: the reason, the log path, the tools to install', () => {
    const log = `${root}/build-addon.log`;
    const m = describeNativeLoadFailure({
      ...base,
      resolution: { missing: [candidates()[0]!], failed: [] },
      status: { outcome: 'failed', reason: 'node-gyp exited with 1', log },
      logExists: true,
    });
    expect(m).toContain("the install script's build failed (node-gyp exited with 1); its log: ");
    expect(m).toContain(log);
    expect(m).toContain('apt-get install python3 make g++');
    expect(m).not.toContain('never ran');
    fixes(m);
    // A log that is gone is not named.
    const gone = describeNativeLoadFailure({
      ...base,
      resolution: missingAll,
      status: { outcome: 'failed', reason: 'node-gyp exited with 1', log },
    });
    expect(gone).not.toContain(log);
  });

  test('no prebuilt for this platform: says so (it must compile)', () => {
    const other = nativeAddonCandidates({
      root,
      platform: 'darwin',
      arch: 'arm64',
      join: posix.join,
    });
    const m = describeNativeLoadFailure({
      ...base,
      platform: 'darwin',
      arch: 'arm64',
      resolution: { missing: other, failed: [] },
      status: { outcome: 'failed', reason: 'node-gyp exited with 1' },
    });
    expect(m).toContain('no prebuilt addon ships for darwin-arm64 (prebuilt: linux-x64)');
  });

  test('skipped by ATTNKIT_SKIP_NATIVE_BUILD; built but deleted since', () => {
    const skipped = describeNativeLoadFailure({
      ...base,
      resolution: missingAll,
      status: { outcome: 'skipped', reason: 'ATTNKIT_SKIP_NATIVE_BUILD=1' },
    });
    expect(skipped).toContain('the install script skipped the build (ATTNKIT_SKIP_NATIVE_BUILD=1)');
    const gone = describeNativeLoadFailure({
      ...base,
      resolution: missingAll,
      status: { outcome: 'prebuilt', addon: prebuilt },
    });
    expect(gone).toContain(`reported "prebuilt" (${prebuilt}), but no addon is there now`);
  });

  test('a file that does not load: "failed to load" with the error, and what else was tried', () => {
    const failedLocal: NativeAddonCandidate = { source: 'local', path: local };
    const m = describeNativeLoadFailure({
      ...base,
      resolution: {
        missing: [{ source: 'prebuilt', path: prebuilt }],
        failed: [{ candidate: failedLocal, error: 'GLIBC_2.29 not found' }],
      },
      status: { outcome: 'built', addon: local },
    });
    expect(m).toMatch(
      new RegExp(`^failed to load ${local} on linux-x64: GLIBC_2\\.29 not found\\. also tried`),
    );
    expect(m).toContain(`the prebuilt for linux-x64 ${prebuilt} (missing)`);
  });

  test('ATTNKIT_NATIVE_ADDON naming a missing file: says to unset or fix it', () => {
    const m = describeNativeLoadFailure({
      ...base,
      resolution: { missing: candidates('/x/a.node'), failed: [] },
      status: { outcome: 'built' },
    });
    expect(m).toContain('tried ATTNKIT_NATIVE_ADDON=/x/a.node; none exists');
    expect(m).toContain('unset ATTNKIT_NATIVE_ADDON');
  });
});
