import type { AttentionProblem } from '@attnkit/attention';
import { lseBase, qBase } from '@attnkit/attention';
import {
  DeviceError,
  DTypeError,
  describe,
  encodeHalfArray,
  formatShape,
  ShapeError,
  sameShape,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { biasGradMod, type TiledHooks } from '../hooks.js';
import { planFlashTiles } from '../plan.js';
import { allocF32 } from './alloc.js';
import { tiledBackward } from './backward.js';
import { fa1Forward } from './fa1.js';
import { tiledForward } from './fa2.js';
import { compileHooks } from './scores.js';

/**
 * The TS backend of the skeleton: validation of the tile options, planning, decoding of the
 * inputs to f32, one run of the tiled loop with the family's hooks and encoding of the results.
 * Every family on the skeleton (softmax FlashAttention, FlashSigmoid, score/mask mods) calls
 * these two functions with its hooks.
 */

export interface TsTileOptions {
  /** Query rows per tile (default: planFlashTiles); must divide block-sparse / mask-mod blocks. */
  blockQ?: number;
  /** Key rows per tile (default: planFlashTiles); must divide block-sparse / mask-mod blocks. */
  blockK?: number;
  /** 'fa2' (default) or 'fa1' (FA1's loop order, softmax hooks only). */
  algorithm?: 'fa1' | 'fa2';
}

/** Why these hooks cannot run: the argument at fault, its error message and a short reason. */
function unsupported(
  hooks: TiledHooks,
  pass: 'forward' | 'backward',
  algorithm: 'fa1' | 'fa2',
): { argument: string; message: string; why: string } | undefined {
  const kind = hooks?.normalize?.kind;
  if (algorithm === 'fa1' && kind !== 'softmax') {
    return {
      argument: 'algorithm',
      message: `algorithm: expected "fa2" for ${describe(kind)} normalisation (FA1's loop order runs softmax only), got "fa1"`,
      why: `FA1's loop order runs softmax normalisation only, not ${describe(kind)}; use algorithm "fa2"`,
    };
  }
  const sched = hooks?.schedule?.kind;
  if (pass === 'forward' && algorithm === 'fa1' && (sched === 'splitK' || sched === 'streamK')) {
    const what = sched === 'splitK' ? 'split-K' : 'stream-K';
    return {
      argument: 'algorithm',
      message: `algorithm: expected "fa2" for the ${sched} schedule (FA1's loop order runs key tiles outside Q tiles, it has no per-Q-tile key split), got "fa1"`,
      why: `FA1's loop order has no ${what} schedule; use algorithm "fa2"`,
    };
  }
  if (pass === 'backward') {
    for (const m of hooks?.scoreMods ?? []) {
      if (m?.kind === 'custom' && typeof m.tsGrad !== 'function') {
        return {
          argument: 'scoreMod.tsGrad',
          message: `scoreMod.tsGrad: expected a gradient function for custom mod "${m.name}" (the backward needs d mod / d s), got ${describe(m.tsGrad)}`,
          why: `custom score mod "${m.name}" has no tsGrad (d mod / d s) for the backward`,
        };
      }
    }
  }
  return undefined;
}

/** true, or why the TS backend cannot run these hooks for this pass and algorithm. */
export function tsSupports(
  hooks: TiledHooks,
  pass: 'forward' | 'backward',
  algorithm: 'fa1' | 'fa2' = 'fa2',
): true | string {
  return unsupported(hooks, pass, algorithm)?.why ?? true;
}

function checkTile(value: unknown, name: 'blockQ' | 'blockK', p: AttentionProblem): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ValueError(`${name}: expected a positive integer, got ${describe(value)}`, name);
  }
  const bs = p.blockSparse;
  if (bs === undefined) return;
  const block = bs[name];
  if (block % value !== 0) {
    const what = p.maskMod ? `maskMod.blockSize = ${block}` : `blockSparse.${name} = ${block}`;
    throw new ValueError(
      `${name}: expected a divisor of ${what} (tiles may not straddle mask blocks), got ${value}`,
      name,
    );
  }
}

interface Planned {
  bq: number;
  bk: number;
  algorithm: 'fa1' | 'fa2';
}

function prepare(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  opts: TsTileOptions | undefined,
  pass: 'forward' | 'backward',
): Planned {
  if (opts !== undefined && (opts === null || typeof opts !== 'object')) {
    throw new ValueError(`options: expected an object, got ${describe(opts)}`, 'options');
  }
  const options = opts ?? {};
  const algorithm = options.algorithm ?? 'fa2';
  if (algorithm !== 'fa1' && algorithm !== 'fa2') {
    throw new ValueError(
      `algorithm: expected "fa1" or "fa2", got ${describe(algorithm)}`,
      'algorithm',
    );
  }
  checkTile(options.blockQ, 'blockQ', p);
  checkTile(options.blockK, 'blockK', p);
  checkCpuQ(q, 'ts');
  const no = unsupported(hooks, pass, algorithm);
  if (no) throw new ValueError(no.message, no.argument);
  const plan = planFlashTiles({
    nq: p.maxSeqQ,
    nk: p.maxSeqK,
    d: p.d,
    dv: p.dv,
    blockSparse: p.blockSparse,
  });
  return {
    bq: Math.min(options.blockQ ?? plan.blockQ, Math.max(1, p.maxSeqQ)),
    bk: Math.min(options.blockK ?? plan.blockK, Math.max(1, p.maxSeqK)),
    algorithm,
  };
}

