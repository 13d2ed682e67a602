import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHROMIUM, INSTALL_CHROMIUM, launchChromium, SWIFTSHADER_WEBGPU } from '@attnkit/testing';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';

/**
 * The playground end to end (issue 18): the built app (dist/, from `vite build`; turbo runs the
 * app's build before this test) served on 127.0.0.1 and opened in headless Chromium with
 * SwiftShader's WebGPU. Two families run on webgpu and their reported errors against float64
 * must be under KERNELS.md's thresholds; every panel is opened and photographed (into
 * screenshots/, which the README shows, with ATTNKIT_UPDATE_SCREENSHOTS=1; else a temp dir); a device loss is shown in the page and the next run
 * recovers; a tab without navigator.gpu says so and runs on ts.
 *
 * No Chromium: the tests fail with the install command, unless ATTNKIT_ALLOW_NO_WEBGPU=1 (then
 * they are skipped), as in tooling/testing/src/browser-dist.test.ts.
 */
const allowMissing = process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1';
const app = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(app, 'dist');
// The committed screenshots (README) are rewritten only on request
// (ATTNKIT_UPDATE_SCREENSHOTS=1): a plain test run must not dirty the checkout.
const shots =
  process.env.ATTNKIT_UPDATE_SCREENSHOTS === '1'
    ? join(app, 'screenshots')
    : mkdtempSync(join(tmpdir(), 'attnkit-playground-shots-'));

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
};

let server: Server | undefined;
let base = '';
let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
let page: Page | undefined;
let launchError: string | undefined;
const pageErrors: string[] = [];

