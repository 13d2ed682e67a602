import type { AttentionProblem, ResolvedMaskMod } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import type { UniformField, WgslBinding } from '@attnkit/webgpu';
import { biasGradLayout, biasGradMod, type TiledHooks } from '../hooks.js';

/**
 * The WGSL side of the skeleton's hooks (../hooks.ts): what the generator needs to know about
 * them (pure data, part of the pipeline key) and the hook functions it pastes into its one
 * template. Every per-call resource a hook reads is declared once, in `hookResources`: its
 * binding or uniform field goes to the generator, its data to the host, under one name.
 */

export type WgslScoreMod =
  | { kind: 'softcap' | 'alibi' | 'bias' }
  | { kind: 'custom'; name: string; wgsl: string; wgslGrad: string | undefined };

export interface WgslHooks {
  /** sigmoid and silu are the pointwise ones (`pointwiseFn`: their WGSL weight function). */
  normalize: 'softmax' | 'sigmoid' | 'silu';
  /** Softmax with attention sinks: the forward reads them (the backward sees them through LSE). */
  sinks: boolean;
  mods: readonly WgslScoreMod[];
  maskMod: { name: string; wgsl: string } | undefined;
  /**
   * PermuteHook (../hooks.ts): which rows are tiled through an index (absent = neither). The
   * indices are the u32 bindings `permq` (the LSE layout, so entry b P.lBatch + h P.lHead +
   * startQ + i) and `permk` (entry b P.pkBatch + hk P.pkHead + startK + j, uniforms added here).
   */
  permute?: { q: boolean; k: boolean } | undefined;
  /**
   * Backward with a bias mod that asks for its gradient (../hooks.ts biasGradMod): the dQ pass
   * stores dS into the storage binding `dbias` (declared by that kernel only) at
   * b P.dbBatch + h P.dbHead + i P.dbRow + j (uniforms added here). Absent otherwise, so
   * kernels without it are unchanged.
   */
  dbias?: boolean | undefined;
  /**
   * The HSTU mask hook (../hooks.ts HstuMaskHook): binding `hstut` (numTargets as u32, one per
   * batch entry) and uniforms hstuCtx, hstuWin, hstuFull, hstuCausal; `hk_hstu` tests each pair
   * of every visited tile (maskCode). Absent otherwise, so kernels without it are unchanged.
   */
  hstu?: boolean | undefined;
  /**
   * HSTU's bucketed rab (../hstu-rab.ts HstuRabHook): which tables it has (`pos`: binding
   * `rabp`, uniforms rabP (columns) and rabPH (head stride); `time`: binding `rabt`, uniform
   * rabTH, and the u32 binding `rabi` packing thresholds (rabT of them) at 0, keyTime at rabKT
   * and nextTime at rabNT) and, in the backward, whether the dQ pass accumulates the tables'
   * gradients (`grad`: storage bindings `drabp` / `drabt` declared by that kernel only).
   * `hk_rab` adds the term to the scaled score before the mods (scoreCode). Absent otherwise,
   * so kernels without it are unchanged.
   */
  rab?: { pos: boolean; time: boolean; grad: boolean } | undefined;
  /** Bindings the hooks add after the kernel's own, and fields they add to the uniform struct. */
  bindings: readonly WgslBinding[];
  uniforms: readonly UniformField[];
}

/** Plain FlashAttention: the kernels generate exactly the hook-free code. */
export const PLAIN_HOOKS: WgslHooks = {
  normalize: 'softmax',
  sinks: false,
  mods: [],
  maskMod: undefined,
  bindings: [],
  uniforms: [],
};

export interface HookResources {
  hooks: WgslHooks;
  /**
   * Data of each hook binding by name: f32 values (or u32 row indices) to upload, or an f32
   * webgpu tensor to bind.
   */
  data: Record<string, Float32Array | Uint32Array | Tensor>;
  /** Values of the hook uniform fields by name. */
  values: Record<string, number>;
}

