import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * The shared golden files: $ATTNKIT_GOLDENS, else ../shared/goldens beside the repository
 * (where this workspace keeps them), found by walking up from this file.
 */
export function goldensDir(): string | undefined {
  if (process.env.ATTNKIT_GOLDENS) return process.env.ATTNKIT_GOLDENS;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    const candidate = resolve(dir, '..', 'shared', 'goldens');
    if (existsSync(candidate)) return candidate;
    dir = resolve(dir, '..');
  }
  return undefined;
}

export function goldenFiles(): string[] {
  const dir = goldensDir();
  if (!dir) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.safetensors'))
    .sort()
    .map((f) => join(dir, f));
}
