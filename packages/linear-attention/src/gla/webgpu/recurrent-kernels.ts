import type { GlaKernel, GlaStorage } from './kernels.js';

/**
 * WGSL of GLA's recurrent form on WebGPU (fla's fused_recurrent_gla; ../recurrent.ts is the TS
 * form and its comments hold the algebra). One workgroup per (sequence, head, block of V
 * columns) walks the sequence's tokens in order (in reverse with `reverse`), its block of the
 * K x V state in registers:
 *   S_t = diag(e^{gk_t}) S_{t-1} + k_t^T v_t,   o_t = (scale q_t) S_t.
 *
 * The conventions of the chunk kernels (./kernels.ts): layout BTHK with element (row, h, x) of
 * q, k, gk at (row * H + h) * K + x (row = batch * T + t); f16 / bf16 inputs read as packed u32
 * words; outputs in f32 (castShader afterwards for halves); a read-only table `tab` (SEQ_REC
 * u32 per sequence). Sums across threads go through plain workgroup arrays (no subgroup
 * operations: the H200 driver issue beside other features), and, as kernels.test.ts guards, no
 * scalar workgroup variable and no workgroupUniformLoad: every loop bound comes from the table
 * or the uniform (the construct whose loop never ran on the H200, BENCHMARKS.md run 1).
 */

/** tab[4 n + i]: sequence n's first absolute row (i 0), length (1), first checkpoint (2). */
export const SEQ_REC = 4;

/** Steps between the backward's checkpointed states (../recurrent.ts RECURRENT_CHECKPOINT). */
export const GLA_REC_SEGMENT = 64;

/** The uniform every recurrent kernel binds first. */
export const REC_PARAMS_FIELDS = [
  ['H', 'u32'],
  ['K', 'u32'],
  ['V', 'u32'],
  ['nbV', 'u32'],
  ['scale', 'f32'],
  ['hasInit', 'u32'],
  ['hasFinal', 'u32'],
  ['reverse', 'u32'],
  ['n', 'u32'],
  ['parts', 'u32'],
  ['scrOff', 'u32'],
  ['pad0', 'u32'],
] as const;

const PARAMS = `struct Params {
  H: u32, K: u32, V: u32, nbV: u32,
  scale: f32, hasInit: u32, hasFinal: u32, reverse: u32,
  n: u32, parts: u32, scrOff: u32, pad0: u32,
}
@group(0) @binding(0) var<uniform> P: Params;`;

type Binding =
  | { name: string; kind: 'in'; dtype: GlaStorage }
  | { name: string; kind: 'u32' | 'f32' | 'out' | 'atomic' };

function kernel(label: string, bindings: readonly Binding[], body: string): GlaKernel {
  const lines = [PARAMS];
  const kinds: ('uniform' | 'read' | 'storage')[] = ['uniform'];
  bindings.forEach((b, i) => {
    const at = `@group(0) @binding(${i + 1})`;
    if (b.kind === 'in') {
      kinds.push('read');
      if (b.dtype === 'f32')
        lines.push(`${at} var<storage, read> ${b.name}: array<f32>;
fn ld_${b.name}(e: u32) -> f32 { return ${b.name}[e]; }`);
      else if (b.dtype === 'f16')
        lines.push(`${at} var<storage, read> ${b.name}: array<u32>;
fn ld_${b.name}(e: u32) -> f32 { return unpack2x16float(${b.name}[e >> 1u])[e & 1u]; }`);
      // bf16 is the top half of an f32.
      else
        lines.push(`${at} var<storage, read> ${b.name}: array<u32>;
fn ld_${b.name}(e: u32) -> f32 {
  let w = ${b.name}[e >> 1u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u));
}`);
    } else if (b.kind === 'u32' || b.kind === 'f32') {
      kinds.push('read');
      lines.push(`${at} var<storage, read> ${b.name}: array<${b.kind}>;`);
    } else if (b.kind === 'out') {
      kinds.push('storage');
      lines.push(`${at} var<storage, read_write> ${b.name}: array<f32>;`);
    } else {
      kinds.push('storage');
      lines.push(`${at} var<storage, read_write> ${b.name}: array<atomic<u32>>;`);
    }
  });
  return {
    code: `${lines.join('\n')}\n${body}`,
    bindings: kinds,
    names: bindings.map((b) => b.name),
    label,
  };
}