/** An index array's bits as u32 (one zero for an empty one: no binding may be empty). */
function indexData(x: Int32Array): Uint32Array {
  return x.length === 0 ? new Uint32Array(1) : new Uint32Array(x.buffer, x.byteOffset, x.length);
}

/**
 * The hooks of one call of one pass, with their bindings, uniform fields and data. `p` (the
 * index layout of hooks.permute's `k`) is needed only with a key permutation.
 */
export function hookResources(
  tiled: TiledHooks,
  maskMod: ResolvedMaskMod | undefined,
  pass: 'forward' | 'backward',
  p?: Pick<AttentionProblem, 'layout' | 'hkv' | 'maxSeqK' | 'totalK' | 'batch' | 'hq'>,
): HookResources {
  const bindings: WgslBinding[] = [];
  const uniforms: UniformField[] = [];
  const data: Record<string, Float32Array | Uint32Array | Tensor> = {};
  const values: Record<string, number> = {};
  const bind = (name: string, d: Float32Array | Tensor) => {
    bindings.push({ name, kind: 'read', type: 'array<f32>' });
    data[name] = d;
  };
  const uniform = (name: string, type: 'u32' | 'f32', value: number) => {
    uniforms.push([name, type]);
    values[name] = value;
  };
  const norm = tiled.normalize;
  const sinks = norm.kind === 'softmax' && pass === 'forward' ? norm.sinks : undefined;
  if (sinks) bind('sinks', sinks);
  if (norm.kind === 'sigmoid') bind('sigmoidBias', norm.bias);
  if (norm.kind === 'silu') {
    uniform('siluFactor', 'f32', norm.factor);
    // The forward's weights leave out c ln 2 (hk_silu below); its output stores apply it once.
    if (pass === 'forward') uniform('siluOut', 'f32', norm.factor * Math.LN2);
  }
  const mods = tiled.scoreMods.map((m, n): WgslScoreMod => {
    switch (m.kind) {
      case 'softcap':
        uniform(`cap${n}`, 'f32', m.cap);
        return { kind: 'softcap' };
      case 'alibi':
        bind(`slopes${n}`, m.slopes);
        return { kind: 'alibi' };
      case 'bias':
        bind(`bias${n}`, m.bias);
        uniform(`biasBatch${n}`, 'u32', m.batchStride);
        uniform(`biasHead${n}`, 'u32', m.headStride);
        uniform(`biasRow${n}`, 'u32', m.rowStride);
        return { kind: 'bias' };
      default:
        return { kind: 'custom', name: m.name, wgsl: m.wgsl ?? '', wgslGrad: m.wgslGrad };
    }
  });
  // Permuted rows: each index once, as u32 (the family layer validated the permutations).
  const perm = tiled.permute;
  if (perm?.q) {
    bindings.push({ name: 'permq', kind: 'read', type: 'array<u32>' });
    data.permq = indexData(perm.q);
  }
  if (perm?.k) {
    if (!p)
      throw new Error('hookResources: a key permutation needs the problem (its index layout)');
    bindings.push({ name: 'permk', kind: 'read', type: 'array<u32>' });
    data.permk = indexData(perm.k);
    const bhnd = p.layout === 'BHND';
    uniform('pkBatch', 'u32', bhnd ? p.hkv * p.maxSeqK : 0);
    uniform('pkHead', 'u32', bhnd ? p.maxSeqK : p.totalK);
  }
  const permute = perm && (perm.q || perm.k) ? { q: !!perm.q, k: !!perm.k } : undefined;
  const grad = pass === 'backward' ? biasGradMod(tiled.scoreMods) : undefined;
  if (grad) {
    if (!p) throw new Error('hookResources: a bias gradient needs the problem (its layout)');
    const layout = biasGradLayout(p, grad.mod);
    uniform('dbBatch', 'u32', layout.batchStride);
    uniform('dbHead', 'u32', layout.headStride);
    uniform('dbRow', 'u32', grad.mod.rowStride);
  }
  const rab = rabResources(tiled, pass, bindings, uniform, data);
  const hm = tiled.mask;
  if (hm) {
    bindings.push({ name: 'hstut', kind: 'read', type: 'array<u32>' });
    data.hstut = indexData(hm.numTargets);
    uniform('hstuCtx', 'u32', hm.contextual);
    uniform('hstuWin', 'u32', hm.maxAttnLen);
    uniform('hstuFull', 'u32', hm.minFull);
    uniform('hstuCausal', 'u32', hm.causal ? 1 : 0);
  }
  return {
    hooks: {
      normalize: norm.kind,
      sinks: sinks !== undefined,
      mods,
      maskMod: maskMod ? { name: maskMod.name, wgsl: maskMod.wgsl ?? '' } : undefined,
      ...(permute ? { permute } : {}),
      ...(grad ? { dbias: true } : {}),
      ...(hm ? { hstu: true } : {}),
      ...(rab ? { rab } : {}),
      bindings,
      uniforms,
    },
    data,
    values,
  };
}

