import { glaSubChunkSize } from '../plan.js';
import { GLA_TC_PAD, type GlaTc, glaMatrixOps, tcEnables, tcEntry } from './tc.js';

/**
 * WGSL of GLA's chunkwise form on WebGPU (fla's fla/ops/gla/chunk.py split into passes; the
 * algebra of ../chunk.ts and ../chunk-math.ts, whose comments say why each exponent is <= 0).
 *
 * Every kernel is generated from TS for one storage dtype set and chunk size C. Layout BTHK:
 * element (row, h, x) of q, k, gk at (row * H + h) * K + x with `row` the absolute token row
 * (batch * T + t); states [NC, H, K, V] f32 with NC the chunks of all sequences together. The
 * chunk and sequence tables sit in one u32 buffer `meta` (CHUNK_META / SEQ_META below).
 *
 * The chunk products (q_gated . h, k_gated^T . v, A . v and their backward counterparts) are
 * loops over workgroup-memory tiles into register micro-tiles: the forward's scores, state and
 * o passes (and the backward's state-gradient and dv passes) with 4 x 4 tiles read as vec4s
 * from staged tiles whose next one is fetched into registers while the current one multiplies
 * (scoresShader, stateShaderSimt, outputShaderSimt), dA as `tileProduct` loops, dq / dk / dgk
 * (qkGradShader) as inter-chunk products over V slices and unrolled sub-chunk loops.
 * A prefetch keeps the loaded words raw in registers (rd4_: 8 bytes of 4 halves, 16 of f32) and
 * loads them unconditionally from clamped addresses; they are converted and masked only when
 * staged. Converting next to the load, or loading under a branch of its own, made the thread
 * wait for the load right there, before the products it was meant to overlap: on the H200 that
 * was the difference between fetch and products adding up (session 16) and the fetch hidden
 * (session 17: forward 3.92 -> 2.63 ms at T 8192; BENCHMARKS.md "GLA on the H200 (WebGPU),
 * session 17"). The dq / dk pass's V slices are prefetched the same way.
 * With `tc` (./tc.ts) the state, o / dv, dA and dq / dk generators emit the tensor-core
 * variant instead: operands staged as
 * f16 (gates applied in f32 before the cast) in padded rows, 16x16x16 subgroup-matrix products
 * into f32 result matrices, the results handed through workgroup scratch to the unchanged
 * elementwise code (stateShader, outputShader, scoreGradShader, qkGradShader's inter products;
 * the scores pass and the intra-chunk sub-chunk loops stay SIMT). Its kernels declare the
 * small workgroup variables before the f16 arrays and derive every matrix offset from the
 * subgroup id (tc-forward.ts in @attnkit/skeleton says why).
 *
 * Inputs of dtype f16 / bf16 are read as packed u32 words and unpacked (no shader-f16 needed,
 * so one kernel serves every adapter). Outputs are written in f32 and cast afterwards
 * (castShader) when their dtype is a half, except o and dv from the SIMT passes where
 * glaDirectOutput holds (K, V multiples of 4): those are stored in their dtype directly.
 */

export type GlaStorage = 'f32' | 'f16' | 'bf16';

/**
 * Bench seam (bench-gla --diag), never set by the library: parts of the SIMT scores / states /
 * output kernels left out of the generated code to see where their time goes ('scores:compute',
 * 'scores:fetch', 'states:compute', 'states:fetch', 'states:hs', 'output:compute',
 * 'output:fetch'; of the dq / dk / dgk pass 'qkg:intra', 'qkg:cross', 'qkg:prefix'; results
 * wrong while any is set), or a variant of them timed beside the default
 * ('states:sr64', 'states:sr16': the state pass's slice rows; 'states:oneset': one register set
 * of fetched slices instead of two).
 */
export const GLA_DEBUG_SKIP = new Set<string>();
const skip = (part: string) => GLA_DEBUG_SKIP.has(part);

/** Threads of the tiled kernels: a 16 x 16 grid of threads with register micro-tiles. */
export const GLA_THREADS = 256;
/** Rows (k) and columns (v) of the state block one workgroup of the tensor-core state passes owns. */
export const GLA_STATE_BLOCK = 32;
/** Columns (v) of the output block one workgroup of the tensor-core o / dv kernels owns, at most. */
export const GLA_OUT_BLOCK = 64;

/** The chunk sizes the WebGPU kernels run (their thread layouts and tiles are sized for them). */
export const GLA_WEBGPU_CHUNK_SIZES = [16, 32, 64, 128] as const;

/** tab[4 c + i]: chunk c's first absolute token row (i 0), length L (1), sequence (2). */
export const CHUNK_META = 4;
/** tab[4 NC + 4 n + i]: sequence n's first chunk (i 0) and chunk count (1). */
export const SEQ_META = 4;

/** The uniform every kernel binds first. */
export const PARAMS_FIELDS = [
  ['H', 'u32'],
  ['K', 'u32'],
  ['V', 'u32'],
  ['NC', 'u32'],
  ['scale', 'f32'],
  ['hasInit', 'u32'],
  ['hasFinal', 'u32'],
  ['nbV', 'u32'],
  ['nk', 'u32'],
  ['srcOff', 'u32'],
] as const;

const PARAMS = `struct Params {
  H: u32, K: u32, V: u32, NC: u32,
  scale: f32, hasInit: u32, hasFinal: u32, nbV: u32,
  nk: u32, srcOff: u32,
}
@group(0) @binding(0) var<uniform> P: Params;`;

/** A binding of a generated kernel: a read-only input of a storage dtype, or an f32 / u32 array. */
type Binding =
  | { name: string; kind: 'in'; dtype: GlaStorage; vec?: boolean }
  | { name: string; kind: 'f32'; vec?: boolean }
  | { name: string; kind: 'u32' | 'out' | 'outu' | 'outv4' | 'outh4' | 'atomic' };

/** WGSL declarations (binding 0 is the Params uniform) and the pipeline's binding kinds. */
function declare(bindings: readonly Binding[]): {
  code: string;
  kinds: ('uniform' | 'read' | 'storage')[];
} {
  const lines = [PARAMS];
  const kinds: ('uniform' | 'read' | 'storage')[] = ['uniform'];
  bindings.forEach((b, i) => {
    const at = `@group(0) @binding(${i + 1})`;
    if ((b.kind === 'in' || b.kind === 'f32') && b.vec) {
      // Four elements a load (16 bytes of f32, 8 of a half): ld4_ takes e % 4 == 0, the
      // tensor's length a multiple of 4 (the host's glaVec4 condition).
      kinds.push('read');
      const dt = b.kind === 'f32' ? 'f32' : b.dtype;
      const n = b.name;
      // rd4_: the 4 elements' raw words at a clamped index (any e is safe: a prefetch loads
      // unconditionally and masks at staging), cv4_ their values. Prefetches keep raw words in
      // registers and convert only when staging: a conversion next to its load makes the thread
      // wait for the load there, before the products the prefetch was meant to overlap.
      const raw = `fn rd4_${n}(e: u32) -> ${rawOf(dt)} { return ${n}[min(e >> 2u, arrayLength(&${n}) - 1u)]; }`;
      if (dt === 'f32') {
        lines.push(`${at} var<storage, read> ${n}: array<vec4<f32>>;
fn ld_${n}(e: u32) -> f32 { return ${n}[e >> 2u][e & 3u]; }
fn ld4_${n}(e: u32) -> vec4<f32> { return ${n}[e >> 2u]; }
${raw}
fn cv4_${n}(w: vec4<f32>) -> vec4<f32> { return w; }`);
      } else if (dt === 'f16') {
        lines.push(`${at} var<storage, read> ${n}: array<vec2<u32>>;
fn ld_${n}(e: u32) -> f32 { return unpack2x16float(${n}[e >> 2u][(e >> 1u) & 1u])[e & 1u]; }
fn ld4_${n}(e: u32) -> vec4<f32> { return cv4_${n}(${n}[e >> 2u]); }
${raw}
fn cv4_${n}(w: vec2<u32>) -> vec4<f32> { return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y)); }`);
      } else {
        lines.push(`${at} var<storage, read> ${n}: array<vec2<u32>>;
fn ld_${n}(e: u32) -> f32 {
  let w = ${n}[e >> 2u][(e >> 1u) & 1u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u));
}
fn ld4_${n}(e: u32) -> vec4<f32> { return cv4_${n}(${n}[e >> 2u]); }
${raw}
fn cv4_${n}(w: vec2<u32>) -> vec4<f32> {
  return bitcast<vec4<f32>>(vec4<u32>(w.x << 16u, w.x & 0xffff0000u, w.y << 16u, w.y & 0xffff0000u));
}`);
      }
    } else if (b.kind === 'in') {
      kinds.push('read');
      if (b.dtype === 'f32') {
        lines.push(`${at} var<storage, read> ${b.name}: array<f32>;
fn ld_${b.name}(e: u32) -> f32 { return ${b.name}[e]; }`);
      } else if (b.dtype === 'f16') {
        lines.push(`${at} var<storage, read> ${b.name}: array<u32>;
fn ld_${b.name}(e: u32) -> f32 { return unpack2x16float(${b.name}[e >> 1u])[e & 1u]; }`);
      } else {
        // bf16 is the top half of an f32.
        lines.push(`${at} var<storage, read> ${b.name}: array<u32>;
fn ld_${b.name}(e: u32) -> f32 {
  let w = ${b.name}[e >> 1u];
  return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (e & 1u) == 1u));
}`);
      }
    } else if (b.kind === 'f32' || b.kind === 'u32') {
      kinds.push('read');
      lines.push(`${at} var<storage, read> ${b.name}: array<${b.kind}>;`);
      if (b.kind === 'f32') lines.push(`fn ld_${b.name}(e: u32) -> f32 { return ${b.name}[e]; }`);
    } else if (b.kind === 'outv4' || b.kind === 'outh4') {
      // Four f32 (16 bytes) or four packed halves (8 bytes) a store.
      kinds.push('storage');
      lines.push(
        `${at} var<storage, read_write> ${b.name}: array<${b.kind === 'outv4' ? 'vec4<f32>' : 'vec2<u32>'}>;`,
      );
    } else if (b.kind === 'out' || b.kind === 'outu') {
      kinds.push('storage');
      lines.push(
        `${at} var<storage, read_write> ${b.name}: array<${b.kind === 'out' ? 'f32' : 'u32'}>;`,
      );
    } else {
      kinds.push('storage');
      lines.push(`${at} var<storage, read_write> ${b.name}: array<atomic<u32>>;`);
    }
  });
  return { code: lines.join('\n'), kinds };
}

/** WGSL type of 4 elements' raw words in a vec binding: vec4<f32>, or 4 packed halves. */
function rawOf(dtype: GlaStorage): string {
  return dtype === 'f32' ? 'vec4<f32>' : 'vec2<u32>';
}

/** Bytes of a workgroup array's element types the generated kernels declare. */
const WORKGROUP_TYPE_BYTES: Record<string, number> = {
  f32: 4,
  u32: 4,
  i32: 4,
  f16: 2,
  'vec2<f32>': 8,
  'vec4<f32>': 16,
  'vec2<u32>': 8,
  'vec4<u32>': 16,
};

/**
 * Workgroup memory a generated kernel declares (each array rounded up to 16 bytes, as Dawn
 * counts it against maxComputeWorkgroupStorageSize): the host checks it before any buffer is
 * made. An element type not in the table throws (a new kernel's type must be added).
 */
export function workgroupBytes(code: string): number {
  let total = 0;
  for (const m of code.matchAll(/var<workgroup>\s+\w+\s*:\s*array<\s*([\w<>]+)\s*,\s*(\d+)\s*>/g)) {
    const size = WORKGROUP_TYPE_BYTES[m[1]!];
    if (size === undefined) throw new Error(`workgroupBytes: unknown element type ${m[1]}`);
    total += Math.ceil((size * Number(m[2])) / 16) * 16;
  }
  return total;
}

export interface GlaKernel {
  code: string;
  bindings: readonly ('uniform' | 'read' | 'storage')[];
  /** Binding names after the uniform, in order. */
  names: readonly string[];
  label: string;
}

function kernel(
  label: string,
  bindings: readonly Binding[],
  body: string,
  tc?: { tc: GlaTc | undefined; prelude: string },
): GlaKernel {
  const d = declare(bindings);
  return {
    // Enables first (WGSL requires them before any declaration); the emulation's helpers last.
    code: `${tcEnables(tc?.tc)}${d.code}\n${body}${tc?.prelude ? `\n${tc.prelude}` : ''}`,
    bindings: d.kinds,
    names: bindings.map((b) => b.name),
    label,
  };
}

