import { existsSync, statSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname, extname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { registeredKernels } from '@attnkit/attention';
import { AttnkitError, ValueError } from '@attnkit/tensor';
import type { DawnBackend } from '@attnkit/webgpu';
import {
  BENCH_FAMILIES,
  type BenchFamily,
  DEFAULT_BENCH,
  formatBenchTable,
  parseShape,
  runBench,
} from './bench.js';
import { collectInfo, formatInfo } from './info.js';
import { IO_USAGE, ioCommand } from './io.js';
import { formatVerifyReport, reportToJson, verifyFile } from './verify.js';

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

const consoleIo: CliIo = {
  out: (t) => process.stdout.write(`${t}\n`),
  err: (t) => process.stderr.write(`${t}\n`),
};

export const VERIFY_USAGE = `  attnkit verify <file.safetensors>... [--backend <name>] [--algorithm fa1|fa2] [--json]
                 [--family lean [--partition fa2|splitK|streamK]]
                 [--family sage [--qk-bits 8|4] [--granularity block|warp|thread]]
                 [--family gla [--form chunk|recurrent]]
      Runs a golden reference file on a backend and compares every reference tensor with the
      KERNELS.md tolerance; exits 0 only if all are within it.
      Backends: every one the kernel registry has for the golden's family — ts (pure
      TypeScript), native (C++ engine: threads + SIMD), webgpu (WGSL on Dawn); softmax, sigmoid,
      hstu and gla kinds, as registered — and reference (float64, every kind). Every reference
      tensor in the file must be produced and within tolerance: one the backend does not
      produce is a FAIL. Default: the registry's choice for cpu tensors (native when the addon
      loads, else ts); reference for kinds without a fast kernel.
      --family lean: runs a softmax golden (softmax_decode is LeanAttention's) through the
      LeanAttention decode kernels of @attnkit/lean-attention (ts, native, webgpu) instead,
      with --partition fa2, splitK or streamK (default streamK, with the backend's default
      workers); not with --algorithm.
      --family sage: runs a BHND softmax golden's forward through SageAttention2
      (@attnkit/sage-attention; ts, native, webgpu) with INT8 (default) or INT4 Q·K, prints
      o's cosine similarity, relative L1 and L2 against the golden's float64 o, and passes when
      KERNELS.md's bars hold (INT8: cos >= 0.999 and rel_l1 <= 0.03; INT4: cos >= 0.99).
      --family gla: runs a gla golden (o, the final state ht and dq, dk, dv, dgk, dh0) through
      the GLA kernels of @attnkit/linear-attention in the --form chunk (chunkGla, default) or
      recurrent (fusedRecurrentGla), at KERNELS.md's chunked-GLA tolerance.`;

export const BENCH_USAGE = `  attnkit bench [--family flash|softmax|sigmoid|hstu|sage|gla|hyper] [--backend ts|webgpu|native] [--shape B,H,N,D] [--causal]
                [--algorithm fa1|fa2] [--score-mod none|alibi|softcap:<cap>] [--qk-bits 8|4]
                [--block-size n] [--sample-size n] [--min-seq-len n]
                [--repeats 5] [--warmup 1] [--no-reference] [--forward-only] [--json] [--out file.json|dir]
      Times forward and backward through the kernel registry (median after warm-up), prints
      GFLOP/s beside the float64 reference's time on the same shape. Default backend: the
      registry's choice for cpu tensors (native when the addon loads, else ts).
      --family hstu: B sequences of length N (seqOffsets 0,N,2N,...; [B*N,H,D] tensors),
      maxSeqLen N, alpha 1/sqrt(D), peer hstuAttentionReference; full mask unless --causal (as
      for every family, although hstuAttention itself defaults to causal); FLOPs counted as
      FlashAttention's. --score-mod with hstu needs --no-reference (its peer has no mods).
      --family sage: SageAttention2's forward only (an inference kernel), INT8 Q·K unless
      --qk-bits 4; the time includes the quantization pre-pass; the rate is TOPS-style
      4*B*H*N^2*D (halved causal) per second; each row reports o's cosine similarity to the
      float64 reference when the reference runs.
      --family gla: chunkGla (GLA's chunkwise form, C 64) on [B, N, H, D] tensors (BTHK,
      K = V = D) with gates log sigmoid(normal) / 16; causal by construction (no --causal); the
      rate counts the chunk form's own FLOPs (glaFlops), not attention's 4 B H N^2 D; peer: the
      float64 recurrence (glaReference).
      --family hyper: HyperAttention (@attnkit/hyper-attention, approximate) with its defaults or
      --block-size, --sample-size, --min-seq-len; seed 1; the rate counts exact attention's FLOPs
      (what the approximation stands in for); each row reports o's relative Frobenius error
      against exact attention in float64 when the reference runs.
      --repeats is at least 1; --warmup may be 0. --out writes the JSON results to a file, or to
      bench-<date>.json inside an existing directory; its directory must exist (checked before
      the run). Without --out nothing is written.`;

export const INFO_USAGE = `  attnkit info [--json] [--webgpu-backend vulkan|opengles|metal|d3d12|...] [--dawn-toggles a,b]
      What this machine offers attnkit: which backends load (ts, native, webgpu) and the WebGPU
      adapter (vendor, architecture, device, description), Dawn backend and toggles, features,
      subgroup sizes, subgroup-matrix (tensor-core) configs and limits. --dawn-toggles ''
      creates the adapter with no toggles (default: allow_unsafe_apis,vulkan_enable_f16_on_nvidia).
      Exits 0 when WebGPU is unavailable too (it says why, and how to install Dawn).`;

export const USAGE = `attnkit: fast, exact attention for JavaScript

Usage:
${INFO_USAGE}
${VERIFY_USAGE}
${BENCH_USAGE}
${IO_USAGE}
  attnkit help`;

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * Where `bench --out` writes, decided before the run: an existing directory gets
 * bench-<date>.json inside it; an existing file is overwritten; otherwise a new file whose
 * directory must exist. A path that does not exist and looks like a directory (trailing slash,
 * no extension) is an error, not a new file.
 */
export function benchOutPath(out: string, date: Date): string {
  if (isDirectory(out)) return join(out, `bench-${date.toISOString().replace(/[:.]/g, '-')}.json`);
  if (existsSync(out)) return out; // an existing file: overwritten
  if (/[\\/]$/.test(out) || extname(out) === '') {
    throw new ValueError(
      `--out: directory "${out}" does not exist (give an existing directory or a file path like results.json)`,
      '--out',
    );
  }
  if (!isDirectory(dirname(out))) {
    throw new ValueError(`--out: directory "${dirname(out)}" of "${out}" does not exist`, '--out');
  }
  return out;
}

function fail(io: CliIo, message: string): number {
  io.err(`attnkit: ${message}`);
  return 2;
}

async function verify(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      help: { type: 'boolean', short: 'h', default: false },
      backend: { type: 'string' },
      algorithm: { type: 'string' },
      family: { type: 'string' },
      partition: { type: 'string' },
      'qk-bits': { type: 'string' },
      granularity: { type: 'string' },
      form: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    io.out(`Usage:\n${VERIFY_USAGE}`);
    return 0;
  }
  if (positionals.length === 0) return fail(io, 'verify: expected at least one <file.safetensors>');
  const algorithm = values.algorithm;
  if (algorithm !== undefined && algorithm !== 'fa1' && algorithm !== 'fa2') {
    return fail(io, `--algorithm: expected fa1 or fa2, got "${algorithm}"`);
  }
  let allOk = true;
  const reports = [];
  for (const file of positionals) {
    const report = await verifyFile(file, {
      backend: values.backend,
      algorithm,
      family: values.family,
      partition: values.partition,
      qkBits: bitsFlag(values['qk-bits']),
      granularity: values.granularity,
      form: values.form,
    });
    allOk &&= report.ok;
    reports.push(report);
    if (!values.json) {
      if (positionals.length > 1) io.out(`== ${file} (${report.kind}, ${report.backend})`);
      io.out(formatVerifyReport(report));
    }
  }
  if (values.json) {
    io.out(
      reports.length === 1 ? reportToJson(reports[0]!) : `[${reports.map(reportToJson).join(',')}]`,
    );
  }
  return allOk ? 0 : 1;
}