/**
 * The bucketed rab hook's bindings and uniforms (WgslHooks.rab): each table as its own f32
 * binding (a webgpu tensor binds its buffer, a cpu one is uploaded), and the time term's three
 * int32 arrays packed into one u32 binding (thresholds, keyTime, nextTime; offsets as uniforms),
 * so the hook costs at most three storage buffers, five in the dQ pass with grad (its two
 * gradient outputs): HSTU's dQ pass with the mask hook then binds 12 (host.ts compile checks
 * the device's maxStorageBuffersPerShaderStage: 16 on the H200 and on llvmpipe; WebGPU's
 * default of 8 would need the tables packed into one buffer).
 */
function rabResources(
  tiled: TiledHooks,
  pass: 'forward' | 'backward',
  bindings: WgslBinding[],
  uniform: (name: string, type: 'u32' | 'f32', value: number) => void,
  data: Record<string, Float32Array | Uint32Array | Tensor>,
): WgslHooks['rab'] {
  const r = tiled.rab;
  if (!r) return undefined;
  const table = (t: Tensor) => (t.device === 'cpu' ? t.toFloat32Array() : t);
  const pos = r.positionTable;
  if (pos) {
    bindings.push({ name: 'rabp', kind: 'read', type: 'array<f32>' });
    data.rabp = table(pos);
    const cols = pos.shape[1]!;
    uniform('rabP', 'u32', cols);
    uniform('rabPH', 'u32', pos.shape[0] === 1 ? 0 : cols);
  }
  const time = r.timestampTable;
  if (time) {
    bindings.push({ name: 'rabt', kind: 'read', type: 'array<f32>' });
    data.rabt = table(time);
    bindings.push({ name: 'rabi', kind: 'read', type: 'array<u32>' });
    const th = r.thresholds!;
    const kt = r.keyTime!;
    const nt = r.nextTime!;
    const packed = new Int32Array(th.length + kt.length + nt.length);
    packed.set(th, 0);
    packed.set(kt, th.length);
    packed.set(nt, th.length + kt.length);
    data.rabi = indexData(packed);
    uniform('rabTH', 'u32', time.shape[0] === 1 ? 0 : time.shape[1]!);
    uniform('rabT', 'u32', th.length);
    uniform('rabKT', 'u32', th.length);
    uniform('rabNT', 'u32', th.length + kt.length);
  }
  return { pos: !!pos, time: !!time, grad: pass === 'backward' && r.grad };
}

/** Whether the backward multiplies dS by mod derivatives (1 for the additive mods). */
export function modsHaveGrad(h: WgslHooks): boolean {
  return h.mods.some((m) => m.kind === 'softcap' || m.kind === 'custom');
}