const u = (n: number) => `${n}u`;
const pow2ceil = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));

/** `body` n times with `const v = k` (register arrays indexed by constants stay in registers). */
function unroll(n: number, v: string, body: string): string {
  return Array.from({ length: n }, (_, k) => `{\n  const ${v} = ${k}u;\n${body}\n}`).join('\n');
}

/**
 * The gate check of the chunk form's prep pass: the smallest flat index of a gate that is not
 * finite and <= 0 (bit tests: WGSL may assume no NaN in comparisons) goes to flag[0].
 */
const gateCheck = (g: string, e: string) => `{
  let bits = bitcast<u32>(${g});
  if ((bits != 0u && bits < 0x80000000u) || (bits & 0x7fffffffu) >= 0x7f800000u) {
    atomicMin(&flag[0], ${e});
  }
}`;

/** Workgroup memory the kernels keep within (llvmpipe's limit; the H200 has 48 KiB). */
export const GLA_REC_WORKGROUP_BYTES = 32768;

/**
 * The forward's thread grid: TK rows x BV columns of threads, R state rows per thread, and TB
 * tokens staged per pair of barriers (8, fewer where K is large: their q, k, e^{gk} [TB, KP]
 * and v [TB, BV], and the threads' parts of o [TB, WG], share the workgroup memory).
 */
export function recForwardShape(K: number, V: number) {
  const BV = Math.min(32, pow2ceil(V));
  const TK = Math.min(256 / BV, pow2ceil(K));
  const R = Math.ceil(K / TK);
  const KP = TK * R;
  const WG = TK * BV;
  const perToken = 3 * KP + BV + WG;
  const TB = Math.max(1, Math.min(8, Math.floor(GLA_REC_WORKGROUP_BYTES / 4 / perToken)));
  return { BV, TK, R, KP, WG, TB, bytes: 4 * TB * perToken };
}

/** Why the recurrent kernels cannot take K, else undefined (their workgroup memory). */
export function recUnsupportedK(K: number, V: number): string | undefined {
  const f = recForwardShape(K, V);
  const b = recBackwardShape(K, V);
  if (f.bytes <= GLA_REC_WORKGROUP_BYTES && b.bytes <= GLA_REC_WORKGROUP_BYTES) return undefined;
  return `K and V whose recurrent kernels fit ${GLA_REC_WORKGROUP_BYTES} bytes of workgroup memory (K up to 2048 fits for any V), got K ${K}, V ${V} (forward ${f.bytes} bytes, backward ${b.bytes})`;
}

/**
 * The forward: workgroups (ceil(V / BV), H, N). Per block of TB tokens: the block's q, k,
 * e^{gk} (with the gate check) and v staged in workgroup memory (one load and one exp per
 * element, not one per thread of a row); a barrier; thread (ty, tx), owning column v0 + tx and
 * rows ty + TK i of the state, updates them token by token and leaves its part of o_t[y] (the
 * sum over its rows) in `red`; a barrier; the TK parts of each column summed (the reduction
 * over K) and o written. The next block's staging needs no barrier of its own: it writes other
 * arrays than the sums read, and the second barrier ordered it after this block's updates.
 */
