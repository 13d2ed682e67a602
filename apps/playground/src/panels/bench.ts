import { type Backend, FAMILIES, type FamilyId, type RunSpec, timedKernel } from '../families.js';
import { gpu, requireGpu } from '../gpu.js';
import { offThread } from '../offthread.js';
import {
  checkbox,
  describeError,
  field,
  fixed,
  guarded,
  h,
  Job,
  nextFrame,
  numberInput,
  readInt,
} from '../ui.js';

export interface BenchRow {
  family: FamilyId;
  backend: Backend;
  ms: number;
  gflops: number;
  error?: string;
}

const COLORS: Record<Backend, string> = { webgpu: '#3b82f6', ts: '#f59e0b' };

/** Grouped horizontal bars: one group per family, one bar per backend (an SVG string). */
export function benchSvg(rows: readonly BenchRow[]): string {
  const families = [...new Set(rows.map((r) => r.family))];
  const backends = [...new Set(rows.map((r) => r.backend))];
  const max = Math.max(1e-9, ...rows.map((r) => (Number.isFinite(r.gflops) ? r.gflops : 0)));
  const barH = 16;
  const groupH = backends.length * barH + 12;
  const left = 90;
  const width = 560;
  const plotW = width - left - 80;
  const height = 30 + families.length * groupH + 24;
  const esc = (s: string) => s.replace(/[<>&]/g, (c) => `&#${c.charCodeAt(0)};`);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<text x="${left}" y="16" font-weight="bold">GFLOP/s (forward, median of the timed runs; higher is better)</text>`,
  ];
  families.forEach((f, fi) => {
    const y0 = 30 + fi * groupH;
    parts.push(
      `<text x="${left - 6}" y="${y0 + (backends.length * barH) / 2 + 4}" text-anchor="end">${esc(f)}</text>`,
    );
    backends.forEach((b, bi) => {
      const r = rows.find((x) => x.family === f && x.backend === b);
      if (!r) return;
      const y = y0 + bi * barH;
      const w = r.error ? 0 : Math.max(1, (r.gflops / max) * plotW);
      const label = r.error ? 'error' : fixed(r.gflops, r.gflops < 1 ? 3 : 1);
      parts.push(
        `<rect x="${left}" y="${y}" width="${w}" height="${barH - 3}" fill="${COLORS[b]}"><title>${esc(`${f} ${b}: ${label}`)}</title></rect>`,
        `<text x="${left + w + 4}" y="${y + barH - 5}">${esc(label)}</text>`,
      );
    });
  });
  const ly = height - 10;
  backends.forEach((b, i) => {
    const x = left + i * 110;
    parts.push(
      `<rect x="${x}" y="${ly - 10}" width="12" height="12" fill="${COLORS[b]}"/>`,
      `<text x="${x + 16}" y="${ly}">${b}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('');
}