/**
 * ../hooks.ts hstuMaskAllowed (= @attnkit/attention hstuAllowed) for query i, key j of
 * sequence b of length n, in i32 (positions and counts are far below 2^31).
 */
const HSTU_FN = `fn hk_hstu(b: u32, i: i32, j: i32, n: i32) -> bool {
  let c = i32(P.hstuCtx);
  let m = i32(P.hstuWin);
  let f = i32(P.hstuFull);
  var top = n - i32(hstut[b]);
  var r = i;
  var s = j;
  if (c > 0) {
    top = top - c + 1;
    r = max(i - c + 1, 0);
    s = max(j - c + 1, 0);
  }
  r = min(r, top);
  s = min(s, top);
  var d = r - s;
  if (P.hstuCausal == 0u) { d = abs(d); }
  var ok = i == j || d > 0;
  if (m > 0) { ok = ok && (d <= m || (f > 0 && r >= top - f)); }
  if (c > 0) { ok = ok || (r == 0 && s < top); }
  return ok;
}`;

/**
 * The bucketed rab term (../hstu-rab.ts HstuRabHook) in WGSL: `hk_tcol` is the time column of
 * query position i, key position j (sequence keys from sk): the last threshold <= |dt|, by
 * binary search over the rabT thresholds (at most 72 with the default log buckets), exact in
 * i32 (both rebased times are in [0, 2^31)). `hk_rab` adds pos + time to 4 scaled scores of
 * query rows i (position i + nk - nq) and keys j; padding rows and columns read nothing.
 */
function rabFunctions(r: NonNullable<WgslHooks['rab']>): string {
  const tcol = r.time
    ? `fn hk_tcol(i: u32, j: u32, sk: u32) -> u32 {
  let dt = abs(bitcast<i32>(rabi[P.rabNT + sk + i]) - bitcast<i32>(rabi[P.rabKT + sk + j]));
  var lo = 0u;
  var hi = P.rabT - 1u;
  while (lo < hi) {
    let mid = (lo + hi + 1u) >> 1u;
    if (bitcast<i32>(rabi[mid]) <= dt) { lo = mid; } else { hi = mid - 1u; }
  }
  return lo;
}
`
    : '';
  const terms = [
    ...(r.pos
      ? [
          `let np = i32(P.rabP);
      let pc = clamp(i32(j[c]) - i32(qi) + (np - 1) / 2, 0, np - 1);
      r[c] += rabp[h * P.rabPH + u32(pc)];`,
        ]
      : []),
    ...(r.time ? ['r[c] += rabt[h * P.rabTH + hk_tcol(qi, j[c], sk)];'] : []),
  ];
  return `${tcol}fn hk_rab(s: vec4<f32>, h: u32, i: vec4<u32>, j: vec4<u32>, nq: u32, nk: u32, sk: u32) -> vec4<f32> {
  var r = s;
  for (var c = 0u; c < 4u; c++) {
    if (i[c] < nq && j[c] < nk) {
      let qi = i[c] + nk - nq;
      ${terms.join('\n      ')}
    }
  }
  return r;
}`;
}

const ARGS = 'b, h, i, j, nq, nk';
const PARAMS = 'b: u32, h: u32, i: vec4<u32>, j: vec4<u32>, nq: u32, nk: u32';

