// A/B of the hook-templated FA2 kernels against the addon of the commit before them, in one
// process on the same inputs, old and new alternating within each round (the order flips every
// round); best of REPS rounds per contender (3 x REPS at N = 2048). Then, on the new addon alone, what the hooks cost:
// sigmoid vs softmax, softcap / alibi / bias vs no mods, at (1, 8, 2048, 64).
//
//   git worktree add /tmp/native-base <commit before the hooks>
//   (cd /tmp/native-base/packages/native && ln -s /work/main/packages/native/node_modules . &&
//    node scripts/build-addon.mjs --strict)
//   node benchmarks/native/hooks-ab.mjs \
//     --old /tmp/native-base/packages/native/build/Release/attnkit_native.node [--reps 7]
//
// The old addon is driven through its per-kernel functions (flashForward / flashBackward with
// its best ISA and async = true; addon-api.mjs), the new one through run(op, problem, inputs,
// outputs): both return promises resolved by an AsyncWorker, so the comparison includes the
// same call overhead.
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { attentionCalls, denseProblem as problem } from './addon-api.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const { values: args } = parseArgs({
  options: {
    old: { type: 'string' },
    new: {
      type: 'string',
      default: join(repo, 'packages', 'native', 'build', 'Release', 'attnkit_native.node'),
    },
    reps: { type: 'string', default: '7' },
    'hook-reps': { type: 'string', default: '5' },
    /** Only the A/B at N = 4096 (a re-run of the long shape on a quiet machine). */
    'long-only': { type: 'boolean', default: false },
    out: {
      type: 'string',
      default: join(here, 'results', `${new Date().toISOString().slice(0, 10)}-hooks-ab.json`),
    },
  },
});
if (!args.old) throw new Error('--old OLD.node: the addon of the commit before the change');
const req = createRequire(import.meta.url);
const oldAddon = req(resolve(args.old));
const newAddon = req(resolve(args.new));
const reps = Number(args.reps);
const hookReps = Number(args['hook-reps']);
const oldCalls = attentionCalls(oldAddon);
const threads = newAddon.info().threads;
const chosen = newAddon.ops()['attention.forward'].chosen;

// Seeded uniform [-1, 1) inputs (xorshift), identical for both addons.
let seed = 0x2545f491;
function filled(n) {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    x[i] = (seed >>> 0) / 2 ** 31 - 1;
  }
  return x;
}

// Best seconds of each fn over n rounds, wall clock and CPU time of this process (user +
// system: what the call's threads ran, which time slices lost to other processes on shared
// cores do not inflate); the order within a round flips every round, and a pause before each
// run lets the pool threads of the previous one go to sleep.
async function interleaved(fns, n) {
  const best = fns.map(() => Number.POSITIVE_INFINITY);
  const cpu = fns.map(() => Number.POSITIVE_INFINITY);
  for (const fn of fns) await fn();
  for (let r = 0; r < n; r++) {
    const order = fns.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) {
      await setTimeout(50);
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      await fns[i]();
      best[i] = Math.min(best[i], Number(process.hrtime.bigint() - t0) / 1e9);
      const c = process.cpuUsage(c0);
      cpu[i] = Math.min(cpu[i], (c.user + c.system) / 1e6);
    }
  }
  best.cpu = cpu;
  return best;
}

