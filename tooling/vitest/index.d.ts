import type { UserConfig } from 'vitest/config';

export function attnkitVitest(test?: UserConfig['test']): UserConfig;
export const repoRoot: string;
export const projectGoldensDir: string;
export function sharedGoldensDir(): string;
export interface GoldenSet {
  name: 'project' | 'shared';
  dir: string;
}
export function goldenSets(): GoldenSet[];
export function goldenNames(prefix?: string, dir?: string): string[];
export function goldenFiles(prefix?: string): string[];
export function goldenLabel(path: string): string;
