// Builds the addon from source with node-gyp against the headers of the running Node (nothing
// is downloaded). As the package's install script it never fails the install: a failed build
// prints one warning and attnkit uses its TypeScript kernels. `--strict` (build:addon) exits 1.
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const strict = process.argv.includes('--strict');
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');

function giveUp(why) {
  const message = `@attnkit/native: addon not built (${why}); attnkit will use its TypeScript kernels`;
  if (strict) {
    console.error(message);
    process.exit(1);
  }
  console.warn(`warning: ${message}`);
  process.exit(0);
}

// node-gyp's --nodedir: a Node install prefix holding include/node/node_api.h.
function nodeDir() {
  const candidates = [process.env.npm_config_nodedir, resolve(dirname(process.execPath), '..')];
  return candidates.find((dir) => dir && existsSync(join(dir, 'include', 'node', 'node_api.h')));
}

const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const addon = join(root, 'build', 'Release', 'attnkit_native.node');
const stamp = join(root, 'build', 'attnkit-stamp.txt');
const abi = JSON.stringify({ node: process.execPath, modules: process.versions.modules });

// Up to date: built by this Node ABI after the last change to any source.
function upToDate() {
  if (!existsSync(addon) || !existsSync(stamp) || readFileSync(stamp, 'utf8') !== abi) return false;
  const built = statSync(addon).mtimeMs;
  const sources = [join(root, 'binding.gyp')];
  for (const f of readdirSync(join(root, 'src', 'engine')))
    sources.push(join(root, 'src', 'engine', f));
  return sources.every((f) => statSync(f).mtimeMs < built);
}

if (process.env.ATTNKIT_SKIP_NATIVE_BUILD === '1') giveUp('ATTNKIT_SKIP_NATIVE_BUILD=1');
if (!strict && upToDate()) {
  console.log(`@attnkit/native: ${addon} is up to date`);
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
if (!strict && upToDate()) {
  console.log(`@attnkit/native: ${addon} is up to date`);
  process.exit(0);
}
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
  },
);
if (result.status !== 0) {
  const log = join(root, 'build', 'attnkit-build.log');
  if (!strict) {
    mkdirSync(dirname(log), { recursive: true });
    writeFileSync(log, `${result.stdout ?? ''}\n${result.stderr ?? ''}`);
  }
  giveUp(
    result.error
      ? `node-gyp could not run: ${result.error.message}`
      : `node-gyp exited with ${result.status}${strict ? '' : `; log in ${log}`}`,
  );
}
writeFileSync(stamp, abi);
console.log(`@attnkit/native: built ${addon}`);