/** --qk-bits: 4 or 8 (ValueError naming it otherwise); undefined when absent. */
function bitsFlag(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (text !== '4' && text !== '8')
    throw new ValueError(`--qk-bits: expected 4 or 8, got "${text}"`, 'qkBits');
  return Number(text);
}

/** A count flag: decimal digits only (Number() would take "", "1e1" and "0x10"), at least `min`. */
function countFlag(text: string | undefined, name: string, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n) || n < min) {
    throw new ValueError(`--${name}: expected an integer >= ${min}, got "${text}"`, `--${name}`);
  }
  return n;
}

async function bench(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      help: { type: 'boolean', short: 'h', default: false },
      family: { type: 'string', default: 'flash' },
      backend: { type: 'string' },
      'score-mod': { type: 'string', default: 'none' },
      shape: { type: 'string' },
      causal: { type: 'boolean', default: false },
      algorithm: { type: 'string', default: 'fa2' },
      repeats: { type: 'string' },
      warmup: { type: 'string' },
      'no-reference': { type: 'boolean', default: false },
      'forward-only': { type: 'boolean', default: false },
      'qk-bits': { type: 'string' },
      'block-size': { type: 'string' },
      'sample-size': { type: 'string' },
      'min-seq-len': { type: 'string' },
      json: { type: 'boolean', default: false },
      out: { type: 'string' },
    },
  });
  if (values.help) {
    io.out(`Usage:\n${BENCH_USAGE}`);
    return 0;
  }
  if (!(BENCH_FAMILIES as readonly string[]).includes(values.family))
    return fail(io, `--family: expected ${BENCH_FAMILIES.join(', ')}, got "${values.family}"`);
  const backends = [...new Set(registeredKernels().map((r) => r.backend))];
  if (values.backend !== undefined && !backends.includes(values.backend)) {
    return fail(io, `--backend: expected ${backends.join(', ')}, got "${values.backend}"`);
  }
  if (values.algorithm !== 'fa1' && values.algorithm !== 'fa2') {
    return fail(io, `--algorithm: expected fa1 or fa2, got "${values.algorithm}"`);
  }
  const qkBits = bitsFlag(values['qk-bits']);
  if (qkBits !== undefined && values.family !== 'sage')
    return fail(io, `--qk-bits: expected only with --family sage, got --family ${values.family}`);
  // HyperAttention's own options: only with --family hyper; the family validates the values.
  const hyper: { blockSize?: number; sampleSize?: number; minSeqLen?: number } = {};
  for (const [flag, key, min] of [
    ['block-size', 'blockSize', 1],
    ['sample-size', 'sampleSize', 0],
    ['min-seq-len', 'minSeqLen', 1],
  ] as const) {
    const text = values[flag];
    if (text === undefined) continue;
    if (values.family !== 'hyper')
      return fail(
        io,
        `--${flag}: expected only with --family hyper, got --family ${values.family}`,
      );
    hyper[key] = countFlag(text, flag, 0, min);
  }
  const date = new Date();
  const outPath = values.out === undefined ? undefined : benchOutPath(values.out, date);
  const rows = await runBench(
    {
      ...DEFAULT_BENCH,
      family: values.family as BenchFamily,
      // Default: the library's choice for cpu tensors (native when the addon loads, else ts).
      backend: values.backend,
      scoreMod: values['score-mod'],
      shape: values.shape ? parseShape(values.shape) : DEFAULT_BENCH.shape,
      causal: values.causal,
      algorithm: values.algorithm,
      // A median of no timings is undefined: at least one repeat.
      repeats: countFlag(values.repeats, 'repeats', DEFAULT_BENCH.repeats, 1),
      warmup: countFlag(values.warmup, 'warmup', DEFAULT_BENCH.warmup, 0),
      reference: !values['no-reference'],
      // Sage is an inference kernel: its forward only.
      passes:
        values['forward-only'] || values.family === 'sage' ? ['forward'] : ['forward', 'backward'],
      qkBits: qkBits as 4 | 8 | undefined,
      hyper: values.family === 'hyper' ? hyper : undefined,
    },
    values.json ? undefined : (line) => io.err(line),
  );
  const json = JSON.stringify({ date: date.toISOString(), node: process.version, rows }, null, 2);
  if (outPath !== undefined) await writeFile(outPath, `${json}\n`);
  io.out(values.json ? json : formatBenchTable(rows));
  return 0;
}

