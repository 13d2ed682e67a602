import type { UserConfig } from 'vitest/config';

export function attnkitVitest(test?: UserConfig['test']): UserConfig;
export const repoRoot: string;
export function goldensDir(): string;
export function goldenNames(prefix?: string): string[];
export function goldenFiles(prefix?: string): string[];