/** A tensor of `dtype` from f32 results (f32 as is; f16/bf16 encoded). */
export function encodeOutput(
  data: Float32Array,
  shape: readonly number[],
  dtype: Tensor['dtype'],
): Tensor {
  if (dtype === 'f16' || dtype === 'bf16')
    return Tensor.from(encodeHalfArray(dtype, data), shape, dtype);
  return Tensor.from(data, shape);
}

/**
 * Checks a cpu tensor argument of a backward (o, lse, dO): a Tensor of `shape` and `dtype` on
 * the cpu; ShapeError / DTypeError / DeviceError naming it.
 */
export function checkLike(
  t: unknown,
  name: string,
  shape: readonly number[],
  dtype: string,
  backend = 'ts',
): Tensor {
  const tt = t as Tensor;
  if (!tt || typeof tt !== 'object' || !Array.isArray(tt.shape) || typeof tt.dtype !== 'string') {
    throw new ShapeError(`${name}: expected a Tensor, got ${describe(t)}`, name);
  }
  if (!sameShape(tt.shape, shape)) {
    throw new ShapeError(
      `${name}: expected shape ${formatShape(shape)}, got ${formatShape(tt.shape)}`,
      name,
    );
  }
  if (tt.dtype !== dtype)
    throw new DTypeError(`${name}: expected dtype ${dtype}, got ${tt.dtype}`, name);
  if (tt.device !== 'cpu') {
    throw new DeviceError(
      `${name}: expected a cpu tensor for the '${backend}' backend, got one on ${tt.device}`,
      name,
    );
  }
  return tt;
}

const count = (shape: readonly number[]) => shape.reduce((a, x) => a * x, 1);

/** q of a cpu backend: f32/f16/bf16 (DTypeError otherwise) on the cpu (DeviceError). */
export function checkCpuQ(q: Tensor, backend: 'ts' | 'native'): void {
  if (q.dtype === 'f64') {
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the kernels compute in f32), got f64; for float64 results use the references of @attnkit/attention',
      'q',
    );
  }
  if (q.device !== 'cpu') {
    throw new DeviceError(
      `q: expected a cpu tensor for the '${backend}' backend, got one on ${q.device}`,
      'q',
    );
  }
}

/**
 * Validates tile options (ValueError naming blockQ/blockK; must divide blockSparse blocks) and
 * hooks.schedule (ValueError naming `schedule.splits` for a non-positive or non-integer count),
 * plans tiles, runs, encodes o in q's dtype (f16/bf16 via encodeHalfArray), lse f32 (undefined
 * for the pointwise sigmoid and silu). q,k,v cpu tensors f32/f16/bf16 (f64 -> DTypeError naming q). The splitK
 * schedule runs on the fa2 loop order only (fa1 -> ValueError naming algorithm).
 */
export function tiledForwardTs(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts?: TsTileOptions,
): { o: Tensor; lse: Tensor | undefined } {
  const { bq, bk, algorithm } = prepare(p, hooks, q, opts, 'forward');
  const h = compileHooks(p, hooks);
  const O = allocF32(count(p.oShape), 'output');
  const LSE = h.pointwise ? undefined : allocF32(count(p.lseShape), 'output');
  const Q = q.toFloat32Array();
  const K = k.toFloat32Array();
  const V = v.toFloat32Array();
  if (algorithm === 'fa1') fa1Forward(p, Q, K, V, O, LSE!, bq, bk, h);
  else tiledForward(p, h, Q, K, V, O, LSE, bq, bk);
  return {
    o: encodeOutput(O, p.oShape, q.dtype),
    lse: LSE === undefined ? undefined : Tensor.from(LSE, p.lseShape),
  };
}

/** The TS backward's results (TiledGrads of ../family.ts). */
export interface TsGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  dsinks?: Tensor;
  dbias?: Tensor;
  /** hooks.rab with grad and a position table: f32, its shape. */
  dPositionTable?: Tensor;
  /** hooks.rab with grad and a time table: f32, its shape. */
  dTimestampTable?: Tensor;
}

/**
 * o/lse required for softmax (shape/dtype-checked: ShapeError/DTypeError naming o, lse, dO),
 * ignored for the pointwise sigmoid and silu. hooks.schedule is validated but otherwise ignored: it does not change
 * the math, and the backward's P comes from the forward's LSE whatever schedule made it. Returns grads in q's dtype, dsinks f32 [Hq] when hooks has sinks, dPositionTable / dTimestampTable (f32, the tables' shapes) when hooks.rab has grad. Both
 * algorithms share FA2's Algorithm 2 (FA1's backward has the same loop order).
 */
