import { type KernelRequest, type KernelTensors, registerKernel } from '@attnkit/attention';
// Types only: @attnkit/native is an optional dependency, imported lazily below (as the
// skeleton's sage/native.ts does).
import type * as NativePackage from '@attnkit/native';
import type { NativeEngine, NativeGlaProblem } from '@attnkit/native';
import { allocF32, encodeOutput, loadNativeBackend, nativeAvailable } from '@attnkit/skeleton';
import { BackendUnavailableError, DeviceError, Tensor } from '@attnkit/tensor';
import { checkGateValues, type GlaProblem } from './options.js';
import { isPowerOfTwo } from './plan.js';
import {
  GLA_BACKWARD_OUTPUTS,
  GLA_FAMILY,
  GLA_FORWARD_OUTPUTS,
  glaFormOf,
  glaProblem,
} from './register.js';
import { glaBackwardTs, glaForwardTs } from './ts-backend.js';

/**
 * GLA on @attnkit/native's C++ engine (ops gla.forward and gla.backward): the chunk form of
 * chunk.ts and the recurrent form of recurrent.ts (reverse included) in f32 with f32
 * accumulation, threads over (sequence, head) pairs, SIMD chunk products per ISA (AVX-512, AVX2,
 * scalar; the best this CPU has). Registered as family 'gla', backend 'native', priority 20
 * (above ts): cpu tensors run here by default when the addon loads, and what it declines (f64
 * inputs, chunk sizes outside 16..256) falls back to ts. f16 / bf16 inputs are decoded to f32 here; o, dq, dk, dv come back in q's dtype, dgk in
 * gk's, dh0 in initialState's, the final state in f32 (as the ts backend).
 */

/** Chunk sizes the native kernels take (the secondary-level sub-chunks are 16 rows). */
export const GLA_NATIVE_CHUNK_SIZES = { min: 16, max: 256 } as const;

// A computed specifier, as the skeleton's: no bundler follows it into a browser build.
const NATIVE_PACKAGE = '@attnkit/native';
let nativeModule: typeof NativePackage | undefined;
let moduleLoading: Promise<typeof NativePackage | undefined> | undefined;

function loadModule(): Promise<typeof NativePackage | undefined> {
  moduleLoading ??= import(/* @vite-ignore */ /* webpackIgnore: true */ NATIVE_PACKAGE).then(
    (m) => {
      nativeModule = m as typeof NativePackage;
      return nativeModule;
    },
    () => undefined,
  );
  return moduleLoading;
}

const STALE_ADDON =
  'the loaded native addon predates the GLA ops (gla.forward, gla.backward); rebuild it (`pnpm --filter @attnkit/native build:addon`, or reinstall @attnkit/native)';

function hasGlaOps(engine: NativeEngine): boolean {
  const ops = engine.ops() as Record<string, unknown>;
  return ops['gla.forward'] !== undefined && ops['gla.backward'] !== undefined;
}

const opsChecked = new WeakMap<NativeEngine, boolean>();
function glaOpsOf(engine: NativeEngine): boolean {
  let ok = opsChecked.get(engine);
  if (ok === undefined) {
    ok = hasGlaOps(engine);
    opsChecked.set(engine, ok);
  }
  return ok;
}

/**
 * Loads @attnkit/native (once; Node only) and answers as glaNativeAvailable: true when the
 * native GLA backend can run here, else why not.
 */
export async function glaNativeReady(): Promise<true | string> {
  const why = await loadNativeBackend();
  if (why !== true) return why;
  await loadModule();
  return glaNativeAvailable();
}

/**
 * true when the native engine loads and has the GLA ops, else why not (synchronous: before
 * glaNativeReady() or a first GLA call on cpu tensors it may answer that the package is still
 * loading).
 */
