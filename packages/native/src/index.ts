import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Loader and typed wrapper of attnkit's native CPU engine (build/Release/attnkit_native.node).
 * It takes plain numbers and TypedArrays (this package sits below @attnkit/attention), used in
 * place: an async call reads and writes the arrays until its promise settles, so leave them
 * alone until then.
 */

export type NativeIsa = 'avx512' | 'avx2' | 'scalar';

/** Every ISA the engine has kernels for, fastest first. */
export const NATIVE_ISAS: readonly NativeIsa[] = ['avx512', 'avx2', 'scalar'];

/** Block-sparse mask, as `ResolvedBlockSparse` in @attnkit/attention's spec. */
export interface NativeBlockSparse {
  blockQ: number;
  blockK: number;
  nbq: number;
  nbk: number;
  /** Non-zero = keep; entry (b, h, qb, kb) at b * batchStride + h * headStride + qb * nbk + kb. */
  mask: Uint8Array;
  batchStride: number;
  headStride: number;
}

/**
 * A softmax-attention problem with the fields and meaning of `AttentionProblem` in
 * @attnkit/attention (a resolved AttentionProblem can be passed as is). BHND: q [B, Hq, maxSeqQ, D],
 * lse [B, Hq, maxSeqQ]; THD: q [totalQ, Hq, D] with per-batch startQ / seqQ, lse [Hq, totalQ].
 */
export interface NativeAttentionProblem {
  layout: 'BHND' | 'THD';
  batch: number;
  hq: number;
  hkv: number;
  d: number;
  dv: number;
  scale: number;
  /** Window bounds relative to the bottom-right diagonal, causal folded in (right = 0); -1 = unbounded. */
  left: number;
  right: number;
  seqQ: Int32Array;
  seqK: Int32Array;
  startQ: Int32Array;
  startK: Int32Array;
  maxSeqQ: number;
  maxSeqK: number;
  totalQ: number;
  totalK: number;
  blockSparse?: NativeBlockSparse | undefined;
  /** Tile hints (1..1024): query rows per backward block; keys per forward tile. */
  blockQ?: number;
  blockK?: number;
}

/** C = alpha * op(A) op(B) + beta * C, row-major; op(A) is m x k, op(B) is k x n. */
export interface NativeGemmArgs {
  m: number;
  n: number;
  k: number;
  a: Float32Array;
  b: Float32Array;
  c: Float32Array;
  transA?: boolean;
  transB?: boolean;
  /** Default 1. */
  alpha?: number;
  /** Default 0 (C is then only written, never read, as in BLAS). */
  beta?: number;
  /** Leading dimensions; default the row length of each stored matrix. */
  lda?: number;
  ldb?: number;
  ldc?: number;
}

export interface NativeEngine {
  /** The kernels this engine runs. */
  readonly isa: NativeIsa;
  /** Size of the engine's thread pool (ATTNKIT_NUM_THREADS or the CPUs available). */
  readonly threads: number;
  /** ISAs this CPU can run, fastest first. */
  readonly availableIsas: readonly NativeIsa[];
  /** FlashAttention-2 forward: writes o and lse (f32); runs off the JS thread. */
  flashForward(
    p: NativeAttentionProblem,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array,
  ): Promise<void>;
  flashForwardSync(
    p: NativeAttentionProblem,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array,
  ): void;
  /** FlashAttention-2 backward from the forward's o and lse: writes dq, dk, dv. */
  flashBackward(
    p: NativeAttentionProblem,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array,
    dO: Float32Array,
    dq: Float32Array,
    dk: Float32Array,
    dv: Float32Array,
  ): Promise<void>;
  flashBackwardSync(
    p: NativeAttentionProblem,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array,
    dO: Float32Array,
    dq: Float32Array,
    dk: Float32Array,
    dv: Float32Array,
  ): void;
  /**
   * Bytes flashBackward allocates for `p` besides its arguments: `perThreadBytes` for each of
   * the `threads` pool threads (O(maxSeqQ d): dQ partial sums of one wave of query heads, and
   * block buffers) and `sharedBytes` once (two floats per lse entry).
   */
  backwardScratch(p: NativeAttentionProblem): NativeBackwardScratch;
  gemm(args: NativeGemmArgs): Promise<void>;
  gemmSync(args: NativeGemmArgs): void;
}

export interface NativeBackwardScratch {
  perThreadBytes: number;
  sharedBytes: number;
}

export interface LoadNativeOptions {
  /** Kernels to use; default ATTNKIT_ISA, else the fastest this CPU supports. */
  isa?: NativeIsa;
}

interface Addon {
  info(): { isas: NativeIsa[]; threads: number };
  flashForward(
    isa: string,
    p: NativeAttentionProblem,
    ...rest: unknown[]
  ): Promise<void> | undefined;
  flashBackward(
    isa: string,
    p: NativeAttentionProblem,
    ...rest: unknown[]
  ): Promise<void> | undefined;
  flashBackwardScratch(isa: string, p: NativeAttentionProblem): NativeBackwardScratch;
  gemm(isa: string, args: Required<NativeGemmArgs>, async: boolean): Promise<void> | undefined;
}

const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Where the addon is loaded from: ATTNKIT_NATIVE_ADDON, else this package's node-gyp output. */
export function nativeAddonPath(): string {
  return (
    process.env.ATTNKIT_NATIVE_ADDON ?? join(packageRoot, 'build', 'Release', 'attnkit_native.node')
  );
}

