import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';

// The README's example (the ts block after "## Example") runs as written (vitest's workspace
// aliases resolve its imports to the sources) and prints what its comments say.
afterEach(() => vi.restoreAllMocks());

it("runs the README's example and prints what its comments say", async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = /## Example\n+```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code, 'a ts block under "## Example"').toBeDefined();
  const dir = mkdtempSync(join(tmpdir(), 'gla-readme-'));
  const logged: unknown[][] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void logged.push(args));
  try {
    writeFileSync(join(dir, 'example.ts'), code!);
    await import(join(dir, 'example.ts'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(logged).toEqual([
    [
      [2, 300, 4, 64],
      [2, 4, 32, 64],
    ],
    [true],
    [
      [2, 300, 4, 32],
      [2, 300, 4, 32],
      [2, 4, 32, 64],
    ],
    [[3, 4, 32, 64]],
  ]);
  // The comments say the same.
  for (const line of [
    '// [ 2, 300, 4, 64 ] [ 2, 4, 32, 64 ]',
    '// true',
    '// [ 2, 300, 4, 32 ] [ 2, 300, 4, 32 ] [ 2, 4, 32, 64 ]',
    '// [ 3, 4, 32, 64 ]',
  ])
    expect(code).toContain(line);
});