export function recForwardShader(
  dtype: GlaStorage,
  gkType: GlaStorage,
  initDType: GlaStorage,
  K: number,
  V: number,
): GlaKernel {
  const { BV, TK, R, KP, WG, TB } = recForwardShape(K, V);
  // Staged tiles: q (scale applied at the end), k, e^{gk} at [TB, KP], v at [TB, BV].
  const SQ = 0;
  const SK = TB * KP;
  const SE = 2 * TB * KP;
  const SV = 3 * TB * KP;
  return kernel(
    `gla recurrent forward K${K} V${V}`,
    [
      { name: 'tab', kind: 'u32' },
      { name: 'q', kind: 'in', dtype },
      { name: 'k', kind: 'in', dtype },
      { name: 'v', kind: 'in', dtype },
      { name: 'gk', kind: 'in', dtype: gkType },
      { name: 'init', kind: 'in', dtype: initDType },
      { name: 'out', kind: 'out' },
      { name: 'fin', kind: 'out' },
      { name: 'flag', kind: 'atomic' },
    ],
    `var<workgroup> st: array<f32, ${SV + TB * BV}>;
var<workgroup> red: array<f32, ${TB * WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let n = wg.z;
  let h = wg.y;
  let v0 = wg.x * ${u(BV)};
  let tid = lid.x;
  let ty = tid / ${u(BV)};
  let tx = tid % ${u(BV)};
  let y = v0 + tx;
  // Loop bounds from the read-only table: uniform across the workgroup (barriers inside).
  let row0 = tab[${SEQ_REC}u * n];
  let len = tab[${SEQ_REC}u * n + 1u];
  let sbase = (n * P.H + h) * P.K * P.V;
  var S: array<f32, ${R}>;
  ${unroll(
    R,
    'i',
    `let x = ty + ${u(TK)} * i;
  var s0 = 0.0;
  if (P.hasInit != 0u && x < P.K && y < P.V) { s0 = ld_init(sbase + x * P.V + y); }
  S[i] = s0;`,
  )}
  for (var i0 = 0u; i0 < len; i0 += ${u(TB)}) {
    for (var e = tid; e < ${u(TB * KP)}; e += ${u(WG)}) {
      let it = i0 + e / ${u(KP)};
      let x = e % ${u(KP)};
      var qv = 0.0;
      var kv = 0.0;
      var dv = 1.0;
      if (it < len && x < P.K) {
        let row = row0 + select(it, len - 1u - it, P.reverse != 0u);
        let gi = (row * P.H + h) * P.K + x;
        let g = ld_gk(gi);
        ${gateCheck('g', 'gi')}
        qv = ld_q(gi);
        kv = ld_k(gi);
        dv = exp(g);
      }
      st[${u(SQ)} + e] = qv;
      st[${u(SK)} + e] = kv;
      st[${u(SE)} + e] = dv;
    }
    for (var e = tid; e < ${u(TB * BV)}; e += ${u(WG)}) {
      let it = i0 + e / ${u(BV)};
      let yy = v0 + e % ${u(BV)};
      var vv = 0.0;
      if (it < len && yy < P.V) {
        let row = row0 + select(it, len - 1u - it, P.reverse != 0u);
        vv = ld_v((row * P.H + h) * P.V + yy);
      }
      st[${u(SV)} + e] = vv;
    }
    workgroupBarrier();
    // Tokens past the sequence have k = v = 0 and e^{gk} = 1: S stays as it is.
    for (var tj = 0u; tj < ${u(TB)}; tj++) {
      let vy = st[${u(SV)} + tj * ${u(BV)} + tx];
      var part = 0.0;
      ${unroll(
        R,
        'i',
        `let a = tj * ${u(KP)} + ty + ${u(TK)} * i;
      S[i] = fma(st[${u(SE)} + a], S[i], st[${u(SK)} + a] * vy);
      part = fma(st[${u(SQ)} + a], S[i], part);`,
      )}
      red[tj * ${u(WG)} + tid] = part;
    }
    workgroupBarrier();
    for (var o = tid; o < ${u(TB * BV)}; o += ${u(WG)}) {
      let j = o / ${u(BV)};
      let c = o % ${u(BV)};
      let it = i0 + j;
      if (it < len && v0 + c < P.V) {
        var s = 0.0;
        for (var r = 0u; r < ${u(TK)}; r++) { s += red[j * ${u(WG)} + r * ${u(BV)} + c]; }
        let row = row0 + select(it, len - 1u - it, P.reverse != 0u);
        out[(row * P.H + h) * P.V + v0 + c] = P.scale * s;
      }
    }
  }
  if (P.hasFinal != 0u) {
    ${unroll(
      R,
      'i',
      `let x = ty + ${u(TK)} * i;
    if (x < P.K && y < P.V) { fin[sbase + x * P.V + y] = S[i]; }`,
    )}
  }
}`,
  );
}

