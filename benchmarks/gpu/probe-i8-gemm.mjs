// Probe (device machine, issue 11): the int8 tensor cores through WGSL subgroup matrices —
// how i8 matrices are addressed (offset/stride in i8 elements or in 32-bit words of the packed
// array), whether i8 x i8 -> i32 is exact, and how fast a plain GEMM C = A B^T runs (the
// ceiling a SageAttention kernel on the same builtins can hope for).
//   bash ../shared/gpu/pack.sh benchmarks/gpu/probe-i8-gemm.mjs, then on the device:
//   bash .gpu/run.sh .gpu/app/probe-i8-gemm.mjs [SIZE=4096] [REGS=4x4,2x2,2x4] [TYPE=i8|u8]
// Prints one line per reading ("CHECK ...") and per timed variant ("RESULT ...").
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const [SIZE = '4096', REGS = '4x4,2x2,2x4', TYPE = 'i8'] = process.argv.slice(2);
const t0 = performance.now();
const log = (...a) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const gpu = create([
  'backend=vulkan',
  'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
]);
const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
const cfgs = adapter.info.subgroupMatrixConfigs ?? [];
log(
  'configs',
  JSON.stringify(cfgs.filter((c) => c.componentType !== 'f16' && c.componentType !== 'f32')),
);
const device = await adapter.requestDevice({
  requiredFeatures: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'],
  requiredLimits: {
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize,
  },
});
device.addEventListener?.('uncapturederror', (e) => log('uncaptured', e.error?.message));
const M = 16,
  N = 16,
  K = 32; // the 16x16x32 config
const ACC = TYPE === 'i8' ? 'i32' : 'u32';
const ARR = TYPE === 'i8' ? 'i32' : 'u32';

function shader(units, RM, RN, S) {
  const d = units === 'words' ? ' / 4u' : '';
  const L = (i, off) =>
    `let a${i} = subgroupMatrixLoad<subgroup_matrix_left<${TYPE}, ${K}, ${M}>>(&A, (${off})${d}, false, ${units === 'words' ? S / 4 : S}u);`;
  const R = (j, off) =>
    `let b${j} = subgroupMatrixLoad<subgroup_matrix_right<${TYPE}, ${N}, ${K}>>(&B, (${off})${d}, true, ${units === 'words' ? S / 4 : S}u);`;
  const acc = [];
  for (let i = 0; i < RM; i++) for (let j = 0; j < RN; j++) acc.push([i, j]);
  return `enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> A: array<${ARR}>;
@group(0) @binding(1) var<storage, read> B: array<${ARR}>;
@group(0) @binding(2) var<storage, read_write> C: array<${ACC}>;
@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(subgroup_id) sg: u32) {
  let m0 = wg.y * ${2 * RM * M}u + (sg / 2u) * ${RM * M}u;
  let n0 = wg.x * ${2 * RN * N}u + (sg % 2u) * ${RN * N}u;
  ${acc.map(([i, j]) => `var c${i}_${j} = subgroup_matrix_result<${ACC}, ${N}, ${M}>();`).join('\n  ')}
  for (var k = 0u; k < ${S}u; k += ${K}u) {
    ${[...Array(RM).keys()].map((i) => L(i, `(m0 + ${i * M}u) * ${S}u + k`)).join('\n    ')}
    ${[...Array(RN).keys()].map((j) => R(j, `(n0 + ${j * N}u) * ${S}u + k`)).join('\n    ')}
    ${acc.map(([i, j]) => `c${i}_${j} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, c${i}_${j});`).join('\n    ')}
  }
  ${acc.map(([i, j]) => `subgroupMatrixStore(&C, (m0 + ${i * M}u) * ${S}u + n0 + ${j * N}u, c${i}_${j}, false, ${S}u);`).join('\n  ')}
}`;
}

async function pipelineOf(code) {
  const module = device.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const errs = info.messages.filter((m) => m.type === 'error');
  if (errs.length) throw new Error(errs.map((e) => `${e.lineNum}:${e.message}`).join(' | '));
  const t = performance.now();
  const p = await device.createComputePipelineAsync({
    layout: 'auto',
    compute: { module, entryPoint: 'main' },
  });
  return { p, compileS: (performance.now() - t) / 1000 };
}

