import {
  type AttentionOptions,
  type AttentionProblem,
  allowed,
  keyRange,
  resolveAttentionProblem,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { classifyTile, FULL, SKIP } from './cpu/tile.js';
import { buildAux } from './webgpu/aux.js';

/**
 * Property tests: the tile classifications of the TS kernels (cpu/tile.ts) and of the WGSL
 * kernels (the shaders' key_lo / key_hi band test refined by aux.ts's host-side summary) agree
 * with spec.ts `allowed`, the normative mask rule, elementwise on random problems: a skipped
 * tile has no allowed pair, a mask-free tile has every pair allowed.
 */

interface Case {
  p: AttentionProblem;
  /** The block-sparse mask's block sizes (tiles of the TS kernels never straddle them). */
  blockQ: number;
  blockK: number;
}

function randomCase(rng: Rng): Case {
  const hq = rng.int(1, 3);
  const varlen = rng.uniform() < 0.4;
  const batch = rng.int(1, 3);
  const seqQ = Array.from({ length: batch }, () => rng.int(varlen ? 0 : 1, 50));
  const seqK = Array.from({ length: batch }, () => rng.int(varlen ? 0 : 1, 50));
  if (!varlen) seqQ.fill(seqQ[0]!);
  if (!varlen) seqK.fill(seqK[0]!);
  const maxQ = Math.max(1, ...seqQ);
  const maxK = Math.max(1, ...seqK);
  const options: AttentionOptions = {};
  const band = rng.int(0, 3);
  if (band === 1) options.causal = true;
  if (band === 2) options.window = [rng.int(-1, 12), rng.int(-1, 12)];
  if (band === 3) {
    options.causal = true;
    options.window = [rng.int(0, 12), -1];
  }
  let blockQ = 1;
  let blockK = 1;
  const extra = rng.int(0, 2);
  if (extra === 1) {
    blockQ = rng.int(2, 12);
    blockK = rng.int(2, 12);
    const nbq = Math.ceil(maxQ / blockQ);
    const nbk = Math.ceil(maxK / blockK);
    const perHead = rng.uniform() < 0.5;
    const shape = perHead ? [hq, nbq, nbk] : [nbq, nbk];
    const n = shape.reduce((a, x) => a * x, 1);
    options.blockSparse = {
      blockQ,
      blockK,
      mask: Tensor.from(
        Uint8Array.from({ length: n }, () => (rng.uniform() < 0.6 ? 1 : 0)),
        shape,
      ),
    };
  } else if (extra === 2) {
    const len = rng.int(2, 10);
    blockQ = blockK = rng.int(2, 10);
    options.maskMod = {
      name: 'doc',
      ts: (b, h, i, j) => Math.floor(i / (len + h + b)) === Math.floor(j / (len + h + b)),
      perBatch: true,
      perHead: true,
      blockSize: blockQ,
    };
  }
  let q: Tensor;
  let k: Tensor;
  if (varlen) {
    if (seqQ.every((n) => n === 0)) seqQ[0] = 1;
    if (seqK.every((n) => n === 0)) seqK[0] = 1;
    const cu = (s: number[]) => {
      const out = [0];
      for (const x of s) out.push(out[out.length - 1]! + x);
      return out;
    };
    options.layout = 'THD';
    options.cuSeqlensQ = cu(seqQ);
    options.cuSeqlensK = cu(seqK);
    q = rng.randn([cu(seqQ)[batch]!, hq, 4]);
    k = rng.randn([cu(seqK)[batch]!, 1, 4]);
  } else {
    q = rng.randn([batch, hq, seqQ[0]!, 4]);
    k = rng.randn([batch, 1, seqK[0]!, 4]);
  }
  return { p: resolveAttentionProblem(q, k, k, options), blockQ, blockK };
}

/** Allowed pairs and total pairs of rows [i0, i1) x keys [j0, j1) of (b, h). */
function countAllowed(
  p: AttentionProblem,
  b: number,
  h: number,
  i0: number,
  i1: number,
  j0: number,
  j1: number,
): [allowedPairs: number, total: number] {
  let pass = 0;
  let total = 0;
  for (let i = i0; i < i1; i++) {
    for (let j = j0; j < j1; j++) {
      total++;
      if (allowed(p, b, h, i, j)) pass++;
    }
  }
  return [pass, total];
}

describe('tile classifications agree with spec.ts allowed()', () => {
  test('WGSL: the key_lo/key_hi band test refined by the aux.ts tile summary', () => {
    const rng = new Rng(11);
    let skipped = 0;
    let free = 0;
    for (let trial = 0; trial < 150; trial++) {
      const { p } = randomCase(rng);
      const tileQ = rng.int(1, 20);
      const tileK = rng.int(1, 20);
      const t = buildAux(p, { tileQ, tileK });
      const bs = p.blockSparse;
      const perSlice = bs ? bs.nbq * bs.nbk : 1;
      for (let b = 0; b < p.batch; b++) {
        const nq = p.seqQ[b]!;
        const nk = p.seqK[b]!;
        for (let h = 0; h < p.hq; h++) {
          const slice = bs ? (b * bs.batchStride + h * bs.headStride) / perSlice : 0;
          for (let qt = 0; qt * tileQ < nq; qt++) {
            const i0 = qt * tileQ;
            const i1 = Math.min(nq, i0 + tileQ);
            // The shaders' tile loop: key_lo / key_hi (= keyRange) of the tile's first and last rows.
            const [loFirst, hiFirst] = keyRange(p, i0, nq, nk);
            const [loLast, hiLast] = keyRange(p, i1 - 1, nq, nk);
            for (let kt = 0; kt * tileK < nk; kt++) {
              const j0 = kt * tileK;
              const j1 = Math.min(nk, j0 + tileK);
              let skip = j0 >= Math.max(hiLast, 0) || j0 + tileK <= loFirst;
              let full = j0 >= loLast && j0 + tileK <= hiFirst;
              const state = bs ? t.aux[t.tsOff + slice * t.ntq * t.ntk + qt * t.ntk + kt]! : 2;
              if (state === 0) skip = true;
              if (state === 1) full = false;
              const [pass, total] = countAllowed(p, b, h, i0, i1, j0, j1);
              if (skip) {
                skipped++;
                expect(pass, `skipped tile (${b},${h},${qt},${kt})`).toBe(0);
              } else if (full) {
                free++;
                expect(pass, `mask-free tile (${b},${h},${qt},${kt})`).toBe(total);
              }
              // aux alone: 0 = no pair allowed; 2 = every pair of the band allowed.
              if (state === 0) expect(pass).toBe(0);
              if (state === 2) {
                for (let i = i0; i < i1; i++) {
                  const [lo, hi] = keyRange(p, i, nq, nk);
                  for (let j = j0; j < j1; j++) {
                    if (j >= lo && j < hi) expect(allowed(p, b, h, i, j)).toBe(true);
                  }
                }
              }
            }
          }
        }
      }
    }
    expect(skipped).toBeGreaterThan(100);
    expect(free).toBeGreaterThan(100);
  });

  test('TS kernels: cpu/tile.ts classifyTile on tiles aligned to the mask blocks', () => {
    const rng = new Rng(12);
    let skipped = 0;
    let free = 0;
    for (let trial = 0; trial < 150; trial++) {
      const { p, blockQ, blockK } = randomCase(rng);
      // Tiles never straddle a mask block (the TS plan aligns them): cut at block ends.
      const tileQ = rng.int(1, 20);
      const tileK = rng.int(1, 20);
      for (let b = 0; b < p.batch; b++) {
        const nq = p.seqQ[b]!;
        const nk = p.seqK[b]!;
        for (let h = 0; h < p.hq; h++) {
          for (let i0 = 0, r = 0; i0 < nq; i0 += r) {
            const qEnd = p.blockSparse ? (Math.floor(i0 / blockQ) + 1) * blockQ : nq;
            r = Math.min(tileQ, nq - i0, qEnd - i0);
            for (let j0 = 0, cols = 0; j0 < nk; j0 += cols) {
              const kEnd = p.blockSparse ? (Math.floor(j0 / blockK) + 1) * blockK : nk;
              cols = Math.min(tileK, nk - j0, kEnd - j0);
              const vis = classifyTile(p, b, h, i0, r, j0, cols);
              const [pass, total] = countAllowed(p, b, h, i0, i0 + r, j0, j0 + cols);
              if (vis === SKIP) {
                skipped++;
                expect(pass).toBe(0);
              } else if (vis === FULL) {
                // FULL is the band; the mask mod's test still runs in blocks marked 1.
                const modFree =
                  !p.maskMod ||
                  p.blockSparse!.mask[
                    b * p.blockSparse!.batchStride +
                      h * p.blockSparse!.headStride +
                      Math.floor(i0 / blockQ) * p.blockSparse!.nbk +
                      Math.floor(j0 / blockK)
                  ] === 2;
                if (modFree) {
                  free++;
                  expect(pass).toBe(total);
                }
              }
            }
          }
        }
      }
    }
    expect(skipped).toBeGreaterThan(100);
    expect(free).toBeGreaterThan(100);
  });
});
