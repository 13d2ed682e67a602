import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import {
  ALGORITHMS,
  closedFormIO,
  defaultBlocks,
  ExactCountError,
  type IOReportRow,
  type IOSweep,
  ioSweep,
  isAlgorithm,
  lowerBound,
  reportRow,
  simulate,
  simulationSteps,
  sweepSvg,
} from '@attnkit/io-complexity';
import { AttnkitError, ValueError } from '@attnkit/tensor';

/**
 * Most points `io --sweep --points` takes: more than the plot's ~800 pixels across, and each
 * point searches every algorithm's optimal blocks (about 1 ms at N = 1024, 0.2 s at N = 1e6),
 * so 1,000 points is a second at the defaults and a larger count only burns time.
 */
export const MAX_POINTS = 1000;

/**
 * Most block visits `io --simulate` runs (simulationSteps): 0.1-0.5 us each when only counting,
 * so about 10 s at worst. A [64, 0] window at N = 1e7 takes about 1e7.
 */
export const MAX_SIMULATION_STEPS = 2e7;
const MAX_SIMULATION_STEPS_TEXT = '2e7';

export interface IoCommandIo {
  out(text: string): void;
  err(text: string): void;
}

export const IO_USAGE = `  attnkit io --algo ${ALGORITHMS.join('|')} --N <n> --d <d> --M <m> [--dv <dv>] [--simulate [--causal] [--window <left,right>]] [--json]
      Slow-memory reads and writes (elements) of one attention head with a fast memory of M
      elements, the peak fast-memory use and the ratio to the I/O lower bound. Closed forms by
      default; --simulate runs the algorithm's loops against the two-level memory simulator
      (refused past ${MAX_SIMULATION_STEPS_TEXT} block visits: use the closed form);
      --causal / --window (fa2, fa2-backward, with --simulate) skip the tiles the causal /
      sliding-window mask rule drops (-1 = unbounded side).
  attnkit io --sweep [--N 1024] [--d 64] [--Mmin <d>] [--Mmax <N*d>] [--points 49] [--svg out.svg] [--json]
      Every algorithm's I/O for M from Mmin to Mmax (geometric steps; at most ${MAX_POINTS} points);
      --svg writes a log-log plot.`;

/** Flags whose library errors name the argument without the dashes. */
const FLAG_ARGUMENTS = new Set(['N', 'd', 'dv', 'M', 'Mmin', 'Mmax', 'points', 'causal', 'window']);

function intFlag(value: string | undefined, flag: string, fallback?: number): number {
  if (value === undefined) {
    if (fallback !== undefined) return fallback;
    throw new ValueError(`--${flag}: expected a positive integer, got nothing`, `--${flag}`);
  }
  if (!/^[1-9][0-9]*$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new ValueError(`--${flag}: expected a positive integer, got "${value}"`, `--${flag}`);
  }
  return Number(value);
}

/** A sweep spaces its points geometrically from Mmin to Mmax, which takes at least the two ends. */
function pointsFlag(value: string): number {
  if (/^[0-9]+$/.test(value) && value.length > 15) {
    // Past 2^53 too: the cap, not "a positive integer", is what the user needs to hear.
    throw new ValueError(
      `--points: expected at most ${MAX_POINTS} (more than the plot's pixels), got "${value}"`,
      '--points',
    );
  }
  const points = intFlag(value, 'points');
  if (points < 2) {
    throw new ValueError(
      `--points: expected an integer >= 2 (the sweep's two ends, Mmin and Mmax), got "${value}"`,
      '--points',
    );
  }
  if (points > MAX_POINTS) {
    throw new ValueError(
      `--points: expected at most ${MAX_POINTS} (more than the plot's pixels), got "${value}"`,
      '--points',
    );
  }
  return points;
}

/** --window left,right: two integers >= -1 (-1 = unbounded), checked further by the library. */
function windowFlag(value: string): [number, number] {
  const m = /^(-?[0-9]+),(-?[0-9]+)$/.exec(value);
  const w = m ? [Number(m[1]), Number(m[2])] : [];
  if (w.length !== 2 || !w.every((x) => Number.isSafeInteger(x) && x >= -1)) {
    throw new ValueError(
      `--window: expected left,right (integers >= -1, -1 = unbounded), got "${value}"`,
      '--window',
    );
  }
  return w as [number, number];
}

function formatRow(row: IOReportRow, blocks: string, source: string): string {
  return [
    `${row.algo}: N = ${row.N}, d = ${row.d}, M = ${row.M}, ${blocks} (${source})`,
    `reads        ${row.reads}`,
    `writes       ${row.writes}`,
    `total        ${row.total}`,
    `peak fast    ${row.peakFast} of ${row.M} elements`,
    `lower bound  ${Math.ceil(row.lowerBound)}`,
    `ratio        ${row.ratio.toFixed(3)}`,
  ].join('\n');
}

function formatSweep({ N, d, dv, Ms, rows }: IOSweep): string {
  const header = ['M', 'lower bound', ...ALGORITHMS];
  const lines = [header];
  for (const M of Ms) {
    const at = rows.filter((r) => r.M === M);
    // The bound holds for every M, including those where no algorithm fits (no rows there).
    lines.push([
      String(M),
      String(Math.ceil(lowerBound(N, d, M, dv))),
      ...ALGORITHMS.map((a) => String(at.find((r) => r.algo === a)?.total ?? '-')),
    ]);
  }
  const widths = header.map((_, c) => Math.max(...lines.map((l) => l[c]!.length)));
  return lines.map((l) => l.map((cell, c) => cell.padStart(widths[c]!)).join('  ')).join('\n');
}

