import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '@attnkit/vitest-config';
import { afterAll, describe, expect, test } from 'vitest';
import { browserBundleReport, publishedPackages } from './browser-safe.js';

/**
 * DESIGN.md "Data flow": every published package's entry point bundles for the browser and
 * imports no Node builtin, `.node` addon or Dawn when it loads (the native addon is loaded
 * lazily, only in Node).
 */
describe('published entry points are browser-safe', () => {
  const packages = publishedPackages(repoRoot);
  test('the published packages are found', () => {
    expect(packages.map((p) => p.name)).toEqual(
      expect.arrayContaining(['@attnkit/tensor', '@attnkit/attention', '@attnkit/skeleton']),
    );
  });
  test.for(packages.map((p) => [p.name, p] as const))('%s', async ([name, p]) => {
    const report = await browserBundleReport(repoRoot, p.entry);
    expect(report.errors, `${name} does not bundle for the browser`).toEqual([]);
    const lines = report.violations.map(
      (v) => `${v.path} (${v.kind}) from ${v.importers.join(', ')}`,
    );
    expect(lines, `${name} imports Node-only modules when it loads`).toEqual([]);
  });
});

describe('the check itself', () => {
  const root = mkdtempSync(join(tmpdir(), 'attnkit-browser-safe-'));
  mkdirSync(join(root, 'packages'));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const file = (name: string, text: string) => {
    writeFileSync(join(root, name), text);
    return join(root, name);
  };
  file(
    'fs-user.js',
    "import { readFileSync } from 'node:fs';\nexport const read = readFileSync;\n",
  );
  file('addon.js', "import addon from './engine.node';\nexport default addon;\n");

  test('a static node: import, also through another module, is a violation', async () => {
    const direct = await browserBundleReport(
      root,
      file('direct.js', "import { existsSync } from 'node:fs';\nexport const e = existsSync;\n"),
    );
    expect(direct.violations.map((v) => v.path)).toEqual(['node:fs']);
    const through = await browserBundleReport(
      root,
      file('through.js', "export { read } from './fs-user.js';\n"),
    );
    expect(through.violations).toEqual([
      { path: 'node:fs', kind: 'import-statement', importers: ['fs-user.js'] },
    ]);
  });

  test('bare builtins, .node addons and Dawn are violations too', async () => {
    const r = await browserBundleReport(
      root,
      file(
        'bare.js',
        "import path from 'path';\nimport gpu from 'webgpu';\nexport { default as addon } from './addon.js';\nexport const x = [path, gpu];\n",
      ),
    );
    expect(r.violations.map((v) => v.path).sort()).toEqual(['./engine.node', 'path', 'webgpu']);
  });

  test('behind a dynamic import() it is lazy, even when the lazy module imports it statically', async () => {
    const r = await browserBundleReport(
      root,
      file(
        'lazy.js',
        "export const load = () => import('./fs-user.js');\nexport const fs = () => import('node:fs/promises');\n",
      ),
    );
    expect(r.violations).toEqual([]);
    expect(r.lazy.map((v) => v.path).sort()).toEqual(['node:fs', 'node:fs/promises']);
  });
});
