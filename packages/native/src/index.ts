import type * as NodeFs from 'node:fs';
import type * as NodeModule from 'node:module';
import type * as NodePath from 'node:path';
import type * as NodeUrl from 'node:url';

/**
 * Loader and typed wrapper of attnkit's native CPU engine (build/Release/attnkit_native.node).
 * It takes plain numbers and TypedArrays (this package sits below @attnkit/attention), used in
 * place: a call reads and writes the arrays until its promise settles, so leave them alone
 * until then.
 *
 * The engine is a registry of ops ('attention.forward', 'attention.backward', 'gemm'), each with
 * kernels per ISA; one generic entry point, `run(op, problem, inputs, outputs)`, checks the
 * arrays against the op's descriptor and runs the kernel of the best ISA this CPU has for that
 * op (`ops()` lists them). Importing this module has no side effects and imports no Node
 * module: the addon is loaded by the first `loadNative()` (or `nativeLoadError()`), in Node
 * only, so browser bundles of the packages above it never pull it in.
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
 * How a row of scores becomes weights (the skeleton's NormalizeHook). softmax: FA2's online
 * softmax, O = P V, LSE; `sinks` (one logit per query head, finite) join every row's sum as
 * e^(sink - m) with a zero value vector. sigmoid: w = sigmoid(s + bias[b]) (one finite bias per
 * batch entry), O = sum w v, no LSE.
 */
export type NativeNormalize =
  | { kind: 'softmax'; sinks?: Float32Array | undefined }
  | { kind: 'sigmoid'; bias: Float32Array };

/**
 * The built-in score mods (@attnkit/attention's mods.ts semantics), applied in order to each
 * score s = scale q.k: softcap s <- cap tanh(s / cap); alibi s <- s - slopes[h] |i + nk - nq - j|
 * (slopes [Hq]); bias s <- s + bias[b * batchStride + h * headStride + i * rowStride + j] (i, j
 * positions within the sequence). A resolved ScoreMod of kind 'bias' carries the strides; pass
 * its tensor's f32 data as `bias`.
 */
export type NativeScoreMod =
  | { kind: 'softcap'; cap: number }
  | { kind: 'alibi'; slopes: Float32Array }
  | {
      kind: 'bias';
      bias: Float32Array;
      batchStride: number;
      headStride: number;
      rowStride: number;
    };

/**
 * An attention problem with the fields and meaning of `AttentionProblem` in @attnkit/attention
 * (a resolved AttentionProblem can be passed as is), plus the skeleton's hooks. BHND:
 * q [B, Hq, maxSeqQ, D], lse [B, Hq, maxSeqQ]; THD: q [totalQ, Hq, D] with per-batch startQ /
 * seqQ, lse [Hq, totalQ].
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
  blockQ?: number | undefined;
  blockK?: number | undefined;
  /**
   * The forward's schedule (attention.forward only): 1 (default) = band, one task per
   * (b, h, query rows) walks its key band; > 1 = split-K (FlashDecoding): each such task's
   * visited key tiles are cut into `splits` contiguous ranges (balanced to one tile) whose
   * partial softmax statistics parallel tasks compute and a combine pass merges. Worth it for
   * decode (few query rows, long Nk), where the band schedule leaves threads idle. 1..65536.
   */
  splits?: number | undefined;
  /** Default { kind: 'softmax' }. */
  normalize?: NativeNormalize | undefined;
  /** At most 8, applied in order. */
  scoreMods?: readonly NativeScoreMod[] | undefined;
}