/**
 * The backward's thread grid: TK x TV threads, thread (ty, tx) owning rows ty + TK i (i < R) and
 * columns v0 + tx + TV j (j < CJ) of a BV-column block. Row-wise sums (dq, dk, dgk: over V) and
 * column-wise ones (dv: over K) both cross threads, so the tile is near square in threads.
 */
export function recBackwardShape(K: number, V: number) {
  const BV = Math.min(pow2ceil(V), K > 128 ? 32 : 64);
  const TK = Math.min(64, pow2ceil(K));
  const R = Math.ceil(K / TK);
  const KP = TK * R;
  // 4 column threads, fewer where the row parts [3, KP, TV] would not fit beside dv's [TK, BV].
  let TV = Math.min(4, BV);
  while (TV > 1 && 4 * (3 * KP * TV + TK * BV) > GLA_REC_WORKGROUP_BYTES) TV /= 2;
  const bytes = 4 * (3 * KP * TV + TK * BV);
  return { BV, TV, CJ: BV / TV, TK, R, KP, WG: TK * TV, SEG: GLA_REC_SEGMENT, bytes };
}

/** Scratch floats the backward needs per workgroup (the states of one segment). */
export function recBackwardScratch(K: number, V: number): number {
  const s = recBackwardShape(K, V);
  return s.SEG * s.R * s.CJ * s.WG;
}

/**
 * The backward (../recurrent.ts recurrentGlaBackwardArrays on the GPU): workgroups
 * (ceil(V / BV), H, N). A forward sweep keeps the state every SEG steps in `ck` ([segments, H,
 * K, V] at the start of the workspace `ws`, each thread its own elements); then the segments in
 * reverse: the segment's states recomputed from its checkpoint into the workspace from
 * P.scrOff on (per thread, so no barrier), and its tokens in
 * reverse with dS (from dht) in registers:
 *   dS += scale q_t^T dO_t;  dq_t = scale S_t dO_t;  dk_t = dS v_t;  dv_t = k_t dS;
 *   dgk_t = e^{gk_t} rowsum(dS * S_{t-1});  dS <- diag(e^{gk_t}) dS
 * (dgk straight from the states: no cancellation for any gate). dv sums over K within the
 * workgroup; dq, dk, dgk sum over this block's columns and leave as one part per V block in
 * pq, pk, pg ([nbV, B T H K] each; with one V block the outputs themselves, else added up in
 * place by recSumShader). dh0 = the final dS. 15 storage bindings (the adapters give 16).
 */
