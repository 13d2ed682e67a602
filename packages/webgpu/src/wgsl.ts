import { describe, ValueError } from '@attnkit/tensor';
import type { BindingKind } from './pipelines.js';

/**
 * Generic WGSL tooling for attnkit's kernels: how a tensor's storage dtype is read and written
 * in WGSL, and a shader's bindings and uniform struct declared once, as data. A kernel keeps
 * one list of `WgslBinding`; the WGSL declarations (with their binding numbers), the
 * pipeline's layout and the buffers of a dispatch are all derived from it, so they cannot drift
 * apart (onnxruntime's WebGPU shader helper owns its bindings the same way).
 */

/** Storage dtypes of float tensors in WGSL: f32, or f16 / bf16 packed two to a u32 word. */
export type StorageDType = 'f32' | 'f16' | 'bf16';

/**
 * `h2f(w)` decodes a u32 word to its two halves and `f2h(v)` encodes two floats into one
 * (f16 through pack2x16float, so no shader-f16 is needed); empty for f32.
 */
export function halfCodec(dtype: StorageDType): string {
  if (dtype === 'f32') return '';
  if (dtype === 'f16') {
    return `fn h2f(w: u32) -> vec2<f32> { return unpack2x16float(w); }
fn f2h(v: vec2<f32>) -> u32 { return pack2x16float(v); }`;
  }
  // bf16 is the top half of an f32; encoding rounds to nearest even on the dropped 16 bits.
  return `fn h2f(w: u32) -> vec2<f32> { return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u)); }
fn bf1(x: f32) -> u32 { let u = bitcast<u32>(x); return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u; }
fn f2h(v: vec2<f32>) -> u32 { return bf1(v.x) | (bf1(v.y) << 16u); }`;
}

/**
 * A read-only tensor binding with loaders ld_NAME(e) and (vec) ld4_NAME(e) for 4 aligned
 * elements. Packed halves need `halfCodec` in the module.
 */
export function inputDecl(
  name: string,
  binding: number,
  dtype: StorageDType,
  vec: boolean,
  group = 0,
): string {
  const head = `@group(${group}) @binding(${binding}) var<storage, read> ${name}: `;
  if (dtype === 'f32') {
    return vec
      ? `${head}array<vec4<f32>>;
fn ld4_${name}(e: u32) -> vec4<f32> { return ${name}[e >> 2u]; }
fn ld_${name}(e: u32) -> f32 { return ${name}[e >> 2u][e & 3u]; }`
      : `${head}array<f32>;
fn ld_${name}(e: u32) -> f32 { return ${name}[e]; }`;
  }
  return vec
    ? `${head}array<vec2<u32>>;
fn ld4_${name}(e: u32) -> vec4<f32> { let w = ${name}[e >> 2u]; return vec4<f32>(h2f(w.x), h2f(w.y)); }
fn ld_${name}(e: u32) -> f32 { return h2f(${name}[e >> 2u][(e >> 1u) & 1u])[e & 1u]; }`
    : `${head}array<u32>;
fn ld_${name}(e: u32) -> f32 { return h2f(${name}[e >> 1u])[e & 1u]; }`;
}

/**
 * An output tensor binding with st_NAME(e, v, n): stores the first n of 4 consecutive elements
 * starting at e (e % 4 == 0 in the row). Packed halves store whole u32 words: n is even there
 * (callers require even row widths for f16/bf16 outputs), so no two threads share a word.
 */
export function outputDecl(
  name: string,
  binding: number,
  dtype: StorageDType,
  vec: boolean,
  group = 0,
): string {
  const head = `@group(${group}) @binding(${binding}) var<storage, read_write> ${name}: `;
  if (dtype === 'f32') {
    return vec
      ? `${head}array<vec4<f32>>;
fn st_${name}(e: u32, v: vec4<f32>, n: u32) { ${name}[e >> 2u] = v; }`
      : `${head}array<f32>;
fn st_${name}(e: u32, v: vec4<f32>, n: u32) { for (var t = 0u; t < n; t++) { ${name}[e + t] = v[t]; } }`;
  }
  return vec
    ? `${head}array<vec2<u32>>;
fn st_${name}(e: u32, v: vec4<f32>, n: u32) { ${name}[e >> 2u] = vec2<u32>(f2h(v.xy), f2h(v.zw)); }`
    : `${head}array<u32>;
fn st_${name}(e: u32, v: vec4<f32>, n: u32) {
  ${name}[e >> 1u] = f2h(v.xy);
  if (n > 2u) { ${name}[(e >> 1u) + 1u] = f2h(v.zw); }
}`;
}