function maxAbsDiff(a, b) {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const fwdFlops = (B, H, N, D, causal) => (4 * B * H * N * N * D) / (causal ? 2 : 1);

// 1. A/B: softmax, no mods.
const ab = [];
for (const [B, H, N, D] of [
  [1, 8, 2048, 64],
  [1, 16, 4096, 128],
].filter((s) => !args['long-only'] || s[2] === 4096)) {
  const size = B * H * N * D;
  const [q, k, v, dO] = [0, 1, 2, 3].map(() => filled(size));
  for (const causal of [false, true]) {
    const p = problem(B, H, N, D, causal);
    const outs = [0, 1].map(() => ({
      o: new Float32Array(size),
      lse: new Float32Array(B * H * N),
      dq: new Float32Array(size),
      dk: new Float32Array(size),
      dv: new Float32Array(size),
    }));
    const [A, Bn] = outs;
    const fwdOld = () => oldCalls.forward(p, q, k, v, A.o, A.lse);
    const fwdNew = () =>
      newAddon.run('attention.forward', p, { q, k, v }, { o: Bn.o, lse: Bn.lse });
    const bwdOld = () => oldCalls.backward(p, q, k, v, A.o, A.lse, dO, A.dq, A.dk, A.dv);
    const bwdNew = () =>
      newAddon.run(
        'attention.backward',
        p,
        { q, k, v, o: Bn.o, lse: Bn.lse, dO },
        { dq: Bn.dq, dk: Bn.dk, dv: Bn.dv },
      );
    // Short calls get more rounds: on shared cores a burst of other work hides in fewer of them.
    const rounds = N <= 2048 ? 3 * reps : reps;
    const fwd = await interleaved([fwdOld, fwdNew], rounds);
    const bwd = await interleaved([bwdOld, bwdNew], rounds);
    const [fOld, fNew] = fwd;
    const [bOld, bNew] = bwd;
    const flops = fwdFlops(B, H, N, D, causal);
    const row = {
      shape: [B, H, N, D],
      causal,
      rounds,
      fwd: {
        oldMs: fOld * 1e3,
        newMs: fNew * 1e3,
        change: fNew / fOld - 1,
        oldCpuMs: fwd.cpu[0] * 1e3,
        newCpuMs: fwd.cpu[1] * 1e3,
        cpuChange: fwd.cpu[1] / fwd.cpu[0] - 1,
      },
      bwd: {
        oldMs: bOld * 1e3,
        newMs: bNew * 1e3,
        change: bNew / bOld - 1,
        oldCpuMs: bwd.cpu[0] * 1e3,
        newCpuMs: bwd.cpu[1] * 1e3,
        cpuChange: bwd.cpu[1] / bwd.cpu[0] - 1,
      },
      fwdGflopsNew: flops / fNew / 1e9,
      bwdGflopsNew: (2.5 * flops) / bNew / 1e9,
      maxAbsDiff: {
        o: maxAbsDiff(A.o, Bn.o),
        lse: maxAbsDiff(A.lse, Bn.lse),
        dq: maxAbsDiff(A.dq, Bn.dq),
        dk: maxAbsDiff(A.dk, Bn.dk),
        dv: maxAbsDiff(A.dv, Bn.dv),
      },
    };
    ab.push(row);
    console.error(JSON.stringify(row));
  }
}

// 2. Hook costs on the new addon at (1, 8, 2048, 64).
const [B, H, N, D] = [1, 8, 2048, 64];
const size = B * H * N * D;
const [q, k, v, dO] = [0, 1, 2, 3].map(() => filled(size));
const slopes = Float32Array.from({ length: H }, (_, h) => 2 ** ((-8 * (h + 1)) / H));
const bias = filled(N * N);
const variants = {
  softmax: {},
  sigmoid: { normalize: { kind: 'sigmoid', bias: Float32Array.of(-Math.log(N)) } },
  'softmax+sinks': { normalize: { kind: 'softmax', sinks: filled(H) } },
  softcap: { scoreMods: [{ kind: 'softcap', cap: 5 }] },
  alibi: { scoreMods: [{ kind: 'alibi', slopes }] },
  'bias [N,N]': {
    scoreMods: [{ kind: 'bias', bias, batchStride: 0, headStride: 0, rowStride: N }],
  },
  'alibi+softcap': {
    scoreMods: [
      { kind: 'alibi', slopes },
      { kind: 'softcap', cap: 5 },
    ],
  },
};
const hooks = [];
for (const causal of [false, true]) {
  const base = problem(B, H, N, D, causal);
  const names = Object.keys(variants);
  const calls = names.map((name) => {
    const p = { ...base, ...variants[name] };
    const sigmoid = p.normalize?.kind === 'sigmoid';
    const sinks = p.normalize?.sinks !== undefined;
    const o = new Float32Array(size);
    const lse = sigmoid ? undefined : new Float32Array(B * H * N);
    const fwd = () =>
      newAddon.run('attention.forward', p, { q, k, v }, sigmoid ? { o } : { o, lse });
    const grads = {
      dq: new Float32Array(size),
      dk: new Float32Array(size),
      dv: new Float32Array(size),
    };
    if (sinks) grads.dsinks = new Float32Array(H);
    const bwd = () =>
      newAddon.run(
        'attention.backward',
        p,
        sigmoid ? { q, k, v, dO } : { q, k, v, o, lse, dO },
        grads,
      );
    return { fwd, bwd };
  });
  const fwd = await interleaved(
    calls.map((c) => c.fwd),
    hookReps,
  );
  const bwd = await interleaved(
    calls.map((c) => c.bwd),
    hookReps,
  );
  names.forEach((name, i) => {
    const row = {
      hooks: name,
      causal,
      fwdMs: fwd[i] * 1e3,
      bwdMs: bwd[i] * 1e3,
      fwdVsSoftmax: fwd[i] / fwd[0] - 1,
      bwdVsSoftmax: bwd[i] / bwd[0] - 1,
      fwdCpuMs: fwd.cpu[i] * 1e3,
      bwdCpuMs: bwd.cpu[i] * 1e3,
      fwdCpuVsSoftmax: fwd.cpu[i] / fwd.cpu[0] - 1,
      bwdCpuVsSoftmax: bwd.cpu[i] / bwd.cpu[0] - 1,
    };
    hooks.push(row);
    console.error(JSON.stringify(row));
  });
}

const pct = (x) => `${x >= 0 ? '+' : ''}${(100 * x).toFixed(1)}%`;
const ms = (x) => x.toFixed(1);
const lines = [
  `FA2 softmax without mods: previous commit's addon (${args.old}) vs this one (run('attention.*'), ISA ${chosen}), ${threads} threads, best of ${3 * reps} (N = 2048) / ${reps} (N = 4096) rounds, alternating`,
  `CPU: ${cpus()[0]?.model ?? 'unknown'} x ${cpus().length}; ${new Date().toISOString()}`,
  '',
  'Wall: best wall-clock ms; CPU: best CPU ms of the process (user + system) during the call.',
  '',
  '| shape (B,H,N,D) | mask | fwd old ms | fwd new ms | fwd wall | fwd CPU | bwd old ms | bwd new ms | bwd wall | bwd CPU | max |diff| o / dq |',
  '|---|---|---|---|---|---|---|---|---|---|---|',
  ...ab.map(
    (r) =>
      `| (${r.shape.join(', ')}) | ${r.causal ? 'causal' : 'none'} | ${ms(r.fwd.oldMs)} | ${ms(r.fwd.newMs)} | ${pct(r.fwd.change)} | ${pct(r.fwd.cpuChange)} | ${ms(r.bwd.oldMs)} | ${ms(r.bwd.newMs)} | ${pct(r.bwd.change)} | ${pct(r.bwd.cpuChange)} | ${r.maxAbsDiff.o.toExponential(1)} / ${r.maxAbsDiff.dq.toExponential(1)} |`,
  ),
  '',
  `Hook costs at (${[B, H, N, D].join(', ')}), new addon, best of ${hookReps}, interleaved:`,
  '',
  '| hooks | mask | fwd ms | fwd vs softmax (wall / CPU) | bwd ms | bwd vs softmax (wall / CPU) |',
  '|---|---|---|---|---|---|',
  ...hooks.map(
    (r) =>
      `| ${r.hooks} | ${r.causal ? 'causal' : 'none'} | ${ms(r.fwdMs)} | ${pct(r.fwdVsSoftmax)} / ${pct(r.fwdCpuVsSoftmax)} | ${ms(r.bwdMs)} | ${pct(r.bwdVsSoftmax)} / ${pct(r.bwdCpuVsSoftmax)} |`,
  ),
];
console.log(lines.join('\n'));
mkdirSync(dirname(args.out), { recursive: true });
writeFileSync(
  args.out,
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      cpu: cpus()[0]?.model,
      cpus: cpus().length,
      threads,
      isa: chosen,
      old: args.old,
      reps,
      hookReps,
      ab,
      hooks,
    },
    null,
    2,
  )}\n`,
);
console.log(`\nJSON: ${args.out}`);