const u = (n: number) => `${n}u`;

/**
 * `body` n times, each in its own block with \`const v = k\`: register arrays indexed by v stay
 * in registers (a loop counter would index them dynamically, which spills them to memory).
 */
function unroll(n: number, v: string, body: string): string {
  return Array.from({ length: n }, (_, k) => `{\n  const ${v} = ${k}u;\n${body}\n}`).join('\n');
}

/** Vector components by index. */
const XYZW = ['x', 'y', 'z', 'w'] as const;

/**
 * One step of a 4 x 4 register micro-tile: acc[off + 4 i + j] += a[i] * b[j] for vec4s a, b
 * (the scores, state and o / dv passes' products).
 */
function outer4(acc: string, a: string, b: string, off = 0): string {
  const lines: string[] = [];
  for (let i = 0; i < 4; i++)
    for (let j = 0; j < 4; j++) {
      const e = off + 4 * i + j;
      lines.push(`${acc}[${e}] = fma(${a}.${XYZW[i]}, ${b}.${XYZW[j]}, ${acc}[${e}]);`);
    }
  return lines.join('\n');
}

/**
 * One chunk product as a tile loop: acc[i * RX + j] += sum_{r < depth} a(row_i, r) * b(r, col_j)
 * with row_i = ty + TY i and col_j = tx + TX j (a thread's RY x RX micro-tile). a and b give the
 * WGSL of an operand element from workgroup memory. The loop the tensor-core variant replaces.
 */
export function tileProduct(o: {
  acc: string;
  RY: number;
  RX: number;
  TY: number;
  TX: number;
  depth: number;
  a: (row: string, red: string) => string;
  b: (red: string, col: string) => string;
}): string {
  const lines: string[] = [];
  lines.push(`for (var r = 0u; r < ${u(o.depth)}; r++) {`);
  for (let i = 0; i < o.RY; i++) lines.push(`  let a${i} = ${o.a(`(ty + ${u(o.TY * i)})`, 'r')};`);
  for (let j = 0; j < o.RX; j++) lines.push(`  let b${j} = ${o.b('r', `(tx + ${u(o.TX * j)})`)};`);
  for (let i = 0; i < o.RY; i++)
    for (let j = 0; j < o.RX; j++)
      lines.push(`  ${o.acc}[${i * o.RX + j}] = fma(a${i}, b${j}, ${o.acc}[${i * o.RX + j}]);`);
  lines.push('}');
  return lines.join('\n');
}

/**
 * Pass 1: G = the chunk-local cumulative sums of gk (f32, gk's layout), and the gate check: the
 * smallest flat index of a gate that is not finite and <= 0 (bit tests: WGSL may assume no NaN
 * in comparisons) goes to flag[0]. Workgroups (NC, H, ceil(K / 64)).
 */
export function prepShader(gk: GlaStorage): GlaKernel {
  return kernel(
    'gla prep',
    [
      { name: 'tab', kind: 'u32' },
      { name: 'gk', kind: 'in', dtype: gk },
      { name: 'Gb', kind: 'out' },
      { name: 'flag', kind: 'atomic' },
    ],
    `@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let c = wg.x;
  let h = wg.y;
  let x = wg.z * 64u + lid.x;
  if (x >= P.K) { return; }
  let row0 = tab[${CHUNK_META}u * c];
  let L = tab[${CHUNK_META}u * c + 1u];
  var G = 0.0;
  // 8 rows' loads issued together (the sum is serial, the loads need not be).
  for (var t0 = 0u; t0 < L; t0 += 8u) {
    var gs = array<f32, 8>();
    ${unroll(
      8,
      'r',
      `
    if (t0 + r < L) { gs[r] = ld_gk(((row0 + t0 + r) * P.H + h) * P.K + x); }`,
    )}
    ${unroll(
      8,
      'r',
      `
    if (t0 + r < L) {
      let e = ((row0 + t0 + r) * P.H + h) * P.K + x;
      let bits = bitcast<u32>(gs[r]);
      // Positive (sign bit clear, not +0), or Infinity / NaN of either sign.
      if ((bits != 0u && bits < 0x80000000u) || (bits & 0x7fffffffu) >= 0x7f800000u) {
        atomicMin(&flag[0], e);
      }
      G = G + gs[r];
      Gb[e] = G;
    }`,
    )}
  }
}`,
  );
}

/** Loads of a [C, BX] tile of q, k (0 past the chunk) and G (the last row's past it). */
function qkgTileLoad(C: number, BX: number, W: number, off: { q: string; k: string; g: string }) {
  return `for (var e = tid; e < ${u(C * BX)}; e += ${u(W)}) {
      let t = e / ${u(BX)};
      let x = x0 + e % ${u(BX)};
      var qv = 0.0;
      var kv = 0.0;
      var gv = 0.0;
      if (x < P.K) {
        let gi = ((row0 + min(t, L - 1u)) * P.H + h) * P.K + x;
        gv = Gb[gi];
        if (t < L) {
          qv = ld_q(gi);
          kv = ld_k(gi);
        }
      }
      sm[${off.q} + e] = qv;
      sm[${off.k} + e] = kv;
      sm[${off.g} + e] = gv;
    }`;
}

/** Key channels per workgroup-memory tile of the scores, dA and dq/dk kernels for chunk size C. */
export function kTileOf(C: number): number {
  return Math.max(4, Math.min(32, 2048 / C));
}

/**
 * Pass 2: the causal intra-chunk scores A [NC, H, C, C] (f32, 0 above the diagonal and past the
 * chunk), A_ts = scale sum_x q_tx k_sx e^{G_tx - G_sx}, in 4 x 4 micro-blocks of (t, s), one a
 * thread (three at C 128), on and below the diagonal. A block below the diagonal (rows of micro-row
 * a, columns of micro-column b < a: every s before every t) factors its relative gate through
 * the block's rows and columns:
 *   e^{G_t - G_s} = e^{G_t - G_{4a}} * e^{G_{4a} - G_{4b+3}} * e^{G_{4b+3} - G_s}
 * three factors <= 1 (G falls with the row), so q and k are gated once at staging (qh, kg) and
 * a block costs one exp a channel beside its 16 multiply-adds; a block on the diagonal takes
 * its 10 entries' gates element by element (no pivot lies between every pair of its rows).
 * fla's secondary-level chunking at a 4-row grain. Staged as [channel][row] with rows in vec4s
 * (4 a thread, so the gating needs no second barrier), the next channel tile fetched into
 * registers while the current one is multiplied. Workgroups (NC, H).
 */
export function scoresShader(C: number, dtype: GlaStorage, vec = false): GlaKernel {
  const nm = C / 4;
  // Micro-blocks on and below the diagonal: the nm diagonal ones first (p < nm), then the
  // others a-major (q = a (a - 1) / 2 + b, b < a).
  const NB = (nm * (nm + 1)) / 2;
  const MB = Math.ceil(NB / GLA_THREADS);
  const W = 32 * Math.ceil(NB / (32 * MB));
  // Channels a staged tile: 1024 / C from C 64 on (H200-timed), 512 / C below, so C <= 32 keeps
  // within WebGPU's default 16 KiB of workgroup memory (5 arrays of BX (C / 4 + 1) vec4s).
  const BX = C >= 64 ? 1024 / C : 512 / C;
  // A channel's rows padded by one vec4: lanes writing consecutive channels hit distinct banks.
  const CP4 = nm + 1;
  // Fetch groups: 4 rows x 1 channel element by element, or (vec: K a multiple of 4) 4 rows x
  // 4 channels, a row's 4 channels one load each of q, k and G, turned into 4 row-vec4s.
  const BQ = vec ? BX / 4 : BX;
  const NG = nm * BQ;
  const SE = Math.ceil(NG / W);
  const RV = vec ? 4 * SE : SE;
  const fetchVec = (x0: string) =>
    unroll(
      SE,
      'f',
      `
    let e = tid + ${u(W)} * f;
    let xs = ${x0} + 4u * (e % ${u(BQ)});
    let g = e / ${u(BQ)};
    if (e < ${u(NG)}) {
    ${unroll(
      4,
      'r',
      `
      // Raw words, in every fetching thread (e < NG: whole warps) whatever the row or
      // channel (clamped addresses; masked when staged).
      let gi = ((row0 + min(4u * g + r, L - 1u)) * P.H + h) * P.K + xs;
      rg[4u * f + r] = rd4_Gb(gi);
      rq[4u * f + r] = rd4_q(gi);
      rk[4u * f + r] = rd4_k(gi);
    `,
    )}
    }
  `,
    );
  const fetchScalar = (x0: string) =>
    unroll(
      SE,
      'f',
      `
    let e = tid + ${u(W)} * f;
    let x = ${x0} + e % ${u(BX)};
    let g = e / ${u(BX)};
    ${unroll(
      4,
      'r',
      `
      let t = 4u * g + r;
      var gv = 0.0;
      var qv = 0.0;
      var kv = 0.0;
      if (e < ${u(NG)} && x < P.K) {
        let gi = ((row0 + min(t, L - 1u)) * P.H + h) * P.K + x;
        gv = Gb[gi];
        if (t < L) {
          qv = ld_q(gi);
          kv = ld_k(gi);
        }
      }
      rg[f][r] = gv;
      rq[f][r] = qv;
      rk[f][r] = kv;
    `,
    )}
  `,
    );
  const fetch = vec ? fetchVec : fetchScalar;
  // A 4-row group (vec4s gv, qv, kv of one channel) into the raw and gated tiles at `at`.
  const stage = `sg[at] = gv;
        sq[at] = qv;
        sk[at] = kv;
        sqh[at] = qv * exp(gv - vec4<f32>(gv.x));
        skg[at] = kv * exp(vec4<f32>(gv.w) - gv);`;
  const blocks = Array.from(
    { length: MB },
    (_, m) => `let p${m} = tid + ${u(W * m)};
  var a${m} = 0u;
  var b${m} = 0u;
  if (p${m} < ${u(nm)}) {
    a${m} = p${m};
    b${m} = p${m};
  } else if (p${m} < ${u(NB)}) {
    let qq = p${m} - ${u(nm)};
    var a = 1u;
    loop {
      if ((a + 1u) * a / 2u > qq) { break; }
      a++;
    }
    a${m} = a;
    b${m} = qq - a * (a - 1u) / 2u;
  }
  var acc${m} = array<f32, 16>();`,
  ).join('\n  ');
  const diag = (m: number) => {
    const lines: string[] = [];
    const [X, acc] = [XYZW, `acc${m}`];
    for (let r = 0; r < 4; r++)
      for (let c = 0; c <= r; c++)
        lines.push(
          r === c
            ? `${acc}[${r * 4 + c}] = fma(qv.${X[r]}, kv.${X[c]}, ${acc}[${r * 4 + c}]);`
            : `${acc}[${r * 4 + c}] = fma(qv.${X[r]} * kv.${X[c]}, exp(gv.${X[r]} - gv.${X[c]}), ${acc}[${r * 4 + c}]);`,
        );
    return lines.join('\n          ');
  };
  const products = Array.from(
    { length: MB },
    (_, m) => `if (p${m} < ${u(NB)}) {
      if (a${m} == b${m}) {
        ${unroll(
          BX,
          'x',
          `
          let at = x * ${u(CP4)} + a${m};
          let qv = sq[at];
          let kv = sk[at];
          let gv = sg[at];
          ${diag(m)}`,
        )}
      } else {
        ${unroll(
          BX,
          'x',
          `
          let ra = x * ${u(CP4)} + a${m};
          let rb = x * ${u(CP4)} + b${m};
          let qv = sqh[ra] * exp(sg[ra].x - sg[rb].w);
          let kv = skg[rb];
          ${outer4(`acc${m}`, 'qv', 'kv')}`,
        )}
      }
    }`,
  ).join('\n    ');
  // A row of a block is one 16-byte store (A is [.., C, C] with C a multiple of 4); the block
  // mirrored above the diagonal gets zeros, the diagonal block's upper entries too.
  const writes = Array.from(
    { length: MB },
    (_, m) => `if (p${m} < ${u(NB)}) {
    let base = (c * P.H + h) * ${u(C)};
    let off = a${m} != b${m};
    ${unroll(
      4,
      'r',
      `
      Ab[(base + 4u * a${m} + r) * ${u(C / 4)} + b${m}] = P.scale * vec4<f32>(
        acc${m}[r * 4u], select(0.0, acc${m}[r * 4u + 1u], off || r >= 1u),
        select(0.0, acc${m}[r * 4u + 2u], off || r >= 2u), select(0.0, acc${m}[r * 4u + 3u], off || r >= 3u));
      if (off) { Ab[(base + 4u * b${m} + r) * ${u(C / 4)} + a${m}] = vec4<f32>(); }
    `,
    )}
  }`,
  ).join('\n  ');
  return kernel(
    'gla scores',
    [
      { name: 'tab', kind: 'u32' },
      { name: 'q', kind: 'in', dtype, vec },
      { name: 'k', kind: 'in', dtype, vec },
      { name: 'Gb', kind: 'f32', vec },
      { name: 'Ab', kind: 'outv4' },
    ],
    `var<workgroup> sq: array<vec4<f32>, ${BX * CP4}>;
var<workgroup> sk: array<vec4<f32>, ${BX * CP4}>;
var<workgroup> sg: array<vec4<f32>, ${BX * CP4}>;
var<workgroup> sqh: array<vec4<f32>, ${BX * CP4}>;
var<workgroup> skg: array<vec4<f32>, ${BX * CP4}>;
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let c = wg.x;
  let h = wg.y;
  let tid = lid.x;
  let row0 = tab[${CHUNK_META}u * c];
  let L = tab[${CHUNK_META}u * c + 1u];
  ${blocks}
  // The next tile's rows (4 a group) of q, k and G, in flight while the current one multiplies.
  var rq = array<${vec ? rawOf(dtype) : 'vec4<f32>'}, ${RV}>();
  var rk = array<${vec ? rawOf(dtype) : 'vec4<f32>'}, ${RV}>();
  var rg = array<vec4<f32>, ${RV}>();
  ${fetch('0u')}
  for (var x0 = 0u; x0 < P.K; x0 += ${u(BX)}) {
    workgroupBarrier();
    // Stage: raw q, k and G, and the gated qh = q e^{G - G_{4g}}, kg = k e^{G_{4g+3} - G}
    // (exponents <= 0: past the chunk G repeats its last row and q = k = 0).
    ${unroll(
      SE,
      'f',
      vec
        ? `
      let e = tid + ${u(W)} * f;
      if (e < ${u(NG)}) {
        // The fetched words as values: 0 past K, q and k 0 past the chunk (G repeats its
        // last row there, fetched so).
        let okx = x0 + 4u * (e % ${u(BQ)}) < P.K;
        let t0 = 4u * (e / ${u(BQ)});
        ${['g', 'q', 'k']
          .map(
            (n) =>
              `let c${n} = array<vec4<f32>, 4>(${[0, 1, 2, 3]
                .map((r) => {
                  const w = `r${n}[4u * f + ${r}u]`;
                  return n === 'g'
                    ? `select(vec4<f32>(), ${w}, okx)`
                    : `select(vec4<f32>(), cv4_${n}(${w}), okx && t0 + ${r}u < L)`;
                })
                .join(', ')});`,
          )
          .join('\n        ')}
        ${unroll(
          4,
          'j',
          `
        let at = (4u * (e % ${u(BQ)}) + j) * ${u(CP4)} + e / ${u(BQ)};
        let gv = vec4<f32>(cg[0][j], cg[1][j], cg[2][j], cg[3][j]);
        let qv = vec4<f32>(cq[0][j], cq[1][j], cq[2][j], cq[3][j]);
        let kv = vec4<f32>(ck[0][j], ck[1][j], ck[2][j], ck[3][j]);
        ${stage}`,
        )}
      }
    `
        : `
      let e = tid + ${u(W)} * f;
      if (e < ${u(NG)}) {
        let at = (e % ${u(BX)}) * ${u(CP4)} + e / ${u(BX)};
        let gv = rg[f];
        let qv = rq[f];
        let kv = rk[f];
        ${stage}
      }
    `,
    )}
    workgroupBarrier();
    ${
      skip('scores:fetch')
        ? ''
        : // The next tile whatever (the last its own again): a fetch under a branch would
          // wait for its loads before the branch joins.
          fetch(`min(x0 + ${u(BX)}, ((P.K - 1u) / ${u(BX)}) * ${u(BX)})`)
    }
    ${skip('scores:compute') ? '' : products}
  }
  ${writes}
}`,
  );
}

