// pnpm release:pack — packs every published package (packages/*, apps/cli; private ones are
// skipped) into dist-release/, checks each tarball (workspace:* resolved to real versions, no
// stray files), then proves the tarballs install: into a fresh temp project with npm and with
// pnpm, each followed by an import smoke test (every entry imports; flashAttention runs a small
// cpu problem on backend 'ts'). Prints the tarball paths. `--no-build` skips `pnpm build`,
// `--no-install` skips the two installs.
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

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
console.log('  nativeAvailable(): ' + nativeAvailable() + ' (whether the addon built at install; backend ts needs none)');
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
  // pnpm's own settings (npm_config_verify_deps_before_run, ...) mean nothing to npm.
  const env = Object.fromEntries(
    Object.keys(process.env)
      .filter((k) =>
        /^npm_config_(verify_deps_before_run|npm_globalconfig|_jsr_registry)$/i.test(k),
      )
      .map((k) => [k, undefined]),
  );
  if (tool === 'npm')
    run(['npm'], ['install', '--no-audit', '--no-fund', ...files], { cwd: dir, env });
  else run(pnpmCmd, ['add', ...files], { cwd: dir });
  console.log(`${tool}: installed in ${((Date.now() - started) / 1000).toFixed(1)} s; smoke test:`);
  run([process.execPath], ['smoke.mjs'], { cwd: dir });
  const cli = join(dir, 'node_modules', '.bin', 'attnkit');
  if (existsSync(cli)) {
    const help = run([cli], ['--help'], { cwd: dir, capture: true });
    console.log(`  node_modules/.bin/attnkit --help: ${help.split('\n')[0]}`);
  } else fail(`${tool}: no node_modules/.bin/attnkit`);
  rmSync(dir, { recursive: true, force: true });
}

if (!args.has('--no-install')) {
  smoke('npm');
  smoke('pnpm');
}

console.log('\nTarballs:');
for (const t of tarballs) console.log(`  ${relative(process.cwd(), t.tgz)}`);
console.log(
  `\nInstall before a registry release: npm i ${relative(process.cwd(), outDir)}/attnkit-*.tgz`,
);
