// FastAttention (issue 15, parts 1 and 2): prints, with no timing and no performance claim,
// (1) the tiling-mask counters of the skeleton's FA2 forward for a few masks — how many
// (blockQ x blockK) tiles of one (batch, head) it skips, runs on the masked path and runs on the
// mask-free path, counted from indices (@attnkit/fast-attention tileCounts; the TS kernel's
// rule, whose band rule the native engine shares, and the WGSL kernels' rule) — and (2) the
// two-level plan of each documented device class for the same problem (outer tile, inner
// register block, predicted forward traffic beside the skeleton's default tile's).
//
//   pnpm build   (or at least tensor, attention, io-complexity, webgpu, skeleton, fast-attention)
//   node benchmarks/fast/cpu.mjs [--n 4096] [--d 64] [--json]
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repo = join(here, '..', '..');
const dist = (p) => import(pathToFileURL(join(repo, 'packages', p, 'dist', 'index.js')).href);
const { DEVICE_CLASSES, planTwoLevel, tileCounts } = await dist('fast-attention');

const { values } = parseArgs({
  options: {
    n: { type: 'string', default: '4096' },
    d: { type: 'string', default: '64' },
    json: { type: 'boolean', default: false },
  },
});
const n = Number(values.n);
const d = Number(values.d);

// A block-sparse mask of 64 x 64 blocks: a local band of blocks plus every 8th block column
// ("global" keys), the shape of BigBird / Longformer-style sparsity.
function bandedMask(nb) {
  const mask = new Uint8Array(nb * nb);
  for (let i = 0; i < nb; i++)
    for (let j = 0; j < nb; j++) mask[i * nb + j] = Math.abs(i - j) <= 1 || j % 8 === 0 ? 1 : 0;
  return mask;
}
const nb = Math.ceil(n / 64);
const masks = [
  ['dense', {}],
  ['causal', { causal: true }],
  ['window [256, 0]', { window: [256, 0] }],
  ['window [128, 128]', { window: [128, 128] }],
  [
    'causal + block-sparse 64',
    { causal: true, blockSparse: { blockQ: 64, blockK: 64, mask: bandedMask(nb) } },
  ],
];
const tileShapes = [
  [64, 64],
  [128, 16],
  [32, 64],
];

const rows = [];
for (const [name, m] of masks) {
  for (const [blockQ, blockK] of tileShapes) {
    for (const backend of ['ts', 'webgpu']) {
      // The ts kernel's tiles divide the mask blocks; the WGSL tiles may straddle them.
      if (backend === 'ts' && m.blockSparse && (64 % blockQ !== 0 || 64 % blockK !== 0)) continue;
      const c = tileCounts({ seqQ: n, seqK: n, ...m }, { blockQ, blockK }, { backend });
      rows.push({ mask: name, tiles: `${blockQ}x${blockK}`, backend, ...c });
    }
  }
}

const plans = [];
for (const [name, dev] of Object.entries(DEVICE_CLASSES)) {
  for (const causal of [false, true]) {
    const p = planTwoLevel(dev, { seqQ: n, seqK: n, headDim: d, causal });
    plans.push({
      device: name,
      causal,
      outer: `${p.outer.blockQ}x${p.outer.blockK}`,
      fastBytes: p.outer.fastBytes,
      fastMemoryBytes: p.outer.fastMemoryBytes,
      inner: `${p.inner.rows}x${p.inner.cols}`,
      registers: p.inner.registers,
      predictedIO: p.predictedIO,
      default: p.defaultPlan ? `${p.defaultPlan.blockQ}x${p.defaultPlan.blockK}` : 'does not fit',
      defaultIO: p.defaultPlan?.predictedIO ?? null,
      ...(p.webgpu ? { forwardTiles: JSON.stringify(p.webgpu.tiles.forward) } : {}),
    });
  }
}

if (values.json) {
  console.log(JSON.stringify({ n, d, counters: rows, plans }, null, 1));
} else {
  console.log(`Tiling-mask counters, one (batch, head), Nq = Nk = ${n}:`);
  console.table(rows);
  console.log(
    `Two-level plans, N = ${n}, D = ${d} (predicted forward traffic in elements per head):`,
  );
  console.table(plans);
}
