import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { toleranceFor } from '@attnkit/attention';
import { CHROMIUM, launchChromium, SWIFTSHADER_WEBGPU, serveBundledPage } from '@attnkit/testing';
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { ProblemSpec } from './testing.js';

/**
 * chunkGla's SIMT kernels in headless Chromium (SwiftShader): Dawn's Vulkan backend, so the
 * WGSL takes Tint's SPIR-V writer, the path the H200 takes (Node's Dawn here runs GLES and
 * Tint's GLSL writer). The H200 computed wrong states where llvmpipe passed (BENCHMARKS.md,
 * "GLA on the H200"): a bare \`var\` in a loop body was not re-zeroed each iteration there,
 * and this test failed the same way (ht 1.46 relative) before the fix. It also runs the backward
 * under a browser's storage-buffer limit (10 here).
 */
const allowMissing = process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1';
const seed = Date.now() % 100000;

let served: Awaited<ReturnType<typeof serveBundledPage>> | undefined;
let url = '';

beforeAll(async () => {
  served = await serveBundledPage({
    entry: fileURLToPath(new URL('./browser-entry.ts', import.meta.url)),
    packages: ['tensor', 'attention', 'webgpu', 'skeleton', 'io-complexity'],
    external: ['@attnkit/native'],
  });
  url = served.url;
}, 300_000);

afterAll(() => {
  served?.close();
});

test.skipIf(allowMissing && !existsSync(CHROMIUM))(
  'headless Chromium (SPIR-V) runs chunkGla forward and backward',
  async () => {
    const browser = await launchChromium(SWIFTSHADER_WEBGPU);
    try {
      const page = browser.context.pages()[0] ?? (await browser.context.newPage());
      const logs: string[] = [];
      page.on('console', (m) => logs.push(m.text()));
      page.on('pageerror', (e) => logs.push(String(e)));
      // goto waits for the load event, by which the page's module script has run: a bundle that
      // failed to load or evaluate (a Node-only import reaching ./testing.ts did, 2026-12-05)
      // never defines attnkitRunGla. Say so with the page's console, not after a long wait.
      await page.goto(url, { timeout: 300_000 });
      await page
        .waitForFunction(() => 'attnkitRunGla' in globalThis, undefined, { timeout: 60_000 })
        .catch((e: Error) => {
          throw new Error(
            `the page did not define attnkitRunGla (${e.message}); its console:\n${logs.join('\n')}`,
          );
        });
      // Several chunks per sequence (T 157 at C 64: the state pass's chunk loop runs 3 times),
      // K != V, h0 and dht: the shape the H200 failed on.
      const spec: ProblemSpec = { B: 2, T: 157, H: 2, K: 32, V: 48, h0: true };
      const r = (await page.evaluate(
        ([s, sd]) =>
          (
            globalThis as unknown as {
              attnkitRunGla: (s: unknown, seed: number, tc: boolean) => Promise<unknown>;
            }
          ).attnkitRunGla(s, sd, false),
        [spec, seed] as const,
      )) as {
        adapter: { architecture: string };
        limits: { maxStorageBuffersPerShaderStage: number };
        recurrentBackward: string;
        errors: Record<string, { relL2: number; nonFinite: number }>;
      };
      expect(r.adapter.architecture, logs.join('\n')).toBe('swiftshader');
      // Under 12 storage buffers (SwiftShader grants 10) the backward takes the merged
      // dq / dk / dgk pass; Dawn on llvmpipe (16) tests the split one.
      logs.push(`maxStorageBuffersPerShaderStage ${r.limits.maxStorageBuffersPerShaderStage}`);
      expect(Object.keys(r.errors).sort()).toEqual(['dgk', 'dh0', 'dk', 'dq', 'dv', 'ht', 'o']);
      if (r.limits.maxStorageBuffersPerShaderStage < 15) {
        expect(r.recurrentBackward).toMatch(
          /^UnsupportedError: fusedRecurrentGlaBackward on webgpu: needs 15 storage buffers per shader stage, the adapter grants \d+; chunkGlaBackward/,
        );
      }
      const tol = toleranceFor({ dtype: 'f32', chunked: true });
      for (const [name, e] of Object.entries(r.errors)) {
        expect(e.nonFinite, `seed ${seed} ${name}`).toBe(0);
        expect(e.relL2, `seed ${seed} ${name}`).toBeLessThanOrEqual(tol);
      }
    } finally {
      await browser.close();
    }
  },
  // ~60 s alone; on CI's two cores beside every other package's tests Chromium runs up to ~6x
  // slower (the FA2 page, 28 s alone, passed 180 s on 2026-12-04): the limit only catches a hang.
  600_000,
);