export function glaNativeAvailable(): true | string {
  const a = nativeAvailable();
  if (a !== true) return a;
  if (!nativeModule) {
    // The skeleton has the package; ours is one cached import away (run() awaits it).
    void loadModule();
    return true;
  }
  const engine = nativeModule.loadNative();
  if (!engine) return `the native engine is unavailable: ${nativeModule.nativeLoadError()}`;
  return glaOpsOf(engine) ? true : STALE_ADDON;
}

/**
 * The engine, or (when the backend was not named) undefined where it cannot run, so that the
 * caller runs the ts kernels instead: the default cpu backend never fails where ts succeeds.
 * A named `backend: 'native'` gets BackendUnavailableError saying why.
 */
async function engineFor(named: boolean): Promise<NativeEngine | undefined> {
  const available = await loadNativeBackend();
  let why: string | undefined;
  let engine: NativeEngine | undefined;
  if (available !== true) {
    why = available;
  } else {
    const m = await loadModule();
    engine = m?.loadNative();
    if (!engine)
      why = `it is unavailable: ${m?.nativeLoadError() ?? `${NATIVE_PACKAGE} did not import`}`;
    else if (!glaOpsOf(engine)) why = STALE_ADDON;
  }
  if (why === undefined) return engine;
  if (!named) return undefined;
  throw new BackendUnavailableError(`backend: expected the native engine, but ${why}`, 'backend');
}

/** Why the native backend declines a request (a sentence), else true. */
export function glaNativeSupports(req: KernelRequest): true | string {
  if (req.dtype === 'f64')
    return 'the native engine computes in f32: f64 inputs run on the ts backend (backend "ts")';
  let form: string;
  try {
    form = glaFormOf(req.options);
  } catch {
    return true; // run() validates and throws the typed error naming `form`
  }
  if (form === 'recurrent') return true;
  const C = req.options.chunkSize;
  if (
    C !== undefined &&
    (!isPowerOfTwo(C as number) ||
      (C as number) < GLA_NATIVE_CHUNK_SIZES.min ||
      (C as number) > GLA_NATIVE_CHUNK_SIZES.max)
  )
    return `the native chunk kernels take chunkSize a power of two in [${GLA_NATIVE_CHUNK_SIZES.min}, ${GLA_NATIVE_CHUNK_SIZES.max}] (got ${String(C)}): other chunk sizes run on the ts backend`;
  return true;
}

/** f32 data in place (contiguous f32) or decoded (f16, bf16) for the engine. */
function f32(t: Tensor, name: string): Float32Array {
  if (t.device !== 'cpu')
    throw new DeviceError(
      `${name}: expected a cpu tensor for the 'native' backend, got one on ${t.device}`,
      name,
    );
  return t.dtype === 'f32' ? t.data<'f32'>() : t.toFloat32Array();
}

function nativeProblem(p: GlaProblem): NativeGlaProblem {
  const np: NativeGlaProblem = {
    batch: p.B,
    t: p.T,
    h: p.H,
    k: p.K,
    v: p.V,
    scale: p.scale,
  };
  if (p.form === 'recurrent') {
    np.form = 'recurrent';
    np.reverse = p.reverse;
  } else {
    np.chunkSize = p.chunkSize;
  }
  if (p.cuSeqlens) np.sequences = p.N;
  return np;
}

