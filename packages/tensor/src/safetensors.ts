/**
 * safetensors read/write (https://github.com/huggingface/safetensors), pure TypeScript with no
 * Node imports so it runs in browsers too.
 *
 * Layout: an 8-byte little-endian u64 header length N, N bytes of UTF-8 JSON
 * `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}`, then the
 * byte buffer that the offsets index (relative to its start).
 *
 * Byte order: tensor bytes are copied into typed arrays as they are, which is only right on a
 * little-endian host (every platform JS engines ship on today); big-endian hosts are unsupported.
 */
import { type DType, viewStorage } from './dtype.js';
import { DeviceError, DTypeError, describe, FormatError, ValueError } from './errors.js';
import { formatShape, numel } from './shape.js';
import { CpuStorage } from './storage.js';
import { Tensor } from './tensor.js';

export type SafetensorsDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I8' | 'U8';

export interface SafetensorsFile {
  tensors: Record<string, Tensor>;
  metadata: Record<string, string>;
  /** The dtype each tensor had in the file (I64 tensors come back as i32; BOOL is reported as U8). */
  fileDTypes: Record<string, SafetensorsDType>;
}

export interface WriteSafetensorsOptions {
  metadata?: Record<string, string>;
  /** i32 tensors to store as I64 */
  asI64?: readonly string[];
}

/** Same limit as the reference Rust implementation: anything larger is corrupt or hostile. */
const MAX_HEADER_BYTES = 100_000_000;
const METADATA_KEY = '__metadata__';

interface FileDTypeInfo {
  dtype: DType;
  fileDType: SafetensorsDType;
  bytes: number;
}

const FILE_DTYPES: Record<string, FileDTypeInfo> = {
  F64: { dtype: 'f64', fileDType: 'F64', bytes: 8 },
  F32: { dtype: 'f32', fileDType: 'F32', bytes: 4 },
  F16: { dtype: 'f16', fileDType: 'F16', bytes: 2 },
  BF16: { dtype: 'bf16', fileDType: 'BF16', bytes: 2 },
  I64: { dtype: 'i32', fileDType: 'I64', bytes: 8 },
  I32: { dtype: 'i32', fileDType: 'I32', bytes: 4 },
  I8: { dtype: 'i8', fileDType: 'I8', bytes: 1 },
  U8: { dtype: 'u8', fileDType: 'U8', bytes: 1 },
  BOOL: { dtype: 'u8', fileDType: 'U8', bytes: 1 },
};

const WRITE_DTYPES: Record<DType, SafetensorsDType> = {
  f64: 'F64',
  f32: 'F32',
  f16: 'F16',
  bf16: 'BF16',
  i32: 'I32',
  i8: 'I8',
  u8: 'U8',
};

interface Entry {
  name: string;
  info: FileDTypeInfo;
  shape: number[];
  begin: number;
  end: number;
}

