import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BrowserContext, chromium } from 'playwright-core';

/** The Debian Chromium the browser tests drive (ATTNKIT_CHROMIUM overrides it). */
export const CHROMIUM = process.env.ATTNKIT_CHROMIUM ?? '/usr/bin/chromium';

/** What to do when it is missing (never `playwright install`: it downloads a browser). */
export const INSTALL_CHROMIUM =
  'apt-get install -y chromium (Debian; or set ATTNKIT_CHROMIUM to a Chromium binary; never `playwright install`)';

/** Flags that keep a headless test browser quiet: no sandbox (CI runs as root), no networking. */
const QUIET = [
  '--no-sandbox',
  '--disable-gpu-sandbox',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** WebGPU on SwiftShader's Vulkan (what the browser WebGPU tests run on, on a CPU machine). */
export const SWIFTSHADER_WEBGPU = [
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan',
  '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader',
  '--use-angle=swiftshader',
  '--enable-unsafe-swiftshader',
];

/**
 * Headless Chromium with a fresh profile; `close()` ends it and removes the profile.
 * `extraArgs`: e.g. SWIFTSHADER_WEBGPU.
 */
export async function launchChromium(
  extraArgs: readonly string[] = [],
): Promise<{ context: BrowserContext; close: () => Promise<void> }> {
  const profile = mkdtempSync(join(tmpdir(), 'attnkit-chromium-'));
  try {
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: [...QUIET, ...extraArgs],
    });
    return {
      context,
      close: async () => {
        await context.close();
        rmSync(profile, { recursive: true, force: true });
      },
    };
  } catch (e) {
    rmSync(profile, { recursive: true, force: true });
    throw e;
  }
}
