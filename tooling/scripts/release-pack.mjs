// pnpm release:pack — packs every published package (packages/*, apps/cli; private ones are
// skipped) into dist-release/, checks each tarball (workspace:* resolved to real versions, no
// stray files), then proves the tarballs install: into a fresh temp project with npm and with
// pnpm, each followed by an import smoke test (every entry imports; flashAttention runs a small
// cpu problem on backend 'ts'). @attnkit/native's tarball carries a prebuilt linux-x64 addon
// (prebuilds/linux-x64/, compiled here by the package's own install script in a scratch copy,
// checked to be portable across x64 CPUs), proven by a third install with npm --ignore-scripts:
// the engine runs without any build. Prints the tarball paths. `--no-build` skips `pnpm build`,
// `--no-install` skips the installs, `--no-prebuilt` ships no prebuilt (a host other than
// linux-x64 needs it).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const outDir = join(root, 'dist-release');
const args = new Set(process.argv.slice(2));

// The pnpm running this script (npm_execpath under `pnpm release:pack`), else pnpm on PATH.
// biome-ignore lint/suspicious/noUndeclaredEnvVars: set by pnpm for the script it runs; not a turbo task
const execpath = process.env.npm_execpath ?? '';
const pnpmCmd = /pnpm/.test(execpath)
  ? /\.(c|m)?js$/.test(execpath)
    ? [process.execPath, execpath]
    : [execpath]
  : ['pnpm'];