beforeAll(async () => {
  if (!existsSync(join(dist, 'index.html'))) {
    // Built here when the test runs alone (turbo's test task builds first).
    const { build } = await import('vite');
    await build({ root: app, logLevel: 'warn' });
  }
  // A plain static server, as any host of dist/ would be.
  server = createServer((req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(dist, path === '/' ? 'index.html' : path));
    if (!file.startsWith(dist + sep) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res
      .writeHead(200, { 'content-type': MIME[extname(file)] ?? 'application/octet-stream' })
      .end(readFileSync(file));
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  if (!existsSync(CHROMIUM)) {
    launchError = `no Chromium at ${CHROMIUM}: ${INSTALL_CHROMIUM}`;
    return;
  }
  try {
    browser = await launchChromium(SWIFTSHADER_WEBGPU);
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    await page.setViewportSize({ width: 1024, height: 900 });
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    // SwiftShader compiles on the CPU that every other package's tests share in CI.
    await page.goto(`${base}/?pipelineTimeoutMs=90000`);
  } catch (e) {
    launchError = `Chromium (${CHROMIUM}) did not start: ${(e as Error).message}; ${INSTALL_CHROMIUM}`;
  }
}, 120_000);

// Closing Chromium shares CI's two cores with the other packages' tests (the default hook
// limit is 10 s).
afterAll(async () => {
  await browser?.close();
  server?.close();
}, 120_000);

/** The page, or the reason there is none (fails the test unless ATTNKIT_ALLOW_NO_WEBGPU=1). */
function thePage(): Page {
  if (launchError || !page) {
    throw new Error(`${launchError ?? 'no page'} (ATTNKIT_ALLOW_NO_WEBGPU=1 skips this)`);
  }
  return page;
}

async function shoot(p: Page, name: string): Promise<void> {
  mkdirSync(shots, { recursive: true });
  await p.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function openPanel(p: Page, id: string): Promise<void> {
  await p.click(`#tab-${id}`);
  await p.waitForSelector(`#panel-${id}`, { state: 'visible' });
}

/** Runs one family on the run panel and returns what the page reports. */
async function run(
  p: Page,
  family: string,
  backend: string,
  shape: { B: number; H: number; N: number; D: number },
  causal = true,
) {
  await openPanel(p, 'run');
  await p.selectOption('#run-family', family);
  for (const [k, v] of Object.entries(shape)) await p.fill(`#run-${k}`, String(v));
  await p.setChecked('#run-causal', causal);
  await p.selectOption('#run-backend', backend);
  // The previous result goes first, so the wait below sees this run's.
  await p.evaluate('document.getElementById("run-result")?.remove()');
  await p.click('#run-go');
  const r = await p.waitForSelector('#run-result', { timeout: 100_000 });
  return {
    status: await r.getAttribute('data-status'),
    family: await r.getAttribute('data-family'),
    backend: await r.getAttribute('data-backend'),
    relL2: Number(await r.getAttribute('data-rel-l2')),
    maxAbs: Number(await r.getAttribute('data-max-abs')),
    text: (await r.textContent()) ?? '',
  };
}

const skip = allowMissing && !existsSync(CHROMIUM);

describe.skipIf(skip)('playground in headless Chromium (SwiftShader WebGPU)', () => {
  test('the device panel shows the WebGPU adapter, features and limits', async () => {
    const p = thePage();
    await openPanel(p, 'device');
    const status = await p.waitForSelector('#device-status');
    expect(await status.getAttribute('data-webgpu'), (await status.textContent()) ?? '').toBe(
      'yes',
    );
    expect(await status.textContent()).toMatch(/swiftshader/i);
    const text = (await p.textContent('#panel-device')) ?? '';
    expect(text).toContain('subgroups yes');
    expect(text).toContain('subgroup matrices');
    expect(text).toContain('maxComputeWorkgroupStorageSize');
    await shoot(p, 'device');
    expect(pageErrors).toEqual([]);
  });

  test.for([
    // Sigmoid without the causal mask: the bench below (non-causal, D 16) reuses its pipelines.
    ['flash', { B: 1, H: 2, N: 77, D: 32 }, true],
    ['sigmoid', { B: 2, H: 2, N: 64, D: 16 }, false],
  ] as const)(
    '%s on webgpu: the error against float64 is under the threshold',
    async ([family, shape, causal]) => {
      const p = thePage();
      const r = await run(p, family, 'webgpu', shape, causal);
      expect(r.status, r.text).toBe('pass');
      expect(r.family).toBe(family);
      expect(r.backend).toBe('webgpu');
      // KERNELS.md f32: relL2 <= 1e-5 (toleranceFor); checked here too, not only the page's verdict.
      expect(r.relL2).toBeLessThanOrEqual(1e-5);
      expect(r.maxAbs).toBeLessThan(1e-4);
      await shoot(p, `run-${family}`);
      expect(pageErrors).toEqual([]);
    },
  );

  test('the attention map draws P with the causal / window / block-sparse mask', async () => {
    const p = thePage();
    await openPanel(p, 'map');
    await p.fill('#map-N', '128');
    await p.fill('#map-window', '40');
    await p.setChecked('#map-sparse', true);
    await p.click('#map-go');
    const caption = (await p.textContent('#map-caption')) ?? '';
    const [, masked] = /(\d+) of 16384 pairs masked/.exec(caption) ?? [];
    // Causal + window 40 alone keep 128 * 41 - 40 * 41 / 2 = 4428 pairs; blocks drop more.
    expect(Number(masked)).toBeGreaterThan(16384 - 4428);
    expect(await p.$eval('#map-canvas', (c) => (c as HTMLCanvasElement).width)).toBe(128);
    await shoot(p, 'map');
  });

  // On ts: four more webgpu kernels would compile four pipelines on SwiftShader (~30 s); the
  // table and the rule are the same code on either backend.
  test('sage: INT8 / INT4 with smoothing on and off', async () => {
    const p = thePage();
    await openPanel(p, 'sage');
    await p.fill('#sage-N', '64');
    await p.fill('#sage-D', '32');
    await p.selectOption('#sage-backend', 'ts');
    await p.click('#sage-go');
    await p.waitForSelector('#sage-progress-text:text-matches("^(done|failed)")', {
      timeout: 100_000,
    });
    expect(await p.$('#sage-error'), (await p.textContent('#sage-out')) ?? '').toBeNull();
    const rows = await p.$$eval('#sage-table tbody tr', (trs) =>
      trs.map((tr) => ({
        bits: tr.getAttribute('data-bits'),
        smooth: tr.getAttribute('data-smooth'),
        cosine: Number(tr.getAttribute('data-cosine')),
        pass: tr.classList.contains('pass'),
      })),
    );
    expect(rows).toHaveLength(4);
    const int8 = rows.find((r) => r.bits === '8' && r.smooth === 'on')!;
    expect(int8.pass).toBe(true);
    expect(int8.cosine).toBeGreaterThanOrEqual(0.999);
    await shoot(p, 'sage');
  });

  test('the I/O model plot', async () => {
    const p = thePage();
    await openPanel(p, 'io');
    await p.waitForSelector('#io-plot svg');
    await shoot(p, 'io');
  });

  test('bench: GFLOP/s per family and backend as a bar chart, and a cancel', async () => {
    const p = thePage();
    await openPanel(p, 'bench');
    for (const f of ['flash', 'sigmoid', 'hstu', 'sage', 'gla', 'hyper']) {
      await p.setChecked(`#bench-${f}`, f === 'flash' || f === 'sigmoid');
    }
    await p.fill('#bench-N', '128');
    await p.fill('#bench-H', '2');
    await p.fill('#bench-D', '16');
    await p.fill('#bench-reps', '1');
    await p.click('#bench-go');
    await p.waitForSelector('#bench-table', { timeout: 100_000 });
    const rows = await p.$$eval('#bench-table tr[data-family]', (trs) =>
      trs.map((tr) => [
        tr.getAttribute('data-family'),
        tr.getAttribute('data-backend'),
        tr.textContent,
      ]),
    );
    expect(rows.map((r) => `${r[0]}/${r[1]}`)).toEqual([
      'flash/webgpu',
      'flash/ts',
      'sigmoid/webgpu',
      'sigmoid/ts',
    ]);
    expect(
      rows.every((r) => !/Error/.test(r[2] ?? '')),
      JSON.stringify(rows),
    ).toBe(true);
    expect(await p.$$('#bench-chart svg rect')).not.toHaveLength(0);
    await shoot(p, 'bench');
    // Cancel: a long bench stops at the next step and says so.
    await p.fill('#bench-N', '512');
    await p.fill('#bench-reps', '5');
    await p.click('#bench-go');
    await p.click('#bench-cancel');
    await p.waitForSelector('#bench-progress-text:text-matches("^cancelled")', {
      timeout: 100_000,
    });
  });

  test('a long ts run is cancelled (its worker stopped) and says so', async () => {
    const p = thePage();
    await openPanel(p, 'run');
    await p.selectOption('#run-family', 'flash');
    for (const [k, v] of Object.entries({ B: 4, H: 8, N: 8192, D: 128 }))
      await p.fill(`#run-${k}`, String(v));
    await p.selectOption('#run-backend', 'ts');
    await p.evaluate('document.getElementById("run-result")?.remove()');
    await p.click('#run-go');
    await p.waitForSelector('#run-progress-text:text-matches("ts kernel")');
    const t0 = Date.now();
    await p.click('#run-cancel');
    // Uncancelled, this ~1 TFLOP run takes many minutes on ts; 60 s leaves room for CI's load.
    const r = await p.waitForSelector('#run-result', { timeout: 60_000 });
    expect(await r.getAttribute('data-status')).toBe('error');
    expect(await r.textContent()).toMatch(/^CancelledError: flash on ts: cancelled/);
    expect(Date.now() - t0).toBeLessThan(60_000);
  });

  test('a device loss is shown in the page, and the next run gets a new device', async () => {
    const p = thePage();
    await openPanel(p, 'device');
    await p.click('#device-lose');
    const banner = await p.waitForSelector('#gpu-banner[data-state="lost"]');
    expect(await banner.textContent()).toMatch(/device lost \(destroyed\)/);
    expect(await p.textContent('#errors')).toMatch(/device lost/);
    await shoot(p, 'device-lost');
    const r = await run(p, 'flash', 'webgpu', { B: 1, H: 1, N: 33, D: 16 }, false);
    expect(r.status, r.text).toBe('pass');
  });

  test('a tab without WebGPU says so and runs on ts', async () => {
    thePage();
    const p2 = await browser!.context.newPage();
    const errors: string[] = [];
    p2.on('pageerror', (e) => errors.push(String(e)));
    await p2.addInitScript(() => {
      Object.defineProperty(Navigator.prototype, 'gpu', { get: () => undefined });
    });
    await p2.goto(`${base}/#device`);
    const status = await p2.waitForSelector('#device-status');
    expect(await status.textContent()).toMatch(/^no WebGPU in this tab: running on ts/);
    const r = await run(p2, 'hstu', 'ts', { B: 2, H: 1, N: 40, D: 16 });
    expect(r.status, r.text).toBe('pass');
    expect(r.backend).toBe('ts');
    expect(errors).toEqual([]);
    await p2.close();
  });
});