/** Plain assignment would treat a key named "__proto__" as the prototype, dropping the entry. */
function setOwn<T>(target: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(target, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parses a safetensors file. Tensor bytes are copied out of `bytes` (offsets in the file need
 * not be aligned for the element type), so the result does not keep `bytes` alive. I64 tensors
 * are returned as i32 when every value fits, since attnkit has no 64-bit integer dtype.
 */
export function readSafetensors(bytes: Uint8Array): SafetensorsFile {
  if (!(bytes instanceof Uint8Array)) {
    throw new ValueError(`bytes: expected a Uint8Array, got ${describe(bytes)}`, 'bytes');
  }
  if (bytes.length < 8) {
    throw new FormatError(
      `file: too short for a safetensors file (needs an 8-byte header length), got ${bytes.length} bytes`,
      'file',
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // u64 read as two u32 halves: keeps BigInt out and is exact for every length we accept.
  const lenLo = view.getUint32(0, true);
  const lenHi = view.getUint32(4, true);
  const headerLen = lenHi * 2 ** 32 + lenLo;
  if (headerLen > MAX_HEADER_BYTES) {
    throw new FormatError(
      `file: header length ${headerLen} is absurd (limit ${MAX_HEADER_BYTES} bytes); not a safetensors file or corrupt`,
      'file',
    );
  }
  if (8 + headerLen > bytes.length) {
    throw new FormatError(
      `file: header length ${headerLen} reaches past the end of the file (${bytes.length} bytes); truncated?`,
      'file',
    );
  }
  const header = parseHeader(bytes.subarray(8, 8 + headerLen));
  const dataStart = 8 + headerLen;
  const dataLen = bytes.length - dataStart;

  const metadata = parseMetadata(header[METADATA_KEY]);
  const entries: Entry[] = [];
  for (const [name, raw] of Object.entries(header)) {
    if (name === METADATA_KEY) continue;
    entries.push(parseEntry(name, raw, dataLen));
  }
  checkCoverage(entries, dataLen);

  const tensors: Record<string, Tensor> = {};
  const fileDTypes: Record<string, SafetensorsDType> = {};
  for (const e of entries) {
    const src = bytes.subarray(dataStart + e.begin, dataStart + e.end);
    setOwn(tensors, e.name, decodeEntry(e, src));
    setOwn(fileDTypes, e.name, e.info.fileDType);
  }
  return { tensors, metadata, fileDTypes };
}

function parseHeader(raw: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new FormatError('file: header is not valid UTF-8', 'file');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new FormatError(`file: header is not valid JSON (${(err as Error).message})`, 'file');
  }
  if (!isPlainObject(json)) {
    throw new FormatError(
      `file: header must be a JSON object, got ${json === null ? 'null' : Array.isArray(json) ? 'an array' : typeof json}`,
      'file',
    );
  }
  const duplicate = firstDuplicateKey(text);
  if (duplicate !== undefined) {
    throw new FormatError(
      `file: header names ${JSON.stringify(duplicate)} more than once (JSON.parse would keep only the last)`,
      duplicate,
    );
  }
  return json;
}

/**
 * The first top-level key of the JSON object `text` that occurs twice, comparing decoded keys.
 * `text` has already parsed as a JSON object, so a scan that tracks strings and nesting depth
 * suffices: a key is the string that follows `{` or `,` at depth 1.
 */
function firstDuplicateKey(text: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      expectKey = depth === 1;
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return undefined;
}

function parseMetadata(raw: unknown): Record<string, string> {
  const metadata: Record<string, string> = {};
  if (raw === undefined) return metadata;
  if (!isPlainObject(raw)) {
    throw new FormatError(
      `${METADATA_KEY}: expected an object of strings, got ${describe(raw)}`,
      METADATA_KEY,
    );
  }
  for (const [key, value] of Object.entries(raw)) {
    if (typeof value !== 'string') {
      throw new FormatError(
        `${METADATA_KEY}: value of ${JSON.stringify(key)} must be a string, got ${describe(value)}`,
        METADATA_KEY,
      );
    }
    setOwn(metadata, key, value);
  }
  return metadata;
}

function parseEntry(name: string, raw: unknown, dataLen: number): Entry {
  const where = `tensor ${JSON.stringify(name)}`;
  if (!isPlainObject(raw)) {
    throw new FormatError(`${where}: entry must be an object, got ${describe(raw)}`, name);
  }
  const { dtype, shape, data_offsets: offsets } = raw;
  if (dtype === undefined) throw new FormatError(`${where}: missing dtype`, name);
  if (typeof dtype !== 'string' || !Object.hasOwn(FILE_DTYPES, dtype)) {
    throw new FormatError(
      `${where}: unknown or unsupported dtype ${describe(dtype)} (supported: ${Object.keys(FILE_DTYPES).join(', ')})`,
      name,
    );
  }
  const info = FILE_DTYPES[dtype]!;
  if (shape === undefined) throw new FormatError(`${where}: missing shape`, name);
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new FormatError(
      `${where}: shape must be an array of non-negative integers, got ${describe(shape)}`,
      name,
    );
  }
  if (offsets === undefined) throw new FormatError(`${where}: missing data_offsets`, name);
  if (
    !Array.isArray(offsets) ||
    offsets.length !== 2 ||
    !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
    offsets[0] > offsets[1]
  ) {
    throw new FormatError(
      `${where}: data_offsets must be [begin, end] with integers 0 <= begin <= end, got ${describe(offsets)}`,
      name,
    );
  }
  const [begin, end] = offsets as [number, number];
  if (end > dataLen) {
    throw new FormatError(
      `${where}: data_offsets [${begin}, ${end}] reach past the data region (${dataLen} bytes); truncated?`,
      name,
    );
  }
  const want = numel(shape) * info.bytes;
  if (end - begin !== want) {
    throw new FormatError(
      `${where}: ${dtype} ${formatShape(shape)} needs ${want} bytes, but data_offsets [${begin}, ${end}] span ${end - begin}`,
      name,
    );
  }
  return { name, info, shape: [...shape], begin, end };
}

/**
 * The reference Rust implementation requires the tensors to tile the data region exactly:
 * sorted by offset, each starts where the previous ended, the first at 0 and the last at its end.
 * A hole or trailing bytes mean a writer bug or a spliced file, so they are refused rather
 * than ignored.
 */
function checkCoverage(entries: readonly Entry[], dataLen: number): void {
  // Empty tensors own no bytes, so they cannot collide with anything or fill a hole.
  const ranges = entries.filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  let covered = 0;
  let prev: Entry | undefined;
  for (const cur of ranges) {
    if (prev && cur.begin < prev.end) {
      throw new FormatError(
        `tensor ${JSON.stringify(cur.name)}: data_offsets [${cur.begin}, ${cur.end}] overlap those of ${JSON.stringify(prev.name)} [${prev.begin}, ${prev.end}]`,
        cur.name,
      );
    }
    if (cur.begin > covered) {
      throw new FormatError(
        `tensor ${JSON.stringify(cur.name)}: data_offsets [${cur.begin}, ${cur.end}] leave a hole: bytes [${covered}, ${cur.begin}) of the data region belong to no tensor`,
        cur.name,
      );
    }
    covered = cur.end;
    prev = cur;
  }
  if (covered !== dataLen) {
    throw new FormatError(
      `file: ${dataLen - covered} trailing bytes after the last tensor (tensors cover [0, ${covered}) of a ${dataLen}-byte data region)`,
      'file',
    );
  }
}

function decodeEntry(e: Entry, src: Uint8Array): Tensor {
  const n = numel(e.shape);
  if (e.info.fileDType === 'I64') {
    const out = new Int32Array(n);
    const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
    for (let i = 0; i < n; i++) {
      const lo = dv.getInt32(8 * i, true);
      const hi = dv.getInt32(8 * i + 4, true);
      // The value fits int32 exactly when the high word is the sign extension of the low word.
      if (hi !== lo >> 31) {
        const value = hi * 2 ** 32 + (lo >>> 0);
        throw new ValueError(
          `tensor ${JSON.stringify(e.name)}: I64 element ${i} is ${value}, outside the int32 range attnkit can hold`,
          e.name,
        );
      }
      out[i] = lo;
    }
    return new Tensor(new CpuStorage('i32', out), e.shape);
  }
  // A fresh buffer is aligned for every element type, whatever the offset in the file was.
  const copy = src.slice();
  return new Tensor(
    new CpuStorage(e.info.dtype, viewStorage(e.info.dtype, copy.buffer, 0, n)),
    e.shape,
  );
}

/**
 * Serialises CPU tensors to safetensors bytes: tensors ordered by name, data packed
 * contiguously in that order, header padded with spaces to a multiple of 8 bytes so the data
 * region starts 8-aligned. Tensors named in `options.asI64` (which must be i32) are widened to I64.
 */
export function writeSafetensors(
  tensors: Record<string, Tensor>,
  options: WriteSafetensorsOptions = {},
): Uint8Array {
  if (!isPlainObject(tensors)) {
    throw new ValueError(
      `tensors: expected an object mapping names to tensors, got ${describe(tensors)}`,
      'tensors',
    );
  }
  if (!isPlainObject(options)) {
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  }
  const names = Object.keys(tensors).sort();
  for (const name of names) {
    const t = tensors[name];
    if (name === METADATA_KEY) {
      throw new ValueError(`tensors: the name ${METADATA_KEY} is reserved for metadata`, 'tensors');
    }
    if (!(t instanceof Tensor)) {
      throw new ValueError(
        `tensors.${name}: expected a Tensor, got ${describe(t)}`,
        `tensors.${name}`,
      );
    }
    if (t.device !== 'cpu') {
      throw new DeviceError(
        `tensors.${name}: needs a cpu tensor, got one on ${t.device} (use await tensor.toCpu())`,
        `tensors.${name}`,
      );
    }
  }
  const metadata = checkWriteMetadata(options.metadata);
  const asI64 = checkAsI64(options.asI64, tensors);

  const header: Record<string, unknown> = {};
  if (metadata) header[METADATA_KEY] = metadata;
  let offset = 0;
  const fileDTypes: SafetensorsDType[] = [];
  for (const name of names) {
    const t = tensors[name]!;
    const fileDType = asI64.has(name) ? 'I64' : WRITE_DTYPES[t.dtype];
    const size = t.size * FILE_DTYPES[fileDType]!.bytes;
    setOwn(header, name, {
      dtype: fileDType,
      shape: [...t.shape],
      data_offsets: [offset, offset + size],
    });
    fileDTypes.push(fileDType);
    offset += size;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerLen = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + headerLen + offset);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, headerLen % 2 ** 32, true);
  dv.setUint32(4, Math.floor(headerLen / 2 ** 32), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLen);

  let at = 8 + headerLen;
  names.forEach((name, k) => {
    const data = tensors[name]!.data();
    if (fileDTypes[k] === 'I64') {
      const ints = data as Int32Array;
      for (let i = 0; i < ints.length; i++) {
        dv.setInt32(at + 8 * i, ints[i]!, true);
        dv.setInt32(at + 8 * i + 4, ints[i]! >> 31, true);
      }
      at += 8 * ints.length;
    } else {
      out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
      at += data.byteLength;
    }
  });
  return out;
}

function checkWriteMetadata(metadata: unknown): Record<string, string> | undefined {
  if (metadata === undefined) return undefined;
  if (!isPlainObject(metadata)) {
    throw new ValueError(
      `options.metadata: expected an object of strings, got ${describe(metadata)}`,
      'options.metadata',
    );
  }
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') {
      throw new ValueError(
        `options.metadata: value of ${JSON.stringify(key)} must be a string, got ${describe(value)}`,
        'options.metadata',
      );
    }
  }
  return { ...(metadata as Record<string, string>) };
}

function checkAsI64(asI64: unknown, tensors: Record<string, Tensor>): Set<string> {
  if (asI64 === undefined) return new Set();
  if (!Array.isArray(asI64) || !asI64.every((n) => typeof n === 'string')) {
    throw new ValueError(
      `options.asI64: expected an array of tensor names, got ${describe(asI64)}`,
      'options.asI64',
    );
  }
  for (const name of asI64 as string[]) {
    if (!Object.hasOwn(tensors, name)) {
      throw new ValueError(
        `options.asI64: ${JSON.stringify(name)} is not one of the tensors being written`,
        'options.asI64',
      );
    }
    const dt = tensors[name]!.dtype;
    if (dt !== 'i32') {
      throw new DTypeError(
        `options.asI64: tensor ${JSON.stringify(name)} must be i32 to be stored as I64, got ${dt}`,
        'options.asI64',
      );
    }
  }
  return new Set(asI64 as string[]);
}
