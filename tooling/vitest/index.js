// Shared vitest settings: tests import workspace packages from their sources, so a test run
// needs no prior build and always sees the code under test.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * `@attnkit/<name>` -> packages/<name>/src/index.ts for every package, and the dev-only test
 * support `@attnkit/testing` -> tooling/testing/src/index.ts (tooling packages with sources are
 * aliased by the name in their package.json).
 */
function workspaceAliases() {
  const alias = {};
  for (const name of readdirSync(join(root, 'packages'))) {
    const src = join(root, 'packages', name, 'src', 'index.ts');
    if (existsSync(src)) alias[`@attnkit/${name}`] = src;
  }
  for (const name of readdirSync(join(root, 'tooling'))) {
    const src = join(root, 'tooling', name, 'src', 'index.ts');
    const manifest = join(root, 'tooling', name, 'package.json');
    if (!existsSync(src) || !existsSync(manifest)) continue;
    alias[JSON.parse(readFileSync(manifest, 'utf8')).name] = src;
  }
  return alias;
}

/** @param {import('vitest/config').UserConfig['test']} test */
export function attnkitVitest(test = {}) {
  return {
    resolve: { alias: workspaceAliases() },
    test: { testTimeout: 60_000, ...test },
  };
}

export const repoRoot = root;

/**
 * The shared PyTorch goldens: $ATTNKIT_GOLDENS, else ../shared/goldens beside the repository.
 * Tests that need them fail (not skip) when the directory is missing.
 */
export function goldensDir() {
  return process.env.ATTNKIT_GOLDENS ?? join(root, '..', 'shared', 'goldens');
}

/** Golden file names (sorted), optionally only those starting with `prefix`. */
export function goldenNames(prefix = '') {
  return readdirSync(goldensDir())
    .filter((f) => f.startsWith(prefix) && f.endsWith('.safetensors'))
    .sort();
}

/** Absolute paths of the golden files (sorted), optionally only those starting with `prefix`. */
export function goldenFiles(prefix = '') {
  return goldenNames(prefix).map((f) => join(goldensDir(), f));
}
