import { createServer, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('../../../', import.meta.url));

/**
 * A page for the browser tests: `entry` bundled for the browser (esbuild, ESM, chrome120; the
 * workspace `packages` aliased to their sources; Node-only modules behind dynamic imports left
 * external, as a page never reaches them) and served from 127.0.0.1 (WebGPU needs a secure
 * context) as /bundle.js under an HTML page that loads it. `route` may answer other URLs first
 * (return true when it did). `close()` stops the server.
 */
export async function serveBundledPage(options: {
  entry: string;
  packages: readonly string[];
  external?: readonly string[];
  route?: (url: string, res: ServerResponse) => boolean;
}): Promise<{ url: string; close: () => void }> {
  const alias: Record<string, string> = {};
  for (const name of options.packages) {
    alias[`@attnkit/${name}`] = join(root, 'packages', name, 'src/index.ts');
  }
  const bundle = await build({
    entryPoints: [options.entry],
    bundle: true,
    write: false,
    platform: 'browser',
    format: 'esm',
    target: 'chrome120',
    alias,
    external: ['webgpu', 'node:*', ...(options.external ?? [])],
    logLevel: 'error',
  });
  const js = bundle.outputFiles[0]!.text;
  const html =
    '<!doctype html><meta charset="utf-8"><script type="module" src="/bundle.js"></script>';
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (url === '/bundle.js') res.writeHead(200, { 'content-type': 'text/javascript' }).end(js);
    else if (!options.route?.(url, res))
      res.writeHead(200, { 'content-type': 'text/html' }).end(html);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}/`,
    close: () => server.close(),
  };
}
