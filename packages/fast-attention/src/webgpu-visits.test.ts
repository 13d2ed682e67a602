import { allowed, resolveAttentionProblem } from '@attnkit/attention';
import { SOFTMAX_HOOKS, tiledForwardWebGpu } from '@attnkit/skeleton';
import { Rng, Tensor } from '@attnkit/tensor';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { defaultLimitsContext } from './test-context.js';
import { TILE_SKIPPED, type TileCountProblem, tileClasses } from './tile-counts.js';

/**
 * tileCounts' webgpu rule against the WGSL FA2 forward itself. The kernel multiplies a visited
 * tile's whole P tile by its whole V tile, masked entries with P = 0, and 0 * NaN = NaN: with a
 * NaN in V row k0 of key tile kt only, some row of query tile qt comes out NaN exactly when the
 * kernel visited (qt, kt) (a row that sees k0 is NaN in the reference too, but then the tile
 * holds an allowed pair and is visited anyway). One run per key tile reads off the visited set.
 * A query tile none of whose rows sees any key has O = 0 whatever was visited (l = 0), so those
 * tiles are left out of the comparison.
 */
const ctx = await defaultLimitsContext();
const SEED = Number(process.env.ATTNKIT_TEST_SEED ?? Date.now() % 1_000_000);

afterAll(() => ctx?.device.destroy());

function options(p: TileCountProblem) {
  const bs = p.blockSparse;
  return {
    ...(p.causal ? { causal: true } : {}),
    ...(p.window ? { window: p.window } : {}),
    ...(bs
      ? {
          blockSparse: {
            blockQ: bs.blockQ,
            blockK: bs.blockK,
            mask: Tensor.from(Uint8Array.from(bs.mask), [
              Math.ceil(p.seqQ / bs.blockQ),
              Math.ceil(p.seqK / bs.blockK),
            ]),
          },
        }
      : {}),
  };
}

/** Per tile: 1 where the WGSL forward visited it (NaN probe), 0 where it did not. */
async function visitedByKernel(
  p: TileCountProblem,
  tiles: { tx: number; ty: number },
  rng: Rng,
): Promise<Uint8Array> {
  const d = 8;
  const br = 4 * tiles.ty;
  const bc = 4 * tiles.tx;
  const ntq = Math.ceil(p.seqQ / br);
  const ntk = Math.ceil(p.seqK / bc);
  const seen = new Uint8Array(ntq * ntk);
  const q = rng.randn([1, 1, p.seqQ, d], 'f32');
  const k = rng.randn([1, 1, p.seqK, d], 'f32');
  for (let kt = 0; kt < ntk; kt++) {
    const vData = Float32Array.from(rng.randn([1, 1, p.seqK, d], 'f32').toFloat32Array());
    vData.fill(Number.NaN, kt * bc * d, (kt * bc + 1) * d);
    const v = Tensor.from(vData, [1, 1, p.seqK, d]);
    const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as [Tensor, Tensor, Tensor];
    const pr = resolveAttentionProblem(gq, gk, gv, options(p));
    const { o, lse } = await tiledForwardWebGpu(pr, SOFTMAX_HOOKS, gq, gk, gv, {
      tiles: { forward: { ...tiles, rv: 1, cu: 1, kc: 8, mc: Math.min(16, bc) } },
      tensorCores: false,
    });
    const out = (await o.toCpu()).toFloat32Array();
    for (let qt = 0; qt < ntq; qt++) {
      const end = Math.min((qt + 1) * br, p.seqQ) * d;
      for (let x = qt * br * d; x < end; x++) {
        if (Number.isNaN(out[x]!)) {
          seen[qt * ntk + kt] = 1;
          break;
        }
      }
    }
    for (const t of [gq, gk, gv, o, lse]) t?.dispose();
  }
  return seen;
}

/** Query tiles where some row has an allowed key (elsewhere the NaN probe cannot see visits). */
function liveQueryTiles(p: TileCountProblem, br: number): Set<number> {
  const q = Tensor.from(new Float32Array(p.seqQ), [1, 1, p.seqQ, 1]);
  const k = Tensor.from(new Float32Array(p.seqK), [1, 1, p.seqK, 1]);
  const ap = resolveAttentionProblem(q, k, k, options(p));
  const live = new Set<number>();
  for (let i = 0; i < p.seqQ; i++)
    for (let j = 0; j < p.seqK; j++) if (allowed(ap, 0, 0, i, j)) live.add(Math.floor(i / br));
  return live;
}

describe.skipIf(!ctx)(
  `tileClasses (webgpu rule) vs the WGSL forward's visits (seed ${SEED})`,
  () => {
    test('causal, window and block-sparse masks (tiles straddling blocks), three tile shapes', async () => {
      const rng = new Rng(SEED);
      const shapes = [
        { tx: 4, ty: 2 },
        { tx: 2, ty: 4 },
        { tx: 4, ty: 4 },
      ];
      // Both outcomes must occur, or the comparison would prove nothing.
      let visitedSeen = 0;
      let skippedSeen = 0;
      for (let n = 0; n < 6; n++) {
        const tiles = shapes[n % 3]!;
        const br = 4 * tiles.ty;
        const bc = 4 * tiles.tx;
        const seqQ = rng.int(5, 60);
        const seqK = rng.int(5, 60);
        const p: TileCountProblem = { seqQ, seqK };
        if (n % 2 === 0) p.causal = true;
        if (n % 3 !== 0) p.window = [rng.int(0, 20), rng.int(-1, 20)];
        if (n >= 3) {
          const [bq, bk] = [rng.int(3, 12), rng.int(3, 12)];
          const len = Math.ceil(seqQ / bq) * Math.ceil(seqK / bk);
          const mask = Uint8Array.from({ length: len }, () => (rng.uniform() < 0.6 ? 1 : 0));
          p.blockSparse = { blockQ: bq, blockK: bk, mask };
        }
        const seen = await visitedByKernel(p, tiles, rng);
        const classes = tileClasses(p, { blockQ: br, blockK: bc }, { backend: 'webgpu' });
        const live = liveQueryTiles(p, br);
        const ntk = Math.ceil(seqK / bc);
        const label = JSON.stringify({
          p: {
            ...p,
            blockSparse: p.blockSparse && {
              ...p.blockSparse,
              mask: Array.from(p.blockSparse.mask),
            },
          },
          tiles,
        });
        for (let at = 0; at < classes.length; at++) {
          if (!live.has(Math.floor(at / ntk))) continue;
          if (classes[at] === TILE_SKIPPED) skippedSeen++;
          else visitedSeen++;
          expect(seen[at], `${label} tile ${Math.floor(at / ntk)},${at % ntk}`).toBe(
            classes[at] === TILE_SKIPPED ? 0 : 1,
          );
        }
      }
      expect(visitedSeen).toBeGreaterThan(0);
      expect(skippedSeen).toBeGreaterThan(0);
    });
  },
);