/**
 * Whether the SIMT state and o / dv passes load 4 neighbouring elements at once (vec4 of f32,
 * 4 packed halves): K and V multiples of 4, so every 4-group is whole and every input's length
 * a multiple of 4. (G's buffer is rounded up to 16 bytes by the host, so the state and o / dv
 * passes read it as vec4s whatever K.)
 */
export function glaVec4(K: number, V: number): boolean {
  return K % 4 === 0 && V % 4 === 0;
}

/**
 * Whether the o / dv pass stores o / dv in their own dtype (no f32 intermediate, no cast pass):
 * the SIMT pass with 4-element access (glaVec4); the tensor-core pass writes f32.
 */
export function glaDirectOutput(K: number, V: number, tc: GlaTc | undefined): boolean {
  return !tc && glaVec4(K, V);
}

/** Rows (k) and columns (v) of the state block one workgroup of the SIMT state passes owns. */
export const GLA_STATE_BLOCK_SIMT = 64;

/** Workgroups of the state passes: (blocks of the K x V state, H, N). */
export function stateGrid(K: number, V: number, H: number, N: number, tc: boolean) {
  const b = tc ? GLA_STATE_BLOCK : GLA_STATE_BLOCK_SIMT;
  return [Math.ceil(K / b) * Math.ceil(V / b), H, N] as [number, number, number];
}

/**
 * The SIMT state passes (stateShader's contract): a 64 x 64 block of the state a workgroup,
 * 4 x 4 of it a thread (rows 4 ty.., columns 4 tx.., read as vec4s from the staged slices);
 * slices of SR rows of the chunk staged as [row][column], the next slice (of this chunk or the
 * next) fetched into registers while the current one multiplies: the walk over the chunks is
 * sequential, so each step's global latency is what it must hide. One thread loads 4
 * neighbouring columns of SR / 16 rows; the last row's G of its 4 columns (the gate) and of its
 * 4 state rows (the decay) with them.
 */
function stateShaderSimt(
  mode: 'h' | 'dh',
  C: number,
  dtype: GlaStorage,
  initDType: GlaStorage,
  vec: boolean,
): GlaKernel {
  const B = GLA_STATE_BLOCK_SIMT;
  // Rows a staged slice: 32 (two slices at C 64; 16 KiB of workgroup memory, WebGPU's default
  // limit); bench variants 'states:sr64' (whole chunks, 32 KiB: not within llvmpipe's) and
  // 'states:sr16'.
  const SR = skip('states:sr64') ? C : skip('states:sr16') ? Math.min(C, 16) : Math.min(C, 32);
  const NS = C / SR;
  // Rows of a slice one thread fetches (16 threads a row of 64 columns).
  const RF = SR / 16;
  // Register sets of fetched slices: two where a chunk is two slices (the default C 64), so a
  // slice's data is fetched a whole chunk of products before it is staged; else one.
  const NSET = NS === 2 && !skip('states:oneset') ? 2 : 1;
  const fwd = mode === 'h';
  const a = fwd ? 'k' : 'q';
  const b = fwd ? 'v' : 'dO';
  // The chunk a walk step reaches (its position in the sequence: the walk is reversed for dh).
  const posOf = (ci: string) => (fwd ? `(${ci})` : `(count - 1u - (${ci}))`);
  // A chunk's rows from its position: every chunk of a sequence but its last has C rows
  // (glaChunks), so the walk needs no table load a step (a load whose address waits on another).
  const lenOf = (p: string) => `select(${u(C)}, lastL, ${p} == count - 1u)`;
  // A thread's 4 columns of one row. vec (K and V multiples of 4): one load each of the
  // operand, G and b as raw words, unconditionally (clamped addresses; rows past the chunk and
  // columns past K / V are masked when staged); else element by element, bounds checked here.
  const rowFetch = (k: number) =>
    vec
      ? `
          let gi = ((frow0 + t) * P.H + h) * P.K + k0 + 4u * tx;
          pa${k}[f] = rd4_${a}(gi);
          pg${k}[f] = rd4_Gb(gi);
          pb${k}[f] = rd4_${b}(((frow0 + t) * P.H + h) * P.V + v0 + 4u * tx);`
      : unroll(
          4,
          'j',
          `
          let x = k0 + 4u * tx + j;
          let y = v0 + 4u * tx + j;
          var av = 0.0;
          var gv = 0.0;
          var bv = 0.0;
          if (t < fL) {
            if (x < P.K) {
              let gi = ((frow0 + t) * P.H + h) * P.K + x;
              av = ld_${a}(gi);
              gv = ld_Gb(gi);
            }
            if (y < P.V) { bv = ld_${b}(((frow0 + t) * P.H + h) * P.V + y); }
          }
          pa${k}[f][j] = av;
          pg${k}[f][j] = gv;
          pb${k}[f][j] = bv;
        `,
        );
  const glFetch = (k: number) =>
    vec
      ? `let gli = ((frow0 + fL - 1u) * P.H + h) * P.K + k0;
      pl${k} = rd4_Gb(gli + 4u * tx);
      pd${k} = rd4_Gb(gli + 4u * ty);`
      : unroll(
          4,
          'j',
          `
        let x = k0 + 4u * tx + j;
        let xd = k0 + 4u * ty + j;
        var gl = 0.0;
        var gd = 0.0;
        if (x < P.K) { gl = ld_Gb(((frow0 + fL - 1u) * P.H + h) * P.K + x); }
        if (xd < P.K) { gd = ld_Gb(((frow0 + fL - 1u) * P.H + h) * P.K + xd); }
        pl${k}[j] = gl;
        pd${k}[j] = gd;
      `,
        );
  // Slice `slice` of the chunk at walk step `step` (< count) into register set k.
  const fetch = (step: string, slice: string, k: number) => `{
      let fp = ${posOf(step)};
      let frow0 = seqRow0 + fp * ${u(C)};
      let fL = ${lenOf('fp')};
      ${glFetch(k)}
      ${unroll(
        RF,
        'f',
        `
        let t = (${slice}) * ${u(SR)} + ty + 16u * f;
        ${rowFetch(k)}
      `,
      )}
    }`;
  const cells = (body: string) => unroll(4, 'i', unroll(4, 'j', body));
  // The thread's 4 x 4 of the state into a [.., K, V] f32 buffer: a row a 16-byte store (vec).
  const store = (buf: string, base: string) =>
    vec
      ? unroll(
          4,
          'i',
          `
        let x = k0 + 4u * ty + i;
        let ys = v0 + 4u * tx;
        if (x < P.K && ys < P.V) {
          ${buf}[(${base} + x * P.V + ys) >> 2u] = vec4<f32>(S[i * 4u], S[i * 4u + 1u], S[i * 4u + 2u], S[i * 4u + 3u]);
        }`,
        )
      : cells(`
        let x = k0 + 4u * ty + i;
        let y = v0 + 4u * tx + j;
        if (x < P.K && y < P.V) { ${buf}[${base} + x * P.V + y] = S[i * 4u + j]; }
    `);
  const gated = (k: number, av: string) =>
    fwd ? `${av} * exp(pl${k} - pg${k}[f])` : `P.scale * ${av} * exp(pg${k}[f])`;
  // One slice from register set k: staged (vec: converted and masked here), the state decayed
  // (slice 0), the next fetch issued, the products.
  const slice = (sl: string, k: number, next: string) => `{
      workgroupBarrier();
      ${unroll(
        RF,
        'f',
        vec
          ? `
        let r = ty + 16u * f;
        let t = (${sl}) * ${u(SR)} + r;
        sa[r * 16u + tx] = select(vec4<f32>(), ${gated(k, `cv4_${a}(pa${k}[f])`)}, t < Lc && 4u * tx < P.K - k0);
        sb[r * 16u + tx] = select(vec4<f32>(), cv4_${b}(pb${k}[f]), t < Lc && 4u * tx < P.V - v0);`
          : `
        let r = ty + 16u * f;
        sa[r * 16u + tx] = ${gated(k, `pa${k}[f]`)};
        sb[r * 16u + tx] = pb${k}[f];`,
      )}
      workgroupBarrier();
      // The state decays by e^{G_L} (of its rows' channels, fetched with the slice) before the
      // chunk's products add to it.
      if (${sl} == 0u) {
        let d = ${vec ? `select(vec4<f32>(), exp(pd${k}), 4u * ty < P.K - k0)` : `exp(pd${k})`};
        ${cells(`S[i * 4u + j] *= d[i];`)}
      }
      ${skip('states:fetch') ? '' : next}
      ${
        skip('states:compute')
          ? ''
          : // Unrolled (constant register indices); H200 run 3 timed it as the rolled loop.
            unroll(
              SR,
              'r',
              `
        let av = sa[r * 16u + ty];
        let bv = sb[r * 16u + tx];
        ${outer4('S', 'av', 'bv')}`,
            )
      }
    }`;
  const raw = vec ? rawOf(dtype) : 'vec4<f32>';
  return kernel(
    fwd ? 'gla states' : 'gla state gradients',
    [
      { name: 'tab', kind: 'u32' },
      { name: a, kind: 'in', dtype, vec },
      { name: b, kind: 'in', dtype, vec },
      { name: 'Gb', kind: 'f32', vec: true },
      { name: 'init', kind: 'in', dtype: initDType },
      { name: 'Hs', kind: vec ? 'outv4' : 'out' },
      { name: 'fin', kind: vec ? 'outv4' : 'out' },
    ],
    `var<workgroup> sa: array<vec4<f32>, ${SR * 16}>;
var<workgroup> sb: array<vec4<f32>, ${SR * 16}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let h = wg.y;
  let nseq = wg.z;
  let tid = lid.x;
  // Compute: rows 4 ty.., columns 4 tx.. of the block. Fetch: columns 4 tx.., rows ty + 16 f.
  let ty = tid / 16u;
  let tx = tid % 16u;
  let nbv = (P.V + ${u(B - 1)}) / ${u(B)};
  let k0 = (wg.x / nbv) * ${u(B)};
  let v0 = (wg.x % nbv) * ${u(B)};
  let KV = P.K * P.V;
  let first = tab[${CHUNK_META}u * P.NC + ${SEQ_META}u * nseq];
  let count = tab[${CHUNK_META}u * P.NC + ${SEQ_META}u * nseq + 1u];
  // The sequence's first row and its last chunk's length (entries within the table whatever
  // count: an empty sequence's first is the next one's, or the first sequence entry).
  let seqRow0 = tab[${CHUNK_META}u * first];
  let lastL = tab[${CHUNK_META}u * (first + max(count, 1u) - 1u) + 1u];
  let sbase = (nseq * P.H + h) * KV;
  var S = array<f32, 16>();
  ${cells(`
      let x = k0 + 4u * ty + i;
      let y = v0 + 4u * tx + j;
      if (P.hasInit != 0u && x < P.K && y < P.V) { S[i * 4u + j] = ld_init(sbase + x * P.V + y); }
  `)}
  ${Array.from(
    { length: NSET },
    (_, k) => `var pa${k} = array<${raw}, ${RF}>();
  var pg${k} = array<vec4<f32>, ${RF}>();
  var pb${k} = array<${raw}, ${RF}>();
  var pl${k} = vec4<f32>();
  var pd${k} = vec4<f32>();`,
  ).join('\n  ')}
  if (count > 0u) {
    ${Array.from({ length: NSET }, (_, k) => fetch('0u', `${k}u`, k)).join('\n    ')}
  }
  for (var ci = 0u; ci < count; ci++) {
    let pc = ${posOf('ci')};
    let c = first + pc;
    let Lc = ${lenOf('pc')};
    let hbase = (c * P.H + h) * KV;
    // The next step's data, fetched whatever (the last step fetches its own chunk again):
    // a fetch under a branch would wait for its loads before the branch joins.
    let nci = min(ci + 1u, count - 1u);
    ${skip('states:hs') ? '' : store('Hs', 'hbase')}
    ${
      NSET === 2
        ? // Two register sets, one a slice: each refilled with its slice of the next chunk
          // right after staging, a whole chunk of products before it is staged.
          [0, 1].map((k) => slice(`${k}u`, k, fetch('nci', `${k}u`, k))).join('\n    ')
        : `for (var sl = 0u; sl < ${u(NS)}; sl++) {
      let wrap = sl + 1u == ${u(NS)};
      ${slice('sl', 0, fetch('select(ci, nci, wrap)', 'select(sl + 1u, 0u, wrap)', 0))}
    }`
    }
  }
  if (P.hasFinal != 0u) {
    ${store('fin', 'sbase')}
  }
}`,
  );
}

