// Shared vitest settings: tests import workspace packages from their sources, so a test run
// needs no prior build and always sees the code under test.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
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
    test: {
      // The WebGPU tests run WGSL on llvmpipe (the CPU): on CI's two cores beside the other
      // packages' tests they run 5-25x slower than alone (a 10 s test took 262 s on a slow
      // day), so the limit is for hangs, not for speed. CI's Mesa shader cache starts empty:
      // Mesa compiles the GLA backward's 'dq dk dgk' kernel at C 64 in 21 s alone (0.3 s
      // cached), and a grid case that compiles it passed 180 s on CI (2026-12-05), hence 600 s.
      // Tests that check a hang is detected set their own, shorter timeouts inside the call.
      testTimeout: 600_000,
      ...test,
      // Dawn on Mesa needs a surfaceless EGL display on a machine without one (CI, containers);
      // a value the caller or the shell set wins.
      // ATTNKIT_WGSL_LINT: PipelineCache rejects WGSL patterns some drivers miscompile.
      env: {
        EGL_PLATFORM: process.env.EGL_PLATFORM ?? 'surfaceless',
        ATTNKIT_WGSL_LINT: process.env.ATTNKIT_WGSL_LINT ?? '1',
        ...test.env,
      },
    },
  };
}

export const repoRoot = root;

/** The project's own goldens, committed at goldens/ (tooling/goldens/generate.py makes them). */
export const projectGoldensDir = join(root, 'goldens');

/** The shared PyTorch goldens: $ATTNKIT_GOLDENS, else ../shared/goldens beside the repository. */
export function sharedGoldensDir() {
  return process.env.ATTNKIT_GOLDENS ?? join(root, '..', 'shared', 'goldens');
}

function safetensorsIn(dir) {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .sort();
}

/**
 * The golden sets every golden test runs: the project's (always; missing or empty is an error,
 * never a skip) and the shared one when present ($ATTNKIT_GOLDENS, when set, must exist).
 * @returns {{ name: 'project' | 'shared', dir: string }[]}
 */
export function goldenSets() {
  if (!existsSync(projectGoldensDir) || safetensorsIn(projectGoldensDir).length === 0) {
    throw new Error(
      `goldens: expected the project's golden files in ${projectGoldensDir}, found none; ` +
        'regenerate them with `python3 tooling/goldens/generate.py --out goldens` (needs PyTorch)',
    );
  }
  const sets = [{ name: 'project', dir: projectGoldensDir }];
  const shared = sharedGoldensDir();
  if (existsSync(shared)) sets.push({ name: 'shared', dir: shared });
  else if (process.env.ATTNKIT_GOLDENS !== undefined) {
    throw new Error(`goldens: ATTNKIT_GOLDENS=${shared} does not exist`);
  }
  return sets;
}

/** Golden file names of one set's folder (sorted), optionally only those starting with `prefix`. */
export function goldenNames(prefix = '', dir = projectGoldensDir) {
  return safetensorsIn(dir).filter((f) => f.startsWith(prefix));
}

/** Absolute paths of the golden files of every set (project first), optionally by `prefix`. */
export function goldenFiles(prefix = '') {
  return goldenSets().flatMap((s) => goldenNames(prefix, s.dir).map((f) => join(s.dir, f)));
}

/** "project/softmax_full" or "shared/softmax_full": a golden path named with its set, for test names. */
export function goldenLabel(path) {
  const set = dirname(resolve(path)) === resolve(projectGoldensDir) ? 'project' : 'shared';
  return `${set}/${basename(path).replace(/\.safetensors$/, '')}`;
}