let addon: Addon | null | undefined;
let loadError: string | undefined;
let warned = false;
const engines = new Map<NativeIsa, NativeEngine>();

function loadAddon(): Addon | undefined {
  if (addon !== undefined) return addon ?? undefined;
  const path = nativeAddonPath();
  if (!existsSync(path)) {
    loadError =
      `not built: ${path} is missing. To build it (needs python3, make and a C++17 compiler): ` +
      'inside the attnkit repository, `pnpm --filter @attnkit/native build:addon`; where ' +
      '@attnkit/native is an installed dependency, `npm rebuild @attnkit/native` (reruns its ' +
      'install script; a package manager that blocks install scripts must allow this one), or ' +
      `with any package manager \`node ${join(packageRoot, 'scripts', 'build-addon.mjs')} --strict\``;
    addon = null;
    return undefined;
  }
  try {
    const loaded = createRequire(import.meta.url)(path) as Partial<Addon>;
    if (typeof loaded?.info !== 'function' || typeof loaded.flashForward !== 'function') {
      throw new Error('it is not the attnkit addon (no info / flashForward exports)');
    }
    addon = loaded as Addon;
  } catch (e) {
    loadError = `failed to load ${path} on ${process.platform}-${process.arch}: ${(e as Error).message}`;
    addon = null;
  }
  return addon ?? undefined;
}

function warnOnce(): void {
  if (warned) return;
  warned = true;
  console.warn(`@attnkit/native: native engine unavailable, ${loadError}`);
}

/** Why the native engine is unavailable (undefined when it loads). */
export function nativeLoadError(): string | undefined {
  loadAddon();
  if (loadError === undefined) checkEnvIsa();
  return loadError;
}

function isIsa(x: unknown): x is NativeIsa {
  return typeof x === 'string' && (NATIVE_ISAS as readonly string[]).includes(x);
}

function checkEnvIsa(): NativeIsa | undefined {
  const env = process.env.ATTNKIT_ISA;
  if (env === undefined || env === '' || !addon) return undefined;
  const isas = addon.info().isas;
  if (!isIsa(env) || !isas.includes(env)) {
    loadError = `ATTNKIT_ISA=${env} is not one of the ISAs this CPU supports (${isas.join(', ')})`;
    return undefined;
  }
  return env;
}

/**
 * The native engine, or undefined (with one console warning saying why) when the addon is not
 * built, fails to load, or ATTNKIT_ISA names an ISA this CPU lacks. Engines are cached per ISA.
 */
export function loadNative(options: LoadNativeOptions = {}): NativeEngine | undefined {
  if (options === null || typeof options !== 'object') {
    throw new TypeError(`options: expected an object, got ${String(options)}`);
  }
  const a = loadAddon();
  if (!a) {
    warnOnce();
    return undefined;
  }
  const { isas, threads } = a.info();
  let isa: NativeIsa;
  if (options.isa !== undefined) {
    if (!isIsa(options.isa) || !isas.includes(options.isa)) {
      throw new RangeError(
        `options.isa: expected one of the ISAs this CPU supports (${isas.join(', ')}), got ${String(options.isa)}`,
      );
    }
    isa = options.isa;
  } else {
    const fromEnv = checkEnvIsa();
    if (process.env.ATTNKIT_ISA && !fromEnv) {
      warnOnce();
      return undefined;
    }
    isa = fromEnv ?? isas[0]!;
  }
  let engine = engines.get(isa);
  if (!engine) {
    engine = makeEngine(a, isa, isas, threads);
    engines.set(isa, engine);
  }
  return engine;
}

function gemmArgs(args: NativeGemmArgs): Required<NativeGemmArgs> {
  if (args === null || typeof args !== 'object') {
    throw new TypeError(`args: expected an object (NativeGemmArgs), got ${String(args)}`);
  }
  const transA = args.transA ?? false;
  const transB = args.transB ?? false;
  return {
    ...args,
    transA,
    transB,
    alpha: args.alpha ?? 1,
    beta: args.beta ?? 0,
    lda: args.lda ?? Math.max(1, transA ? args.m : args.k),
    ldb: args.ldb ?? Math.max(1, transB ? args.k : args.n),
    ldc: args.ldc ?? Math.max(1, args.n),
  };
}

function makeEngine(
  a: Addon,
  isa: NativeIsa,
  isas: readonly NativeIsa[],
  threads: number,
): NativeEngine {
  return {
    isa,
    threads,
    availableIsas: Object.freeze([...isas]),
    flashForward: async (p, q, k, v, o, lse) => a.flashForward(isa, p, q, k, v, o, lse, true),
    flashForwardSync: (p, q, k, v, o, lse) => {
      a.flashForward(isa, p, q, k, v, o, lse, false);
    },
    flashBackward: async (p, q, k, v, o, lse, dO, dq, dk, dv) =>
      a.flashBackward(isa, p, q, k, v, o, lse, dO, dq, dk, dv, true),
    flashBackwardSync: (p, q, k, v, o, lse, dO, dq, dk, dv) => {
      a.flashBackward(isa, p, q, k, v, o, lse, dO, dq, dk, dv, false);
    },
    backwardScratch: (p) => a.flashBackwardScratch(isa, p),
    gemm: async (args) => a.gemm(isa, gemmArgs(args), true),
    gemmSync: (args) => {
      a.gemm(isa, gemmArgs(args), false);
    },
  };
}
