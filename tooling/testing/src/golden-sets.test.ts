import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  goldenFiles,
  goldenLabel,
  goldenNames,
  goldenSets,
  projectGoldensDir,
  repoRoot,
  sharedGoldensDir,
} from '@attnkit/vitest-config';
import { afterEach, describe, expect, test } from 'vitest';

// Golden tests need nothing beside the clone: the project's goldens/ always, the shared set too
// when it is present (issue 9 item 8).
describe('golden sets', () => {
  const saved = process.env.ATTNKIT_GOLDENS;
  afterEach(() => {
    if (saved === undefined) delete process.env.ATTNKIT_GOLDENS;
    else process.env.ATTNKIT_GOLDENS = saved;
  });

  test("the project's goldens come first and always", () => {
    expect(projectGoldensDir).toBe(join(repoRoot, 'goldens'));
    const sets = goldenSets();
    expect(sets[0]).toEqual({ name: 'project', dir: projectGoldensDir });
    expect(goldenNames('', projectGoldensDir).length).toBeGreaterThan(0);
    expect(sets.length).toBe(existsSync(sharedGoldensDir()) ? 2 : 1);
  });

  test('every file is labelled with its set', () => {
    const files = goldenFiles('softmax_gqa');
    expect(files.map(goldenLabel)[0]).toBe('project/softmax_gqa');
    if (files.length > 1) expect(goldenLabel(files[1]!)).toBe('shared/softmax_gqa');
  });

  test('ATTNKIT_GOLDENS names the shared set; a missing one is an error, not a skip', () => {
    process.env.ATTNKIT_GOLDENS = projectGoldensDir;
    expect(goldenSets().map((s) => s.name)).toEqual(['project', 'shared']);
    process.env.ATTNKIT_GOLDENS = join(repoRoot, 'no-such-goldens');
    expect(() => goldenSets()).toThrow(/ATTNKIT_GOLDENS=.*no-such-goldens does not exist/);
  });
});
