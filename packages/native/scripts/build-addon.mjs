// The package's install script (and `build:addon` with --strict). Where a prebuilt addon for
// this platform-arch ships in the package (prebuilds/<platform>-<arch>/, put there by the
// release script) and loads here, it compiles nothing; elsewhere, or with
// ATTNKIT_NATIVE_BUILD_FROM_SOURCE=1 / npm --build-from-source, it builds the addon with
// node-gyp against the headers of the running Node (nothing is downloaded).
//
// As the install script it never fails the install: a failed build prints one warning paragraph
// (with the log path and the fix) and attnkit uses its TypeScript kernels. npm >= 7 discards the
// output of an install script that succeeds, so the warning also goes to the terminal
// (/dev/tty) when there is one. Every run writes build-addon-status.json: the loader reads it
// to tell "the build failed" from "the install script never ran" (pnpm 10 blocks dependencies'
// build scripts unless approved). `--strict` (build:addon) always compiles, shows the compiler
// and exits 1 on failure.
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  decideInstall,
  failureWarning,
  LOG_FILE,
  prebuiltMessage,
  prebuiltSegments,
  STATUS_FILE,
} from './addon-install.mjs';

const strict = process.argv.includes('--strict');
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const scriptPath = join(root, 'scripts', 'build-addon.mjs');
const statusPath = join(root, STATUS_FILE);
const logPath = join(root, LOG_FILE);
const addon = join(root, 'build', 'Release', 'attnkit_native.node');
const stamp = join(root, 'build', 'attnkit-stamp.txt');
const prebuilt = join(root, ...prebuiltSegments(process.platform, process.arch));
const abi = JSON.stringify({ node: process.execPath, modules: process.versions.modules });

function writeStatus(outcome, fields = {}) {
  const status = {
    outcome,
    ...fields,
    node: process.version,
    modules: process.versions.modules,
    napi: process.versions.napi,
    platform: process.platform,
    arch: process.arch,
    at: new Date().toISOString(),
  };
  try {
    writeFileSync(statusPath, `${JSON.stringify(status, null, 2)}\n`);
  } catch {
    // A read-only install location: the loader then reports "never ran", with the same fix.
  }
}

// Shown where the user sees it: stderr, and, when a package manager runs this as the install
// script with stderr piped away (npm >= 7 shows it only under --foreground-scripts), the
// terminal.
function warn(text) {
  console.warn(text);
  if (strict || process.stderr.isTTY || process.env.npm_lifecycle_event !== 'install') return;
  try {
    const tty = openSync('/dev/tty', 'w');
    writeSync(tty, `\n${text}\n\n`);
    closeSync(tty);
  } catch {
    // No controlling terminal (CI): stderr and the status file carry it.
  }
}

function giveUp(why, log) {
  writeStatus('failed', {
    reason: why,
    ...(log ? { log } : {}),
  });
  if (strict) {
    console.error(`@attnkit/native: addon not built (${why})`);
    process.exit(1);
  }
  warn(failureWarning({ why, log, scriptPath }));
  process.exit(0);
}

// node-gyp's --nodedir: a Node install prefix holding include/node/node_api.h.
function nodeDir() {
  const candidates = [process.env.npm_config_nodedir, resolve(dirname(process.execPath), '..')];
  return candidates.find((dir) => dir && existsSync(join(dir, 'include', 'node', 'node_api.h')));
}

const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

// Up to date: built by this Node ABI after the last change to any source.
function upToDate() {
  if (!existsSync(addon) || !existsSync(stamp) || readFileSync(stamp, 'utf8') !== abi) return false;
  const built = statSync(addon).mtimeMs;
  const sources = [join(root, 'binding.gyp')];
  for (const f of readdirSync(join(root, 'src', 'engine')))
    sources.push(join(root, 'src', 'engine', f));
  return sources.every((f) => statSync(f).mtimeMs < built);
}

