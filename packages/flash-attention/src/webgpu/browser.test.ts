import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM, launchChromium, SWIFTSHADER_WEBGPU, serveBundledPage } from '@attnkit/testing';
import { goldenSets } from '@attnkit/vitest-config';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

/**
 * One real browser: headless Chromium (Debian's, with SwiftShader's Vulkan: its WebGPU adapter
 * has subgroups) loads a browser bundle of the WGSL kernels from a 127.0.0.1 server and runs
 * FA2 forward and backward for two goldens; the errors come back to this test.
 */
const allowMissing = process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1';
// Every golden set: the project's goldens/ and, when present, ../shared/goldens.
const SETS = goldenSets();
const FILES = ['softmax_gqa', 'softmax_varlen'];
// Small workgroups compile quickly in SwiftShader; TX = 4 matches its 4-lane subgroups.
const SMALL = { tx: 4, ty: 8, cu: 2, kc: 16, mc: 16 };
const TILES = { forward: SMALL, dq: SMALL, dkdv: SMALL };

const skip = allowMissing && !existsSync(CHROMIUM);
// On CI's two cores beside every other package's tests this file ran 6x slower than alone
// (28 s alone, past a single 180 s limit on 2026-12-04): the browser and the page load once,
// each golden is its own test, and every limit only catches a hang.
const HANG = 300_000;

let served: Awaited<ReturnType<typeof serveBundledPage>> | undefined;
let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
let page: Page | undefined;
const logs: string[] = [];

beforeAll(async () => {
  if (skip) return;
  served = await serveBundledPage({
    entry: fileURLToPath(new URL('./browser-entry.ts', import.meta.url)),
    packages: ['tensor', 'attention', 'io-complexity', 'webgpu', 'flash-attention'],
    route(path, res) {
      if (!path.startsWith('/golden/')) return false;
      const [set, file] = path.slice('/golden/'.length).split('/');
      const dir = SETS.find((s) => s.name === set)?.dir;
      const name = (file ?? '').replace(/[^a-z_]/g, '');
      if (!dir) res.writeHead(404).end();
      else {
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        res.end(readFileSync(join(dir, `${name}.safetensors`)));
      }
      return true;
    },
  });
  browser = await launchChromium(SWIFTSHADER_WEBGPU);
  page = browser.context.pages()[0] ?? (await browser.context.newPage());
  page.on('console', (m) => logs.push(m.text()));
  page.on('pageerror', (e) => logs.push(String(e)));
  await page.goto(served.url);
  await page.waitForFunction(() => 'attnkitRunGolden' in globalThis, undefined, {
    timeout: HANG,
  });
}, HANG);

// Closing Chromium shares CI's two cores too (vitest's default hook limit is 10 s).
afterAll(async () => {
  await browser?.close();
  served?.close();
}, HANG);

describe.skipIf(skip)(
  'headless Chromium runs FA2 forward and backward on its WebGPU adapter',
  () => {
    test.each(SETS.flatMap((s) => FILES.map((f) => [s.name, f] as const)))(
      '%s/%s',
      async (set, name) => {
        if (!page) throw new Error('the Chromium page did not load (see beforeAll)');
        const result = await page.evaluate(
          async ([where, file, t]) => {
            const bytes = new Uint8Array(
              await (await fetch(`/golden/${where}/${file}`)).arrayBuffer(),
            );
            const run = (
              globalThis as unknown as {
                attnkitRunGolden: (b: Uint8Array, n: string, t: unknown) => Promise<unknown>;
              }
            ).attnkitRunGolden;
            return run(bytes, file, t);
          },
          [set, name, TILES] as const,
        );
        const r = result as {
          adapter: { architecture: string };
          features: { subgroups: boolean; subgroupMinSize: number };
          subgroupReduce: boolean;
          errors: Record<string, { relL2: number; nonFinite: number }>;
        };
        expect(r.adapter.architecture, logs.join('\n')).toBe('swiftshader');
        // SwiftShader's subgroups have 4 lanes: with 4 threads per row the forward's row
        // max and sum run through subgroup shuffles, the path Dawn on llvmpipe cannot take.
        expect(r.features.subgroups).toBe(true);
        expect(r.subgroupReduce).toBe(r.features.subgroupMinSize >= 4);
        expect(Object.keys(r.errors).sort()).toEqual(
          name === 'softmax_varlen' ? ['dk', 'dq', 'dv', 'o'] : ['dk', 'dq', 'dv', 'lse', 'o'],
        );
        for (const [tensor, e] of Object.entries(r.errors)) {
          expect(e.nonFinite, `${set}/${name} ${tensor}`).toBe(0);
          expect(e.relL2, `${set}/${name} ${tensor}`).toBeLessThanOrEqual(1e-5);
        }
      },
      HANG,
    );
  },
);