/**
 * Passes 3 (forward) and 5 (backward): the chunk states, one workgroup per (sequence, head,
 * block of the K x V state: 64 x 64 SIMT (stateShaderSimt, its own layout), 32 x 32 with `tc`,
 * the code below) walking its chunks in order (mode 'h') or in reverse
 * (mode 'dh'), storing the state each chunk sees first into Hs [NC, H, K, V] (f32):
 *   'h':  S <- diag(e^{G_L}) S + (k * e^{G_L - G})^T v           from h0, hT out
 *   'dh': dS <- diag(e^{G_L}) dS + scale (q * e^{G})^T dO        from dht, dh0 out
 * (h stores the state before chunk c, dh the gradient of the state after it). Workgroups
 * stateGrid(K, V, H, N, tc).
 */
export function stateShader(
  mode: 'h' | 'dh',
  C: number,
  dtype: GlaStorage,
  initDType: GlaStorage,
  tc?: GlaTc,
  vec = false,
): GlaKernel {
  if (!tc) return stateShaderSimt(mode, C, dtype, initDType, vec);
  const B = GLA_STATE_BLOCK;
  const SR = Math.min(C, 32);
  const TY = 16;
  const TX = 16;
  const R = B / 16;
  // Tensor cores: the 8 subgroups split the 4 result matrices of the 32 x 32 block and (KS) the
  // SR rows of each staged slice; the products leave through `scr` ([B, B] f32, one split after
  // the other: two would not fit llvmpipe's 32 KiB under emulation), where the threads'
  // register state S adds them after its decay. Staged rows padded (SW).
  const mx = glaMatrixOps(tc.emulate, (TY * TX) / 32);
  const KS = Math.min(2, SR / 16);
  const STEPS = SR / 16 / KS;
  const SW = B + GLA_TC_PAD;
  const ent = tcEntry(tc, 'tid');
  const stagedAt = (e: string) => `(${e} / ${u(B)}) * ${u(SW)} + ${e} % ${u(B)}`;
  const cast = (x: string) => mx.half(x);
  const fwd = mode === 'h';
  const a = fwd ? 'k' : 'q';
  const b = fwd ? 'v' : 'dO';
  const rowGate = fwd ? `ld_k(gi) * exp(gl[xx] - Gb[gi])` : `P.scale * ld_q(gi) * exp(Gb[gi])`;
  return kernel(
    `${fwd ? 'gla states' : 'gla state gradients'} tc`,
    [
      { name: 'tab', kind: 'u32' },
      { name: a, kind: 'in', dtype },
      { name: b, kind: 'in', dtype },
      { name: 'Gb', kind: 'f32' },
      { name: 'init', kind: 'in', dtype: initDType },
      { name: 'Hs', kind: 'out' },
      { name: 'fin', kind: 'out' },
    ],
    // The small arrays before the f16 ones (tc-forward.ts smallFirst: the H200 computed wrong
    // results with small workgroup variables placed among arrays subgroup matrices read).
    `var<workgroup> gl: array<f32, ${B}>;
var<workgroup> decay: array<f32, ${B}>;
var<workgroup> scr: array<f32, ${B * B}>;
var<workgroup> sa: array<${mx.H}, ${SR * SW}>;
var<workgroup> sb: array<${mx.H}, ${SR * SW}>;
@compute @workgroup_size(${TY * TX})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>${ent.params}) {
  let h = wg.y;
  let nseq = wg.z;
  let tid = lid.x;
  ${ent.prologue}
  let ty = tid / ${u(TX)};
  let tx = tid % ${u(TX)};
  let k0 = (wg.x / P.nbV) * ${u(B)};
  let v0 = (wg.x % P.nbV) * ${u(B)};
  let KV = P.K * P.V;
  // The sequence's chunks straight from the read-only table (uniform in WGSL's analysis: the
  // loop below holds barriers; no workgroup variable needed).
  let first = tab[${CHUNK_META}u * P.NC + ${SEQ_META}u * nseq];
  let count = tab[${CHUNK_META}u * P.NC + ${SEQ_META}u * nseq + 1u];
  var S: array<f32, ${R * R}>;
  let sbase = (nseq * P.H + h) * KV;
  ${unroll(
    R,
    'i',
    `
    ${unroll(
      R,
      'j',
      `
      let x = k0 + ty + ${u(TY)} * i;
      let y = v0 + tx + ${u(TX)} * j;
      var s0 = 0.0;
      if (P.hasInit != 0u && x < P.K && y < P.V) { s0 = ld_init(sbase + x * P.V + y); }
      S[i * ${u(R)} + j] = s0;
    `,
    )}
  `,
  )}
  for (var ci = 0u; ci < count; ci++) {
    let c = ${fwd ? 'first + ci' : 'first + count - 1u - ci'};
    let row0 = tab[${CHUNK_META}u * c];
    let L = tab[${CHUNK_META}u * c + 1u];
    let hbase = (c * P.H + h) * KV;
    ${unroll(
      R,
      'i',
      `
      ${unroll(
        R,
        'j',
        `
        let x = k0 + ty + ${u(TY)} * i;
        let y = v0 + tx + ${u(TX)} * j;
        if (x < P.K && y < P.V) { Hs[hbase + x * P.V + y] = S[i * ${u(R)} + j]; }
      `,
      )}
    `,
    )}
    workgroupBarrier();
    if (tid < ${u(B)}) {
      let x = k0 + tid;
      var g = 0.0;
      if (x < P.K) { g = Gb[((row0 + L - 1u) * P.H + h) * P.K + x]; }
      gl[tid] = g;
      decay[tid] = exp(g);
    }
    // Zeroed per chunk by an explicit initializer: a bare \`var acc: array<...>;\` in the loop
    // body kept the previous chunks' sums on Dawn's Vulkan path (Tint's SPIR-V; H200 runs 1-2
    // and SwiftShader: ht off by 1.3 relative) where the GLSL path on llvmpipe re-zeroed it.
    var mAcc = ${mx.A}();
    for (var r0 = 0u; r0 < ${u(C)}; r0 += ${u(SR)}) {
      workgroupBarrier();
      for (var e = tid; e < ${u(SR * B)}; e += ${u(TY * TX)}) {
        let t = r0 + e / ${u(B)};
        let xx = e % ${u(B)};
        let x = k0 + xx;
        let y = v0 + xx;
        var av = 0.0;
        var bv = 0.0;
        if (t < L) {
          if (x < P.K) {
            let gi = ((row0 + t) * P.H + h) * P.K + x;
            av = ${rowGate};
          }
          if (y < P.V) { bv = ld_${b}(((row0 + t) * P.H + h) * P.V + y); }
        }
        sa[${stagedAt('e')}] = ${cast('av')};
        sb[${stagedAt('e')}] = ${cast('bv')};
      }
      workgroupBarrier();
      // Subgroup sg: result matrix (sg % 4) of the block, rows [16 STEPS (sg / 4 % KS), ...) of
      // the slice (with KS 1, subgroups 4-7 repeat 0-3's products and store nothing).
      let ti = (sg % 4u) / 2u;
      let tj = sg % 2u;
      for (var st = 0u; st < ${u(STEPS)}; st++) {
        let r = (((sg / 4u) % ${u(KS)}) * ${u(STEPS)} + st) * 16u;
        let ma = ${mx.load('L', 'sa', `r * ${u(SW)} + ti * 16u`, true, u(SW))};
        let mb = ${mx.load('R', 'sb', `r * ${u(SW)} + tj * 16u`, false, u(SW))};
        mAcc = ${mx.mma('ma', 'mb', 'mAcc')};
      }
    }
    ${unroll(
      R,
      'i',
      `
      ${unroll(
        R,
        'j',
        `
        S[i * ${u(R)} + j] = S[i * ${u(R)} + j] * decay[ty + ${u(TY)} * i];
      `,
      )}
    `,
    )}
    ${Array.from(
      { length: KS },
      (_, s) => `// Split ${s}'s result matrices into S (through scr).
    if (sg / 4u == ${u(s)}) {
      ${mx.store('scr', `((sg % 4u) / 2u) * ${u(16 * B)} + (sg % 2u) * 16u`, 'mAcc', false, u(B))};
    }
    workgroupBarrier();
    ${unroll(
      R,
      'i',
      unroll(
        R,
        'j',
        `S[i * ${u(R)} + j] += scr[(ty + ${u(TY)} * i) * ${u(B)} + tx + ${u(TX)} * j];`,
      ),
    )}
    workgroupBarrier();`,
    ).join('\n    ')}
  }
  if (P.hasFinal != 0u) {
    ${unroll(
      R,
      'i',
      `
      ${unroll(
        R,
        'j',
        `
        let x = k0 + ty + ${u(TY)} * i;
        let y = v0 + tx + ${u(TX)} * j;
        if (x < P.K && y < P.V) { fin[sbase + x * P.V + y] = S[i * ${u(R)} + j]; }
      `,
      )}
    `,
    )}
  }
}`,
    { tc, prelude: mx.prelude() },
  );
}

