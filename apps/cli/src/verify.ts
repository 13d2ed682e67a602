import { type Accuracy, accuracy, type Golden, loadGolden, toleranceFor } from '@attnkit/attention';
import { ValueError } from '@attnkit/tensor';
import { familyGoldenBackend, goldenBackend, prepareBackends } from './backends.js';

export interface TensorVerdict {
  relL2: number;
  maxAbs: number;
  ok: boolean;
  /** --family sage: judged by KERNELS.md's accuracy bars on these (cosine similarity, relative L1). */
  cosine?: number;
  relL1?: number;
}

/** The stable `attnkit verify --json` object. */
export interface VerifyReport {
  kind: string;
  backend: string;
  ok: boolean;
  tensors: Record<string, TensorVerdict>;
}

export interface VerifyOptions {
  backend?: string;
  algorithm?: 'fa1' | 'fa2';
  /**
   * Run the golden through this family's registrations instead of its kind's own: 'lean'
   * (LeanAttention's decode kernels) for the softmax goldens. Not together with `algorithm`.
   */
  family?: string;
  /** With family 'lean': 'fa2', 'splitK' or 'streamK' (default: the family's, streamK). */
  partition?: string;
  /** With family 'sage': Q·K bits, 8 (default) or 4. */
  qkBits?: number;
  /** With family 'sage': 'block', 'warp' (default) or 'thread'. */
  granularity?: string;
  /** With family 'gla': 'chunk' (default, chunkGla) or 'recurrent' (fusedRecurrentGla). */
  form?: string;
}

export const GLA_FORMS = ['chunk', 'recurrent'] as const;

/** `--family gla`'s options (the form), typed errors naming --form. */
function glaOptions(options: VerifyOptions): Record<string, unknown> {
  const { form } = options;
  if (form === undefined) return {};
  if (options.family !== 'gla')
    throw new ValueError(
      `--form: expected only with --family gla, got it with ${options.family === undefined ? 'no --family' : `--family ${options.family}`}`,
      'form',
    );
  if (!(GLA_FORMS as readonly string[]).includes(form))
    throw new ValueError(`--form: expected one of ${GLA_FORMS.join(', ')}, got "${form}"`, 'form');
  return { form };
}

/**
 * KERNELS.md "SageAttention2": INT8 Q·K with 8-bit P·V cos >= 0.999 and relL1 <= 0.03; INT4
 * cos >= 0.99 (against the float64 reference: the golden's o).
 */
export function sageBar(qkBits: number, acc: { cosine: number; relL1: number }): boolean {
  return qkBits === 4 ? acc.cosine >= 0.99 : acc.cosine >= 0.999 && acc.relL1 <= 0.03;
}

/** `--family sage`'s options for the sage registrations, typed errors naming the flags. */
function sageOptions(options: VerifyOptions): Record<string, unknown> {
  const { qkBits, granularity } = options;
  if (options.family !== 'sage') {
    if (qkBits !== undefined || granularity !== undefined)
      throw new ValueError(
        `--${qkBits !== undefined ? 'qk-bits' : 'granularity'}: expected only with --family sage, got it with ${options.family === undefined ? 'no --family' : `--family ${options.family}`}`,
        qkBits !== undefined ? 'qkBits' : 'granularity',
      );
    return {};
  }
  if (qkBits !== undefined && qkBits !== 4 && qkBits !== 8)
    throw new ValueError(`--qk-bits: expected 4 or 8, got ${qkBits}`, 'qkBits');
  const o: Record<string, unknown> = {};
  if (qkBits !== undefined) o.qkBits = qkBits;
  if (granularity !== undefined) o.granularity = granularity;
  return o;
}

/** Longest sequence of a golden, which decides the f32 tolerance (KERNELS.md: 2e-5 from 4096). */
function maxSeqLen(g: Golden): number {
  const p = g.params as Record<string, unknown>;
  const lens = ['Nq', 'Nk', 'T', 'max_seq_len'].map((key) => Number(p[key] ?? 0));
  if (Array.isArray(p.cu_seqlens)) {
    const cu = p.cu_seqlens as number[];
    for (let i = 1; i < cu.length; i++) lens.push(cu[i]! - cu[i - 1]!);
  }
  return Math.max(0, ...lens.filter(Number.isFinite));
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((n, i) => n === b[i]);
}