/** A tensor as a kernel reads it: its storage dtype, and whether rows are read as vec4. */
export interface WgslTensorType {
  dtype: StorageDType;
  vec: boolean;
}

/**
 * One binding of a shader, in binding order. `type` is a WGSL type (`Params`, `array<u32>`) or
 * a tensor: read-only tensors get the ld_ loaders of `inputDecl`, writable ones the st_ stores
 * of `outputDecl`.
 */
export interface WgslBinding {
  name: string;
  kind: BindingKind;
  type: string | WgslTensorType;
}

/** The WGSL declarations of `bindings`, numbered 0, 1, ... in list order. */
export function declareBindings(bindings: readonly WgslBinding[], group = 0): string {
  return bindings
    .map(({ name, kind, type }, binding) => {
      if (typeof type !== 'string') {
        if (kind === 'uniform') {
          throw new ValueError(
            `bindings[${binding}]: expected a WGSL type for uniform "${name}", got a tensor`,
            'bindings',
          );
        }
        return kind === 'read'
          ? inputDecl(name, binding, type.dtype, type.vec, group)
          : outputDecl(name, binding, type.dtype, type.vec, group);
      }
      const space =
        kind === 'uniform' ? 'uniform' : kind === 'read' ? 'storage, read' : 'storage, read_write';
      return `@group(${group}) @binding(${binding}) var<${space}> ${name}: ${type};`;
    })
    .join('\n');
}

/** The pipeline layout of `bindings` (PipelineCache's `bindings`). */
export function bindingKinds(bindings: readonly WgslBinding[]): BindingKind[] {
  return bindings.map((b) => b.kind);
}

/** Storage buffers among `bindings` (what the device's maxStorageBuffersPerShaderStage bounds). */
export function storageBindingCount(bindings: readonly WgslBinding[]): number {
  return bindings.filter((b) => b.kind !== 'uniform').length;
}

/**
 * The buffers of a dispatch in binding order, looked up by binding name (entries that no
 * binding names are ignored, so one record can serve kernels with different bindings).
 */
export function bindBuffers<B>(
  bindings: readonly WgslBinding[],
  buffers: Readonly<Record<string, B | undefined>>,
): B[] {
  return bindings.map(({ name }) => {
    const b = buffers[name];
    if (b === undefined) {
      throw new ValueError(
        `buffers.${name}: expected a buffer for binding "${name}", got ${describe(b)}`,
        `buffers.${name}`,
      );
    }
    return b;
  });
}

/** A field of a uniform struct: 4-byte scalars only, so fields pack without alignment gaps. */
export type UniformField = readonly [name: string, type: 'u32' | 'i32' | 'f32'];

/** `struct NAME { ... }`, padded to a multiple of 16 bytes as uniform buffers are sized. */
export function uniformStruct(name: string, fields: readonly UniformField[]): string {
  const lines = fields.map(([field, type]) => `  ${field}: ${type},`);
  const pad = (4 - (fields.length % 4)) % 4;
  for (let i = 0; i < pad; i++) lines.push(`  pad${i}: u32,`);
  return `struct ${name} {\n${lines.join('\n')}\n}`;
}

/** The bytes of a `uniformStruct(fields)` holding `values` (a multiple of 16 bytes). */
export function packUniform(
  fields: readonly UniformField[],
  values: Readonly<Record<string, number>>,
): ArrayBuffer {
  return packUniformParts([[fields, values]]);
}

/**
 * packUniform over the fields of several parts, one after the other in one struct, each part's
 * values read from its own record: a caller with a base block and extra fields (the skeleton's
 * Params and its hooks') packs them without merging the records into one object (a spread of
 * ~40 properties, then keyed reads on the dictionary-mode result, cost ~80 us a launch).
 */