function data(S, seed) {
  let s = seed;
  const bytes = new Int8Array(S * S);
  for (let i = 0; i < bytes.length; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    bytes[i] = TYPE === 'i8' ? ((s >>> 24) & 0xff) - 128 : 0;
    if (TYPE === 'u8') bytes[i] = (s >>> 24) & 0xff; // stored as the same byte
  }
  return bytes;
}
const mk = (arr) => {
  const b = device.createBuffer({
    size: arr.byteLength,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
  });
  device.queue.writeBuffer(b, 0, arr.buffer, arr.byteOffset, arr.byteLength);
  return b;
};

async function runOnce(pipe, S, RM, RN, reps, bA, bB, bC) {
  const bind = device.createBindGroup({
    layout: pipe.getBindGroupLayout(0),
    entries: [bA, bB, bC].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const enc = device.createCommandEncoder();
  for (let r = 0; r < reps; r++) {
    const p = enc.beginComputePass();
    p.setPipeline(pipe);
    p.setBindGroup(0, bind);
    p.dispatchWorkgroups(S / (2 * RN * N), S / (2 * RM * M));
    p.end();
  }
  device.queue.submit([enc.finish()]);
  await device.queue.onSubmittedWorkDone();
}
async function readC(bC, n) {
  const rb = device.createBuffer({
    size: n * 4,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(bC, 0, rb, 0, n * 4);
  device.queue.submit([enc.finish()]);
  await rb.mapAsync(GPUMapMode.READ);
  const out =
    TYPE === 'i8'
      ? new Int32Array(rb.getMappedRange().slice(0))
      : new Uint32Array(rb.getMappedRange().slice(0));
  rb.destroy();
  return out;
}
const val = (b) => (TYPE === 'i8' ? b : b & 0xff);
function check(a, b, c, S, samples) {
  let bad = 0;
  for (let s = 0; s < samples; s++) {
    const i = (s * 997) % S,
      j = (s * 1499 + 7) % S;
    let ref = 0;
    for (let k = 0; k < S; k++) ref += val(a[i * S + k]) * val(b[j * S + k]);
    if (c[i * S + j] !== ref) bad++;
  }
  return bad;
}

// 1. The reading: small size, every (i, j) checked, poisoned output.
let units;
for (const u of ['elems', 'words']) {
  const S = 128;
  try {
    const { p } = await pipelineOf(shader(u, 2, 2, S));
    const a = data(S, 1),
      b = data(S, 2);
    const bA = mk(a),
      bB = mk(b);
    const bC = mk(new Int32Array(S * S).fill(0x7fffffff));
    await runOnce(p, S, 2, 2, 1, bA, bB, bC);
    const c = await readC(bC, S * S);
    const bad = check(a, b, c, S, 400);
    log(
      `CHECK ${TYPE} reading=${u}: ${bad === 0 ? 'exact' : `${bad}/400 wrong`} (e.g. C[0]=${c[0]})`,
    );
    if (bad === 0 && !units) units = u;
    for (const x of [bA, bB, bC]) x.destroy();
  } catch (e) {
    log(`CHECK ${TYPE} reading=${u}: error ${String(e.message).slice(0, 300)}`);
  }
}
if (!units) {
  log('no exact reading: stop');
  process.exit(1);
}

// 2. Timing at SIZE^3 (verified on samples first; inputs random, output poisoned).
const S = Number(SIZE);
const a = data(S, 3),
  b = data(S, 4);
const bA = mk(a),
  bB = mk(b);
const bC = device.createBuffer({
  size: S * S * 4,
  usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
});
for (const reg of REGS.split(',')) {
  const [RM, RN] = reg.split('x').map(Number);
  try {
    const { p, compileS } = await pipelineOf(shader(units, RM, RN, S));
    device.queue.writeBuffer(bC, 0, new Int32Array(S * S).fill(0x7fffffff));
    await runOnce(p, S, RM, RN, 1, bA, bB, bC);
    const bad = check(a, b, await readC(bC, S * S), S, 24);
    const times = [];
    for (let r = 0; r < 3; r++) {
      const t = performance.now();
      await runOnce(p, S, RM, RN, 5, bA, bB, bC);
      times.push((performance.now() - t) / 5);
    }
    const ms = Math.min(...times);
    log(
      `RESULT ${TYPE} ${reg} ${S}^3 reading=${units}: ${ms.toFixed(3)} ms ${((2 * S ** 3) / ms / 1e9).toFixed(1)} TOPS, compile ${compileS.toFixed(2)} s, ${bad}/24 wrong`,
    );
  } catch (e) {
    log(`RESULT ${TYPE} ${reg}: error ${String(e.message).slice(0, 300)}`);
  }
}
process.exit(0);