/**
 * The tensor-core epilogue: result matrix m (of MT per subgroup; tile sg + SG m of NT, RX per
 * row of tiles) through the subgroup's 16 x 16 f32 scratch, each lane handing on 8 of its
 * elements as write(row t, column, value) (WGSL has no per-element access to subgroup
 * matrices). Barriers around each: every subgroup runs the same MT (uniform control flow).
 */
function tcResultsOut(
  mx: ReturnType<typeof glaMatrixOps>,
  o: {
    MT: number;
    SG: number;
    NT: number;
    RX: number;
    scr: string;
    scrAt: string;
    write: (t: string, col: string, val: string) => string;
  },
): string {
  return Array.from(
    { length: o.MT },
    (_, m) => `{
    let tile = sg + ${u(o.SG * m)};
    let ti = min(tile, ${u(o.NT - 1)}) / ${u(o.RX)};
    let tj = min(tile, ${u(o.NT - 1)}) % ${u(o.RX)};
    ${mx.store(o.scr, o.scrAt, `m${m}`, false, '16u')};
    workgroupBarrier();
    for (var q8 = 0u; q8 < 8u; q8++) {
      // Consecutive lanes, consecutive elements: conflict-free scratch reads, 64-byte row runs.
      let e = q8 * 32u + lane;
      let t = ti * 16u + e / 16u;
      if (tile < ${u(o.NT)}) {
        ${o.write('t', '(tj * 16u + e % 16u)', `${o.scr}[${o.scrAt} + e]`)}
      }
    }
    workgroupBarrier();
  }`,
  ).join('\n  ');
}

/** Columns of V one workgroup of the SIMT o / dv passes owns. */
export const GLA_OUT_BLOCK_SIMT = 64;

/** Workgroups along V of the o / dv passes. */
export function outGrid(V: number, tc: boolean): number {
  return Math.ceil(V / (tc ? outBlock(V) : GLA_OUT_BLOCK_SIMT));
}

/**
 * The SIMT o / dv passes (outputShader's contract): a [C, 64] block of the output a
 * workgroup, RY x 4 of it a thread (RY = max(4, C / 16) consecutive rows, 4 consecutive
 * columns), both products as one walk over tiles of BX reduction indices (ceil(K / BX) of the
 * state product, then C / BX of the intra-chunk one), each tile staged as [reduction][row] and
 * [reduction][column] in vec4s, the next tile fetched into registers while the current one
 * multiplies. The intra-chunk tiles skip what the causal A makes zero for the thread's rows.
 */
function outputShaderSimt(mode: 'o' | 'dv', C: number, dtype: GlaStorage, vec: boolean): GlaKernel {
  const RY = Math.max(4, C / 16);
  const VA = RY / 4;
  const TY = C / RY;
  const NT = TY * 16;
  const BX = Math.min(32, C);
  const NIT = C / BX;
  const CP4 = C / 4 + 1;
  // a-tile groups of 4 reduction indices x 4 rows, at most one a thread (NG of the NT threads
  // fetch): loaded as 4 runs of 4 neighbouring elements and staged as 4 whole vec4s (a write
  // of one vec4 component is a read-modify-write of the vector under Tint's HLSL: threads
  // sharing a vec4 would race). GB rows of 4 columns of the b-tile a thread.
  const NG = (BX / 4) * (C / 4);
  const GB = (BX * 16) / NT;
  // Reduction groups of an a-tile (the lanes of a row group, consecutive in memory).
  const BQ = BX / 4;
  const o = mode === 'o';
  const a = o ? 'q' : 'k';
  const b = o ? 'v' : 'dO';
  // vec: the next tile's raw words (pa: q / k, pg: G or, intra, A's f32 rows, pb: the state's
  // f32 rows or, intra, v / dO's words, as u32s), loaded unconditionally (clamped addresses),
  // converted and masked when staged (a conversion next to its load would wait for it there).
  // Else f32 values, bounds checked at the load.
  const bFetch = (row: string, ok: string, buf: string, at: (y: string) => string) =>
    unroll(
      GB,
      'f',
      `
          let e = tid + ${u(NT)} * f;
          let r = ${row};
          ${
            vec
              ? `pb[f] = ${
                  // f32 words (the state's, or f32 storage's) as they are, packed halves padded.
                  buf === 'Hs' || dtype === 'f32'
                    ? `bitcast<vec4<u32>>(rd4_${buf}(${at('v0 + 4u * (e % 16u)')}))`
                    : `vec4<u32>(rd4_${buf}(${at('v0 + 4u * (e % 16u)')}), 0u, 0u)`
                };`
              : unroll(
                  4,
                  'j',
                  `
            let y = v0 + 4u * (e % 16u) + j;
            var bv = 0.0;
            if (${ok} && y < P.V) { bv = ld_${buf}(${at('y')}); }
            pb[f][j] = bv;`,
                )
          }`,
    );
  const fetch = (it: string) => `{
      let ft = ${it};
      let e = tid;
      if (ft < nkt) {
        let x0 = ft * ${u(BX)};
        // Rows 4 (e / BQ) + i, reduction (channels) x0 + 4 (e % BQ) + j.
        if (e < ${u(NG)}) {
          let xs = x0 + 4u * (e % ${u(BQ)});
          ${unroll(
            4,
            'i',
            `
          let t = 4u * (e / ${u(BQ)}) + i;
          ${
            vec
              ? `let gi = ((row0 + t) * P.H + h) * P.K + xs;
          pa[i] = rd4_${a}(gi);
          pg[i] = rd4_Gb(gi);`
              : unroll(
                  4,
                  'j',
                  `
            let x = xs + j;
            var av = 0.0;
            var gv = 0.0;
            if (t < L && x < P.K) {
              let gi = ((row0 + t) * P.H + h) * P.K + x;
              av = ld_${a}(gi);
              gv = ld_Gb(gi);
            }
            pa[i][j] = av;
            pg[i][j] = gv;`,
                )
          }`,
          )}
        }
        ${
          o
            ? ''
            : vec
              ? `pgl = rd4_Gb(((row0 + L - 1u) * P.H + h) * P.K + x0 + 4u * (tid % ${u(BQ)}));`
              : unroll(
                  4,
                  'j',
                  `
        let xg = x0 + 4u * (tid % ${u(BQ)}) + j;
        var gl = 0.0;
        if (xg < P.K) { gl = ld_Gb(((row0 + L - 1u) * P.H + h) * P.K + xg); }
        pgl[j] = gl;`,
                )
        }
        ${bFetch('x0 + e / 16u', 'r < P.K', 'Hs', (y) => `hbase + r * P.V + ${y}`)}
      } else {
        let s0 = (ft - nkt) * ${u(BX)};
        if (e < ${u(NG)}) {
          ${unroll(
            4,
            'i',
            o
              ? `
          // A^T: rows t = 4 (e / BQ) + i, reduction s = s0 + 4 (e % BQ) + j.
          ${vec ? 'pg' : 'pa'}[i] = ${vec ? 'rd4_Ab' : 'ld4_Ab'}((abase + 4u * (e / ${u(BQ)}) + i) * ${u(C)} + s0 + 4u * (e % ${u(BQ)}));`
              : `
          // A: reduction t = s0 + 4 (e / (C / 4)) + i, rows s = 4 (e % (C / 4)) + j.
          ${vec ? 'pg' : 'pa'}[i] = ${vec ? 'rd4_Ab' : 'ld4_Ab'}((abase + s0 + 4u * (e / ${u(C / 4)}) + i) * ${u(C)} + 4u * (e % ${u(C / 4)}));`,
          )}
        }
        ${bFetch('s0 + e / 16u', 'r < L', b, (y) => `((row0 + r) * P.H + h) * P.V + ${y}`)}
      }
    }`;
  // A group's 4 rows (src[i], 4 reduction indices each) as 4 [reduction][row] vec4s of sa.
  const transposed = (src: string) =>
    XYZW.map(
      (c, j) =>
        `sa[(4u * (e % ${u(BQ)}) + ${j}u) * ${u(CP4)} + e / ${u(BQ)}] = vec4<f32>(${[0, 1, 2, 3].map((i) => `${src}[${i}].${c}`).join(', ')});`,
    ).join('\n        ');
  // The intra tiles' A rows: in pg where vec (raw f32 words), else pa.
  const aRows = vec ? 'pg' : 'pa';
  // An inter tile's gated a-row i (masked where vec: rows past the chunk, channels past K).
  const gatedRow = (i: number) => {
    const av = vec ? `cv4_${a}(pa[${i}])` : `pa[${i}]`;
    const g = o ? `P.scale * ${av} * exp(pg[${i}])` : `${av} * exp(pgl - pg[${i}])`;
    return vec
      ? `select(vec4<f32>(), ${g}, 4u * (e / ${u(BQ)}) + ${i}u < L && it * ${u(BX)} + 4u * (e % ${u(BQ)}) < P.K)`
      : g;
  };
  // One reduction index of the product, unrolled below (constant register indices; H200 run 3
  // timed it within 10% of the rolled loop), bounded per thread in the intra-chunk tiles.
  const step = `
      let bv = sb[r * 16u + tx];
      ${Array.from({ length: VA }, (_, v) => `let a${v} = sa[r * ${u(CP4)} + ${u(VA)} * ty + ${v}u];`).join('\n      ')}
      ${Array.from({ length: VA }, (_, v) => outer4('acc', `a${v}`, 'bv', 16 * v)).join('\n')}`;
  // The b-tile rows into sb (vec: the state's f32 words, or v / dO's converted; masked).
  const bStage = vec
    ? `
      let e = tid + ${u(NT)} * f;
      let ys = v0 + 4u * (e % 16u);
      if (it < nkt) {
        sb[e] = select(vec4<f32>(), bitcast<vec4<f32>>(pb[f]), it * ${u(BX)} + e / 16u < P.K && ys < P.V);
      } else {
        sb[e] = select(vec4<f32>(), cv4_${b}(${dtype === 'f32' ? 'bitcast<vec4<f32>>(pb[f])' : 'pb[f].xy'}), (it - nkt) * ${u(BX)} + e / 16u < L && ys < P.V);
      }`
    : `
      let e = tid + ${u(NT)} * f;
      sb[e] = pb[f];`;
  return kernel(
    o ? 'gla output' : 'gla dv',
    [
      { name: 'tab', kind: 'u32' },
      { name: a, kind: 'in', dtype, vec },
      { name: b, kind: 'in', dtype, vec },
      { name: 'Gb', kind: 'f32', vec: true },
      { name: 'Hs', kind: 'f32', vec },
      { name: 'Ab', kind: 'f32', vec: true },
      // vec: the output in its own dtype, 4 elements a store (no cast pass); else f32, cast after.
      { name: 'out', kind: vec ? (dtype === 'f32' ? 'outv4' : 'outh4') : 'out' },
    ],
    `var<workgroup> sa: array<vec4<f32>, ${BX * CP4}>;
var<workgroup> sb: array<vec4<f32>, ${BX * 16}>;
@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let c = wg.x;
  let h = wg.y;
  let v0 = wg.z * ${u(GLA_OUT_BLOCK_SIMT)};
  let tid = lid.x;
  let ty = tid / 16u;
  let tx = tid % 16u;
  let row0 = tab[${CHUNK_META}u * c];
  let L = tab[${CHUNK_META}u * c + 1u];
  let hbase = (c * P.H + h) * P.K * P.V;
  let abase = (c * P.H + h) * ${u(C)};
  let nkt = (P.K + ${u(BX - 1)}) / ${u(BX)};
  let ntl = nkt + ${u(NIT)};
  var acc = array<f32, ${RY * 4}>();
  var pa = array<${vec ? rawOf(dtype) : 'vec4<f32>'}, 4>();
  var pg = array<vec4<f32>, 4>();
  var pb = array<${vec ? 'vec4<u32>' : 'vec4<f32>'}, ${GB}>();
  var pgl = vec4<f32>();
  ${fetch('0u')}
  for (var it = 0u; it < ntl; it++) {
    workgroupBarrier();
    // The a-tile as [reduction][row] vec4s: a group's 4 rows transposed into 4 whole vec4s.
    {
      let e = tid;
      if (e < ${u(NG)}) {
        if (it < nkt) {
          let g = array<vec4<f32>, 4>(${[0, 1, 2, 3].map(gatedRow).join(', ')});
        ${transposed('g')}
        } else {
          ${
            o
              ? transposed(aRows)
              : [0, 1, 2, 3]
                  .map(
                    (r) =>
                      `sa[(4u * (e / ${u(C / 4)}) + ${r}u) * ${u(CP4)} + e % ${u(C / 4)}] = ${aRows}[${r}];`,
                  )
                  .join('\n          ')
          }
        }
      }
    }
    ${unroll(GB, 'f', bStage)}
    workgroupBarrier();
    // This tile's reduction range for the thread's rows: A is 0 ${o ? 'for s > t' : 'for t < s'}.
    var r0 = 0u;
    var r1 = ${u(BX)};
    if (it >= nkt) {
      let s0 = i32((it - nkt) * ${u(BX)});
      ${
        o
          ? `r1 = u32(clamp(i32(${u(RY)} * ty + ${u(RY)}) - s0, 0, ${BX}));`
          : `r0 = u32(clamp(i32(${u(RY)} * ty) - s0, 0, ${BX}));`
      }
    }
    // The next tile, fetched whatever (the last step its own again): a fetch under a branch
    // of its own would wait for its loads before the branch joins.
    ${skip('output:fetch') ? '' : fetch('min(it + 1u, ntl - 1u)')}
    ${
      skip('output:compute')
        ? ''
        : `if (it < nkt) {
      ${unroll(BX, 'r', step)}
    } else {
      ${unroll(BX, 'r', `if (r >= r0 && r < r1) {\n${step}\n}`)}
    }`
    }
  }
  ${
    vec
      ? unroll(
          RY,
          'i',
          `
      let t = ${u(RY)} * ty + i;
      let ys = v0 + 4u * tx;
      if (t < L && ys < P.V) {
        let w = vec4<f32>(acc[i * 4u], acc[i * 4u + 1u], acc[i * 4u + 2u], acc[i * 4u + 3u]);
        out[(((row0 + t) * P.H + h) * P.V + ys) >> 2u] = ${
          dtype === 'f32'
            ? 'w'
            : dtype === 'f16'
              ? 'vec2<u32>(pack2x16float(w.xy), pack2x16float(w.zw))'
              : 'vec2<u32>(bf1(w.x) | (bf1(w.y) << 16u), bf1(w.z) | (bf1(w.w) << 16u))'
        };
      }`,
        )
      : unroll(
          RY,
          'i',
          unroll(
            4,
            'j',
            `
      let t = ${u(RY)} * ty + i;
      let y = v0 + 4u * tx + j;
      if (t < L && y < P.V) { out[((row0 + t) * P.H + h) * P.V + y] = acc[i * 4u + j]; }
    `,
          ),
        )
  }
}${BF16_ROUND}`,
  );
}