// Whether the prebuilt loads in this Node on this system (in a child: a crash stays there).
function prebuiltLoadError() {
  const script =
    `const a = require(${JSON.stringify(prebuilt)});` +
    "if (typeof a.info !== 'function') throw new Error('not the attnkit addon'); a.info();";
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
  if (r.status === 0) return undefined;
  const lines = `${r.stderr ?? ''}`.split('\n').filter((l) => /Error/.test(l));
  return lines[0]?.trim() || (r.error?.message ?? `exit ${r.status ?? r.signal}`);
}

function decide() {
  const present = existsSync(prebuilt);
  return decideInstall({
    env: process.env,
    strict,
    platform: process.platform,
    arch: process.arch,
    upToDate: !strict && upToDate(),
    prebuilt: { present, loadError: present ? prebuiltLoadError() : undefined },
  });
}

let plan = decide();
if (plan.action === 'skip') {
  // Asked for: a note, not the failure paragraph (a shipped prebuilt still loads).
  writeStatus('skipped', { reason: plan.reason });
  console.warn(
    `@attnkit/native: ${plan.reason}: nothing compiled or checked (the loader still uses a prebuilt for ${process.platform}-${process.arch} if one ships)`,
  );
  process.exit(0);
}
if (plan.action === 'up-to-date') {
  writeStatus('up-to-date', { addon });
  console.log(`@attnkit/native: ${addon} is up to date`);
  process.exit(0);
}
if (plan.action === 'prebuilt') {
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(prebuilt.replace(/\.node$/, '.json'), 'utf8'));
  } catch {}
  writeStatus('prebuilt', { addon: prebuilt, reason: plan.reason });
  console.log(prebuiltMessage(relative(root, prebuilt), manifest));
  process.exit(0);
}
// Two installs at once (workspace installs in parallel shells) must not share build/: the
// second waits for the first.
const lock = join(root, '.build-lock');
for (let waited = 0; ; waited += 500) {
  try {
    mkdirSync(lock);
    break;
  } catch {
    if (waited > 600_000) giveUp(`${lock} held for 10 minutes; remove it if no build is running`);
    sleep(500);
  }
}
process.on('exit', () => rmSync(lock, { recursive: true, force: true }));
plan = strict ? plan : decide();
if (plan.action === 'up-to-date') {
  writeStatus('up-to-date', { addon });
  console.log(`@attnkit/native: ${addon} is up to date`);
  process.exit(0);
}
if (!strict)
  console.log(`@attnkit/native: compiling the addon (${plan.reason}); log in ${logPath}`);
const nodedir = nodeDir();
if (!nodedir) giveUp(`no Node headers next to ${process.execPath}; set npm_config_nodedir`);
let gyp;
try {
  gyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
} catch {
  giveUp('node-gyp is not installed');
}
const jobs = String(Math.max(1, availableParallelism()));
const result = spawnSync(
  process.execPath,
  [gyp, 'rebuild', `--nodedir=${nodedir}`, `--jobs=${jobs}`],
  {
    cwd: root,
    encoding: 'utf8',
    stdio: strict ? 'inherit' : 'pipe',
    env: { ...process.env, npm_config_nodedir: nodedir },
    maxBuffer: 256 * 1024 * 1024,
  },
);
let log;
if (!strict) {
  try {
    writeFileSync(logPath, `${result.stdout ?? ''}\n${result.stderr ?? ''}`);
    log = logPath;
  } catch {}
}
if (result.status !== 0) {
  // The usual cause in one phrase: node-gyp's own diagnosis of a missing tool.
  const text = `${result.stdout ?? ''}\n${result.stderr ?? ''}`;
  const missing =
    /Could not find any Python|not found: make|(c\+\+|g\+\+|cc): (command )?not found|No such file or directory.*(g\+\+|c\+\+)/i.exec(
      text,
    );
  giveUp(
    result.error
      ? `node-gyp could not run: ${result.error.message}`
      : `node-gyp exited with ${result.status ?? result.signal}${missing ? `: ${missing[0]}` : ''}`,
    log,
  );
}
writeFileSync(stamp, abi);
writeStatus('built', { addon, ...(log ? { log } : {}) });
console.log(`@attnkit/native: built ${addon}`);
