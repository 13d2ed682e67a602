#!/usr/bin/env node
// `pnpm test` runs this first (the root `pretest` script): the WebGPU tests run on Dawn over
// Mesa's llvmpipe (EGL + GLES) and in headless Chromium, and without those system packages they
// fail late with errors that do not name the fix. This stops at once, printing the one command
// that installs what is missing (the same packages .ci/run installs), unless
// ATTNKIT_ALLOW_NO_WEBGPU=1 declares a machine without WebGPU (those tests then skip visibly).
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Debian packages the WebGPU tests need, in .ci/run's order. */
export const APT_PACKAGES = ['libegl1', 'libegl-mesa0', 'libgles2', 'libgl1-mesa-dri', 'chromium'];

/** The browser test's Chromium (packages/flash-attention/src/webgpu/browser.test.ts). */
export const DEFAULT_CHROMIUM = '/usr/bin/chromium';

/**
 * The verdict from facts about the machine (pure, so it is tested without the machine).
 * @param {{
 *   platform: string,
 *   env: Record<string, string | undefined>,
 *   root: boolean,
 *   chromium: boolean,
 *   libs: { egl: boolean, eglMesa: boolean, gles: boolean, dri: boolean },
 * }} facts
 * @returns {{ ok: boolean, missing: string[], command?: string, lines: string[] }}
 */
export function preflight(facts) {
  const { platform, env, root, chromium, libs } = facts;
  const allow = env.ATTNKIT_ALLOW_NO_WEBGPU === '1';
  const lines = [];
  const missing = [];
  if (platform === 'linux') {
    if (!libs.egl) missing.push('libegl1');
    if (!libs.eglMesa) missing.push('libegl-mesa0');
    if (!libs.gles) missing.push('libgles2');
    if (!libs.dri) missing.push('libgl1-mesa-dri');
  }
  // A Chromium of one's own (ATTNKIT_CHROMIUM) is not fixed by a package: name the variable.
  const customChromium = env.ATTNKIT_CHROMIUM !== undefined;
  if (!chromium && !customChromium && platform === 'linux') missing.push('chromium');
  if (!chromium && (customChromium || platform !== 'linux')) {
    const where = env.ATTNKIT_CHROMIUM ?? DEFAULT_CHROMIUM;
    lines.push(
      `attnkit test preflight: no Chromium at ${where} (the browser test's); set ATTNKIT_CHROMIUM to a Chromium binary.`,
    );
  }
  const egl = env.EGL_PLATFORM;
  if (egl !== undefined && egl !== 'surfaceless') {
    lines.push(
      `attnkit test preflight: note: EGL_PLATFORM=${egl}; the WebGPU tests set surfaceless for themselves.`,
    );
  }
  let command;
  if (missing.length > 0) {
    const sudo = root ? '' : 'sudo ';
    command = `${sudo}apt-get update && ${sudo}apt-get install -y ${missing.join(' ')}`;
    lines.push(
      `attnkit test preflight: the WebGPU tests need Mesa's EGL/GLES and Chromium; missing: ${missing.join(', ')}. Install them with:`,
      '',
      `  ${command}`,
      '',
    );
  }
  const problem = missing.length > 0 || (!chromium && (customChromium || platform !== 'linux'));
  if (problem && allow) {
    lines.push(
      'attnkit test preflight: ATTNKIT_ALLOW_NO_WEBGPU=1: going on; the WebGPU tests skip visibly.',
    );
  } else if (problem) {
    lines.push(
      '(or set ATTNKIT_ALLOW_NO_WEBGPU=1 to run the tests without WebGPU; those tests then skip visibly)',
    );
  }
  return { ok: !problem || allow, missing, command, lines };
}

/** Shared-library folders to look in when ldconfig cannot be run. */
function libDirs() {
  const triplet = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }[process.arch];
  const dirs = ['/usr/lib64', '/usr/lib', '/lib64', '/lib'];
  if (triplet) dirs.unshift(`/usr/lib/${triplet}`, `/lib/${triplet}`);
  return dirs;
}

function ldconfigCache() {
  for (const bin of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    try {
      return execFileSync(bin, ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      // not on PATH, or not runnable: try the next, then plain file checks
    }
  }
  return undefined;
}

/** Facts about this machine for preflight(). */
export function gatherFacts(env = process.env) {
  const cache = process.platform === 'linux' ? ldconfigCache() : undefined;
  const dirs = libDirs();
  const lib = (name) =>
    cache !== undefined
      ? cache.includes(`${name} `) || dirs.some((d) => existsSync(join(d, name)))
      : dirs.some((d) => existsSync(join(d, name)));
  // Mesa's software rasterizer (llvmpipe): swrast_dri.so, or libgallium in Mesa >= 24.2.
  const dri =
    dirs.some((d) => existsSync(join(d, 'dri', 'swrast_dri.so'))) ||
    (cache?.includes('libgallium') ?? false) ||
    dirs.some((d) => {
      try {
        return readdirSync(d).some((f) => f.startsWith('libgallium'));
      } catch {
        return false;
      }
    });
  return {
    platform: process.platform,
    env,
    root: typeof process.getuid === 'function' && process.getuid() === 0,
    chromium: existsSync(env.ATTNKIT_CHROMIUM ?? DEFAULT_CHROMIUM),
    libs: {
      egl: lib('libEGL.so.1'),
      eglMesa: lib('libEGL_mesa.so.0'),
      gles: lib('libGLESv2.so.2'),
      dri,
    },
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const verdict = preflight(gatherFacts());
  for (const line of verdict.lines) console.error(line);
  process.exit(verdict.ok ? 0 : 1);
}