export function recBackwardShader(
  dtype: GlaStorage,
  gkType: GlaStorage,
  initDType: GlaStorage,
  dhtDType: GlaStorage,
  K: number,
  V: number,
): GlaKernel {
  const { BV, TV, CJ, TK, R, KP, WG, SEG } = recBackwardShape(K, V);
  const M = R * CJ;
  // Element m = i CJ + j of a thread's tile; x, y its row and column.
  const tile = (body: string) =>
    unroll(
      R,
      'i',
      unroll(
        CJ,
        'j',
        `let m = i * ${u(CJ)} + j;
  let x = ty + ${u(TK)} * i;
  let y = v0 + tx + ${u(TV)} * j;
  ${body}`,
      ),
    );
  // One step of the recurrence for processed token `i` (with the gate check).
  const step = (i: string) => `{
    let row = row0 + select(${i}, len - 1u - (${i}), P.reverse != 0u);
    var vv = array<f32, ${CJ}>();
    ${unroll(
      CJ,
      'j',
      `let y = v0 + tx + ${u(TV)} * j;
    var a = 0.0;
    if (y < P.V) { a = ld_v((row * P.H + h) * P.V + y); }
    vv[j] = a;`,
    )}
    ${unroll(
      R,
      'i',
      `let x = ty + ${u(TK)} * i;
    if (x < P.K) {
      let e = (row * P.H + h) * P.K + x;
      let g = ld_gk(e);
      ${gateCheck('g', 'e')}
      let d = exp(g);
      let kx = ld_k(e);
      ${unroll(CJ, 'j', `S[i * ${u(CJ)} + j] = fma(d, S[i * ${u(CJ)} + j], kx * vv[j]);`)}
    }`,
    )}
  }`;
  const scrAt = (j: string) =>
    `P.scrOff + ((wl * ${u(SEG)} + ${j}) * ${u(M)} + m) * ${u(WG)} + tid`;
  const RA = 3 * KP * TV;
  return kernel(
    `gla recurrent backward K${K} V${V}`,
    [
      { name: 'tab', kind: 'u32' },
      { name: 'q', kind: 'in', dtype },
      { name: 'k', kind: 'in', dtype },
      { name: 'v', kind: 'in', dtype },
      { name: 'gk', kind: 'in', dtype: gkType },
      { name: 'dO', kind: 'in', dtype },
      { name: 'init', kind: 'in', dtype: initDType },
      { name: 'dht', kind: 'in', dtype: dhtDType },
      { name: 'ws', kind: 'out' },
      { name: 'pq', kind: 'out' },
      { name: 'pk', kind: 'out' },
      { name: 'pg', kind: 'out' },
      { name: 'dv', kind: 'out' },
      { name: 'fin', kind: 'out' },
      { name: 'flag', kind: 'atomic' },
    ],
    // red: [3, KP, TV] row parts (dq, dk, dgk), then [TK, BV] column parts (dv).
    `var<workgroup> red: array<f32, ${RA + TK * BV}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let n = wg.z;
  let h = wg.y;
  let v0 = wg.x * ${u(BV)};
  let tid = lid.x;
  let ty = tid / ${u(TV)};
  let tx = tid % ${u(TV)};
  let wl = (n * P.H + h) * P.nbV + wg.x;
  // Loop bounds from the read-only table: uniform across the workgroup (barriers inside).
  let row0 = tab[${SEQ_REC}u * n];
  let len = tab[${SEQ_REC}u * n + 1u];
  let seg0 = tab[${SEQ_REC}u * n + 2u];
  let KV = P.K * P.V;
  let sbase = (n * P.H + h) * KV;
  let nk = P.n;
  var S: array<f32, ${M}>;
  var dS: array<f32, ${M}>;
  ${tile(`var s0 = 0.0;
  var d0 = 0.0;
  if (x < P.K && y < P.V) {
    if (P.hasInit != 0u) { s0 = ld_init(sbase + x * P.V + y); }
    if (P.hasFinal != 0u) { d0 = ld_dht(sbase + x * P.V + y); }
  }
  S[m] = s0;
  dS[m] = d0;`)}
  // Forward sweep: the checkpoints.
  for (var it = 0u; it < len; it++) {
    if (it % ${u(SEG)} == 0u) {
      let cb = ((seg0 + it / ${u(SEG)}) * P.H + h) * KV;
      ${tile('if (x < P.K && y < P.V) { ws[cb + x * P.V + y] = S[m]; }')}
    }
    ${step('it')}
  }
  let nseg = (len + ${u(SEG - 1)}) / ${u(SEG)};
  for (var cc = 0u; cc < nseg; cc++) {
    let c = nseg - 1u - cc;
    let i0 = c * ${u(SEG)};
    let cnt = min(len - i0, ${u(SEG)});
    let cb = ((seg0 + c) * P.H + h) * KV;
    ${tile('var s = 0.0;\n  if (x < P.K && y < P.V) { s = ws[cb + x * P.V + y]; }\n  S[m] = s;')}
    // The segment's states before each of its tokens, each thread its own elements.
    for (var tj = 0u; tj < cnt; tj++) {
      ${tile(`ws[${scrAt('tj')}] = S[m];`)}
      ${step('i0 + tj')}
    }
    for (var jj = 0u; jj < cnt; jj++) {
      let tj = cnt - 1u - jj;
      let row = row0 + select(i0 + tj, len - 1u - i0 - tj, P.reverse != 0u);
      var vv = array<f32, ${CJ}>();
      var gg = array<f32, ${CJ}>();
      ${unroll(
        CJ,
        'j',
        `let y = v0 + tx + ${u(TV)} * j;
      var a = 0.0;
      var b = 0.0;
      if (y < P.V) {
        a = ld_v((row * P.H + h) * P.V + y);
        b = ld_dO((row * P.H + h) * P.V + y);
      }
      vv[j] = a;
      gg[j] = b;`,
      )}
      var dvp = array<f32, ${CJ}>();
      ${unroll(
        R,
        'i',
        `let x = ty + ${u(TK)} * i;
      var pq = 0.0;
      var pk = 0.0;
      var pg = 0.0;
      if (x < P.K) {
        let e = (row * P.H + h) * P.K + x;
        let d = exp(ld_gk(e));
        let kx = ld_k(e);
        let qx = P.scale * ld_q(e);
        ${unroll(
          CJ,
          'j',
          `let m = i * ${u(CJ)} + j;
        let sp = ws[${scrAt('tj')}];
        let st = fma(d, sp, kx * vv[j]);
        let ds = fma(qx, gg[j], dS[m]);
        pq = fma(st, gg[j], pq);
        pk = fma(ds, vv[j], pk);
        pg = fma(ds, sp, pg);
        dvp[j] = fma(kx, ds, dvp[j]);
        dS[m] = d * ds;`,
        )}
        pg = d * pg;
      }
      red[x * ${u(TV)} + tx] = pq;
      red[${u(KP * TV)} + x * ${u(TV)} + tx] = pk;
      red[${u(2 * KP * TV)} + x * ${u(TV)} + tx] = pg;`,
      )}
      ${unroll(CJ, 'j', `red[${u(RA)} + ty * ${u(BV)} + tx + ${u(TV)} * j] = dvp[j];`)}
      workgroupBarrier();
      for (var o = tid; o < ${u(3 * KP + BV)}; o += ${u(WG)}) {
        if (o < ${u(3 * KP)}) {
          let x = o % ${u(KP)};
          if (x < P.K) {
            var s = 0.0;
            for (var r = 0u; r < ${u(TV)}; r++) { s += red[o * ${u(TV)} + r]; }
            let at = wg.x * nk + (row * P.H + h) * P.K + x;
            // dq carries scale (the scaled q of the forward).
            if (o < ${u(KP)}) {
              pq[at] = P.scale * s;
            } else if (o < ${u(2 * KP)}) {
              pk[at] = s;
            } else {
              pg[at] = s;
            }
          }
        } else {
          let c = o - ${u(3 * KP)};
          if (v0 + c < P.V) {
            var s = 0.0;
            for (var r = 0u; r < ${u(TK)}; r++) { s += red[${u(RA)} + r * ${u(BV)} + c]; }
            dv[(row * P.H + h) * P.V + v0 + c] = s;
          }
        }
      }
      workgroupBarrier();
    }
  }
  if (P.hasInit != 0u) {
    ${tile('if (x < P.K && y < P.V) { fin[sbase + x * P.V + y] = dS[m]; }')}
  }
}`,
  );
}

/**
 * buf[e] = sum over b < P.parts of buf[b * P.n + e]: the backward's per-V-block parts of dq, dk
 * or dgk added up in place (each invocation reads and writes its own elements only), so the
 * part buffer's first P.n floats become the output. 2-D grid past 65535 groups.
 */
export function recSumShader(): GlaKernel {
  return kernel(
    'gla recurrent sum',
    [{ name: 'buf', kind: 'out' }],
    `@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let e = gid.x + gid.y * nw.x * 256u;
  if (e >= P.n) { return; }
  var s = 0.0;
  for (var b = 0u; b < P.parts; b++) { s += buf[b * P.n + e]; }
  buf[e] = s;
}`,
  );
}