/** C = alpha * op(A) op(B) + beta * C, row-major; op(A) is m x k, op(B) is k x n. */
export interface NativeGemmProblem {
  m: number;
  n: number;
  k: number;
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

/** The GEMM problem and its matrices in one object (the `gemm` shorthand). */
export interface NativeGemmArgs extends NativeGemmProblem {
  a: Float32Array;
  b: Float32Array;
  c: Float32Array;
}

/**
 * The engine's ops: problem, named inputs and named outputs. Lengths follow from the problem
 * (`run` checks them). attention.forward writes o and, for softmax, lse (sigmoid: no lse).
 * attention.backward reads o and lse for softmax only (sigmoid: neither) and writes dq, dk, dv
 * and, when the problem has sinks, dsinks [Hq] = -sum over rows e^(sink_h - LSE_i) (dO_i . O_i).
 *
 * Both attention ops take the optional inputs `permQ` and `permK` (Int32Array, the permuted-tiles
 * hook, @attnkit/skeleton PermuteHook): rows tiled in a permuted order. The result equals
 * attention of Q' = Q[permQ], K' = K[permK], V' = V[permK] with every position rule (band,
 * block sparsity, alibi, bias) seeing the tiled positions, scattered back (O, LSE, dQ at permQ;
 * dK, dV at permK). Layout = the LSE layout: permQ [B, Hq, maxSeqQ] or [Hq, totalQ] (entry
 * h * totalQ + startQ[b] + i), permK [B, Hkv, maxSeqK] or [Hkv, totalK]; each (b, h) slice a
 * permutation of 0..n-1 (not checked here; lengths are: RangeError naming the input). Absent =
 * identity.
 */
export interface NativeOpMap {
  'attention.forward': {
    problem: NativeAttentionProblem;
    inputs: {
      q: Float32Array;
      k: Float32Array;
      v: Float32Array;
      permQ?: Int32Array | undefined;
      permK?: Int32Array | undefined;
    };
    outputs: { o: Float32Array; lse?: Float32Array | undefined };
  };
  'attention.backward': {
    problem: NativeAttentionProblem;
    inputs: {
      q: Float32Array;
      k: Float32Array;
      v: Float32Array;
      o?: Float32Array | undefined;
      lse?: Float32Array | undefined;
      dO: Float32Array;
      permQ?: Int32Array | undefined;
      permK?: Int32Array | undefined;
    };
    outputs: {
      dq: Float32Array;
      dk: Float32Array;
      dv: Float32Array;
      dsinks?: Float32Array | undefined;
    };
  };
  gemm: {
    problem: NativeGemmProblem;
    inputs: { a: Float32Array; b: Float32Array };
    /** C (read too when beta != 0): at least (m - 1) ldc + n elements. */
    outputs: { c: Float32Array };
  };
}

export type NativeOp = keyof NativeOpMap;

/** One op of the registry. */
export interface NativeOpInfo {
  /** ISAs with a kernel of this op, best first. */
  isas: NativeIsa[];
  /** The ISA `run` uses: the best of `isas` at or below the engine's ISA. */
  chosen: NativeIsa | null;
  inputs: string[];
  outputs: string[];
}

/** The permuted-tiles index arrays of attention.forward / attention.backward (see NativeOpMap). */
export interface NativePermutation {
  permQ?: Int32Array | undefined;
  permK?: Int32Array | undefined;
}

export interface NativeBackwardScratch {
  perThreadBytes: number;
  sharedBytes: number;
}

export interface NativeEngine {
  /**
   * The engine's ISA: each op runs on the best ISA at or below it that has a kernel of the op
   * (the best this CPU has unless forced by `loadNative({ isa })` or ATTNKIT_ISA).
   */
  readonly isa: NativeIsa;
  /** Size of the engine's thread pool (ATTNKIT_NUM_THREADS or the CPUs available). */
  readonly threads: number;
  /** ISAs this CPU can run, fastest first. */
  readonly availableIsas: readonly NativeIsa[];
  /** The op registry: op -> its ISAs, the chosen one, its input and output names. */
  ops(): Record<NativeOp, NativeOpInfo>;
  /**
   * Runs `op` off the JS thread. Rejects with TypeError / RangeError naming the argument
   * (`op`, `problem.*`, `inputs.*`, `outputs.*`) when the call does not match the op's
   * descriptor.
   */
  run<Op extends NativeOp>(
    op: Op,
    problem: NativeOpMap[Op]['problem'],
    inputs: NativeOpMap[Op]['inputs'],
    outputs: NativeOpMap[Op]['outputs'],
  ): Promise<void>;
  /** run('attention.forward', ...): writes o and (softmax) lse; `perm`: permQ / permK. */
  flashForward(
    p: NativeAttentionProblem,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array,
    lse: Float32Array | undefined,
    perm?: NativePermutation,
  ): Promise<void>;
  /**
   * run('attention.backward', ...): writes dq, dk, dv (and dsinks with sinks); `perm`: permQ /
   * permK (the forward's).
   */
  flashBackward(
    p: NativeAttentionProblem,
    q: Float32Array,
    k: Float32Array,
    v: Float32Array,
    o: Float32Array | undefined,
    lse: Float32Array | undefined,
    dO: Float32Array,
    dq: Float32Array,
    dk: Float32Array,
    dv: Float32Array,
    dsinks?: Float32Array,
    perm?: NativePermutation,
  ): Promise<void>;
  /** run('gemm', ...) with the matrices beside the problem. */
  gemm(args: NativeGemmArgs): Promise<void>;
  /**
   * Bytes attention.backward allocates for `p` besides its arrays: `perThreadBytes` for each of
   * the `threads` pool threads (O(maxSeqQ d): dQ partial sums of one wave of query heads, and
   * block buffers) and `sharedBytes` once (softmax: two floats per lse entry). A permQ input
   * adds blockQ (d + dv) floats per thread (its gathered query tile), not counted here.
   */
  backwardScratch(p: NativeAttentionProblem): NativeBackwardScratch;
}

export interface LoadNativeOptions {
  /** The engine's ISA (a cap per op); default ATTNKIT_ISA, else the fastest this CPU supports. */
  isa?: NativeIsa;
}

interface Addon {
  info(): { isas: NativeIsa[]; threads: number };
  ops(isa?: string): Record<NativeOp, NativeOpInfo>;
  run(op: string, problem: unknown, inputs: unknown, outputs: unknown, isa?: string): Promise<void>;
  scratch(op: string, problem: unknown, isa?: string): NativeBackwardScratch;
}

interface NodeBuiltins {
  fs: typeof NodeFs;
  module: typeof NodeModule;
  path: typeof NodePath;
  url: typeof NodeUrl;
}

type GetBuiltin = (id: string) => unknown;

/** Node's built-in modules, fetched at run time (no static import), or undefined outside Node. */
function nodeBuiltins(): NodeBuiltins | undefined {
  const proc = (globalThis as { process?: { getBuiltinModule?: GetBuiltin } }).process;
  const get = proc?.getBuiltinModule;
  if (typeof get !== 'function') return undefined;
  return {
    fs: get('node:fs') as typeof NodeFs,
    module: get('node:module') as typeof NodeModule,
    path: get('node:path') as typeof NodePath,
    url: get('node:url') as typeof NodeUrl,
  };
}

function env(name: string): string | undefined {
  return (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env?.[
    name
  ];
}

/**
 * Where the addon is loaded from: ATTNKIT_NATIVE_ADDON, else this package's node-gyp output
 * (undefined outside Node).
 */
export function nativeAddonPath(): string | undefined {
  const override = env('ATTNKIT_NATIVE_ADDON');
  if (override !== undefined) return override;
  const node = nodeBuiltins();
  if (!node) return undefined;
  return node.path.join(packageRoot(node), 'build', 'Release', 'attnkit_native.node');
}

function packageRoot(node: NodeBuiltins): string {
  return node.path.resolve(node.path.dirname(node.url.fileURLToPath(import.meta.url)), '..');
}

let addon: Addon | null | undefined;
let loadError: string | undefined;
let warned = false;
const engines = new Map<NativeIsa, NativeEngine>();

function loadAddon(): Addon | undefined {
  if (addon !== undefined) return addon ?? undefined;
  // An ATTNKIT_ISA that names no ISA is a configuration error, whatever the addon and the CPU.
  const wanted = env('ATTNKIT_ISA');
  if (wanted !== undefined && wanted !== '' && !isIsa(wanted)) {
    loadError = `ATTNKIT_ISA: expected one of ${NATIVE_ISAS.join(', ')}, got ${JSON.stringify(wanted)}`;
    addon = null;
    return undefined;
  }
  const node = nodeBuiltins();
  const path = nativeAddonPath();
  if (!node || path === undefined) {
    const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
    loadError = proc?.versions?.node
      ? `Node ${proc.versions.node} lacks process.getBuiltinModule (Node >= 20.16 loads the addon)`
      : 'the native engine runs in Node only';
    addon = null;
    return undefined;
  }
  if (!node.fs.existsSync(path)) {
    loadError =
      `not built: ${path} is missing. To build it (needs python3, make and a C++17 compiler): ` +
      'inside the attnkit repository, `pnpm --filter @attnkit/native build:addon`; where ' +
      '@attnkit/native is an installed dependency, `npm rebuild @attnkit/native` (reruns its ' +
      'install script; a package manager that blocks install scripts must allow this one), or ' +
      `with any package manager \`node ${node.path.join(packageRoot(node), 'scripts', 'build-addon.mjs')} --strict\``;
    addon = null;
    return undefined;
  }
  try {
    const loaded = node.module.createRequire(import.meta.url)(path) as Partial<Addon>;
    if (typeof loaded?.info !== 'function' || typeof loaded.run !== 'function') {
      throw new Error('it is not the attnkit addon (no info / run exports)');
    }
    addon = loaded as Addon;
  } catch (e) {
    const proc = (globalThis as { process?: { platform?: string; arch?: string } }).process;
    loadError = `failed to load ${path} on ${proc?.platform}-${proc?.arch}: ${(e as Error).message}`;
    addon = null;
  }
  return addon ?? undefined;
}

function warnOnce(): void {
  if (warned) return;
  warned = true;
  console.warn(`@attnkit/native: native engine unavailable, ${loadError}`);
}

/** Why the native engine is unavailable (undefined when it loads). Loads the addon. */
export function nativeLoadError(): string | undefined {
  loadAddon();
  if (loadError === undefined) checkEnvIsa();
  return loadError;
}

function isIsa(x: unknown): x is NativeIsa {
  return typeof x === 'string' && (NATIVE_ISAS as readonly string[]).includes(x);
}

function checkEnvIsa(): NativeIsa | undefined {
  const wanted = env('ATTNKIT_ISA');
  if (wanted === undefined || wanted === '' || !addon) return undefined;
  const isas = addon.info().isas;
  if (!isIsa(wanted) || !isas.includes(wanted)) {
    loadError = `ATTNKIT_ISA: expected one of the ISAs this CPU supports (${isas.join(', ')}), got ${JSON.stringify(wanted)}`;
    return undefined;
  }
  return wanted;
}

/**
 * The native engine, or undefined (with one console warning saying why; nativeLoadError()
 * returns it) when the addon is not built, fails to load, is not in Node, or ATTNKIT_ISA is set
 * to a value that is not an ISA (checked before the addon loads) or names an ISA this CPU lacks. Engines
 * are cached per ISA. The first call loads the addon.
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
  let cap: NativeIsa | undefined;
  if (options.isa !== undefined) {
    if (!isIsa(options.isa) || !isas.includes(options.isa)) {
      throw new RangeError(
        `options.isa: expected one of the ISAs this CPU supports (${isas.join(', ')}), got ${String(options.isa)}`,
      );
    }
    isa = cap = options.isa;
  } else {
    const fromEnv = checkEnvIsa();
    if (env('ATTNKIT_ISA') && !fromEnv) {
      warnOnce();
      return undefined;
    }
    cap = fromEnv;
    isa = fromEnv ?? isas[0]!;
  }
  // Capping at the best ISA this CPU has is no cap: one engine per ISA.
  let engine = engines.get(isa);
  if (!engine) {
    engine = makeEngine(a, isa, cap, isas, threads);
    engines.set(isa, engine);
  }
  return engine;
}

function makeEngine(
  a: Addon,
  isa: NativeIsa,
  cap: NativeIsa | undefined,
  isas: readonly NativeIsa[],
  threads: number,
): NativeEngine {
  const engine: NativeEngine = {
    isa,
    threads,
    availableIsas: Object.freeze([...isas]),
    ops: () => a.ops(cap),
    run: async (op, problem, inputs, outputs) => a.run(op, problem, inputs, outputs, cap),
    flashForward: (p, q, k, v, o, lse, perm) => {
      const inputs: NativeOpMap['attention.forward']['inputs'] = { q, k, v };
      if (perm?.permQ !== undefined) inputs.permQ = perm.permQ;
      if (perm?.permK !== undefined) inputs.permK = perm.permK;
      return engine.run('attention.forward', p, inputs, lse === undefined ? { o } : { o, lse });
    },
    flashBackward: (p, q, k, v, o, lse, dO, dq, dk, dv, dsinks, perm) => {
      const inputs: NativeOpMap['attention.backward']['inputs'] = { q, k, v, dO };
      if (o !== undefined) inputs.o = o;
      if (lse !== undefined) inputs.lse = lse;
      if (perm?.permQ !== undefined) inputs.permQ = perm.permQ;
      if (perm?.permK !== undefined) inputs.permK = perm.permK;
      const outputs: NativeOpMap['attention.backward']['outputs'] = { dq, dk, dv };
      if (dsinks !== undefined) outputs.dsinks = dsinks;
      return engine.run('attention.backward', p, inputs, outputs);
    },
    gemm: async (args) => {
      if (args === null || typeof args !== 'object') {
        throw new TypeError(`args: expected an object (NativeGemmArgs), got ${String(args)}`);
      }
      const { a: ma, b: mb, c: mc, ...problem } = args;
      return engine.run('gemm', problem, { a: ma, b: mb }, { c: mc });
    },
    backwardScratch: (p) => {
      const { perThreadBytes, sharedBytes } = a.scratch('attention.backward', p, cap);
      return { perThreadBytes, sharedBytes };
    },
  };
  return engine;
}
