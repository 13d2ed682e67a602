import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '@attnkit/vitest-config';
import { build } from 'esbuild';
import { afterAll, describe, expect, test } from 'vitest';

/**
 * The family packages register their kernels when they are imported, so a bare
 * `import '@attnkit/sigmoid-attention'` (as the CLI does) must survive a bundler: with
 * `"sideEffects": false` esbuild dropped it ("ignored-bare-import") and the bundled CLI had no
 * sigmoid kernels. Each family's built dist is bundled from a bare import and run.
 */
const FAMILIES = [
  ['@attnkit/flash-attention', 'flash-attention', 'softmax'],
  ['@attnkit/sigmoid-attention', 'sigmoid-attention', 'sigmoid'],
  ['@attnkit/hstu-attention', 'hstu-attention', 'hstu'],
  ['@attnkit/lean-attention', 'lean-attention', 'lean'],
  ['@attnkit/sage-attention', 'sage-attention', 'sage'],
  ['@attnkit/linear-attention', 'linear-attention', 'gla'],
  ['@attnkit/hyper-attention', 'hyper-attention', 'hyper'],
] as const;
const dir = mkdtempSync(join(tmpdir(), 'attnkit-side-effects-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('family packages keep their kernel registrations through a bundler', () => {
  test.each(FAMILIES)(
    'a bare import of %s registers its kernels',
    async (_name, folder, family) => {
      const dist = join(repoRoot, 'packages', folder, 'dist', 'index.js');
      const attention = join(repoRoot, 'packages', 'attention', 'dist', 'index.js');
      expect(existsSync(dist), `${dist} (built by turbo before the tests)`).toBe(true);
      const entry = join(dir, `${folder}-entry.mjs`);
      writeFileSync(
        entry,
        `import ${JSON.stringify(dist)};\nimport { registeredKernels } from ${JSON.stringify(attention)};\nexport const families = registeredKernels().map((r) => r.family);\n`,
      );
      const out = join(dir, `${folder}-bundle.mjs`);
      const result = await build({
        entryPoints: [entry],
        outfile: out,
        bundle: true,
        platform: 'node',
        format: 'esm',
        external: ['webgpu', '@attnkit/native'],
        logLevel: 'silent',
      });
      expect(result.warnings.map((w) => w.text)).toEqual([]);
      const { families } = (await import(pathToFileURL(out).href)) as { families: string[] };
      expect(families).toContain(family);
    },
  );
});