/** The bench panel: each chosen family x backend timed on one shape, as a bar chart. */
export function benchPanel(): HTMLElement {
  const ids = Object.keys(FAMILIES) as FamilyId[];
  const famBoxes = new Map(ids.map((id) => [id, checkbox(`bench-${id}`, id !== 'hyper')] as const));
  const backBoxes = new Map(
    (['webgpu', 'ts'] as const).map((b) => [b, checkbox(`bench-backend-${b}`, true)] as const),
  );
  void gpu().then((s) => {
    if (s.kind !== 'ready') {
      const box = backBoxes.get('webgpu')!;
      box.checked = false;
      box.disabled = true;
    }
  });
  const B = numberInput('bench-B', 1, 1, 64);
  const H = numberInput('bench-H', 4, 1, 64);
  const N = numberInput('bench-N', 256, 1, 16384);
  const D = numberInput('bench-D', 64, 16, 256);
  const reps = numberInput('bench-reps', 3, 1, 50);
  const chart = h('div', { id: 'bench-chart', class: 'plot' });
  const out = h('div', { id: 'bench-out' });
  const button = h('button', { id: 'bench-go', type: 'button', class: 'primary' }, 'Bench');
  button.addEventListener('click', async () => {
    button.disabled = true;
    const job = new Job('bench');
    out.replaceChildren(job.element);
    chart.replaceChildren();
    const rows: BenchRow[] = [];
    try {
      const shape = {
        B: readInt(B, 'B'),
        H: readInt(H, 'H'),
        N: readInt(N, 'N'),
        D: readInt(D, 'D'),
      };
      const r = readInt(reps, 'runs');
      const jobs = ids
        .filter((id) => famBoxes.get(id)!.checked)
        .flatMap((family) =>
          (['webgpu', 'ts'] as const)
            .filter((b) => backBoxes.get(b)!.checked)
            .map((backend) => ({ family, backend })),
        );
      for (const [i, { family, backend }] of jobs.entries()) {
        if (job.signal.aborted) break;
        job.progress(i, jobs.length, `${family} on ${backend}`);
        await nextFrame();
        const f = FAMILIES[family];
        const spec: RunSpec = { family, shape, causal: false, backend, seed: 1 };
        try {
          const ctx = backend === 'webgpu' ? await requireGpu() : undefined;
          let ms: number;
          if (ctx) {
            // One warm-up (pipeline compiles), then `reps` timed runs; the median is kept.
            const times: number[] = [];
            const x = f.inputs(spec);
            for (let t = 0; t <= r; t++) {
              const what = `${family} on webgpu`;
              const run = await guarded(timedKernel(f, x, spec, ctx), 60_000, what, job.signal);
              if (t > 0) times.push(run.ms);
              await nextFrame();
            }
            ms = times.sort((a, b) => a - b)[Math.floor(times.length / 2)]!;
          } else {
            // ts in a worker (warm-up and median there too): Cancel stops it at once.
            ({ ms } = await offThread({ spec, want: 'ts', reps: r }, 120_000, job.signal));
          }
          rows.push({ family, backend, ms, gflops: f.flops(spec) / (ms * 1e6) });
        } catch (e) {
          if (job.signal.aborted) break;
          rows.push({
            family,
            backend,
            ms: Number.NaN,
            gflops: Number.NaN,
            error: describeError(e),
          });
        }
        chart.innerHTML = benchSvg(rows);
      }
      job.finish(
        job.signal.aborted
          ? `cancelled after ${rows.length} of ${jobs.length}`
          : `done: ${rows.length} runs`,
      );
      out.append(
        h(
          'table',
          { id: 'bench-table', class: 'grid' },
          h(
            'tr',
            {},
            ...['family', 'backend', 'ms', 'GFLOP/s', 'error'].map((t) => h('th', {}, t)),
          ),
          ...rows.map((x) =>
            h(
              'tr',
              { 'data-family': x.family, 'data-backend': x.backend },
              h('td', {}, x.family),
              h('td', {}, x.backend),
              h('td', {}, fixed(x.ms, 1)),
              h('td', {}, fixed(x.gflops, 3)),
              h('td', {}, x.error ?? ''),
            ),
          ),
        ),
      );
    } catch (e) {
      job.finish('failed');
      out.append(h('p', { class: 'fail' }, describeError(e)));
    } finally {
      button.disabled = false;
    }
  });
  return h(
    'section',
    { id: 'panel-bench', class: 'panel' },
    h('h2', {}, 'Bench'),
    h('div', { class: 'controls' }, ...[...famBoxes].map(([id, box]) => field(id, box))),
    h(
      'div',
      { class: 'controls' },
      ...[...backBoxes].map(([b, box]) => field(b, box)),
      field('B', B),
      field('H', H),
      field('N', N),
      field('D', D),
      field('timed runs', reps),
      button,
    ),
    h(
      'p',
      { class: 'note' },
      'Non-causal forward; time includes reading o back; GLA counts 4 B N H D² FLOPs, HyperAttention the exact attention count.',
    ),
    chart,
    out,
  );
}
