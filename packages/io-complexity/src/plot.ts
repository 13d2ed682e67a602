import { describe, ValueError } from '@attnkit/tensor';
import { type IOReportRow, ioReport, lowerBound } from './closed-form.js';
import { ALGORITHMS, positiveInt, resolveProblem } from './problem.js';

/**
 * I/O against fast-memory size for every algorithm (closed forms, default blocks), and a
 * dependency-free SVG of it: the log-log picture of Dao et al.'s Theorem 2 and Saha & Ye's
 * small-cache regime.
 */

export interface SweepOptions {
  N: number;
  d: number;
  dv?: number;
  /** Smallest fast memory (default d). */
  Mmin?: number;
  /** Largest fast memory (default N d). */
  Mmax?: number;
  /** Geometrically spaced values of M (default 49; fewer when the range has fewer integers). */
  points?: number;
}

export interface IOSweep {
  N: number;
  d: number;
  dv: number;
  Ms: number[];
  /** The report rows of every algorithm that runs, for every M. */
  rows: IOReportRow[];
}

export function ioSweep(options: SweepOptions): IOSweep {
  if (options === null || typeof options !== 'object') {
    throw new ValueError(
      `options: expected { N, d, Mmin?, Mmax?, points? }, got ${describe(options)}`,
      'options',
    );
  }
  const base = resolveProblem({ N: options.N, d: options.d, dv: options.dv, M: 1 });
  const { N, d, dv } = base;
  const Mmin = options.Mmin === undefined ? d : positiveInt(options.Mmin, 'Mmin');
  const Mmax = options.Mmax === undefined ? N * d : positiveInt(options.Mmax, 'Mmax');
  if (Mmax < Mmin) {
    throw new ValueError(`Mmax: expected at least Mmin = ${Mmin}, got ${Mmax}`, 'Mmax');
  }
  const points = options.points === undefined ? 49 : positiveInt(options.points, 'points');
  const Ms = new Set<number>();
  for (let i = 0; i < points; i++) {
    const t = points === 1 ? 0 : i / (points - 1);
    Ms.add(Math.round(Mmin * (Mmax / Mmin) ** t));
  }
  const sorted = [...Ms].sort((a, b) => a - b);
  // The resolved problem carries the caller's argument names (dv only if given) into errors.
  const rows = sorted.flatMap((M) => ioReport({ ...base, M }));
  return { N, d, dv, Ms: sorted, rows };
}

const COLORS: Record<string, string> = {
  standard: '#d62728',
  fa1: '#1f77b4',
  fa2: '#2ca02c',
  'fa2-backward': '#9467bd',
  'small-cache': '#ff7f0e',
  'lower bound': '#000000',
};

const SUPERSCRIPT = '⁰¹²³⁴⁵⁶⁷⁸⁹';

function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function superscript(n: number): string {
  return `${n < 0 ? '⁻' : ''}${[...String(Math.abs(n))].map((c) => SUPERSCRIPT[Number(c)]).join('')}`;
}

/** Powers of ten as "10³"; other ticks (1-2-5 steps) as plain numbers. */
function tickLabel(value: number, decades: boolean): string {
  if (!decades) return String(value);
  return `10${superscript(Math.round(Math.log10(value)))}`;
}

/** Ticks of a log axis over [lo, hi]: powers of ten, or 1-2-5 steps when fewer than 3 decades show. */
function logTicks(lo: number, hi: number): { ticks: number[]; decades: boolean } {
  const decades: number[] = [];
  const all: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v < lo * (1 - 1e-9) || v > hi * (1 + 1e-9)) continue;
      all.push(v);
      if (m === 1) decades.push(v);
    }
  }
  return decades.length >= 3 ? { ticks: decades, decades: true } : { ticks: all, decades: false };
}

function fmt(x: number): string {
  return x.toFixed(1);
}