/** Mod n as a vec4 function of 4 scores (query positions i, key positions j), and its derivative. */
function modFunctions(m: WgslScoreMod, n: number, backward: boolean): string {
  const fn = (name: string, body: string) =>
    `fn ${name}(s: vec4<f32>, ${PARAMS}) -> vec4<f32> {\n  ${body}\n}`;
  const f = `hk_mod${n}`;
  const perLane = (name: string) =>
    `return vec4<f32>(${['x', 'y', 'z', 'w'].map((c) => `${name}(s.${c}, b, h, i.${c}, j.${c})`).join(', ')});`;
  switch (m.kind) {
    case 'softcap': {
      // tanh(15) is 1 in f32: clamping changes nothing and keeps tanh's exp from overflowing.
      const t = `tanh(clamp(s / P.cap${n}, vec4<f32>(-15.0), vec4<f32>(15.0)))`;
      const grad = backward ? `\n${fn(`${f}_grad`, `let t = ${t};\n  return 1.0 - t * t;`)}` : '';
      return `${fn(f, `return P.cap${n} * ${t};`)}${grad}`;
    }
    case 'alibi':
      // The distance to the bottom-right diagonal, |i + nk - nq - j| (mods.ts).
      return fn(
        f,
        `let dist = abs(vec4<f32>(vec4<i32>(i) + vec4<i32>(i32(nk) - i32(nq)) - vec4<i32>(j)));
  return s - slopes${n}[h] * dist;`,
      );
    case 'bias':
      // Padding rows and columns of a tile read nothing (they are masked or never stored).
      return fn(
        f,
        `var r = s;
  for (var c = 0u; c < 4u; c++) {
    if (i[c] < nq && j[c] < nk) { r[c] += bias${n}[b * P.biasBatch${n} + h * P.biasHead${n} + i[c] * P.biasRow${n} + j[c]]; }
  }
  return r;`,
      );
    case 'custom': {
      const grad = backward ? `\n${fn(`${f}_grad`, perLane(`${m.name}_grad`))}` : '';
      return `${fn(f, perLane(m.name))}${grad}`;
    }
  }
}

/**
 * The hook functions of a kernel (empty without hooks): the user's WGSL, each mod as a vec4
 * function, their composition `hk_score` (forward) / `hk_score_bwd` (backward: the modded score
 * and the product of the mods' derivatives, each at its own input), and the pointwise
 * normalisation's weight function (`pointwiseFn`).
 */
export function hookFunctions(h: WgslHooks, backward: boolean): string {
  const parts: string[] = [];
  // The user's sources, once each (a mod listed twice is one definition).
  const user = new Set<string>();
  for (const m of h.mods) {
    if (m.kind !== 'custom') continue;
    user.add(m.wgsl);
    if (backward && m.wgslGrad !== undefined) user.add(m.wgslGrad);
  }
  if (h.maskMod) user.add(h.maskMod.wgsl);
  parts.push(...[...user].map((s) => s.trim()));
  if (h.hstu) parts.push(HSTU_FN);
  if (h.rab) parts.push(rabFunctions(h.rab));
  if (h.mods.length > 0) {
    parts.push(...h.mods.map((m, n) => modFunctions(m, n, backward)));
    if (backward && modsHaveGrad(h)) {
      const steps = h.mods.map((m, n) => {
        const apply = `x = hk_mod${n}(x, ${ARGS});`;
        return m.kind === 'softcap' || m.kind === 'custom'
          ? `g *= hk_mod${n}_grad(x, ${ARGS});\n  ${apply}`
          : apply;
      });
      parts.push(`struct HkModded { s: vec4<f32>, g: vec4<f32> }
fn hk_score_bwd(s: vec4<f32>, ${PARAMS}) -> HkModded {
  var x = s;
  var g = vec4<f32>(1.0);
  ${steps.join('\n  ')}
  return HkModded(x, g);
}`);
    } else {
      parts.push(`fn hk_score(s: vec4<f32>, ${PARAMS}) -> vec4<f32> {
  var x = s;
  ${h.mods.map((_, n) => `x = hk_mod${n}(x, ${ARGS});`).join('\n  ')}
  return x;
}`);
    }
  }
  const pw = pointwiseWgsl(h.normalize, backward);
  if (pw) parts.push(pw);
  return parts.join('\n');
}

/**
 * The WGSL weight function of a pointwise normalisation (HkSigmoid / HkSilu: w and dw/ds), empty
 * for softmax: what hookFunctions adds for it, and what the decode kernel (decode.ts) takes alone.
 */