/** Columns of the tensor-core o / dv kernels' blocks for V: 16 * RX with RX in 1..4. */
export function outBlock(V: number): number {
  return 16 * Math.min(GLA_OUT_BLOCK / 16, Math.ceil(V / 16));
}

/**
 * Pass 4 (forward, mode 'o') and the backward's dv (mode 'dv'), one workgroup per (chunk, head,
 * block of BV columns of V: 64 SIMT (outputShaderSimt, its own layout), outBlock(V) with `tc`,
 * the code below), two tile products each:
 *   'o':  o  = (scale q * e^{G}) h_c + A v                  (A causal, from the scores pass)
 *   'dv': dv = (k * e^{G_L - G}) dh_c + A^T dO
 * Workgroups (NC, H, outGrid(V, tc)).
 */
export function outputShader(
  mode: 'o' | 'dv',
  C: number,
  V: number,
  dtype: GlaStorage,
  tc?: GlaTc,
  vec = false,
): GlaKernel {
  if (!tc) return outputShaderSimt(mode, C, dtype, vec);
  const BV = outBlock(V);
  const TY = 16;
  const TX = 16;
  const RY = C / TY;
  const RX = BV / TX;
  const BX = 32;
  const o = mode === 'o';
  // Tensor cores: the (C / 16) x (BV / 16) result matrices dealt round-robin to the 8 subgroups
  // (MT each; a subgroup past the last repeats it and stores nothing), operands staged as f16
  // in padded rows, the results leaving through a 16 x 16 f32 scratch per subgroup.
  const SG = (TY * TX) / 32;
  const mx = glaMatrixOps(tc.emulate, SG);
  const NT = RY * RX;
  const MT = Math.ceil(NT / SG);
  // Emulated at C >= 64 the rows go unpadded: the f32 stand-ins of the f16 tiles then fill
  // llvmpipe's 32 KiB exactly, so the tests reach several result matrices per subgroup (MT 2,
  // the benchmark's C 64, BV 64); C 16 / 32 test the padded layout.
  const pad = !(tc.emulate && C >= 64) ? GLA_TC_PAD : 0;
  // Row widths of the staged tiles: a is [C, BX] (o, and dv's first product) or [BX, C] (dv's
  // A^T, read column-major), b is [BX, BV].
  const AW = BX + pad;
  const ATW = C + pad;
  const BW = BV + pad;
  const ent = tcEntry(tc, 'tid');
  const cast = (x: string) => mx.half(x);
  // The emulation's own per-subgroup scratch (512 floats, free between multiplies) serves as the
  // results' scratch there: a second one would not fit llvmpipe's 32 KiB of workgroup memory.
  const scr = tc.emulate ? 'e_ab' : 'scr';
  const scrAt = tc.emulate ? 'sg * 512u' : 'sg * 256u';
  const aAt = (e: string, w: number) => `(${e} / ${u(w - pad)}) * ${u(w)} + ${e} % ${u(w - pad)}`;
  const tcProd = (aColMajor: boolean) => {
    const lines: string[] = [];
    for (let m = 0; m < MT; m++) {
      lines.push(`{
      let tile = min(sg + ${u(SG * m)}, ${u(NT - 1)});
      let ti = tile / ${u(RX)};
      let tj = tile % ${u(RX)};
      for (var kk = 0u; kk < ${u(BX / 16)}; kk++) {
        let ma = ${
          aColMajor
            ? mx.load('L', 'sa', `kk * ${u(16 * ATW)} + ti * 16u`, true, u(ATW))
            : mx.load('L', 'sa', `ti * ${u(16 * AW)} + kk * 16u`, false, u(AW))
        };
        let mb = ${mx.load('R', 'sb', `kk * ${u(16 * BW)} + tj * 16u`, false, u(BW))};
        m${m} = ${mx.mma('ma', 'mb', `m${m}`)};
      }
    }`);
    }
    return lines.join('\n    ');
  };
  const a = o ? 'q' : 'k';
  const b = o ? 'v' : 'dO';
  const gate = o ? 'P.scale * ld_q(gi) * exp(Gb[gi])' : 'ld_k(gi) * exp(GL - Gb[gi])';
  return kernel(
    `${o ? 'gla output' : 'gla dv'} tc`,
    [
      { name: 'tab', kind: 'u32' },
      { name: a, kind: 'in', dtype },
      { name: b, kind: 'in', dtype },
      { name: 'Gb', kind: 'f32' },
      { name: 'Hs', kind: 'f32' },
      { name: 'Ab', kind: 'f32' },
      { name: 'out', kind: 'out' },
    ],
    `${!tc.emulate ? `var<workgroup> scr: array<f32, ${SG * 256}>;\n` : ''}var<workgroup> sa: array<${mx.H}, ${Math.max(C * AW, BX * ATW)}>;
var<workgroup> sb: array<${mx.H}, ${BX * BW}>;
@compute @workgroup_size(${TY * TX})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>${ent.params}) {
  let c = wg.x;
  let h = wg.y;
  let v0 = wg.z * ${u(BV)};
  let tid = lid.x;
  ${ent.prologue}
  let ty = tid / ${u(TX)};
  let tx = tid % ${u(TX)};
  let row0 = tab[${CHUNK_META}u * c];
  let L = tab[${CHUNK_META}u * c + 1u];
  let hbase = (c * P.H + h) * P.K * P.V;
  ${Array.from({ length: MT }, (_, m) => `var m${m} = ${mx.A}();`).join('\n  ')}
  // The inter-chunk product: gated rows of ${a} [C, K] times the state [K, BV].
  for (var x0 = 0u; x0 < P.K; x0 += ${u(BX)}) {
    workgroupBarrier();
    for (var e = tid; e < ${u(C * BX)}; e += ${u(TY * TX)}) {
      let t = e / ${u(BX)};
      let x = x0 + e % ${u(BX)};
      var av = 0.0;
      if (t < L && x < P.K) {
        let gi = ((row0 + t) * P.H + h) * P.K + x;
        ${o ? '' : 'let GL = Gb[((row0 + L - 1u) * P.H + h) * P.K + x];'}
        av = ${gate};
      }
      sa[${aAt('e', AW)}] = ${cast('av')};
    }
    for (var e = tid; e < ${u(BX * BV)}; e += ${u(TY * TX)}) {
      let x = x0 + e / ${u(BV)};
      let y = v0 + e % ${u(BV)};
      var bv = 0.0;
      if (x < P.K && y < P.V) { bv = Hs[hbase + x * P.V + y]; }
      sb[${aAt('e', BW)}] = ${cast('bv')};
    }
    workgroupBarrier();
    ${tcProd(false)}
  }
  // The intra-chunk product: ${o ? 'A [C, C] times v' : 'A^T [C, C] times dO'} [C, BV], ${BX} rows of the reduction at a time.
  for (var s0 = 0u; s0 < ${u(C)}; s0 += ${u(BX)}) {
    workgroupBarrier();
    for (var e = tid; e < ${u(C * BX)}; e += ${u(TY * TX)}) {
      ${
        o
          ? `let t = e / ${u(BX)};
      let s = s0 + e % ${u(BX)};
      var av = 0.0;
      if (s < ${u(C)}) { av = Ab[((c * P.H + h) * ${u(C)} + t) * ${u(C)} + s]; }
      sa[${aAt('e', AW)}] = ${cast('av')};`
          : `let t = s0 + e / ${u(C)};
      let s = e % ${u(C)};
      var av = 0.0;
      if (t < ${u(C)}) { av = Ab[((c * P.H + h) * ${u(C)} + t) * ${u(C)} + s]; }
      sa[${aAt('e', ATW)}] = ${cast('av')};`
      }
    }
    for (var e = tid; e < ${u(BX * BV)}; e += ${u(TY * TX)}) {
      let t = s0 + e / ${u(BV)};
      let y = v0 + e % ${u(BV)};
      var bv = 0.0;
      if (t < L && y < P.V) { bv = ld_${b}(((row0 + t) * P.H + h) * P.V + y); }
      sb[${aAt('e', BW)}] = ${cast('bv')};
    }
    workgroupBarrier();
    ${tcProd(!o)}
  }
  ${tcResultsOut(mx, {
    MT,
    SG,
    NT,
    RX,
    scr,
    scrAt,
    write: (t, col, val) =>
      `let y = v0 + ${col};
      if (${t} < L && y < P.V) { out[((row0 + ${t}) * P.H + h) * P.V + y] = ${val}; }`,
  })}
}`,
    { tc, prelude: mx.prelude() },
  );
}

/**
 * The backward's dA [NC, H, C, C] = scale dO v^T on and below the diagonal (0 elsewhere and
 * past the chunk): one tile product over V. Workgroups (NC, H).
 */