function run(cmd, cmdArgs, opts = {}) {
  const r = spawnSync(cmd[0], [...cmd.slice(1), ...cmdArgs], {
    cwd: opts.cwd ?? root,
    encoding: 'utf8',
    stdio: opts.capture ? ['ignore', 'pipe', 'pipe'] : 'inherit',
    env: { ...process.env, ...opts.env },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) {
    if (opts.capture) process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`);
    fail(
      `${[...cmd, ...cmdArgs].join(' ')} exited ${r.status ?? r.signal} (in ${opts.cwd ?? root})`,
    );
  }
  return r.stdout ?? '';
}

function fail(message) {
  console.error(`release:pack: ${message}`);
  process.exit(1);
}

// 1. The published packages.
const dirs = [
  ...readdirSync(join(root, 'packages'), { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(root, 'packages', d.name, 'package.json')))
    .map((d) => join(root, 'packages', d.name)),
  join(root, 'apps', 'cli'),
];
const packages = [];
for (const dir of dirs) {
  const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8'));
  if (pkg.private) {
    console.log(`skip ${pkg.name} (private)`);
    continue;
  }
  packages.push({ dir, pkg });
}
const versions = new Map(packages.map(({ pkg }) => [pkg.name, pkg.version]));

// 2. The READMEs that ship (and the root one): every relative link resolves inside the repository
// (a link to ../shared/... works beside the repository, never in a clone).
let dead = 0;
for (const file of [
  'README.md',
  ...packages.map(({ dir }) => join(relative(root, dir), 'README.md')),
]) {
  const text = readFileSync(join(root, file), 'utf8').replace(/```[\s\S]*?```/g, '');
  for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    if (/^(https?:|mailto:|#)/.test(target)) continue;
    const path = resolve(root, dirname(file), target.split('#')[0]);
    if (relative(root, path).startsWith('..') || !existsSync(path)) {
      console.error(`${file}: dead link ${target}`);
      dead++;
    }
  }
}
if (dead) fail(`${dead} dead README links`);

// 3. Build, then pack.
if (!args.has('--no-build')) run(pnpmCmd, ['run', 'build']);

// 3a. @attnkit/native's prebuilt addon: the package's install script (`--strict`: a node-gyp
// Release build against this Node's headers, N-API, so one file serves every Node >= 20) run in
// a scratch copy of the package, so that the repository's own build/ stays as it is.
const nativeDir = join(root, 'packages', 'native');
const prebuiltDir = join(nativeDir, 'prebuilds', 'linux-x64');
const withPrebuilt = !args.has('--no-prebuilt');
// The prebuilt lives in the working tree only while packing.
process.on('exit', () => rmSync(join(nativeDir, 'prebuilds'), { recursive: true, force: true }));

function buildPrebuilt() {
  if (process.platform !== 'linux' || process.arch !== 'x64')
    fail(
      `the prebuilt addon is linux-x64; this is ${process.platform}-${process.arch} (--no-prebuilt skips it)`,
    );
  // One binary for every x64 CPU: the ISA comes from run-time dispatch (addon.cc,
  // __builtin_cpu_supports), never from the build machine's CPU.
  const gyp = readFileSync(join(nativeDir, 'binding.gyp'), 'utf8');
  if (/-m(arch|tune|cpu)=native/.test(gyp))
    fail('binding.gyp compiles with -march=native: the prebuilt would not be portable');
  const napi = Number(/NAPI_VERSION=(\d+)/.exec(gyp)?.[1]);
  if (!napi) fail('binding.gyp defines no NAPI_VERSION');
  const stage = mkdtempSync(join(tmpdir(), 'attnkit-prebuild-'));
  for (const p of ['package.json', 'binding.gyp', 'scripts', join('src', 'engine')])
    cpSync(join(nativeDir, p), join(stage, p), { recursive: true });
  symlinkSync(join(nativeDir, 'node_modules'), join(stage, 'node_modules'));
  const started = Date.now();
  console.log(`\nnative: compiling the prebuilt linux-x64 addon in ${stage}`);
  run([process.execPath], [join(stage, 'scripts', 'build-addon.mjs'), '--strict'], {
    cwd: stage,
    capture: true,
    env: { ATTNKIT_SKIP_NATIVE_BUILD: '', NODE_PATH: '' },
  });
  const built = join(stage, 'build', 'Release', 'attnkit_native.node');
  if (!existsSync(built)) fail(`no ${built} after the build`);
  portable(built);
  const info = JSON.parse(
    run([process.execPath], ['-p', `JSON.stringify(require(${JSON.stringify(built)}).info())`], {
      capture: true,
    }),
  );
  // What a user's loader checks against: glibc symbol versions the file needs.
  const glibc = run(['objdump'], ['-T', built], { capture: true })
    .match(/GLIBC_[0-9.]+/g)
    ?.map((v) => v.slice(6))
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }))
    .at(-1);
  const hash = createHash('sha256');
  for (const f of [
    'binding.gyp',
    ...readdirSync(join(stage, 'src', 'engine'))
      .sort()
      .map((f) => `src/engine/${f}`),
  ])
    hash.update(f).update(readFileSync(join(stage, f)));
  const manifest = {
    file: 'attnkit_native.node',
    platform: 'linux',
    arch: 'x64',
    napiVersion: napi,
    node: process.version,
    nodeModulesAbi: process.versions.modules,
    glibc: glibc ? `>= ${glibc}` : 'unknown',
    compiler: run(['c++'], ['--version'], { capture: true }).split('\n')[0],
    isaDispatch: 'run time (__builtin_cpu_supports): avx512, avx2, scalar; no -march',
    sourcesSha256: hash.digest('hex'),
  };
  rmSync(join(nativeDir, 'prebuilds'), { recursive: true, force: true });
  mkdirSync(prebuiltDir, { recursive: true });
  cpSync(built, join(prebuiltDir, 'attnkit_native.node'));
  writeFileSync(join(prebuiltDir, 'attnkit_native.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  rmSync(stage, { recursive: true, force: true });
  console.log(
    `native: prebuilds/linux-x64/attnkit_native.node in ${((Date.now() - started) / 1000).toFixed(0)} s: N-API ${napi}, glibc ${manifest.glibc}, ISAs here ${info.isas.join(', ')}`,
  );
}

// No vector instruction outside the AVX2 / AVX-512 kernels' own functions: code every CPU runs
// (the addon's init, the dispatch, the scalar kernels, shared inline templates the linker keeps
// one copy of) must be baseline x86-64, or the addon dies with SIGILL on an older CPU.
/**
 * Whether function `fn` (objdump's name) can only run after the dispatch chose an AVX ISA:
 * - it names an ISA kernel namespace anywhere: the kernels themselves, and templates (std's
 *   sorts, vectors) instantiated on their types, which no other translation unit can share;
 *   a name objdump could not demangle (the static invokers of lambdas that run as function
 *   pointers, `_ZZN7attnkit4avx28parallel...4_FUN...`) still names it mangled;
 * - or it is a GCC clone (`[clone .constprop.0]`, `.isra.0`): local to its translation unit,
 *   so called only from that unit's code, and AVX in it means an AVX kernel unit.
 * What stays bad: an inline function or template on plain types compiled in a kernel unit,
 *   the one copy the linker may keep for every caller.
 */
function isaOnly(fn) {
  return (
    /attnkit::avx(2|512|512vnni)::|N7attnkit(4avx2|6avx512|10avx512vnni)/.test(fn) ||
    /\[clone \.[a-z]+\.\d+\]$/.test(fn)
  );
}

function portable(file) {
  const which = spawnSync('objdump', ['--version'], { encoding: 'utf8' });
  if (which.status !== 0) {
    console.warn('native: no objdump here; the portability check is skipped');
    return;
  }
  const asm = run(['objdump'], ['-d', '--no-show-raw-insn', '-C', file], { capture: true });
  const bad = new Set();
  let fn = '';
  for (const line of asm.split('\n')) {
    const head = /^[0-9a-f]+ <(.*)>:$/.exec(line);
    if (head) fn = head[1];
    else if (/%[yz]mm|%k[0-7]|\tv[a-z]/.test(line) && !isaOnly(fn)) bad.add(fn);
  }
  if (bad.size)
    fail(
      `${file}: AVX instructions outside the AVX kernels (SIGILL on older x64 CPUs): ${[...bad].slice(0, 5).join('; ')}`,
    );
  console.log(
    'native: portable: AVX instructions only inside attnkit::avx2 / avx512 / avx512vnni code',
  );
}

if (withPrebuilt) buildPrebuilt();
rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
// Ignored without touching the root .gitignore: the folder ignores itself.
writeFileSync(join(outDir, '.gitignore'), '*\n');

const DEP_FIELDS = ['dependencies', 'optionalDependencies', 'peerDependencies', 'devDependencies'];
// Files that must never ship: tests, test reports, build locks, nested installs, sources maps' TS.
const STRAY = [
  /(^|\/)node_modules\//,
  /\.test\.[cm]?[jt]s$/,
  /test-results\.json$/,
  /\.build-lock/,
  /\.turbo\//,
  /(^|\/)build\//,
];

const tarballs = [];
for (const { dir, pkg } of packages) {
  const before = new Set(readdirSync(outDir));
  run(pnpmCmd, ['pack', '--pack-destination', outDir], { cwd: dir, capture: true });
  const made = readdirSync(outDir).filter((f) => f.endsWith('.tgz') && !before.has(f));
  if (made.length !== 1) fail(`pnpm pack in ${relative(root, dir)} made ${made.length} tarballs`);
  const tgz = join(outDir, made[0]);

  // The packed package.json: no workspace: protocol left, internal deps at their real versions.
  const packed = JSON.parse(
    run(['tar'], ['-xzOf', tgz, 'package/package.json'], { capture: true }),
  );
  for (const field of DEP_FIELDS) {
    for (const [name, range] of Object.entries(packed[field] ?? {})) {
      if (String(range).startsWith('workspace:'))
        fail(`${made[0]}: ${field}.${name} is still "${range}"`);
      if (versions.has(name) && range !== versions.get(name) && range !== `^${versions.get(name)}`)
        fail(`${made[0]}: ${field}.${name} is "${range}", expected ${versions.get(name)}`);
    }
  }
  if (packed.license !== 'MIT') fail(`${made[0]}: license is ${packed.license}`);
  const entries = run(['tar'], ['-tzf', tgz], { capture: true })
    .split('\n')
    .filter(Boolean)
    .map((e) => e.replace(/^package\//, ''));
  const stray = entries.filter((e) => STRAY.some((re) => re.test(e)));
  if (stray.length) fail(`${made[0]} ships files it should not: ${stray.join(', ')}`);
  if (pkg.name === '@attnkit/native' && withPrebuilt) {
    for (const f of ['attnkit_native.node', 'attnkit_native.json'])
      if (!entries.includes(`prebuilds/linux-x64/${f}`))
        fail(`${made[0]}: prebuilds/linux-x64/${f} is not in the tarball`);
  }
  const main = (packed.exports?.['.']?.import ?? packed.main ?? '').replace(/^\.\//, '');
  if (!entries.includes(main)) fail(`${made[0]}: entry ${main} is not in the tarball (not built?)`);
  if (packed.bin) {
    for (const bin of Object.values(
      typeof packed.bin === 'string' ? { x: packed.bin } : packed.bin,
    )) {
      if (!entries.includes(bin.replace(/^\.\//, '')))
        fail(`${made[0]}: bin ${bin} is not in the tarball`);
    }
  }
  const internal = Object.keys(packed.dependencies ?? {}).filter((n) => versions.has(n));
  console.log(
    `packed ${pkg.name}@${pkg.version}: ${entries.length} files; internal deps ${internal.map((n) => `${n}@${packed.dependencies[n]}`).join(', ') || 'none'}`,
  );
  tarballs.push({ name: pkg.name, tgz, bin: packed.bin });
}

// 4. Install the tarballs into a fresh project and import every package.
const SMOKE = `
const names = ${JSON.stringify(tarballs.map((t) => t.name))};
for (const name of names) {
  const mod = await import(name);
  if (Object.keys(mod).length === 0) throw new Error(name + ': no exports');
  console.log('  import ' + name + ': ' + Object.keys(mod).length + ' exports');
}
const { Rng } = await import('@attnkit/tensor');
const { flashAttention, flashAttentionTs, nativeAvailable } = await import('@attnkit/flash-attention');
const hasNative = await nativeAvailable();
console.log('  nativeAvailable(): ' + hasNative + ' (backend ts needs none)');
if (process.env.EXPECT_NATIVE === '1' && !hasNative) throw new Error('flash-attention: nativeAvailable() is false with the prebuilt addon installed');
const native = await import('@attnkit/native');
const source = native.nativeAddonSource();
console.log('  @attnkit/native: ' + (source ? 'loaded the ' + source.source + ' addon' : 'no addon: ' + native.nativeLoadError()));
if (process.env.EXPECT_NATIVE === '1' && source?.source !== 'prebuilt') throw new Error('expected the prebuilt addon, got ' + JSON.stringify(source) + ': ' + native.nativeLoadError());
const rng = new Rng(0);
const q = rng.randn([1, 2, 5, 8]);
const k = rng.randn([1, 2, 7, 8]);
const v = rng.randn([1, 2, 7, 8]);
const { o, lse } = await flashAttention(q, k, v, { causal: true, backend: 'ts' });
if (o.shape.join() !== '1,2,5,8' || lse.shape.join() !== '1,2,5') throw new Error('shapes ' + o.shape + ' ' + lse.shape);
const ref = flashAttentionTs(q, k, v, { causal: true });
const a = o.toFloat32Array(), b = ref.o.toFloat32Array();
if (!a.every((x, i) => Number.isFinite(x) && Math.abs(x - b[i]) < 1e-6)) throw new Error('o mismatch');
console.log('  flashAttention(backend ts) on [1,2,5,8]x[1,2,7,8]: o ' + o.shape.join('x') + ', lse ' + lse.shape.join('x'));
`;

// pnpm's own settings (npm_config_verify_deps_before_run, ...) mean nothing to npm.
function npmEnv() {
  return Object.fromEntries(
    Object.keys(process.env)
      .filter((k) =>
        /^npm_config_(verify_deps_before_run|npm_globalconfig|_jsr_registry)$/i.test(k),
      )
      .map((k) => [k, undefined]),
  );
}

function smoke(tool) {
  const dir = mkdtempSync(join(tmpdir(), `attnkit-${tool}-`));
  const files = tarballs.map((t) => t.tgz);
  const pkg = { name: `attnkit-smoke-${tool}`, version: '0.0.0', private: true, type: 'module' };
  if (tool === 'pnpm') {
    // pnpm resolves a tarball's own dependencies from the registry: point the internal ones
    // (not published yet) at their tarballs.
    // pnpm 10 also skips @attnkit/native's install script (the addon build) unless approved:
    // the smoke test then runs on the TypeScript kernels, which is what it tests.
    pkg.pnpm = { overrides: Object.fromEntries(tarballs.map((t) => [t.name, `file:${t.tgz}`])) };
  }
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  writeFileSync(join(dir, 'smoke.mjs'), SMOKE);
  console.log(`\n${tool}: installing ${files.length} tarballs into ${dir}`);
  const started = Date.now();
  if (tool === 'npm')
    run(['npm'], ['install', '--no-audit', '--no-fund', ...files], { cwd: dir, env: npmEnv() });
  else run(pnpmCmd, ['add', ...files], { cwd: dir });
  console.log(`${tool}: installed in ${((Date.now() - started) / 1000).toFixed(1)} s; smoke test:`);
  // With the prebuilt, the addon loads for both: npm's install script used it (no compile);
  // pnpm blocked the script, and the loader found the prebuilt anyway.
  run([process.execPath], ['smoke.mjs'], {
    cwd: dir,
    env: { EXPECT_NATIVE: withPrebuilt ? '1' : '' },
  });
  const status = join(dir, 'node_modules', '@attnkit', 'native', 'build-addon-status.json');
  if (withPrebuilt && tool === 'npm') {
    const outcome = existsSync(status) ? JSON.parse(readFileSync(status, 'utf8')).outcome : 'none';
    if (outcome !== 'prebuilt')
      fail(`npm: the native install script recorded "${outcome}", expected "prebuilt"`);
    console.log('  @attnkit/native install script: used the prebuilt, compiled nothing');
  }
  const cli = join(dir, 'node_modules', '.bin', 'attnkit');
  if (existsSync(cli)) {
    const help = run([cli], ['--help'], { cwd: dir, capture: true });
    console.log(`  node_modules/.bin/attnkit --help: ${help.split('\n')[0]}`);
  } else fail(`${tool}: no node_modules/.bin/attnkit`);
  rmSync(dir, { recursive: true, force: true });
}

// 5. Native without a compiler: @attnkit/native alone, installed with npm --ignore-scripts (no
// install script, no build): the prebuilt must load and run every op on every ISA this CPU
// has; without it, the load error must say the install script never ran, and the fix.
const NATIVE_SMOKE = `
import { existsSync, renameSync } from 'node:fs';
const n = await import('@attnkit/native');
const pkg = 'node_modules/@attnkit/native';
if (existsSync(pkg + '/build')) throw new Error('something was compiled: ' + pkg + '/build exists');
if (existsSync(pkg + '/build-addon-status.json')) throw new Error('the install script ran');
const src = n.nativeAddonSource();
if (src?.source !== 'prebuilt') throw new Error('not the prebuilt: ' + JSON.stringify(src) + ' ' + n.nativeLoadError());
const best = n.loadNative();
const ops = best.ops();
if (Object.keys(ops).sort().join() !== EXPECTED_OPS) throw new Error('ops ' + Object.keys(ops) + ', expected ' + EXPECTED_OPS);
console.log('  loaded ' + src.path.replace(process.cwd() + '/', '') + ': ISAs ' + best.availableIsas.join(', ') + ', ' + best.threads + ' threads, ops ' + Object.keys(ops).join(', '));
const [m, k, nn] = [7, 33, 20];
const a = Float32Array.from({ length: m * k }, (_, i) => Math.sin(i));
const b = Float32Array.from({ length: k * nn }, (_, i) => Math.cos(i));
const want = new Float64Array(m * nn);
for (let i = 0; i < m; i++) for (let j = 0; j < nn; j++) for (let p = 0; p < k; p++) want[i * nn + j] += a[i * k + p] * b[p * nn + j];
const N = 9, D = 16;
const q = Float32Array.from({ length: N * D }, (_, i) => Math.sin(i * 0.7));
const seq = Int32Array.of(N), zero = Int32Array.of(0);
const problem = { layout: 'BHND', batch: 1, hq: 1, hkv: 1, d: D, dv: D, scale: 0.25, left: -1, right: 0,
  seqQ: seq, seqK: seq, startQ: zero, startK: zero, maxSeqQ: N, maxSeqK: N, totalQ: N, totalK: N };
const outs = [];
for (const isa of best.availableIsas) {
  const e = n.loadNative({ isa });
  const c = new Float32Array(m * nn);
  await e.gemm({ m, n: nn, k, a, b, c });
  const err = Math.max(...c.map((x, i) => Math.abs(x - want[i])));
  if (!(err < 1e-4)) throw new Error(isa + ' gemm error ' + err);
  const o = new Float32Array(N * D), lse = new Float32Array(N);
  await e.run('attention.forward', problem, { q, k: q, v: q }, { o, lse });
  outs.push(o);
  console.log('  ' + isa + ': gemm max error ' + err.toExponential(1) + ', attention.forward lse[8] ' + lse[8].toFixed(4));
}
for (const o of outs) if (!o.every((x, i) => Math.abs(x - outs[0][i]) < 1e-5)) throw new Error('ISAs disagree');
`;
const NATIVE_MISSING = `
const n = await import('@attnkit/native');
const why = n.nativeLoadError() ?? '';
for (const want of ['not built', 'the install script never ran', 'pnpm approve-builds', 'npm rebuild @attnkit/native'])
  if (!why.includes(want)) throw new Error('the load error lacks "' + want + '": ' + why);
console.log('  without the prebuilt: ' + why.slice(0, 160) + '...');
`;

/**
 * The ops of the engine built in the workspace from the same sources (sorted, comma-joined):
 * the prebuilt must register every one of them, no more and no fewer.
 */
function workspaceOps() {
  const entry = pathToFileURL(join(root, 'packages', 'native', 'dist', 'index.js')).href;
  const code = `const n = await import(${JSON.stringify(entry)}); const e = n.loadNative(); if (!e) throw new Error(n.nativeLoadError()); console.log(Object.keys(e.ops()).sort().join());`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8' });
  if (r.status !== 0) fail(`the workspace's native engine did not load: ${r.stderr.trim()}`);
  return r.stdout.trim();
}

function smokeNativePrebuilt() {
  const native = tarballs.find((t) => t.name === '@attnkit/native');
  const dir = mkdtempSync(join(tmpdir(), 'attnkit-native-prebuilt-'));
  const pkg = { name: 'attnkit-smoke-native', version: '0.0.0', private: true, type: 'module' };
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  writeFileSync(
    join(dir, 'smoke.mjs'),
    `const EXPECTED_OPS = ${JSON.stringify(workspaceOps())};\n${NATIVE_SMOKE}`,
  );
  writeFileSync(join(dir, 'missing.mjs'), NATIVE_MISSING);
  console.log(`\nnpm --ignore-scripts: installing ${relative(root, native.tgz)} alone into ${dir}`);
  run(['npm'], ['install', '--ignore-scripts', '--no-audit', '--no-fund', native.tgz], {
    cwd: dir,
    env: npmEnv(),
  });
  const clean = { ATTNKIT_NATIVE_ADDON: '', ATTNKIT_ISA: '' };
  run([process.execPath], ['smoke.mjs'], { cwd: dir, env: clean });
  const prebuilds = join(dir, 'node_modules', '@attnkit', 'native', 'prebuilds');
  rmSync(prebuilds, { recursive: true, force: true });
  run([process.execPath], ['missing.mjs'], { cwd: dir, env: clean });
  rmSync(dir, { recursive: true, force: true });
}

if (!args.has('--no-install')) {
  smoke('npm');
  smoke('pnpm');
  if (withPrebuilt) smokeNativePrebuilt();
}

console.log('\nTarballs:');
for (const t of tarballs) console.log(`  ${relative(process.cwd(), t.tgz)}`);
console.log(
  `\nInstall before a registry release: npm i ${relative(process.cwd(), outDir)}/attnkit-*.tgz`,
);
