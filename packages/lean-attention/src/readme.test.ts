import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';

// The README's example is the first ts block after "## Example"; it runs as written (vitest's
// workspace aliases resolve its imports to the sources) and prints what its comments say.
afterEach(() => vi.restoreAllMocks());

it("runs the README's example and prints what its comments say", async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = /## Example\s+```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code, 'a ts block under "## Example"').toBeDefined();
  const dir = mkdtempSync(join(tmpdir(), 'lean-readme-'));
  const logged: unknown[][] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void logged.push(args));
  try {
    writeFileSync(join(dir, 'example.ts'), code!);
    await import(join(dir, 'example.ts'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(logged).toEqual([
    [38, Int32Array.of(0, 1, 2)],
    [
      [38, 8, 64],
      [38, 8, 64],
    ],
    [Int32Array.of(0, 1, 2, 3, -1, -1), 3, Int32Array.of(38, 5)],
    [3, 61],
  ]);
});