/** The sweep as an SVG document: one `<path class="series">` per algorithm and one for the lower bound. */
export function sweepSvg(sweep: IOSweep): string {
  if (
    sweep === null ||
    typeof sweep !== 'object' ||
    !Array.isArray(sweep.rows) ||
    !Array.isArray(sweep.Ms)
  ) {
    throw new ValueError(`sweep: expected the result of ioSweep, got ${describe(sweep)}`, 'sweep');
  }
  if (sweep.Ms.length < 2) {
    throw new ValueError(
      `sweep: expected at least 2 values of M to plot, got ${sweep.Ms.length}`,
      'sweep',
    );
  }
  const { N, d, dv, Ms } = sweep;
  const series: { name: string; points: [number, number][] }[] = [];
  for (const algo of ALGORITHMS) {
    const points = sweep.rows
      .filter((r) => r.algo === algo)
      .map((r) => [r.M, r.total] as [number, number]);
    if (points.length > 0) series.push({ name: algo, points });
  }
  series.push({ name: 'lower bound', points: Ms.map((M) => [M, lowerBound(N, d, M, dv)]) });

  const width = 860;
  const height = 560;
  const left = 96;
  const right = 24;
  const top = 66;
  const bottom = 72;
  const pw = width - left - right;
  const ph = height - top - bottom;
  const xLo = Ms[0]!;
  const xHi = Ms.at(-1)!;
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const yLo = 10 ** Math.floor(Math.log10(Math.min(...ys)));
  const yHi = 10 ** Math.ceil(Math.log10(Math.max(...ys)));
  const X = (M: number) => left + (pw * Math.log(M / xLo)) / Math.log(xHi / xLo);
  const Y = (io: number) => top + ph - (ph * Math.log(io / yLo)) / Math.log(yHi / yLo);

  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="13">`,
  );
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(
    `<text x="${width / 2}" y="28" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(
      `Attention I/O vs fast-memory size (N = ${N}, d = ${d}${dv === d ? '' : `, dv = ${dv}`})`,
    )}</text>`,
  );
  out.push(
    `<text x="${width / 2}" y="46" text-anchor="middle" font-size="12" fill="#555555">closed forms; FA1 with the paper's blocks, the others with I/O-optimal blocks for each M</text>`,
  );
  // Grid and ticks.
  const xTicks = logTicks(xLo, xHi);
  for (const t of xTicks.ticks) {
    const x = fmt(X(t));
    out.push(`<line x1="${x}" y1="${top}" x2="${x}" y2="${top + ph}" stroke="#e6e6e6"/>`);
    out.push(`<line x1="${x}" y1="${top + ph}" x2="${x}" y2="${top + ph + 6}" stroke="#000000"/>`);
    out.push(
      `<text class="tick" x="${x}" y="${top + ph + 22}" text-anchor="middle">${tickLabel(t, xTicks.decades)}</text>`,
    );
  }
  const yTicks = logTicks(yLo, yHi);
  for (const t of yTicks.ticks) {
    const y = fmt(Y(t));
    out.push(`<line x1="${left}" y1="${y}" x2="${left + pw}" y2="${y}" stroke="#e6e6e6"/>`);
    out.push(`<line x1="${left - 6}" y1="${y}" x2="${left}" y2="${y}" stroke="#000000"/>`);
    out.push(
      `<text class="tick" x="${left - 10}" y="${y}" text-anchor="end" dominant-baseline="middle">${tickLabel(t, yTicks.decades)}</text>`,
    );
  }
  out.push(
    `<rect x="${left}" y="${top}" width="${pw}" height="${ph}" fill="none" stroke="#000000"/>`,
  );
  // M = d^2 separates Saha & Ye's small-cache regime from FlashAttention's optimal one.
  const d2 = d * d;
  if (d2 > xLo && d2 < xHi) {
    const x = fmt(X(d2));
    out.push(
      `<line x1="${x}" y1="${top}" x2="${x}" y2="${top + ph}" stroke="#555555" stroke-dasharray="2,4"/>`,
    );
    out.push(
      `<text x="${fmt(X(d2) + 5)}" y="${top + ph - 10}" fill="#555555" font-size="12">M = d²</text>`,
    );
  }
  out.push(
    `<text x="${left + pw / 2}" y="${height - 20}" text-anchor="middle">fast memory M (elements)</text>`,
  );
  out.push(
    `<text x="22" y="${top + ph / 2}" text-anchor="middle" transform="rotate(-90 22 ${top + ph / 2})">slow-memory I/O (elements read + written)</text>`,
  );
  // Series.
  for (const s of series) {
    const path = s.points
      .map(([M, io], i) => `${i === 0 ? 'M' : 'L'}${fmt(X(M))},${fmt(Y(io))}`)
      .join(' ');
    const dash = s.name === 'lower bound' ? ' stroke-dasharray="7,4"' : '';
    out.push(
      `<path class="series" data-series="${escapeXml(s.name)}" d="${path}" fill="none" stroke="${COLORS[s.name]}" stroke-width="2"${dash}/>`,
    );
  }
  // Legend, top right, where every curve has fallen away.
  const lw = 178;
  const lx = left + pw - lw - 10;
  const ly = top + 10;
  out.push(
    `<rect x="${lx}" y="${ly}" width="${lw}" height="${series.length * 20 + 12}" fill="#ffffff" stroke="#999999"/>`,
  );
  series.forEach((s, i) => {
    const y = ly + 18 + i * 20;
    const dash = s.name === 'lower bound' ? ' stroke-dasharray="7,4"' : '';
    out.push(
      `<line x1="${lx + 10}" y1="${y}" x2="${lx + 40}" y2="${y}" stroke="${COLORS[s.name]}" stroke-width="2"${dash}/>`,
    );
    out.push(
      `<text class="legend" x="${lx + 48}" y="${y}" dominant-baseline="middle">${escapeXml(s.name)}</text>`,
    );
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
