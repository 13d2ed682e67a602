// Pure helpers of the install script (build-addon.mjs), kept apart so that its decisions and
// messages can be unit-tested without running node-gyp. No side effects on import.

/** The addon's file name, in build/Release/ (a local build) and prebuilds/<platform>-<arch>/. */
export const ADDON_FILE = 'attnkit_native.node';
/** Written by every run of the install script (the loader reads it: absent = never ran). */
export const STATUS_FILE = 'build-addon-status.json';
/** node-gyp's output of the last build the install script ran, in the package directory. */
export const LOG_FILE = 'build-addon.log';
/** Platforms the release script ships a prebuilt addon for. */
export const PREBUILT_PLATFORMS = ['linux-x64'];

/** The prebuilt addon's path relative to the package root, as posix segments. */
export function prebuiltSegments(platform, arch) {
  return ['prebuilds', `${platform}-${arch}`, ADDON_FILE];
}

/**
 * Whether the user asked to compile even where a prebuilt exists: ATTNKIT_NATIVE_BUILD_FROM_SOURCE=1,
 * or npm's --build-from-source (npm_config_build_from_source = "true", or a comma list naming
 * this package, as node-pre-gyp reads it).
 */
export function wantsSource(env) {
  if (env.ATTNKIT_NATIVE_BUILD_FROM_SOURCE === '1') return true;
  const flag = env.npm_config_build_from_source;
  if (flag === undefined || flag === '' || flag === 'false' || flag === '0') return false;
  if (flag === 'true' || flag === '1') return true;
  return flag.split(',').some((name) => name.trim() === '@attnkit/native');
}

/**
 * What the install script does. `prebuilt`: { present, loadError } for this platform-arch (the
 * script loads a present prebuilt in a child Node first: a glibc too old or a musl system makes
 * it unusable, and then it compiles). `upToDate`: build/Release holds an addon built by this
 * Node ABI after the last source change. `strict` (build:addon) always compiles.
 * Returns { action: 'skip' | 'up-to-date' | 'prebuilt' | 'build', reason }.
 */
export function decideInstall({ env, strict = false, platform, arch, prebuilt, upToDate }) {
  if (env.ATTNKIT_SKIP_NATIVE_BUILD === '1' && !strict)
    return { action: 'skip', reason: 'ATTNKIT_SKIP_NATIVE_BUILD=1' };
  if (strict) return { action: 'build', reason: 'build:addon (--strict) always compiles' };
  if (upToDate) return { action: 'up-to-date', reason: 'build/Release is up to date' };
  const target = `${platform}-${arch}`;
  if (wantsSource(env)) {
    return {
      action: 'build',
      reason:
        env.ATTNKIT_NATIVE_BUILD_FROM_SOURCE === '1'
          ? 'ATTNKIT_NATIVE_BUILD_FROM_SOURCE=1'
          : 'npm --build-from-source',
    };
  }
  if (prebuilt?.present && !prebuilt.loadError)
    return { action: 'prebuilt', reason: `a prebuilt addon for ${target} ships in the package` };
  if (prebuilt?.present)
    return {
      action: 'build',
      reason: `the prebuilt addon for ${target} does not load here (${prebuilt.loadError})`,
    };
  return {
    action: 'build',
    reason: `no prebuilt addon for ${target} (prebuilt: ${PREBUILT_PLATFORMS.join(', ')})`,
  };
}

/** The line the install script prints when it uses the prebuilt (no compiler needed). */
export function prebuiltMessage(path, manifest) {
  const napi = manifest?.napiVersion ? `N-API ${manifest.napiVersion}, ` : '';
  const built = manifest?.node ? `built with Node ${manifest.node}, ` : '';
  return (
    `@attnkit/native: using the prebuilt addon ${path} (${napi}${built}SIMD kernels chosen at ` +
    'run time); nothing compiled. ATTNKIT_NATIVE_BUILD_FROM_SOURCE=1 (or npm ' +
    '--build-from-source) compiles it instead.'
  );
}

/**
 * The one-paragraph warning of a failed or skipped build: what happened, the log, the fix.
 * `log` is the log file's path (undefined: none was written).
 */
export function failureWarning({ why, log, scriptPath }) {
  const logPart = log ? ` The build's output is in ${log}.` : '';
  return (
    `warning: @attnkit/native: the native addon was not built (${why}).${logPart} attnkit ` +
    'works without it, on its slower TypeScript kernels. To get the native engine: install ' +
    'python3, make and a C++17 compiler (g++ >= 9 or clang; Debian/Ubuntu: `apt-get install ' +
    'python3 make g++`), then `npm rebuild @attnkit/native` (pnpm: `pnpm approve-builds` to ' +
    'allow the build script, then `pnpm rebuild @attnkit/native`), or run ' +
    `\`node ${scriptPath} --strict\` to see the compiler's errors.`
  );
}
