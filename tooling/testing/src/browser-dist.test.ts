import { existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '@attnkit/vitest-config';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { type BrowserBundle, browserDistBundle, publishedPackages } from './browser-safe.js';
import { CHROMIUM, INSTALL_CHROMIUM, launchChromium } from './chromium.js';

/**
 * What npm publishes runs in a browser (issue 9 item 5): each published package's built
 * `dist/index.js` is bundled as a user's bundler would (esbuild, platform browser, only Node's
 * builtins external), imports no Node builtin when it loads, and evaluates in headless Chromium
 * with the same exports as in Node; a small call per package gives the same answer in the page
 * as in Node (flashAttention on backend 'ts' also matches a plain softmax reference computed in
 * the page). The dists come from `turbo run build` (this task depends on each package's build).
 */
const allowMissing = process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1';

const packages = publishedPackages(repoRoot);
const distOf = (dir: string) => join(dir, 'dist', 'index.js');
const tensorDist = distOf(join(repoRoot, 'packages', 'tensor'));

/**
 * A call per package, as the body of `async (m, t) => ...` (m: the package, t: @attnkit/tensor,
 * one copy shared with the package): the same text runs in Node and in the page.
 */
const SMOKE: Record<string, string> = {
  '@attnkit/tensor': `
    const x = t.Tensor.from([1, 2, 3, 4], [2, 2]);
    return { shape: x.shape, data: Array.from(x.toFloat32Array()) };`,
  '@attnkit/io-complexity': `return m.closedFormIO('fa2', { N: 1024, d: 64, M: 8192 });`,
  '@attnkit/flash-attention': `
    const mk = (s) => t.Tensor.from(Float32Array.from({ length: 32 }, (_, i) => Math.sin(7 * s + i)), [1, 1, 4, 8]);
    const [q, k, v] = [mk(1), mk(2), mk(3)];
    const { o, lse } = await m.flashAttention(q, k, v, { backend: 'ts' });
    // The softmax reference, written out here: o_i = sum_j softmax_j(q_i.k_j / sqrt(d)) v_j.
    const [Q, K, V] = [q, k, v].map((x) => x.toFloat32Array());
    const ref = [], refLse = [];
    for (let i = 0; i < 4; i++) {
      const s = [0, 1, 2, 3].map((j) => {
        let dot = 0;
        for (let c = 0; c < 8; c++) dot += Q[i * 8 + c] * K[j * 8 + c];
        return dot / Math.sqrt(8);
      });
      const max = Math.max(...s);
      const p = s.map((x) => Math.exp(x - max));
      const sum = p.reduce((a, b) => a + b, 0);
      refLse.push(max + Math.log(sum));
      for (let c = 0; c < 8; c++) ref.push(p.reduce((a, pj, j) => a + pj * V[j * 8 + c], 0) / sum);
    }
    let native;
    try { await m.flashAttention(q, k, v, { backend: 'native' }); native = 'ran'; }
    catch (e) { native = e.name + ': ' + e.message; }
    return { o: Array.from(o.toFloat32Array()), lse: Array.from(lse.toFloat32Array()), ref, refLse, native };`,
  '@attnkit/sigmoid-attention': `
    const mk = (s) => t.Tensor.from(Float32Array.from({ length: 32 }, (_, i) => Math.cos(5 * s + i)), [1, 1, 4, 8]);
    const { o } = await m.sigmoidAttention(mk(1), mk(2), mk(3), { backend: 'ts' });
    return { o: Array.from(o.toFloat32Array()) };`,
  '@attnkit/linear-attention': `
    const mk = (s) => t.Tensor.from(Float32Array.from({ length: 40 }, (_, i) => Math.sin(3 * s + i)), [1, 5, 2, 4]);
    const gk = t.Tensor.from(Float32Array.from({ length: 40 }, (_, i) => -0.1 - 0.01 * i), [1, 5, 2, 4]);
    const { o, finalState } = await m.chunkGla(mk(1), mk(2), mk(3), gk, { backend: 'ts', chunkSize: 2, outputFinalState: true });
    return { o: Array.from(o.toFloat32Array()), ht: Array.from(finalState.toFloat32Array()) };`,
  '@attnkit/hyper-attention': `
    const mk = (s, h) => t.Tensor.from(Float32Array.from({ length: h * 48 }, (_, i) => Math.sin(5 * s + i)), [1, h, 6, 8]);
    const { o, lse } = await m.hyperAttention(mk(1, 2), mk(2, 1), mk(3, 1), { backend: 'ts', blockSize: 2, sampleSize: 2, minSeqLen: 2, seed: 3, returnLse: true });
    const { buckets } = new m.AngularLsh({ numProjections: 3, dim: 8, seed: 1 }).sort(mk(4, 1));
    return { o: Array.from(o.toFloat32Array()), lse: Array.from(lse.toFloat32Array()), buckets: Array.from(buckets) };`,
  '@attnkit/nn': `
    const w = new m.Param(t.Tensor.from([0.5, -1, 2, 0.25, 1.5, -0.75], [2, 3]));
    const x = t.Tensor.from([1, 2, 3, -1, 0.5, 2], [2, 3]);
    const loss = m.sum(m.gelu(m.matmul(x, w, { transB: true })));
    loss.backward();
    return { loss: loss.item(), grad: Array.from(w.grad.toFloat32Array()) };`,
  '@attnkit/gpt': `
    const tok = m.CharTokenizer.fromText('to be or not to be');
    const model = new m.Gpt({ nLayer: 1, nHead: 2, nKvHead: 1, nEmbd: 8, blockSize: 16, vocabSize: tok.vocabSize }, { seed: 1 });
    const ids = tok.encode('to be');
    const x = t.Tensor.from(Int32Array.from(ids.slice(0, 4)), [1, 4]);
    const y = t.Tensor.from(Int32Array.from(ids.slice(1, 5)), [1, 4]);
    const { loss } = model.forward(x, y);
    // Greedy: with the paged KV cache and recomputing the prefix, the same tokens.
    const cached = await model.generate(ids, { maxNewTokens: 6, temperature: 0 });
    const plain = await model.generate(ids, { maxNewTokens: 6, temperature: 0, cache: false });
    return { loss: loss.item().toFixed(4), cached, plain, text: tok.decode(cached), params: model.numParameters() };`,
  '@attnkit/fast-attention': `
    const mk = (s) => t.Tensor.from(Float32Array.from({ length: 40 }, (_, i) => Math.sin(3 * s + i)), [1, 1, 5, 8]);
    const { o, lse, plan } = await m.fastAttention(mk(1), mk(2), mk(3), { causal: true, backend: 'ts', device: 'cpu-256k' });
    const p = m.planTwoLevel('webgpu-default', { seqQ: 1024, seqK: 1024, headDim: 64, causal: true });
    const c = m.tileCounts({ seqQ: 37, seqK: 53, window: [5, 3] }, { blockQ: 8, blockK: 16 });
    return { o: Array.from(o.toFloat32Array()), lse: Array.from(lse.toFloat32Array()), outer: plan.outer, tiles: p.webgpu.tiles, io: p.predictedIO, c };`,
  '@attnkit/skeleton': `return { native: m.nativeAvailable() };`,
  '@attnkit/native': `return { engine: m.loadNative() === undefined ? 'none' : 'loaded', why: m.nativeLoadError() };`,
  '@attnkit/webgpu': `return { context: typeof m.getWebGpuContext, adapter: typeof m.findAdapter };`,
};

/** What only a browser answers (Node has the addon, or no navigator.gpu). */
const BROWSER_ONLY: Record<string, (r: Record<string, unknown>) => void> = {
  '@attnkit/flash-attention': (r) => {
    expect(r.native).toMatch(/^BackendUnavailableError: .*runs in Node only/);
  },
  '@attnkit/skeleton': (r) => {
    // Answered synchronously: a page never tries to import @attnkit/native.
    expect(r.native).toBe('the native engine is unavailable: the native engine runs in Node only');
  },
  '@attnkit/native': (r) => {
    expect(r.engine).toBe('none');
    expect(r.why).toContain('Node only');
  },
};

/** Results that differ between Node and a browser by design (see BROWSER_ONLY). */
const NODE_SPECIFIC: Record<string, string[]> = {
  '@attnkit/flash-attention': ['native'],
  '@attnkit/skeleton': ['native'],
  '@attnkit/native': ['engine', 'why'],
};

const smokeIn = (body: string) =>
  // biome-ignore lint/complexity/useArrowFunction: the constructor of async functions
  new (Object.getPrototypeOf(async function () {}).constructor)('m', 't', body) as (
    m: unknown,
    t: unknown,
  ) => Promise<Record<string, unknown>>;

const bundles = new Map<string, BrowserBundle>();
let server: Server | undefined;
let base = '';
let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
let page: Page | undefined;
let launchError: string | undefined;
const pageErrors: string[] = [];

beforeAll(async () => {
  const missing = packages.filter((p) => !existsSync(distOf(p.dir))).map((p) => p.name);
  if (missing.length > 0) return;
  for (const p of packages) {
    const extra: Record<string, string> =
      p.name === '@attnkit/tensor' ? {} : { tensor: tensorDist };
    bundles.set(p.name, await browserDistBundle(distOf(p.dir), extra));
  }
  server = createServer((req, res) => {
    const [, name, file] = /^\/([^/]+)\/([^/]+)$/.exec(req.url ?? '') ?? [];
    const text = name && file ? bundles.get(decodeURIComponent(name))?.files.get(file) : undefined;
    if (text !== undefined) res.writeHead(200, { 'content-type': 'text/javascript' }).end(text);
    else if (req.url === '/') {
      res
        .writeHead(200, { 'content-type': 'text/html' })
        .end('<!doctype html><meta charset="utf-8">');
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  if (!existsSync(CHROMIUM)) {
    launchError = `no Chromium at ${CHROMIUM}: ${INSTALL_CHROMIUM}`;
    return;
  }
  try {
    browser = await launchChromium();
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    await page.goto(`${base}/`);
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

describe('published dists in a browser', () => {
  test('the published packages are found and built', () => {
    expect(packages.map((p) => p.name)).toEqual(expect.arrayContaining(Object.keys(SMOKE)));
    const missing = packages.filter((p) => !existsSync(distOf(p.dir))).map((p) => p.name);
    expect(
      missing,
      'dists missing: build first (npx turbo run build, or npx tsup in each package)',
    ).toEqual([]);
  });

  test.for(packages.map((p) => [p.name, p] as const))(
    '%s: dist/index.js bundles for the browser and imports no Node builtin when it loads',
    ([name]) => {
      const b = bundles.get(name);
      expect(b, `${name} was not bundled (dist missing?)`).toBeDefined();
      expect(b!.report.errors, `${name}'s dist does not bundle for the browser`).toEqual([]);
      const lines = b!.report.violations.map(
        (v) => `${v.path} (${v.kind}) from ${v.importers.join(', ')}`,
      );
      expect(lines, `${name}'s dist imports Node-only modules when it loads`).toEqual([]);
      // Whatever Node module a dist reaches lazily is named with node: (never a bare 'fs').
      for (const l of b!.report.lazy)
        expect(l.path, `${name}: ${l.importers.join(', ')}`).toMatch(/^node:/);
    },
  );

  /**
   * Where `a` and `b` differ: paths whose numbers differ by more than 1e-12 relative (float64
   * math's last bits), or whose anything else differs at all.
   */
  function differences(a: unknown, b: unknown, path = '$'): string[] {
    if (typeof a === 'number' && typeof b === 'number') {
      if (Object.is(a, b) || Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(a), Math.abs(b)))
        return [];
      return [`${path}: ${a} vs ${b}`];
    }
    if (Array.isArray(a) && Array.isArray(b)) {
      if (a.length !== b.length) return [`${path}: length ${a.length} vs ${b.length}`];
      return a.flatMap((x, i) => differences(x, b[i], `${path}[${i}]`));
    }
    if (a && b && typeof a === 'object' && typeof b === 'object') {
      const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
      return keys.flatMap((k) =>
        differences(
          (a as Record<string, unknown>)[k],
          (b as Record<string, unknown>)[k],
          `${path}.${k}`,
        ),
      );
    }
    return Object.is(a, b) ? [] : [`${path}: ${String(a)} vs ${String(b)}`];
  }

  test.skipIf(allowMissing && !existsSync(CHROMIUM)).for(packages.map((p) => [p.name, p] as const))(
    '%s: evaluates in headless Chromium with the exports and results it has in Node',
    async ([name, p]) => {
      if (launchError) throw new Error(`${launchError} (ATTNKIT_ALLOW_NO_WEBGPU=1 skips this)`);
      expect(bundles.get(name), `${name} was not bundled`).toBeDefined();
      const dist = distOf(p.dir);
      const nodeModule = (await import(pathToFileURL(dist).href)) as Record<string, unknown>;
      const nodeTensor = await import(pathToFileURL(tensorDist).href);
      const smoke = SMOKE[name] ?? 'return {};';
      const url = `${base}/${encodeURIComponent(name)}`;
      // A string, not a function: vitest would rewrite a function's import() for Node.
      const inPage = (await page!.evaluate(`(async () => {
        const m = await import(${JSON.stringify(`${url}/index.js`)});
        const t = ${name === '@attnkit/tensor' ? 'm' : `await import(${JSON.stringify(`${url}/tensor.js`)})`};
        const run = new (Object.getPrototypeOf(async () => {}).constructor)('m', 't', ${JSON.stringify(smoke)});
        return { exports: Object.keys(m).sort(), result: await run(m, t) };
      })()`)) as { exports: string[]; result: Record<string, unknown> };
      expect(pageErrors, 'errors in the page').toEqual([]);
      expect(inPage.exports).toEqual(Object.keys(nodeModule).sort());
      const inNode = await smokeIn(smoke)(nodeModule, nodeTensor);
      const result = inPage.result as Record<string, unknown>;
      for (const key of NODE_SPECIFIC[name] ?? []) {
        delete inNode[key];
      }
      BROWSER_ONLY[name]?.(result);
      const comparable = { ...result };
      for (const key of NODE_SPECIFIC[name] ?? []) delete comparable[key];
      // Equal up to the last bits of float64 math: the float64 references call Math.exp / log,
      // whose results V8 does not promise bit for bit across versions (Chromium 156 and Node 20
      // differed by 1 ulp); everything else (shapes, dtypes, f32 results) must match exactly.
      expect(differences(comparable, inNode)).toEqual([]);
      if (name === '@attnkit/flash-attention') {
        const r = result as { o: number[]; lse: number[]; ref: number[]; refLse: number[] };
        for (let i = 0; i < r.ref.length; i++) expect(r.o[i]).toBeCloseTo(r.ref[i]!, 5);
        for (let i = 0; i < r.refLse.length; i++) expect(r.lse[i]).toBeCloseTo(r.refLse[i]!, 5);
        expect(r.o).toHaveLength(32);
      }
    },
  );
});