export function tiledBackwardTs(
  p: AttentionProblem,
  hooks: TiledHooks,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor | undefined,
  lse: Tensor | undefined,
  dO: Tensor,
  opts?: TsTileOptions,
): TsGrads {
  const { bq, bk } = prepare(p, hooks, q, opts, 'backward');
  const h = compileHooks(p, hooks);
  const grad = biasGradMod(hooks.scoreMods);
  let O: Float32Array | undefined;
  let LSE: Float32Array | undefined;
  if (!h.pointwise) {
    O = checkLike(o, 'o', p.oShape, q.dtype).toFloat32Array();
    LSE = checkLike(lse, 'lse', p.lseShape, 'f32').toFloat32Array();
  }
  const G = checkLike(dO, 'dO', p.oShape, q.dtype).toFloat32Array();
  const dQ = allocF32(q.size, 'output');
  const dK = allocF32(k.size, 'output');
  const dV = allocF32(v.size, 'output');
  // One thread: dS accumulates into dbias itself, broadcast dims included (zeros first: the
  // elements no tile reaches are 0).
  const dBias = grad ? allocF32(grad.mod.bias.size, 'output').fill(0) : undefined;
  // HSTU's bucketed rab with grad: dZ summed per column in float64 (many pairs share a column).
  const rab = h.rab?.grad ? h.rab : undefined;
  const rabGrad = rab && {
    pos: rab.pos && new Float64Array(rab.pos.data.length),
    time: rab.time && new Float64Array(rab.time.data.length),
  };
  tiledBackward(
    p,
    h,
    q.toFloat32Array(),
    k.toFloat32Array(),
    v.toFloat32Array(),
    O,
    LSE,
    G,
    dQ,
    dK,
    dV,
    bq,
    bk,
    dBias && grad ? { ...grad.mod, data: dBias } : undefined,
    rabGrad,
  );
  const out: TsGrads = {
    dq: encodeOutput(dQ, q.shape, q.dtype),
    dk: encodeOutput(dK, k.shape, q.dtype),
    dv: encodeOutput(dV, v.shape, q.dtype),
  };
  if (h.sinks) out.dsinks = Tensor.from(sinkGradients(p, h.sinks, O!, LSE!, G), [p.hq]);
  if (dBias && grad) out.dbias = Tensor.from(dBias, grad.mod.bias.shape);
  if (rabGrad?.pos)
    out.dPositionTable = Tensor.from(
      Float32Array.from(rabGrad.pos),
      hooks.rab!.positionTable!.shape,
    );
  if (rabGrad?.time)
    out.dTimestampTable = Tensor.from(
      Float32Array.from(rabGrad.time),
      hooks.rab!.timestampTable!.shape,
    );
  return out;
}

/**
 * Gradients of the attention-sink logits: d loss / d sink_h = -sum over (b, rows i of head h)
 * e^(sink_h - LSE_i) D_i with D_i = dO_i . O_i (the sink's probability times the row's D; its
 * value vector is zero). Rows with LSE = -Infinity contribute nothing. o and dO decoded f32 in
 * the problem's layout (o's shape), lse f32 in its layout; sums in float64, result f32 [Hq].
 */
export function sinkGradients(
  p: AttentionProblem,
  sinks: Float32Array,
  o: Float32Array,
  lse: Float32Array,
  dO: Float32Array,
): Float32Array {
  const oSize = count(p.oShape);
  if (!(sinks instanceof Float32Array) || sinks.length !== p.hq) {
    throw new ValueError(`sinks: expected a Float32Array of length Hq = ${p.hq}`, 'sinks');
  }
  if (o.length !== oSize) {
    throw new ShapeError(`o: expected ${oSize} elements, got ${o.length}`, 'o');
  }
  if (dO.length !== oSize) {
    throw new ShapeError(`dO: expected ${oSize} elements, got ${dO.length}`, 'dO');
  }
  if (lse.length !== count(p.lseShape)) {
    throw new ShapeError(`lse: expected ${count(p.lseShape)} elements, got ${lse.length}`, 'lse');
  }
  const acc = new Float64Array(p.hq);
  for (let b = 0; b < p.batch; b++) {
    const nq = p.seqQ[b]!;
    for (let h = 0; h < p.hq; h++) {
      const oBase0 = qBase(p, b, h, p.dv);
      const lBase0 = lseBase(p, b, h);
      const sink = sinks[h]!;
      let t = 0;
      for (let i = 0; i < nq; i++) {
        const L = lse[lBase0 + i]!;
        if (!Number.isFinite(L)) continue;
        const oo = oBase0 + i * p.oRow;
        let D = 0;
        for (let c = 0; c < p.dv; c++) D += dO[oo + c]! * o[oo + c]!;
        t += Math.exp(sink - L) * D;
      }
      acc[h] = acc[h]! - t;
    }
  }
  return Float32Array.from(acc);
}