export function packUniformParts(
  parts: ReadonlyArray<readonly [readonly UniformField[], Readonly<Record<string, number>>]>,
): ArrayBuffer {
  const isPair = (x: unknown) =>
    Array.isArray(x) &&
    Array.isArray(x[0]) &&
    typeof x[1] === 'object' &&
    x[1] !== null &&
    !Array.isArray(x[1]);
  if (!Array.isArray(parts) || !parts.every(isPair))
    throw new ValueError(
      `parts: expected an array of [fields, values] pairs, got ${describe(parts)}`,
      'parts',
    );
  let n = 0;
  for (const [fields] of parts) n += fields.length;
  const buf = new ArrayBuffer(Math.ceil(n / 4) * 16);
  const u = new Uint32Array(buf);
  const i = new Int32Array(buf);
  const f = new Float32Array(buf);
  let k = 0;
  for (const [fields, values] of parts) {
    for (const [name, type] of fields) {
      const v = values[name];
      if (typeof v !== 'number') {
        throw new ValueError(
          `values.${name}: expected a number for uniform field "${name}", got ${describe(v)}`,
          `values.${name}`,
        );
      }
      if (type === 'f32') f[k] = v;
      else if (type === 'i32') i[k] = v;
      else u[k] = v >>> 0;
      k++;
    }
  }
  return buf;
}

/**
 * Function-scope `var`s declared without an initializer inside a loop body (`for`, `loop`,
 * `while`), as `name (line n)`. WGSL zero-initializes such a var every time its declaration
 * runs, but Dawn's Vulkan path did not (Tint's SPIR-V output on the H200 and on SwiftShader,
 * 2026-12: a per-iteration accumulator kept the previous iteration's sums; the GLSL path on
 * llvmpipe re-zeroed it). Kernels give such vars an explicit initializer (`var acc =
 * array<f32, 4>();`); shader tests assert this list is empty.
 */
export function loopVarsWithoutInitializer(code: string): string[] {
  if (typeof code !== 'string')
    throw new ValueError(`code: expected WGSL source text, got ${describe(code)}`, 'code');
  const src = stripComments(code);
  const found: string[] = [];
  const loops: boolean[] = [];
  let start = 0;
  let line = 1;
  let startLine = 1;
  let parens = 0;
  for (let i = 0; i < src.length; i++) {
    const ch = src[i];
    if (ch === '\n') line++;
    // A for header's own `;`s are not statement ends.
    if (ch === '(') parens++;
    if (ch === ')') parens--;
    if ((ch !== '{' && ch !== '}' && ch !== ';') || parens > 0) continue;
    const text = src.slice(start, i).trim();
    if (ch === '{') {
      // Attributes may precede a loop (`@diagnostic(off, ...) for (...) {`).
      loops.push(/^(@\w+(\([^)]*\))?\s*)*(for|loop|while)\b/.test(text));
    } else if (ch === ';') {
      const m = /^var(?:\s*<\s*function\s*>)?\s+(\w+)\s*:[^=]*$/.exec(text);
      if (m && loops.includes(true))
        found.push(`${m[1]} (line ${startLine + leadingLines(src, start)})`);
    } else {
      loops.pop();
    }
    start = i + 1;
    startLine = line;
  }
  return found;
}

/**
 * WGSL without its comments, every newline kept (line numbers stay right): line comments, and
 * block comments, which nest in WGSL.
 */
function stripComments(code: string): string {
  let out = '';
  let depth = 0;
  for (let i = 0; i < code.length; i++) {
    const two = code.slice(i, i + 2);
    if (two === '/*') {
      depth++;
      i++;
    } else if (depth > 0 && two === '*/') {
      depth--;
      i++;
    } else if (depth === 0 && two === '//') {
      while (i < code.length && code[i] !== '\n') i++;
      if (i < code.length) out += '\n';
    } else if (depth > 0) {
      if (code[i] === '\n') out += '\n';
    } else {
      out += code[i];
    }
  }
  return out;
}

/** Newlines between `from` and the first non-space character after it. */
function leadingLines(src: string, from: number): number {
  let n = 0;
  for (let i = from; i < src.length && /\s/.test(src[i]!); i++) if (src[i] === '\n') n++;
  return n;
}
