import { describe, formatShape, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import { apply, isTensor, type OpDef, Var, type VarLike } from '../autograd.js';
import type { GlaKernelOptions } from '../kernels/table.js';

export interface GlaOptions {
  /** Multiplies q (o_t = (scale q_t) S_t); default K^-0.5, as fla. */
  scale?: number;
  /**
   * The state before the first token, [B, H, K, V] (zero when absent): a Tensor, never
   * differentiated (a decoding step's state). The backward reads it, so q, k, v, gk's
   * gradients are those of the sequence that started from it.
   */
  initialState?: Tensor;
  /** Also return the state after the last token, `finalState` [B, H, K, V] (no gradient). */
  outputFinalState?: boolean;
  /**
   * 'chunk' (default): the chunkwise-parallel form (fla's chunk_gla); 'recurrent': one token at
   * a time (fused_recurrent_gla), the step form for decoding. The same function either way.
   */
  form?: 'chunk' | 'recurrent';
}

export interface GlaResult {
  /** [B, T, H, V], in q's dtype. */
  o: Var;
  /** [B, H, K, V] with outputFinalState: f32 (f64 for f64 inputs), no gradient. */
  finalState?: Tensor;
}

interface GlaAttrs {
  options: GlaKernelOptions;
  hasState: boolean;
  /** Where the forward leaves the final state (apply returns the op's one output, o). */
  out: { finalState?: Tensor };
}

const glaOp: OpDef<GlaAttrs> = {
  name: 'gla',
  forward({ k, save }, [q, kk, v, gk, h0], attrs) {
    const options = h0 ? { ...attrs.options, initialState: h0 } : attrs.options;
    const { o, finalState } = k.gla(q!, kk!, v!, gk!, options);
    // The inputs (and h0) for the backward; the final state saved too, so that the scope that
    // made it owns it (it is nobody's gradient: the backward never reads it).
    save(q!, kk!, v!, gk!, ...(h0 ? [h0] : []));
    if (finalState) {
      save(finalState);
      attrs.out.finalState = finalState;
    }
    return o;
  },
  backward({ k, saved }, dy, attrs) {
    const [q, kk, v, gk, h0] = saved as Tensor[];
    const { outputFinalState: _, ...rest } = attrs.options;
    const options = attrs.hasState ? { ...rest, initialState: h0! } : rest;
    const { dq, dk, dv, dgk } = k.glaBackward(q!, kk!, v!, gk!, dy, options);
    return attrs.hasState ? [dq, dk, dv, dgk, null] : [dq, dk, dv, dgk];
  },
};

/**
 * log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|)) on nn's elementwise kernels (relu, affine,
 * exp, log, add), so that it is finite for every finite x (no exp overflow, no log(0)); clamped
 * at <= 0 (-relu of its negation) so that rounding in exp / log never makes a positive gate. The
 * backward is dy * sigmoid(-x), the derivative everywhere (x = 0 included, where the composed
 * relus' subgradients would give 0 instead of 1/2).
 */
const logsigmoidOp: OpDef<null> = {
  name: 'logsigmoid',
  forward({ k, save }, [x]) {
    save(x!);
    const made: Tensor[] = [];
    const t = (y: Tensor) => {
      made.push(y);
      return y;
    };
    const neg = t(k.unary('relu', t(k.affine(x!, -1, 0))));
    const abs = t(k.binary('add', t(k.unary('relu', x!)), neg));
    const log1pExp = t(
      k.unary('log', t(k.affine(t(k.unary('exp', t(k.affine(abs, -1, 0)))), 1, 1))),
    );
    const y = k.affine(t(k.unary('relu', t(k.binary('add', neg, log1pExp)))), -1, 0);
    // Intermediates are nobody's: given back now (on a GPU, once the queued passes are submitted).
    for (const m of made) m.dispose();
    return y;
  },
  backward({ k, saved }, dy) {
    const s = k.unary('sigmoid', k.affine(saved[0]!, -1, 0));
    return [k.binary('mul', dy, s)];
  },
};

/** log(sigmoid(x)) elementwise, stable for every finite x (GLA's gates: fla's F.logsigmoid). */
export const logsigmoid = (x: VarLike): Var => apply(logsigmoidOp, [x], null);

const OPTION_KEYS = ['scale', 'initialState', 'outputFinalState', 'form'];

function fail(Err: typeof ValueError, argument: string, expected: string, got: string): never {
  throw new Err(`gla: ${argument} expected ${expected}, got ${got}`, argument);
}

/**
 * Gated linear attention (Yang et al. 2024, "Gated Linear Attention Transformers with
 * Hardware-Efficient Training"; fla's chunk_gla / fused_recurrent_gla) as an autograd op, on
 * @attnkit/linear-attention's kernels of the inputs' backend (ts, native, webgpu). Layout BTHK:
 * q, k, gk [B, T, H, K], v [B, T, H, V] (K != V allowed); gk holds log-space gates (finite,
 * <= 0, e.g. logsigmoid of a projection). The state S [K, V] per batch row and head runs
 * S_t = diag(exp(gk_t)) S_{t-1} + k_t^T v_t, o_t = (scale q_t) S_t.
 *
 * Returns o [B, T, H, V] (differentiable in q, k, v and gk: the backward is linear-attention's)
 * and, with outputFinalState, finalState [B, H, K, V] (a Tensor, no gradient). Shapes and
 * options are checked first (ShapeError / ValueError naming the argument); gate values where the
 * kernel reads them (a ValueError naming gk).
 */
export function gla(
  q: VarLike,
  k: VarLike,
  v: VarLike,
  gk: VarLike,
  options: GlaOptions = {},
): GlaResult {
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    fail(ValueError, 'options', 'an object', describe(options));
  for (const [key, value] of Object.entries(options))
    if (value !== undefined && !OPTION_KEYS.includes(key))
      fail(ValueError, `options.${key}`, `one of ${OPTION_KEYS.join(', ')}`, 'an unknown option');
  const { scale, initialState, outputFinalState = false, form = 'chunk' } = options;
  if (form !== 'chunk' && form !== 'recurrent')
    fail(ValueError, 'form', "'chunk' or 'recurrent'", describe(form));
  if (scale !== undefined && (typeof scale !== 'number' || !Number.isFinite(scale)))
    fail(ValueError, 'scale', 'a finite number', describe(scale));
  if (typeof outputFinalState !== 'boolean')
    fail(ValueError, 'outputFinalState', 'a boolean', describe(outputFinalState));
  const args = { q, k, v, gk };
  for (const [name, x] of Object.entries(args))
    if (!(x instanceof Var) && !isTensor(x)) fail(ValueError, name, 'a Var or Tensor', describe(x));
  const sq = q.shape;
  if (sq.length !== 4) fail(ShapeError, 'q', 'rank 4 [B, T, H, K]', formatShape(sq));
  const [B, T, H, K] = sq as [number, number, number, number];
  if (H < 1 || K < 1) fail(ShapeError, 'q', 'H >= 1 and K >= 1', formatShape(sq));
  for (const [name, x] of [
    ['k', k],
    ['gk', gk],
  ] as const)
    if (x.shape.join() !== sq.join())
      fail(ShapeError, name, `shape ${formatShape(sq)} (as q)`, formatShape(x.shape));
  const sv = v.shape;
  if (sv.length !== 4 || sv[0] !== B || sv[1] !== T || sv[2] !== H || !(sv[3]! >= 1))
    fail(ShapeError, 'v', `shape [${B}, ${T}, ${H}, V] (B, T, H as q; V >= 1)`, formatShape(sv));
  const V = sv[3]!;
  if (initialState !== undefined) {
    if (initialState instanceof Var)
      fail(
        ValueError,
        'initialState',
        'a Tensor (the state takes no gradient: pass its .data)',
        'a Var',
      );
    if (!isTensor(initialState))
      fail(ValueError, 'initialState', 'a Tensor', describe(initialState));
    if (initialState.shape.join() !== [B, H, K, V].join())
      fail(
        ShapeError,
        'initialState',
        `shape [${B}, ${H}, ${K}, ${V}] ([B, H, K, V])`,
        formatShape(initialState.shape),
      );
  }
  const kernel: GlaKernelOptions = { form };
  if (scale !== undefined) kernel.scale = scale;
  if (outputFinalState) kernel.outputFinalState = true;
  const attrs: GlaAttrs = { options: kernel, hasState: initialState !== undefined, out: {} };
  const inputs = initialState ? [q, k, v, gk, initialState] : [q, k, v, gk];
  // One float dtype over q, k, v, gk; the state may be f32 under f64 inputs and so on.
  const o = apply(glaOp, inputs, attrs, [0, 1, 2, 3]);
  return attrs.out.finalState ? { o, finalState: attrs.out.finalState } : { o };
}
