import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';

// The README's example (the ts block after "## Example") runs as written and prints what its
// comments say.
afterEach(() => vi.restoreAllMocks());

it("runs the README's example and prints what its comments say", async () => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = /## Example\n+```ts\n([\s\S]*?)```/.exec(readme)?.[1];
  expect(code).toBeDefined();
  const dir = mkdtempSync(join(tmpdir(), 'gpt-readme-'));
  const logged: unknown[][] = [];
  vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void logged.push(args));
  try {
    writeFileSync(join(dir, 'example.ts'), code!);
    await import(join(dir, 'example.ts'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  expect(logged).toEqual([[true], [40, true], [true, 49]]);
});