export function scoreGradShader(C: number, dtype: GlaStorage, tc?: GlaTc): GlaKernel {
  const TY = 16;
  const TX = 16;
  const R = C / 16;
  const BX = kTileOf(C);
  // Tensor cores: the (C / 16)^2 result matrices dealt to the 8 subgroups as in outputShader
  // (upper ones too: every subgroup must run the same multiplies), dO rows [C, BX] left, v rows
  // read column-major as v^T right; padded rows (unpadded when emulated at C >= 64, to fit).
  const SG = (TY * TX) / 32;
  const mx = tc ? glaMatrixOps(tc.emulate, SG) : undefined;
  const NT = R * R;
  const MT = Math.ceil(NT / SG);
  const pad = tc && !(tc.emulate && C >= 64) ? GLA_TC_PAD : 0;
  const AW = BX + pad;
  const VW = tc ? BX + pad : BX + 1;
  const ent = tcEntry(tc, 'tid');
  const cast = (x: string) => (mx ? mx.half(x) : x);
  const scr = tc?.emulate ? 'e_ab' : 'scr';
  const scrAt = tc?.emulate ? 'sg * 512u' : 'sg * 256u';
  const prod = mx
    ? Array.from(
        { length: MT },
        (_, m) => `{
      let tile = min(sg + ${u(SG * m)}, ${u(NT - 1)});
      let ti = tile / ${u(R)};
      let tj = tile % ${u(R)};
      for (var kk = 0u; kk < ${u(BX / 16)}; kk++) {
        let ma = ${mx.load('L', 'sa', `ti * ${u(16 * AW)} + kk * 16u`, false, u(AW))};
        let mb = ${mx.load('R', 'sb', `tj * ${u(16 * VW)} + kk * 16u`, true, u(VW))};
        m${m} = ${mx.mma('ma', 'mb', `m${m}`)};
      }
    }`,
      ).join('\n    ')
    : tileProduct({
        acc: 'acc',
        RY: R,
        RX: R,
        TY,
        TX,
        depth: BX,
        a: (row, red) => `sa[${row} * ${u(BX)} + ${red}]`,
        b: (red, col) => `sb[${col} * ${u(BX + 1)} + ${red}]`,
      });
  return kernel(
    `gla dA${tc ? ' tc' : ''}`,
    [
      { name: 'tab', kind: 'u32' },
      { name: 'dO', kind: 'in', dtype },
      { name: 'v', kind: 'in', dtype },
      { name: 'dAb', kind: 'out' },
    ],
    `${mx && !tc?.emulate ? `var<workgroup> scr: array<f32, ${SG * 256}>;\n` : ''}var<workgroup> sa: array<${mx ? mx.H : 'f32'}, ${C * AW}>;
var<workgroup> sb: array<${mx ? mx.H : 'f32'}, ${C * VW}>;
@compute @workgroup_size(${TY * TX})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>${ent.params}) {
  let c = wg.x;
  let h = wg.y;
  let tid = lid.x;
  ${ent.prologue}
  let ty = tid / ${u(TX)};
  let tx = tid % ${u(TX)};
  let row0 = tab[${CHUNK_META}u * c];
  let L = tab[${CHUNK_META}u * c + 1u];
  ${mx ? Array.from({ length: MT }, (_, m) => `var m${m} = ${mx.A}();`).join('\n  ') : `var acc: array<f32, ${R * R}>;`}
  for (var y0 = 0u; y0 < P.V; y0 += ${u(BX)}) {
    workgroupBarrier();
    for (var e = tid; e < ${u(C * BX)}; e += ${u(TY * TX)}) {
      let t = e / ${u(BX)};
      let y = y0 + e % ${u(BX)};
      var a = 0.0;
      var b = 0.0;
      if (t < L && y < P.V) {
        let i = ((row0 + t) * P.H + h) * P.V + y;
        a = ld_dO(i);
        b = ld_v(i);
      }
      sa[${tc ? `t * ${u(AW)} + e % ${u(BX)}` : 'e'}] = ${cast('a')};
      // v's rows padded by one: the product reads them across lanes (s), conflict-free.
      sb[t * ${u(VW)} + e % ${u(BX)}] = ${cast('b')};
    }
    workgroupBarrier();
    ${prod}
  }
  ${
    mx
      ? tcResultsOut(mx, {
          MT,
          SG,
          NT,
          RX: R,
          scr,
          scrAt,
          write: (t, col, val) =>
            `dAb[((c * P.H + h) * ${u(C)} + ${t}) * ${u(C)} + ${col}] =
          select(0.0, P.scale * ${val}, ${col} <= ${t} && ${t} < L);`,
        })
      : `${unroll(
          R,
          'i',
          `
    ${unroll(
      R,
      'j',
      `
      let t = ty + ${u(TY)} * i;
      let s = tx + ${u(TX)} * j;
      dAb[((c * P.H + h) * ${u(C)} + t) * ${u(C)} + s] =
        select(0.0, P.scale * acc[i * ${u(R)} + j], s <= t && t < L);
    `,
    )}
  `,
        )}`
  }
}`,
    { tc, prelude: mx?.prelude() ?? '' },
  );
}

/**
 * The backward's dq, dk and dgk, one workgroup per (chunk, head, block of BX key channels),
 * each thread a column x and C / TY rows (chunk.ts's chunkGlaBackwardArrays, f32):
 *   inter:  sdo_t = dO_t . h_c[x, :],  w_s = v_s . dh_c[x, :],  <dh_c, h_c>_x     (products over V)
 *   intra (strict, s < t), from dA: within a sub-chunk element by element; across sub-chunks
 *     j < i through the gated tiles and d_ij as the scores pass;
 *   dq = intra_q + scale e^{G_t} sdo_t + dA_tt k_t,   dk = intra_k + e^{G_L - G_s} w_s + dA_ss q_s
 *   dgk_t = sum_{u >= t} (q_u (intra_q + inter)_u - k_u intra_k_u)
 *         + e^{G_L} <dh_c, h_c>_x + sum_{u < t} k_u e^{G_L - G_u} w_u
 * the cancellation-free form of chunk.ts (the diagonal pairs left out of both sides, the state
 * terms as a prefix). Workgroups (NC, H, ceil(K / BX)).
 */
