import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it, vi } from 'vitest';

// The README's examples are the ts blocks right after "## Example" (decode attention) and
// "## Example: the paged KV cache"; each runs as written (vitest's workspace aliases resolve its
// imports to the sources) and prints what its comments say.
afterEach(() => vi.restoreAllMocks());

async function runExample(heading: string): Promise<unknown[][]> {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const code = new RegExp(`${heading}\\n+\`\`\`ts\\n([\\s\\S]*?)\`\`\``).exec(readme)?.[1];
  expect(code, `a ts block under "${heading}"`).toBeDefined();
  const dir = mkdtempSync(join(tmpdir(), 'lean-readme-'));
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

it("runs the README's decode attention example and prints what its comments say", async () => {
  const logged = await runExample('## Example');
  expect(logged).toEqual([
    [[2, 32, 1, 128], 'f16', [2, 32, 1]],
    [true],
    [true],
    [
      [3, 4, 64],
      [4, 3],
    ],
    [Number.NEGATIVE_INFINITY],
  ]);
});

it("runs the README's KV cache example and prints what its comments say", async () => {
  const logged = await runExample('## Example: the paged KV cache');
  expect(logged).toEqual([
    [38, Int32Array.of(0, 1, 2)],
    [
      [38, 8, 64],
      [38, 8, 64],
    ],
    [Int32Array.of(0, 1, 2, 3, -1, -1), 3, Int32Array.of(38, 5)],
    [
      [2, 32, 1, 64],
      [2, 32, 1],
    ],
    [3, 61],
  ]);
});
