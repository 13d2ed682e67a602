import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createWebGpuContext } from '@attnkit/webgpu';
import { afterEach, expect, it, vi } from 'vitest';

// The README's example (the ts block after "## Example") runs as written (vitest's workspace
// aliases resolve its imports to the sources) and prints what its comments say.
afterEach(() => vi.restoreAllMocks());

/** Runs the ts block after `heading` and returns what it logged. */
async function runBlock(heading: string): Promise<unknown[][]> {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = new RegExp(`${heading}\\n+\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme)?.[1];
  expect(code).toBeDefined();
  const dir = mkdtempSync(join(tmpdir(), 'hyper-readme-'));
  const logged: unknown[][] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void logged.push(args));
  try {
    writeFileSync(join(dir, 'example.ts'), code!);
    await import(join(dir, 'example.ts'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return logged;
}

// The WebGPU block needs an adapter (llvmpipe in CI); ATTNKIT_ALLOW_NO_WEBGPU=1 declares a
// machine without one, as the other webgpu tests.
const hasWebGpu = await createWebGpuContext().then(
  (ctx) => {
    ctx.destroy();
    return true;
  },
  (e) => {
    if (process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1') return false;
    throw e;
  },
);

it.skipIf(!hasWebGpu)(
  "runs the README's WebGPU example and prints what its comments say",
  async () => {
    expect(await runBlock('### WebGPU')).toEqual([
      ['webgpu', true],
      [
        [1, 4, 256, 64],
        [1, 2, 256, 64],
      ],
      ['i32', [1, 4, 256]],
    ]);
  },
);

it("runs the README's example and prints what its comments say", async () => {
  const logged = await runBlock('## Example');
  expect(logged).toEqual([
    [true],
    [
      [1, 4, 1024, 64],
      [1, 4, 1024],
    ],
    [4096, 4096],
  ]);
});