async function run(args: string[], io: IoCommandIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      help: { type: 'boolean', short: 'h', default: false },
      algo: { type: 'string' },
      N: { type: 'string' },
      d: { type: 'string' },
      dv: { type: 'string' },
      M: { type: 'string' },
      simulate: { type: 'boolean', default: false },
      causal: { type: 'boolean', default: false },
      window: { type: 'string' },
      json: { type: 'boolean', default: false },
      sweep: { type: 'boolean', default: false },
      Mmin: { type: 'string' },
      Mmax: { type: 'string' },
      points: { type: 'string' },
      svg: { type: 'string' },
    },
  });
  if (values.help) {
    io.out(`Usage:\n${IO_USAGE}`);
    return 0;
  }
  if (values.sweep) {
    for (const flag of ['algo', 'M', 'simulate', 'causal', 'window'] as const) {
      if (values[flag] !== undefined && values[flag] !== false) {
        throw new ValueError(
          `--${flag}: not used with --sweep (it covers every algorithm and M)`,
          `--${flag}`,
        );
      }
    }
    const N = intFlag(values.N, 'N', 1024);
    const d = intFlag(values.d, 'd', 64);
    const sweep = ioSweep({
      N,
      d,
      dv: values.dv === undefined ? undefined : intFlag(values.dv, 'dv'),
      Mmin: values.Mmin === undefined ? undefined : intFlag(values.Mmin, 'Mmin'),
      Mmax: values.Mmax === undefined ? undefined : intFlag(values.Mmax, 'Mmax'),
      points: values.points === undefined ? undefined : pointsFlag(values.points),
    });
    if (values.svg !== undefined) {
      if (values.svg === '') throw new ValueError('--svg: expected a file name, got ""', '--svg');
      await writeFile(values.svg, sweepSvg(sweep));
    }
    if (values.json) io.out(JSON.stringify(sweep.rows));
    else {
      io.out(formatSweep(sweep));
      if (values.svg !== undefined) io.out(`wrote ${values.svg}`);
    }
    return 0;
  }
  for (const flag of ['Mmin', 'Mmax', 'points', 'svg'] as const) {
    if (values[flag] !== undefined) {
      throw new ValueError(`--${flag}: only used with --sweep`, `--${flag}`);
    }
  }
  if (!isAlgorithm(values.algo)) {
    throw new ValueError(
      `--algo: expected one of ${ALGORITHMS.join(', ')}, got ${values.algo === undefined ? 'nothing' : `"${values.algo}"`}`,
      '--algo',
    );
  }
  const algo = values.algo;
  const problem = {
    N: intFlag(values.N, 'N'),
    d: intFlag(values.d, 'd'),
    dv: values.dv === undefined ? undefined : intFlag(values.dv, 'dv'),
    M: intFlag(values.M, 'M'),
    causal: values.causal || undefined,
    window: values.window === undefined ? undefined : windowFlag(values.window),
  };
  for (const flag of ['causal', 'window'] as const) {
    if (values[flag] !== undefined && values[flag] !== false && !values.simulate) {
      throw new ValueError(
        `--${flag}: needs --simulate (the closed forms count dense attention)`,
        `--${flag}`,
      );
    }
  }
  const blocks = defaultBlocks(algo, problem);
  if (values.simulate) {
    // The simulator visits blocks one by one: a large dense N would run for hours where the
    // closed form answers at once. Refuse up front rather than hang.
    const steps = simulationSteps(algo, problem, blocks);
    if (steps > MAX_SIMULATION_STEPS) {
      throw new ValueError(
        `--simulate: ${algo} at --N ${problem.N} would visit about ${steps.toExponential(2)} blocks, more than ${MAX_SIMULATION_STEPS_TEXT} (minutes of simulation); drop --simulate for the closed form (dense), or lower --N or narrow --window`,
        '--simulate',
      );
    }
  }
  const counts = values.simulate
    ? simulate(algo, problem, { blocks })
    : closedFormIO(algo, problem, blocks);
  const row = reportRow(algo, problem, counts);
  if (values.json) {
    io.out(JSON.stringify(row));
  } else {
    const b =
      'tile' in blocks
        ? `tile ${blocks.tile}, chunk ${blocks.chunk}`
        : `blockQ ${blocks.blockQ}, blockK ${blocks.blockK}`;
    io.out(formatRow(row, b, values.simulate ? 'simulated' : 'closed form'));
  }
  return 0;
}

/**
 * `attnkit io`: I/O of one algorithm, or a sweep over M with an SVG plot. Returns 0, or 2 after
 * a one-line error naming the flag at fault.
 */
export async function ioCommand(args: string[], io: IoCommandIo): Promise<number> {
  try {
    return await run(args, io);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (error instanceof ExactCountError) {
      // The library names the problem's fields; here they are flags (--N/--d/--window).
      io.err(`attnkit io: ${error.fields.map((f) => `--${f}`).join('/')}: ${error.detail}`);
      return 2;
    }
    if (error instanceof AttnkitError) {
      const named = error.argument !== undefined && FLAG_ARGUMENTS.has(error.argument);
      io.err(`attnkit io: ${named ? '--' : ''}${error.message}`);
      return 2;
    }
    if (
      code?.startsWith('ERR_PARSE_ARGS') ||
      code === 'ENOENT' ||
      code === 'EACCES' ||
      code === 'EISDIR'
    ) {
      io.err(`attnkit io: ${(error as Error).message.split('\n')[0]}`);
      return 2;
    }
    throw error;
  }
}