async function info(args: string[], io: CliIo): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      help: { type: 'boolean', short: 'h', default: false },
      json: { type: 'boolean', default: false },
      'webgpu-backend': { type: 'string' },
      'dawn-toggles': { type: 'string' },
    },
  });
  if (values.help) {
    io.out(`Usage:\n${INFO_USAGE}`);
    return 0;
  }
  const list = (text: string | undefined) =>
    text === undefined
      ? undefined
      : text
          .split(',')
          .map((t) => t.trim())
          .filter(Boolean);
  const report = await collectInfo({
    webgpuBackend: list(values['webgpu-backend']) as DawnBackend[] | undefined,
    dawnToggles: list(values['dawn-toggles']),
  });
  io.out(values.json ? JSON.stringify(report, null, 2) : formatInfo(report));
  return 0;
}

/** Runs the attnkit command line; returns the exit code (0 ok, 1 verification failed, 2 usage or input error). */
export async function runCli(argv: string[], io: CliIo = consoleIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case 'info':
        return await info(rest, io);
      case 'verify':
        return await verify(rest, io);
      case 'bench':
        return await bench(rest, io);
      case 'io':
        return await ioCommand(rest, io);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.out(USAGE);
        return command === undefined ? 2 : 0;
      default:
        return fail(io, `unknown command "${command}"\n${USAGE}`);
    }
  } catch (error) {
    // Typed library errors and argument errors are the user's to fix: one line, no stack.
    if (
      error instanceof AttnkitError ||
      (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    ) {
      return fail(io, (error as Error).message);
    }
    if ((error as { code?: string }).code === 'ENOENT') return fail(io, (error as Error).message);
    throw error;
  }
}
