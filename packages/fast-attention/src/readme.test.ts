import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, expect, it, vi } from 'vitest';
import { buildWorkerForTests } from '../test/build-worker.js';

// The README's examples (the ts block after each "## ...example" heading) run as written
// (vitest's workspace aliases resolve their imports to the sources) and print what their
// comments say.
afterEach(() => vi.restoreAllMocks());
// The tiling-AllReduce example's device workers run the built worker script.
beforeAll(buildWorkerForTests, 60000);

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const examples = [...readme.matchAll(/## ([^\n]*[Ee]xample)\n+```ts\n([\s\S]*?)```/g)];

it('the README has its examples', () => {
  expect(examples.map((m) => m[1])).toEqual([
    'Example',
    'Long-context example',
    'Tiling-AllReduce example',
  ]);
});

it.each(examples.map((m) => [m[1]!, m[2]!]))(
  'the README "%s" prints what its comments say',
  async (_name, code) => {
    const dir = mkdtempSync(join(tmpdir(), 'fast-readme-'));
    const logged: unknown[][] = [];
    vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => void logged.push(args));
    try {
      writeFileSync(join(dir, 'example.ts'), code!);
      await import(join(dir, 'example.ts'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    vi.restoreAllMocks();
    // Each console.log's expected output is the `// ...` comment on its line (or the next line).
    const lines = code!.split('\n');
    const expected: string[] = [];
    for (let i = 0; i < lines.length; i++) {
      if (!lines[i]!.includes('console.log(')) continue;
      const same = /\);\s*\/\/ (.*)$/.exec(lines[i]!);
      const next = /^\s*\/\/ (.*)$/.exec(lines[i + 1] ?? '');
      expected.push((same ?? next)![1]!);
    }
    const printed = logged.map((args) =>
      args
        .map((a) =>
          typeof a === 'object' ? JSON.stringify(a).replace(/"(\w+)":/g, '$1: ') : String(a),
        )
        .join(' '),
    );
    const norm = (s: string) => s.replace(/\s+/g, '');
    expect(printed.map(norm)).toEqual(expected.map(norm));
  },
);