/** The engine's gate error as checkGateValues' typed ValueError (same message as ts); else rethrown. */
function gateError(e: unknown, gk: Float32Array, shape: readonly number[]): never {
  if (e instanceof Error && /^inputs\.gk\[/.test(e.message)) checkGateValues(gk, shape);
  throw e;
}

type ForwardInputs = { q: Tensor; k: Tensor; v: Tensor; gk: Tensor };
type BackwardInputs = ForwardInputs & { do: Tensor; dht?: Tensor | undefined };
type ForwardOutputs = { o: Tensor; ht?: Tensor };
type BackwardOutputs = { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor };

/**
 * One engine call's arrays (the op, its problem, inputs, outputs) and how its outputs become
 * tensors: what the async (engine.run) and synchronous (engine.runSync) entry points share.
 */
interface EngineCall<Op extends 'gla.forward' | 'gla.backward', R> {
  op: Op;
  problem: NativeGlaProblem;
  inputs: NativePackage.NativeOpMap[Op]['inputs'];
  outputs: NativePackage.NativeOpMap[Op]['outputs'];
  gk: Float32Array;
  gkShape: readonly number[];
  finish(): R;
}

function forwardCall(p: GlaProblem, t: ForwardInputs): EngineCall<'gla.forward', ForwardOutputs> {
  const { B, T, H, K, V, N } = p;
  const gk = f32(t.gk, 'gk');
  const o = allocF32(B * T * H * V, 'output');
  const ht = p.outputFinalState ? allocF32(N * H * K * V, 'output') : undefined;
  const inputs: NativePackage.NativeOpMap['gla.forward']['inputs'] = {
    q: f32(t.q, 'q'),
    k: f32(t.k, 'k'),
    v: f32(t.v, 'v'),
    gk,
  };
  if (p.initialState) inputs.h0 = f32(p.initialState, 'initialState');
  if (p.cuSeqlens) inputs.cuSeqlens = p.cuSeqlens;
  return {
    op: 'gla.forward',
    problem: nativeProblem(p),
    inputs,
    outputs: ht ? { o, ht } : { o },
    gk,
    gkShape: t.gk.shape,
    finish: () => {
      const out: ForwardOutputs = { o: encodeOutput(o, t.v.shape, t.q.dtype) };
      if (ht) out.ht = Tensor.from(ht, [N, H, K, V]);
      return out;
    },
  };
}

function backwardCall(
  p: GlaProblem,
  t: BackwardInputs,
): EngineCall<'gla.backward', BackwardOutputs> {
  const { B, T, H, K, V, N } = p;
  const gk = f32(t.gk, 'gk');
  const h0 = p.initialState;
  const inputs: NativePackage.NativeOpMap['gla.backward']['inputs'] = {
    q: f32(t.q, 'q'),
    k: f32(t.k, 'k'),
    v: f32(t.v, 'v'),
    gk,
    dO: f32(t.do, 'dO'),
  };
  if (h0) inputs.h0 = f32(h0, 'initialState');
  if (t.dht) inputs.dht = f32(t.dht, 'dht');
  if (p.cuSeqlens) inputs.cuSeqlens = p.cuSeqlens;
  const outputs = {
    dq: allocF32(B * T * H * K, 'output'),
    dk: allocF32(B * T * H * K, 'output'),
    dv: allocF32(B * T * H * V, 'output'),
    dgk: allocF32(B * T * H * K, 'output'),
    dh0: h0 ? allocF32(N * H * K * V, 'output') : undefined,
  };
  return {
    op: 'gla.backward',
    problem: nativeProblem(p),
    inputs,
    outputs,
    gk,
    gkShape: t.gk.shape,
    finish: () => {
      const out: BackwardOutputs = {
        dq: encodeOutput(outputs.dq, t.q.shape, t.q.dtype),
        dk: encodeOutput(outputs.dk, t.k.shape, t.q.dtype),
        dv: encodeOutput(outputs.dv, t.v.shape, t.q.dtype),
        dgk: encodeOutput(outputs.dgk, t.gk.shape, t.gk.dtype),
      };
      if (h0 && outputs.dh0) out.dh0 = encodeOutput(outputs.dh0, h0.shape, h0.dtype);
      return out;
    },
  };
}

async function runAsync<Op extends 'gla.forward' | 'gla.backward', R>(
  engine: NativeEngine,
  c: EngineCall<Op, R>,
): Promise<R> {
  try {
    await engine.run(c.op, c.problem, c.inputs, c.outputs);
  } catch (e) {
    gateError(e, c.gk, c.gkShape);
  }
  return c.finish();
}

function runSync<Op extends 'gla.forward' | 'gla.backward', R>(
  engine: NativeEngine,
  c: EngineCall<Op, R>,
): R {
  if (!glaOpsOf(engine))
    throw new BackendUnavailableError(
      `backend: expected the native engine, but ${STALE_ADDON}`,
      'backend',
    );
  try {
    engine.runSync(c.op, c.problem, c.inputs, c.outputs);
  } catch (e) {
    gateError(e, c.gk, c.gkShape);
  }
  return c.finish();
}

/**
 * The forward on the engine (validated problem from glaProblem / resolveGla). `fallback`: run
 * the ts kernels where the engine is unavailable (the registry's default choice) instead of
 * throwing BackendUnavailableError.
 */
export async function glaForwardNative(
  p: GlaProblem,
  t: ForwardInputs,
  fallback = false,
): Promise<ForwardOutputs> {
  const engine = await engineFor(!fallback);
  if (!engine) return glaForwardTs(p, t);
  return runAsync(engine, forwardCall(p, t));
}

/** The backward on the engine; `fallback` as glaForwardNative's. */
export async function glaBackwardNative(
  p: GlaProblem,
  t: BackwardInputs,
  fallback = false,
): Promise<BackwardOutputs> {
  const engine = await engineFor(!fallback);
  if (!engine) return glaBackwardTs(p, t);
  return runAsync(engine, backwardCall(p, t));
}

/**
 * The forward on a caller's engine handle, synchronously (engine.runSync): for a caller whose
 * kernels must return tensors at once and that loaded @attnkit/native itself (@attnkit/nn's
 * `gla` op on its native backend; the public functions are async because they may load the
 * addon and dispatch through the registry). The same arrays, problem and outputs as the async
 * path (glaForwardNative): `p` from resolveGla (f32, f16 or bf16 inputs; the engine computes
 * in f32). o comes back in q's dtype, the final state (outputFinalState) in f32. A
 * BackendUnavailableError when the engine predates the GLA ops; the gate check's ValueError
 * (naming gk) as the ts backend's.
 */
export function glaForwardNativeSync(
  engine: NativeEngine,
  p: GlaProblem,
  t: ForwardInputs,
): ForwardOutputs {
  return runSync(engine, forwardCall(p, t));
}

/**
 * The backward on a caller's engine handle, synchronously; as glaForwardNativeSync (and
 * glaBackwardNative's outputs: dq, dk, dv in q's dtype, dgk in gk's, dh0 with initialState).
 */
export function glaBackwardNativeSync(
  engine: NativeEngine,
  p: GlaProblem,
  t: BackwardInputs,
): BackwardOutputs {
  return runSync(engine, backwardCall(p, t));
}

registerKernel({
  family: GLA_FAMILY,
  pass: 'forward',
  backend: 'native',
  priority: 20,
  devices: ['cpu'],
  available: glaNativeAvailable,
  supports: glaNativeSupports,
  outputs: GLA_FORWARD_OUTPUTS,
  run: async (t: KernelTensors, options) => {
    const p = glaProblem('forward', t, options);
    const fallback = options.backend === undefined;
    return {
      ...(await glaForwardNative(
        p,
        t as { q: Tensor; k: Tensor; v: Tensor; gk: Tensor },
        fallback,
      )),
    };
  },
});

registerKernel({
  family: GLA_FAMILY,
  pass: 'backward',
  backend: 'native',
  priority: 20,
  devices: ['cpu'],
  available: glaNativeAvailable,
  supports: glaNativeSupports,
  outputs: GLA_BACKWARD_OUTPUTS,
  run: async (t: KernelTensors, options) => {
    const p = glaProblem('backward', t, options);
    return {
      ...(await glaBackwardNative(
        p,
        t as { q: Tensor; k: Tensor; v: Tensor; gk: Tensor; do: Tensor; dht?: Tensor },
        options.backend === undefined,
      )),
    };
  },
});