export function pointwiseWgsl(normalize: WgslHooks['normalize'], backward: boolean): string {
  const parts: string[] = [];
  if (normalize === 'sigmoid') {
    // x = z log2(e): exp2 of -|x| only, so nothing overflows; masked x = NEG gives w = 0.
    // w (1 - w) = e r^2 exactly, without the cancellation of 1 - w near w = 1.
    parts.push(`struct HkSigmoid { w: vec4<f32>, dw: vec4<f32> }
fn hk_sigmoid(x: vec4<f32>) -> HkSigmoid {
  let e = exp2(-abs(x));
  let r = 1.0 / (1.0 + e);
  return HkSigmoid(select(e * r, r, x >= vec4<f32>(0.0)), e * r * r);
}`);
  }
  if (normalize === 'silu' && !backward) {
    // The forward needs w alone, and only through O = sum w v: it takes w / (c ln 2) =
    // x / (1 + 2^-x) (z = x ln 2), one exp2 and one division, no selects, and the output stores
    // multiply by P.siluOut = c ln 2 once per element of O (`pointwiseOut`) instead of twice per
    // score. A masked score (NEG, or -inf from a mod) has x clamped finite and 2^-x = inf, so
    // w = x / inf = 0; NaN stays NaN through 1 + 2^-x whatever max does with it; large negative
    // x overflow 2^-x to inf, w = -0.
    parts.push(`struct HkSilu { w: vec4<f32>, dw: vec4<f32> }
fn hk_silu(x: vec4<f32>) -> HkSilu {
  return HkSilu(max(x, vec4<f32>(-1.0e38)) / (1.0 + exp2(-x)), vec4<f32>(0.0));
}`);
  } else if (normalize === 'silu') {
    // w = c silu(z) = c z sig(z) with z = x ln 2 (x: the kernels' log2 units, converted here);
    // sig(z) and 1 - sig(z) = sig(-z) from exp2(-|x|): no overflow, no cancellation near 1.
    // dw/dz = c sig(z) (1 + z sig(-z)). A masked score (NEG, or -inf from a mod) weighs 0 with
    // derivative 0 (z * 0 would be NaN at -inf); NaN stays NaN (every comparison is false).
    parts.push(`struct HkSilu { w: vec4<f32>, dw: vec4<f32> }
fn hk_silu(x: vec4<f32>) -> HkSilu {
  let z = x * 0.6931471805599453;
  let e = exp2(-abs(x));
  let r = 1.0 / (1.0 + e);
  let pos = x >= vec4<f32>(0.0);
  let sg = select(e * r, r, pos);
  let sn = select(r, e * r, pos);
  let c = P.siluFactor;
  let off = x < vec4<f32>(-1.0e38);
  return HkSilu(select(c * z * sg, vec4<f32>(0.0), off), select(c * sg * (1.0 + z * sn), vec4<f32>(0.0), off));
}`);
  }
  return parts.join('\n');
}

/** The WGSL weight function (w, dw in one struct) of a pointwise normalisation. */
export function pointwiseFn(h: Pick<WgslHooks, 'normalize'>): string {
  return h.normalize === 'silu' ? 'hk_silu' : 'hk_sigmoid';
}

/** The forward's factor on a pointwise O (and split-K partial): silu's c ln 2 (see hk_silu). */
export function pointwiseOut(h: Pick<WgslHooks, 'normalize'>): string {
  return h.normalize === 'silu' ? ' * P.siluOut' : '';
}

/** Per-sequence setup of a pointwise normalisation's kernels (sigmoid: its bias in log2 units). */
export function pointwisePrelude(h: Pick<WgslHooks, 'normalize'>): string {
  return h.normalize === 'sigmoid' ? 'let sb = sigmoidBias[b] * LOG2E;' : '';
}