export function qkGradShader(
  C: number,
  dtype: GlaStorage,
  tc?: GlaTc,
  outputs: 'split' | 'merged' = 'split',
  vec = false,
): GlaKernel {
  const sub = glaSubChunkSize(C);
  const n = C / sub;
  const BX = kTileOf(C);
  const W = GLA_THREADS;
  const TX = BX;
  const TY = W / TX;
  const RY = C / TY;
  const T = C * BX;
  const BV = 16;
  // The inter phase's tiles alias the intra phase's (sm[0 .. 2 C BV + 2 BX BV) <= 3 T).
  const oDO = 0;
  const oV = C * BV;
  const oH = 2 * C * BV;
  const oDH = 2 * C * BV + BX * BV;
  // Tensor cores, the inter products only (the intra-chunk part is elementwise over sub-chunks):
  // subgroup sg < NP owns result matrix (ti, tj) of both sdo [C, BX] and w [C, BX] (NP <= 8 at
  // every chunk size), f16 slices of 16 columns of V staged in padded rows of YW (in an f16
  // array; under emulation in sm itself, which is f32 there as the stand-ins are), the results
  // stored into sm for the threads' registers. hd from the staged values, as the products see
  // them.
  const mx = tc ? glaMatrixOps(tc.emulate, W / 32) : undefined;
  const NP = (C / 16) * (BX / 16);
  const YW = BV + GLA_TC_PAD;
  const st = tc?.emulate ? 'sm' : 'sx';
  const sD = 0;
  const sV = C * YW;
  const sH = 2 * C * YW;
  const sDH = 2 * C * YW + BX * YW;
  const smSize = Math.max(3 * T + n * n * BX, tc?.emulate ? 2 * (C + BX) * YW : 0);
  const ent = tcEntry(tc, 'tid');
  const stage = (off: number, tcOff: number, e: string, val: string) =>
    mx
      ? `${st}[${u(tcOff)} + (${e} / ${u(BV)}) * ${u(YW)} + ${e} % ${u(BV)}] = ${mx.half(val)};`
      : `sm[${u(off)} + ${e}] = ${val};`;
  const interTc = mx
    ? `for (var y = 0u; y < ${u(BV)}; y++) {
      hd = fma(f32(${st}[${u(sH)} + tx * ${u(YW)} + y]), f32(${st}[${u(sDH)} + tx * ${u(YW)} + y]), hd);
    }
    {
      let ma = ${mx.load('L', st, `${u(sD)} + ti * ${u(16 * YW)}`, false, u(YW))};
      let mb = ${mx.load('R', st, `${u(sH)} + tj * ${u(16 * YW)}`, true, u(YW))};
      mS = ${mx.mma('ma', 'mb', 'mS')};
    }
    {
      let ma = ${mx.load('L', st, `${u(sV)} + ti * ${u(16 * YW)}`, false, u(YW))};
      let mb = ${mx.load('R', st, `${u(sDH)} + tj * ${u(16 * YW)}`, true, u(YW))};
      mW = ${mx.mma('ma', 'mb', 'mW')};
    }`
    : '';
  const rows = (body: string) =>
    `${unroll(
      RY,
      'i',
      `
      let t = ty + ${u(TY)} * i;
      ${body}
    `,
    )}`;
  // vec (K, V multiples of 4): the inter phase's V slices as 4-element raw words (dO and v: NE
  // a tile, Hs and dHs: NH), the next slice's loaded into registers while this one multiplies
  // (unconditionally, clamped; masked when staged), as the forward passes do.
  const NE = (C * BV) / 4;
  const NH = (BX * BV) / 4;
  const FE = Math.ceil(NE / W);
  const FH = Math.ceil(NH / W);
  const interFetch = (y0: string) => `{
      let fy = ${y0};
      ${unroll(
        FE,
        'f',
        `let e = tid + ${u(W)} * f;
      let i = ((row0 + e / 4u) * P.H + h) * P.V + fy + 4u * (e % 4u);
      pdo[f] = rd4_dO(i);
      pv[f] = rd4_v(i);`,
      )}
      ${unroll(
        FH,
        'f',
        `let e = tid + ${u(W)} * f;
      let i = hbase + (x0 + e / 4u) * P.V + fy + 4u * (e % 4u);
      ph[f] = rd4_Hs(i);
      pdh[f] = rd4_dHs(i);`,
      )}
    }`;
  const interRegs = `var pdo = array<${rawOf(dtype)}, ${FE}>();
  var pv = array<${rawOf(dtype)}, ${FE}>();
  var ph = array<vec4<f32>, ${FH}>();
  var pdh = array<vec4<f32>, ${FH}>();
  ${interFetch('0u')}`;
  // Two arrays' registers (F a thread, N groups of 4 columns in a tile) into their tiles: row
  // `row` (bounded by rowOk), columns y0 + yy .. + 3 (bounded by V), masked to 0 outside.
  const stagePair = (
    F: number,
    N: number,
    row: string,
    rowOk: string,
    a: { val: string; off: number; tcOff: number },
    b: { val: string; off: number; tcOff: number },
  ) =>
    unroll(
      F,
      'f',
      `let e = tid + ${u(W)} * f;
    if (e < ${u(N)}) {
      let ${row} = e / 4u;
      let yy = 4u * (e % 4u);
      let ok = ${rowOk} && y0 + yy < P.V;
      let a = select(vec4<f32>(), ${a.val}, ok);
      let b = select(vec4<f32>(), ${b.val}, ok);
      ${unroll(
        4,
        'j',
        `${stage(a.off, a.tcOff, `(${row} * ${u(BV)} + yy + j)`, 'a[j]')}
      ${stage(b.off, b.tcOff, `(${row} * ${u(BV)} + yy + j)`, 'b[j]')}`,
      )}
    }`,
    );
  const interStage = `${stagePair(
    FE,
    NE,
    't',
    't < L',
    { val: 'cv4_dO(pdo[f])', off: oDO, tcOff: sD },
    { val: 'cv4_v(pv[f])', off: oV, tcOff: sV },
  )}
    ${stagePair(
      FH,
      NH,
      'xx',
      'x0 + xx < P.K',
      { val: 'ph[f]', off: oH, tcOff: sH },
      { val: 'pdh[f]', off: oDH, tcOff: sDH },
    )}
    ${interFetch(`min(y0 + ${u(BV)}, ((P.V - 1u) / ${u(BV)}) * ${u(BV)})`)}`;
  return kernel(
    `gla dq dk dgk${tc ? ' tc' : ''}${outputs === 'merged' ? ' merged' : ''}`,
    [
      { name: 'tab', kind: 'u32' },
      { name: 'q', kind: 'in', dtype },
      { name: 'k', kind: 'in', dtype },
      { name: 'v', kind: 'in', dtype, vec },
      { name: 'dO', kind: 'in', dtype, vec },
      { name: 'Gb', kind: 'f32' },
      { name: 'Hs', kind: 'f32', vec },
      { name: 'dHs', kind: 'f32', vec },
      { name: 'dAb', kind: 'f32' },
      // 'merged': dq, dk, dg in one buffer ([3, nk], P.nk apart), 10 storage buffers, for
      // adapters that grant fewer than 12 (Chromium's SwiftShader: 10; WebGPU's default 8).
      ...(outputs === 'merged'
        ? [{ name: 'dqkg', kind: 'out' } as const]
        : ([
            { name: 'dq', kind: 'out' },
            { name: 'dk', kind: 'out' },
            { name: 'dg', kind: 'out' },
          ] as const)),
    ],
    `var<workgroup> sm: array<f32, ${smSize}>;
${mx && !tc?.emulate ? `var<workgroup> sx: array<f16, ${2 * (C + BX) * YW}>;\n` : ''}
fn dA(c: u32, h: u32, t: u32, s: u32) -> f32 {
  return dAb[((c * P.H + h) * ${u(C)} + t) * ${u(C)} + s];
}
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>${ent.params}) {
  let c = wg.x;
  let h = wg.y;
  let x0 = wg.z * ${u(BX)};
  let tid = lid.x;
  ${ent.prologue}
  let ty = tid / ${u(TX)};
  let tx = tid % ${u(TX)};
  let x = x0 + tx;
  let xk = min(x, P.K - 1u);
  let row0 = tab[${CHUNK_META}u * c];
  let L = tab[${CHUNK_META}u * c + 1u];
  let hbase = (c * P.H + h) * P.K * P.V;
  // Inter-chunk products over V: sdo = dO h_c^T, w = v dh_c^T, hd = <dh_c, h_c> per channel.
  var sdo: array<f32, ${RY}>;
  var w: array<f32, ${RY}>;
  var hd = 0.0;
  ${
    mx
      ? `var mS = ${mx.A}();
  var mW = ${mx.A}();
  let ti = min(sg, ${u(NP - 1)}) / ${u(BX / 16)};
  let tj = min(sg, ${u(NP - 1)}) % ${u(BX / 16)};`
      : ''
  }
  ${vec ? interRegs : ''}
  for (var y0 = 0u; y0 < P.V; y0 += ${u(BV)}) {
    workgroupBarrier();
    ${
      vec
        ? interStage
        : `for (var e = tid; e < ${u(C * BV)}; e += ${u(W)}) {
      let t = e / ${u(BV)};
      let y = y0 + e % ${u(BV)};
      var a = 0.0;
      var b = 0.0;
      if (t < L && y < P.V) {
        let i = ((row0 + t) * P.H + h) * P.V + y;
        a = ld_dO(i);
        b = ld_v(i);
      }
      ${stage(oDO, sD, 'e', 'a')}
      ${stage(oV, sV, 'e', 'b')}
    }
    for (var e = tid; e < ${u(BX * BV)}; e += ${u(W)}) {
      let xx = x0 + e / ${u(BV)};
      let y = y0 + e % ${u(BV)};
      var a = 0.0;
      var b = 0.0;
      if (xx < P.K && y < P.V) {
        a = Hs[hbase + xx * P.V + y];
        b = dHs[hbase + xx * P.V + y];
      }
      ${stage(oH, sH, 'e', 'a')}
      ${stage(oDH, sDH, 'e', 'b')}
    }`
    }
    workgroupBarrier();
    ${
      mx
        ? interTc
        : `for (var y = 0u; y < ${u(BV)}; y++) {
      let hv = sm[${u(oH)} + tx * ${u(BV)} + y];
      let dhv = sm[${u(oDH)} + tx * ${u(BV)} + y];
      hd = fma(hv, dhv, hd);
      ${rows(`sdo[i] = fma(sm[${u(oDO)} + t * ${u(BV)} + y], hv, sdo[i]);
      w[i] = fma(sm[${u(oV)} + t * ${u(BV)} + y], dhv, w[i]);`)}
    }`
    }
  }
  workgroupBarrier();
  ${
    mx
      ? `// The products into sm (rows t, columns x), then into the threads' registers.
  if (sg < ${u(NP)}) {
    ${mx.store('sm', `ti * ${u(16 * BX)} + tj * 16u`, 'mS', false, u(BX))};
    ${mx.store('sm', `${u(T)} + ti * ${u(16 * BX)} + tj * 16u`, 'mW', false, u(BX))};
  }
  workgroupBarrier();
  ${rows(`sdo[i] = sm[t * ${u(BX)} + tx];
      w[i] = sm[${u(T)} + t * ${u(BX)} + tx];`)}
  workgroupBarrier();`
      : ''
  }
  ${qkgTileLoad(C, BX, W, { q: '0u', k: u(T), g: u(2 * T) })}
  workgroupBarrier();
  // Raw q, k, G of the thread's elements; the strictly causal pairs within the sub-chunk.
  var qr: array<f32, ${RY}>;
  var kr: array<f32, ${RY}>;
  var gr: array<f32, ${RY}>;
  var iq: array<f32, ${RY}>;
  var ik: array<f32, ${RY}>;
  ${rows(`let e = t * ${u(BX)} + tx;
      qr[i] = sm[e];
      kr[i] = sm[${u(T)} + e];
      gr[i] = sm[${u(2 * T)} + e];
      let a = (t / ${u(sub)}) * ${u(sub)};
      var accq = 0.0;
      var acck = 0.0;
      // The sub-chunk's ${sub} rows unrolled, each pair masked (s < t for dq, s > t for dk):
      // the dA loads of a row are independent and issue together (a loop to t waited on each).
      ${
        skip('qkg:intra')
          ? ''
          : unroll(
              sub,
              'r',
              `
      let s = a + r;
      let gs = sm[${u(2 * T)} + s * ${u(BX)} + tx];
      accq += select(0.0, dA(c, h, t, s) * sm[${u(T)} + s * ${u(BX)} + tx] * exp(gr[i] - gs), s < t);
      acck += select(0.0, dA(c, h, s, t) * sm[s * ${u(BX)} + tx] * exp(gs - gr[i]), s > t);`,
            )
      }
      iq[i] = accq;
      ik[i] = acck;`)}
  workgroupBarrier();
  // Gate in place (q_t e^{G_t - G_{a_i}}, k_s e^{G_{e_j} - G_s}) and d_ij = e^{G_{a_i} - G_{e_j}}.
  for (var e = tid; e < ${u(T)}; e += ${u(W)}) {
    let t = e / ${u(BX)};
    let xx = e % ${u(BX)};
    let i = t / ${u(sub)};
    let g = sm[${u(2 * T)} + e];
    sm[e] *= exp(g - sm[${u(2 * T)} + i * ${u(sub * BX)} + xx]);
    sm[${u(T)} + e] *= exp(sm[${u(2 * T)} + (i * ${u(sub)} + ${u(sub - 1)}) * ${u(BX)} + xx] - g);
  }
  for (var e = tid; e < ${u(n * n * BX)}; e += ${u(W)}) {
    let ij = e / ${u(BX)};
    let xx = e % ${u(BX)};
    let i = ij / ${u(n)};
    let j = ij % ${u(n)};
    if (j < i) {
      sm[${u(3 * T)} + e] = exp(sm[${u(2 * T)} + i * ${u(sub * BX)} + xx] -
        sm[${u(2 * T)} + (j * ${u(sub)} + ${u(sub - 1)}) * ${u(BX)} + xx]);
    }
  }
  workgroupBarrier();
  // Pairs across sub-chunks (j < i): per pair of sub-chunks a product of ${sub} rows.
  // (a sub-chunk's ${sub} products unrolled: their dA loads issue together)
  ${
    skip('qkg:cross')
      ? ''
      : rows(`let si = t / ${u(sub)};
      var oq = 0.0;
      for (var j = 0u; j < si; j++) {
        var p = 0.0;
        ${unroll(
          sub,
          'r',
          `let s = j * ${u(sub)} + r;
        p = fma(dA(c, h, t, s), sm[${u(T)} + s * ${u(BX)} + tx], p);`,
        )}
        oq = fma(sm[${u(3 * T)} + (si * ${u(n)} + j) * ${u(BX)} + tx], p, oq);
      }
      iq[i] += exp(gr[i] - sm[${u(2 * T)} + si * ${u(sub * BX)} + tx]) * oq;
      var ok = 0.0;
      for (var j = si + 1u; j < ${u(n)}; j++) {
        var p = 0.0;
        ${unroll(
          sub,
          'r',
          `let s = j * ${u(sub)} + r;
        p = fma(dA(c, h, s, t), sm[s * ${u(BX)} + tx], p);`,
        )}
        ok = fma(sm[${u(3 * T)} + (j * ${u(n)} + si) * ${u(BX)} + tx], p, ok);
      }
      ik[i] += exp(sm[${u(2 * T)} + (si * ${u(sub)} + ${u(sub - 1)}) * ${u(BX)} + tx] - gr[i]) * ok;`)
  }
  workgroupBarrier();
  // Combine; the dgk terms per row go through workgroup memory for the suffix / prefix sums.
  let GL = sm[${u(2 * T)} + ${u((C - 1) * BX)} + tx];
  var dqv: array<f32, ${RY}>;
  var dkv: array<f32, ${RY}>;
  ${rows(`let inter = P.scale * exp(gr[i]) * sdo[i];
      let fw = exp(GL - gr[i]) * w[i];
      let dtt = dA(c, h, t, t);
      dqv[i] = iq[i] + inter + dtt * kr[i];
      dkv[i] = ik[i] + fw + dtt * qr[i];
      sm[t * ${u(BX)} + tx] = qr[i] * (iq[i] + inter) - kr[i] * ik[i];
      sm[${u(T)} + t * ${u(BX)} + tx] = kr[i] * fw;`)}
  workgroupBarrier();
  // dgk_t = e^{G_L} hd + (prefix of the k terms before t) + (suffix of the q terms from t):
  // the thread's rows t_i = ty + ${TY} i split the chunk into runs of ${TY}, each run summed once,
  // the prefix forwards and the suffix backwards (sums only: no cancellation).
  var pre: array<f32, ${RY}>;
  var suf: array<f32, ${RY}>;
  ${
    skip('qkg:prefix')
      ? ''
      : `{
    var acc = exp(GL) * hd;
    for (var s = 0u; s < ty; s++) { acc += sm[${u(T)} + s * ${u(BX)} + tx]; }
    ${Array.from(
      { length: RY },
      (_, i) =>
        `pre[${i}] = acc;${
          i < RY - 1
            ? `
    ${unroll(TY, 'r', `acc += sm[${u(T)} + (ty + ${u(TY * i)} + r) * ${u(BX)} + tx];`)}`
            : ''
        }`,
    ).join('\n    ')}
    var sacc = 0.0;
    for (var s = ty + ${u(TY * (RY - 1))}; s < ${u(C)}; s++) { sacc += sm[s * ${u(BX)} + tx]; }
    ${Array.from({ length: RY }, (_, k) => RY - 1 - k)
      .map(
        (i) =>
          `suf[${i}] = sacc;${
            i > 0
              ? `
    ${unroll(TY, 'r', `sacc += sm[(ty + ${u(TY * (i - 1))} + r) * ${u(BX)} + tx];`)}`
              : ''
          }`,
      )
      .join('\n    ')}
  }`
  }
  ${rows(`if (t < L && x < P.K) {
        let sg = pre[i] + suf[i];
        let gi = ((row0 + t) * P.H + h) * P.K + x;
        ${
          outputs === 'merged'
            ? `dqkg[gi] = dqv[i];
        dqkg[P.nk + gi] = dkv[i];
        dqkg[2u * P.nk + gi] = sg;`
            : `dq[gi] = dqv[i];
        dk[gi] = dkv[i];
        dg[gi] = sg;`
        }
      }`)}
}`,
    { tc, prelude: mx?.prelude() ?? '' },
  );
}

/** f32 to bf16 bits, rounded to nearest even (castShader and the o / dv passes' direct stores). */
const BF16_ROUND = `
fn bf1(x: f32) -> u32 { let v = bitcast<u32>(x); return (v + 0x7fffu + ((v >> 16u) & 1u)) >> 16u; }`;

/**
 * src[P.srcOff ..][0 .. n) (f32) into dst as f16 / bf16 (packed two to a u32 word) or f32 (a
 * copy: the slices of the dq / dk / dg buffer); workgroups ceil(n / 2 / 256).
 */
export function castShader(dtype: 'f32' | 'f16' | 'bf16'): GlaKernel {
  const enc = dtype === 'f16' ? 'pack2x16float(vec2<f32>(a, b))' : 'bf1(a) | (bf1(b) << 16u)';
  const store =
    dtype === 'f32'
      ? `dst[e] = a;
  if (e + 1u < P.NC) { dst[e + 1u] = b; }`
      : `dst[wi] = ${enc};`;
  return kernel(
    `gla cast ${dtype}`,
    [
      { name: 'src', kind: 'f32' },
      { name: 'dst', kind: dtype === 'f32' ? 'out' : 'outu' },
    ],
    `${BF16_ROUND}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  // P.NC holds n, the element count; a 2-D grid for more than 65535 workgroups.
  let wi = gid.x + gid.y * nw.x * 256u;
  let e = 2u * wi;
  if (e >= P.NC) { return; }
  let a = src[P.srcOff + e];
  var b = 0.0;
  if (e + 1u < P.NC) { b = src[P.srcOff + e + 1u]; }
  ${store}
}`,
  );
}
