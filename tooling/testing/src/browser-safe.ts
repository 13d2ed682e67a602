import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { build, type Metafile } from 'esbuild';

/**
 * DESIGN.md "Data flow": package entry points are browser-safe, the native addon is loaded
 * lazily and only in Node. This bundles a package's src/index.ts for the browser (esbuild,
 * platform 'browser', workspace packages from their sources, as the WGSL browser test does)
 * and lists every Node-only module the bundle would import when it loads: a Node builtin, a
 * `.node` addon or Dawn (`webgpu`) reached through static imports is a violation; behind a
 * dynamic import() it is not (a page never runs it).
 */

export interface PublishedPackage {
  /** `@attnkit/<dir>`. */
  name: string;
  dir: string;
  entry: string;
}

/** Packages under packages/ that are published (not private) and have a src/index.ts. */
export function publishedPackages(root: string): PublishedPackage[] {
  const out: PublishedPackage[] = [];
  for (const dir of readdirSync(join(root, 'packages')).sort()) {
    const manifest = join(root, 'packages', dir, 'package.json');
    const entry = join(root, 'packages', dir, 'src', 'index.ts');
    if (!existsSync(manifest) || !existsSync(entry)) continue;
    const pkg = JSON.parse(readFileSync(manifest, 'utf8')) as { name: string; private?: boolean };
    if (pkg.private) continue;
    out.push({ name: pkg.name, dir: join(root, 'packages', dir), entry });
  }
  return out;
}

/** Node-only modules: builtins (with or without `node:`) and Dawn (`webgpu`); `.node` files too. */
export const NODE_ONLY_MODULES: readonly string[] = [
  'webgpu',
  ...builtinModules,
  ...builtinModules.map((m) => `node:${m}`),
];

function nodeOnly(path: string): boolean {
  return (
    path.startsWith('node:') ||
    path.endsWith('.node') ||
    NODE_ONLY_MODULES.includes(path) ||
    NODE_ONLY_MODULES.some((m) => path.startsWith(`${m}/`))
  );
}

export interface BrowserImport {
  path: string;
  kind: Metafile['outputs'][string]['imports'][number]['kind'];
  /** Source files (relative to the repository root) that import it. */
  importers: string[];
}

export interface BrowserBundleReport {
  /** Node-only modules the bundle imports at load time (each a violation). */
  violations: BrowserImport[];
  /** Node-only modules behind dynamic import() (allowed). */
  lazy: BrowserImport[];
  /** esbuild's errors (a module that cannot be bundled for the browser at all). */
  errors: string[];
}

/**
 * Bundles `entry` for the browser (every `@attnkit/*` package aliased to its source, Node-only
 * modules external) with code splitting, so what a dynamic import() reaches lands in chunks of
 * its own; then walks the static imports from the entry chunk through esbuild's metafile. A
 * Node-only module imported anywhere on that walk loads with the entry: a violation.
 */
export async function browserBundleReport(
  root: string,
  entry: string,
): Promise<BrowserBundleReport> {
  const alias: Record<string, string> = {};
  for (const p of publishedPackages(root)) alias[p.name] = p.entry;
  return (
    await bundleForBrowser(
      root,
      { index: entry },
      { alias, external: [...NODE_ONLY_MODULES, '*.node'] },
    )
  ).report;
}

/** Node's builtins, bare and `node:`: the only modules a browser bundle of a dist leaves out. */
export const NODE_BUILTINS: readonly string[] = [
  ...builtinModules,
  ...builtinModules.map((m) => `node:${m}`),
];

export interface BrowserBundle {
  report: BrowserBundleReport;
  /** Output files by their path relative to the bundle's root ('index.js', 'chunk-....js'). */
  files: Map<string, string>;
}

/**
 * A browser bundle of what is published: the package's built `dist/index.js` as an npm user's
 * bundler would see it (other `@attnkit/*` packages resolved through node_modules to their
 * dists, no aliases), only Node's builtins external; a static import of Dawn or a `.node` addon
 * fails to bundle (an error). `extra` entries (e.g. @attnkit/tensor's dist, to build inputs in
 * the page) share chunks with the package's, so both see one copy of each module; the
 * violations are walked from the package's entry (`index.js`).
 */
export async function browserDistBundle(
  dist: string,
  extra: Record<string, string> = {},
): Promise<BrowserBundle> {
  return bundleForBrowser(
    dirname(dist),
    { index: dist, ...extra },
    { external: [...NODE_BUILTINS] },
  );
}

async function bundleForBrowser(
  root: string,
  entryPoints: Record<string, string>,
  options: { alias?: Record<string, string>; external: string[] },
): Promise<BrowserBundle> {
  let metafile: Metafile;
  const outdir = join(root, '.browser-bundle');
  const files = new Map<string, string>();
  try {
    const result = await build({
      entryPoints,
      bundle: true,
      write: false,
      splitting: true,
      outdir,
      entryNames: '[name]',
      chunkNames: 'chunk-[hash]',
      platform: 'browser',
      format: 'esm',
      target: 'chrome120',
      ...(options.alias ? { alias: options.alias } : {}),
      external: options.external,
      metafile: true,
      logLevel: 'silent',
    });
    metafile = result.metafile;
    for (const f of result.outputFiles) files.set(relative(outdir, f.path), f.text);
  } catch (e) {
    const errors = (e as { errors?: { text: string }[] }).errors;
    return {
      report: { violations: [], lazy: [], errors: errors?.map((x) => x.text) ?? [String(e)] },
      files,
    };
  }
  const outputs = metafile.outputs;
  const entryOut = Object.keys(outputs).find(
    (o) => outputs[o]!.entryPoint !== undefined && o.endsWith('/index.js'),
  )!;
  const violations: BrowserImport[] = [];
  const lazy: BrowserImport[] = [];
  const seen = new Set<string>();
  const visited = new Set<string>();
  const walk = (out: string, loaded: boolean) => {
    const key = `${out} ${loaded}`;
    if (visited.has(key)) return;
    visited.add(key);
    for (const i of outputs[out]!.imports) {
      const atLoad = loaded && i.kind !== 'dynamic-import';
      if (!i.external) {
        // Another chunk: loaded with this one, or only when a dynamic import() runs.
        if (outputs[i.path]) walk(i.path, atLoad);
        continue;
      }
      if (!nodeOnly(i.path)) continue;
      const tag = `${atLoad} ${i.path}`;
      if (seen.has(tag)) continue;
      seen.add(tag);
      const importers = Object.entries(metafile.inputs)
        .filter(([, input]) => input.imports.some((x) => x.path === i.path))
        .map(([file]) => relative(root, resolve(file)));
      (atLoad ? violations : lazy).push({ path: i.path, kind: i.kind, importers });
    }
  };
  walk(entryOut, true);
  return { report: { violations, lazy, errors: [] }, files };
}
