import { allowed, resolveAttentionProblem } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { checkbox, field, h, numberInput, readInt, reportError, select } from '../ui.js';

/**
 * Attention maps: one head's weights P (float64, computed here from the family's formula) as a
 * heat map, with the mask of @attnkit/attention's `allowed()` — the rule every kernel
 * implements — drawn as grey hatching where a pair is masked out.
 */

type MapKind = 'softmax' | 'sigmoid' | 'hstu' | 'gla';

export interface AttentionMap {
  n: number;
  /** Row-major N x N weights; NaN where masked. */
  p: Float64Array;
  blockSize: number;
  blockSparse: boolean;
}

export function computeMap(
  kind: MapKind,
  n: number,
  d: number,
  causal: boolean,
  windowLeft: number,
  sparse: boolean,
  seed: number,
): AttentionMap {
  const rng = new Rng(seed);
  const q = rng.randn([1, 1, n, d]);
  const k = rng.randn([1, 1, n, d]);
  const blockSize = 16;
  const nb = Math.ceil(n / blockSize);
  // Block-sparse: the diagonal blocks and a seeded half of the rest are kept.
  const mask = Int32Array.from({ length: nb * nb }, (_, x) =>
    Math.floor(x / nb) === x % nb || rng.uniform() < 0.5 ? 1 : 0,
  );
  const gla = kind === 'gla';
  const problem = resolveAttentionProblem(q, k, k, {
    causal: causal || gla,
    window: windowLeft >= 0 ? [windowLeft, -1] : undefined,
    blockSparse: sparse
      ? { blockQ: blockSize, blockK: blockSize, mask: Tensor.from(mask, [nb, nb], 'i32') }
      : undefined,
  });
  const Q = q.toFloat64Array();
  const K = k.toFloat64Array();
  // GLA: A_ij = scale sum_c q_ic k_jc exp(G_ic - G_jc), G the cumulative log gates.
  const G = new Float64Array(n * d);
  if (gla) {
    const z = rng.randn([n, d]).toFloat64Array();
    for (let i = 0; i < n; i++) {
      for (let c = 0; c < d; c++) {
        const g = -Math.log1p(Math.exp(-z[i * d + c]!)) / 16;
        G[i * d + c] = (i > 0 ? G[(i - 1) * d + c]! : 0) + g;
      }
    }
  }
  const scale = 1 / Math.sqrt(d);
  const p = new Float64Array(n * n).fill(Number.NaN);
  for (let i = 0; i < n; i++) {
    const row: number[] = [];
    for (let j = 0; j < n; j++) {
      if (!allowed(problem, 0, 0, i, j)) continue;
      let s = 0;
      for (let c = 0; c < d; c++) {
        const qk = Q[i * d + c]! * K[j * d + c]!;
        s += gla ? qk * Math.exp(G[i * d + c]! - G[j * d + c]!) : qk;
      }
      s *= scale;
      let w: number;
      if (kind === 'sigmoid') w = 1 / (1 + Math.exp(-(s - Math.log(n))));
      else if (kind === 'hstu') w = s / (1 + Math.exp(-s)) / n;
      else w = s;
      p[i * n + j] = w;
      row.push(j);
    }
    if (kind === 'softmax' && row.length > 0) {
      let max = Number.NEGATIVE_INFINITY;
      for (const j of row) max = Math.max(max, p[i * n + j]!);
      let sum = 0;
      for (const j of row) sum += p[i * n + j] = Math.exp(p[i * n + j]! - max);
      for (const j of row) p[i * n + j]! /= sum;
    }
  }
  return { n, p, blockSize, blockSparse: sparse };
}

/** Warm ramp (black-red-yellow-white) for w >= 0, blue for w < 0; by |w| / max|w|. */
function color(t: number): [number, number, number] {
  const a = Math.min(1, Math.abs(t)) ** 0.5; // sqrt: small weights stay visible
  if (t < 0) return [20, 40 + 120 * a, 60 + 195 * a];
  return [
    Math.round(255 * Math.min(1, 2.2 * a)),
    Math.round(255 * Math.max(0, Math.min(1, 2 * a - 0.5))),
    Math.round(255 * Math.max(0, 3 * a - 2)),
  ];
}

export function drawMap(canvas: HTMLCanvasElement, m: AttentionMap): void {
  const { n, p } = m;
  canvas.width = n;
  canvas.height = n;
  const g = canvas.getContext('2d');
  if (!g) throw new Error('canvas: no 2d context');
  let max = 0;
  for (const w of p) if (!Number.isNaN(w)) max = Math.max(max, Math.abs(w));
  const img = g.createImageData(n, n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const w = p[i * n + j]!;
      const o = 4 * (i * n + j);
      let rgb: [number, number, number];
      // Masked pairs: grey diagonal hatching, so the mask reads apart from a zero weight (black).
      if (Number.isNaN(w)) rgb = (i + j) % 4 < 2 ? [70, 70, 80] : [110, 110, 120];
      else rgb = color(max > 0 ? w / max : 0);
      img.data.set([...rgb, 255], o);
    }
  }
  g.putImageData(img, 0, 0);
}

export function mapPanel(): HTMLElement {
  const kind = select(
    'map-kind',
    [
      ['softmax', 'softmax (flash, sage, hyper)'],
      ['sigmoid', 'sigmoid'],
      ['hstu', 'hstu (silu / N)'],
      ['gla', 'gla (gated linear, causal)'],
    ],
    'softmax',
  );
  const N = numberInput('map-N', 96, 1, 256);
  const D = numberInput('map-D', 32, 1, 256);
  const causal = checkbox('map-causal', true);
  const win = numberInput('map-window', -1, -1, 256);
  const sparse = checkbox('map-sparse', false);
  const canvas = h('canvas', { id: 'map-canvas', class: 'heat' });
  const caption = h('p', { id: 'map-caption', class: 'note' });
  const draw = () => {
    try {
      const m = computeMap(
        kind.value as MapKind,
        readInt(N, 'N'),
        readInt(D, 'D'),
        causal.checked,
        readInt(win, 'window left'),
        sparse.checked,
        7,
      );
      drawMap(canvas, m);
      const masked = m.p.reduce((a, w) => a + (Number.isNaN(w) ? 1 : 0), 0);
      caption.textContent =
        `head 0 of batch 0, N ${m.n}: ${masked} of ${m.n * m.n} pairs masked (grey hatching)` +
        `${m.blockSparse ? `, ${m.blockSize}x${m.blockSize} blocks` : ''}; colour = weight / max|weight| (sqrt scale), blue < 0; rows are queries, columns keys`;
    } catch (e) {
      reportError('attention map', e);
    }
  };
  const button = h(
    'button',
    { id: 'map-go', type: 'button', class: 'primary', onclick: draw },
    'Draw',
  );
  for (const c of [kind, causal, sparse]) c.addEventListener('change', draw);
  queueMicrotask(draw);
  return h(
    'section',
    { id: 'panel-map', class: 'panel' },
    h('h2', {}, 'Attention map'),
    h(
      'div',
      { class: 'controls' },
      field('weights', kind),
      field('N (<= 256)', N),
      field('D', D),
      field('causal', causal),
      field('window left (-1: none)', win),
      field('block-sparse', sparse),
      button,
    ),
    canvas,
    caption,
  );
}