/**
 * Runs one golden on a backend and compares every reference tensor the golden holds with
 * the KERNELS.md tolerance. This is the whole of `attnkit verify`; tests call it directly.
 */
export async function verifyGolden(
  golden: Golden,
  options: VerifyOptions = {},
): Promise<VerifyReport> {
  await prepareBackends();
  if (options.family === undefined && options.partition !== undefined)
    throw new ValueError(
      `--partition: expected only with --family lean, got --partition ${options.partition}`,
      'partition',
    );
  if (options.family !== undefined && options.algorithm !== undefined)
    throw new ValueError(
      `--algorithm: expected none with --family ${options.family} (its kernels run the FA2 loop; the partition is --partition), got ${options.algorithm}`,
      'algorithm',
    );
  const extra = { ...sageOptions(options), ...glaOptions(options) };
  const backend =
    options.family === undefined
      ? goldenBackend(options.backend, golden.kind, options.algorithm)
      : familyGoldenBackend(options.family, options.backend, golden.kind, options.partition, extra);
  const produced = await backend.run(golden, { algorithm: options.algorithm });
  if (options.family === 'sage') {
    // Quantized attention: o against the golden's float64 o by the accuracy bars; the other
    // references (lse, gradients) are not an inference kernel's outputs.
    const got = produced.o;
    const want = golden.tensors.o!;
    const acc = got && sameShape(got.shape, want.shape) ? accuracy(got, want) : undefined;
    const o: TensorVerdict = acc
      ? {
          relL2: acc.relL2,
          maxAbs: acc.maxAbs,
          ok: acc.nonFinite === 0 && sageBar(Number(extra.qkBits ?? 8), acc),
          cosine: acc.cosine,
          relL1: acc.relL1,
        }
      : { relL2: Number.POSITIVE_INFINITY, maxAbs: Number.POSITIVE_INFINITY, ok: false };
    return { kind: golden.kind, backend: backend.name, ok: o.ok, tensors: { o } };
  }
  const tol = toleranceFor({
    dtype: 'f32',
    maxSeqLen: maxSeqLen(golden),
    chunked: golden.kind === 'gla',
  });
  const tensors: Record<string, TensorVerdict> = {};
  for (const name of golden.references) {
    const got = produced[name];
    const want = golden.tensors[name]!;
    let acc: Accuracy | undefined;
    // Equal element counts are not enough: a transposed or mis-laid-out output of the same size
    // must fail even when its elements happen to line up.
    if (got && sameShape(got.shape, want.shape)) acc = accuracy(got, want);
    tensors[name] = acc
      ? { relL2: acc.relL2, maxAbs: acc.maxAbs, ok: acc.relL2 <= tol && acc.nonFinite === 0 }
      : { relL2: Number.POSITIVE_INFINITY, maxAbs: Number.POSITIVE_INFINITY, ok: false };
  }
  return {
    kind: golden.kind,
    backend: backend.name,
    ok: Object.values(tensors).every((t) => t.ok),
    tensors,
  };
}

export async function verifyFile(path: string, options: VerifyOptions = {}): Promise<VerifyReport> {
  return verifyGolden(await loadGolden(path), options);
}

function num(x: number): string {
  return Number.isFinite(x) ? x.toExponential(3) : String(x);
}

/**
 * One line per reference tensor: `<name> rel_l2=<x> max_abs=<y> ok|FAIL` (--family sage:
 * `o cos=<c> rel_l1=<r> rel_l2=<x> max_abs=<y> ok|FAIL`).
 */
export function formatVerifyReport(report: VerifyReport): string {
  return Object.entries(report.tensors)
    .map(([name, t]) => {
      const sage =
        t.cosine === undefined ? '' : `cos=${t.cosine.toFixed(6)} rel_l1=${num(t.relL1!)} `;
      return `${name} ${sage}rel_l2=${num(t.relL2)} max_abs=${num(t.maxAbs)} ${t.ok ? 'ok' : 'FAIL'}`;
    })
    .join('\n');
}

/** JSON numbers cannot be Infinity: a missing tensor is reported as null. */
export function reportToJson(report: VerifyReport): string {
  return JSON.stringify(report, (_k, v) =>
    typeof v === 'number' && !Number.isFinite(v) ? null : v,
  );
}
