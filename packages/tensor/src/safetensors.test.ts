import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { goldenSets } from '@attnkit/vitest-config';
import { describe, expect, test } from 'vitest';
import { DTypeError, FormatError, ValueError } from './errors.js';
import { bf16ToBits, f16ToBits } from './half.js';
import { Rng } from './rng.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';
import { Tensor } from './tensor.js';

// ---- an independent parser for cross-checks -------------------------------------------------

interface RawEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

function rawParse(bytes: Uint8Array): {
  header: Record<string, RawEntry>;
  metadata: Record<string, string> | undefined;
  dv: DataView;
  dataStart: number;
} {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = Number(dv.getBigUint64(0, true));
  const json = JSON.parse(Buffer.from(bytes.subarray(8, 8 + n)).toString('utf8'));
  const { __metadata__: metadata, ...header } = json;
  return { header, metadata, dv, dataStart: 8 + n };
}

const RAW_READ: Record<string, (dv: DataView, at: number) => number> = {
  F64: (dv, at) => dv.getFloat64(at, true),
  F32: (dv, at) => dv.getFloat32(at, true),
  F16: (dv, at) => dv.getUint16(at, true),
  BF16: (dv, at) => dv.getUint16(at, true),
  I64: (dv, at) => Number(dv.getBigInt64(at, true)),
  I32: (dv, at) => dv.getInt32(at, true),
  I8: (dv, at) => dv.getInt8(at),
  U8: (dv, at) => dv.getUint8(at),
};
const RAW_SIZE: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I8: 1,
  U8: 1,
};

/** Builds a file from a header (object, raw JSON text or raw bytes) and a data region. */
function makeFile(
  header: unknown,
  data: Uint8Array = new Uint8Array(0),
  headerLen?: number,
): Uint8Array {
  const h =
    header instanceof Uint8Array
      ? header
      : new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + data.length);
  const dv = new DataView(out.buffer);
  dv.setBigUint64(0, BigInt(headerLen ?? h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function expectFormatError(fn: () => unknown, argument: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(FormatError);
  expect((caught as FormatError).argument).toBe(argument);
  expect((caught as FormatError).message).toMatch(message);
}

// ---- goldens ---------------------------------------------------------------------------------

type Expected = Record<string, [string, number[]]>;

/** The tensors each golden must hold, derived from its params (not from the tensor header). */
function expectedTensors(file: string, p: Record<string, unknown>): Expected {
  const n = (k: string) => p[k] as number;
  const noGrads = file === 'softmax_decode' || file === 'softmax_long';
  const out: Expected = {};
  const io = (name: string, shape: number[], grad = true) => {
    out[name] = ['F32', shape];
    if (grad && !noGrads) out[`d${name}`] = ['F64', shape];
  };
  switch (p.kind) {
    case 'softmax': {
      const [B, Hq, Hkv, Nq, Nk, D, Dv] = ['B', 'Hq', 'Hkv', 'Nq', 'Nk', 'D', 'Dv'].map(n);
      io('q', [B!, Hq!, Nq!, D!]);
      io('k', [B!, Hkv!, Nk!, D!]);
      io('v', [B!, Hkv!, Nk!, Dv!]);
      out.o = ['F64', [B!, Hq!, Nq!, Dv!]];
      out.lse = ['F64', [B!, Hq!, Nq!]];
      if (!noGrads) out.do = ['F32', [B!, Hq!, Nq!, Dv!]];
      const bs = p.block_sparse as
        | { blockQ: number; blockK: number; mask_tensor: string }
        | undefined;
      if (bs)
        out[bs.mask_tensor] = ['U8', [Math.ceil(Nq! / bs.blockQ), Math.ceil(Nk! / bs.blockK)]];
      break;
    }
    case 'softmax_varlen': {
      const T = (p.cu_seqlens as number[]).at(-1)!;
      for (const x of ['q', 'k', 'v']) io(x, [T, n('H'), n('D')]);
      out.o = ['F64', [T, n('H'), n('D')]];
      out.do = ['F32', [T, n('H'), n('D')]];
      break;
    }
    case 'sigmoid': {
      // GQA files name Hq and Hkv (H = Hq); the others have one head count H.
      const [B, Nq, Nk, D] = ['B', 'Nq', 'Nk', 'D'].map(n);
      const Hq = n('Hq') ?? n('H');
      const Hkv = n('Hkv') ?? n('H');
      io('q', [B!, Hq, Nq!, D!]);
      io('k', [B!, Hkv, Nk!, D!]);
      io('v', [B!, Hkv, Nk!, D!]);
      out.o = ['F64', [B!, Hq, Nq!, D!]];
      out.do = ['F32', [B!, Hq, Nq!, D!]];
      break;
    }
    case 'gla': {
      const [B, T, H, K, V] = ['B', 'T', 'H', 'K', 'V'].map(n);
      for (const x of ['q', 'k', 'gk']) io(x, [B!, T!, H!, K!]);
      io('v', [B!, T!, H!, V!]);
      io('h0', [B!, H!, K!, V!]);
      out.o = ['F64', [B!, T!, H!, V!]];
      out.ht = ['F64', [B!, H!, K!, V!]];
      out.do = ['F32', [B!, T!, H!, V!]];
      out.dht = ['F32', [B!, H!, K!, V!]];
      break;
    }
    case 'hstu': {
      const L = (p.seq_offsets as number[]).at(-1)!;
      io('q', [L, n('H'), n('D')]);
      io('k', [L, n('H'), n('D')]);
      io('v', [L, n('H'), n('V')]);
      out.o = ['F64', [L, n('H'), n('V')]];
      out.do = ['F32', [L, n('H'), n('V')]];
      if (p.rab !== undefined) {
        // Dense relative attention bias [B, H, max_seq_len, max_seq_len] and its gradient.
        const N = n('max_seq_len');
        const B = (p.seq_offsets as number[]).length - 1;
        out.rab = ['F32', [B, n('H'), N, N]];
        out.drab = ['F64', [B, n('H'), N, N]];
      }
      break;
    }
    default:
      throw new Error(`unknown kind ${String(p.kind)}`);
  }
  return out;
}

const DTYPE_OF: Record<string, string> = { F64: 'f64', F32: 'f32', U8: 'u8' };

// Every golden set: the project's goldens/ and, when present, ../shared/goldens.
for (const { name: setName, dir: goldens } of goldenSets()) {
  describe(`${setName} goldens`, () => {
    const files = readdirSync(goldens)
      .filter((f) => f.endsWith('.safetensors'))
      .sort();

    test('the goldens directory holds every file the README lists', () => {
      const readme = readFileSync(join(goldens, 'README.md'), 'utf8');
      const listed = new Set<string>();
      for (const m of readme.matchAll(/^\| ([a-z_, ]+) \|/gm)) {
        for (const name of m[1]!.split(',')) if (name.trim() !== 'file') listed.add(name.trim());
      }
      expect(listed.size).toBe(18);
      expect(files.map((f) => f.replace('.safetensors', ''))).toEqual([...listed].sort());
    });

    test.each(files)('%s reads with the shapes and dtypes its params imply', (file) => {
      const bytes = new Uint8Array(readFileSync(join(goldens, file)));
      const st = readSafetensors(bytes);
      const name = file.replace('.safetensors', '');
      const params = JSON.parse(st.metadata.params!);
      expect(st.metadata.generator).toMatch(/^torch /);

      const want = expectedTensors(name, params);
      expect(Object.keys(st.tensors).sort()).toEqual(Object.keys(want).sort());
      for (const [tname, [fileDType, shape]] of Object.entries(want)) {
        const t = st.tensors[tname]!;
        expect(st.fileDTypes[tname], tname).toBe(fileDType);
        expect(t.dtype, tname).toBe(DTYPE_OF[fileDType]);
        expect([...t.shape], tname).toEqual(shape);
        expect(t.device).toBe('cpu');
      }

      // Spot-check values against a DataView parse of the same bytes.
      const raw = rawParse(bytes);
      expect(raw.metadata).toEqual(st.metadata);
      for (const [tname, e] of Object.entries(raw.header)) {
        const t = st.tensors[tname]!;
        const data = t.data();
        const size = RAW_SIZE[e.dtype]!;
        const count = (e.data_offsets[1] - e.data_offsets[0]) / size;
        expect(data.length).toBe(count);
        for (const i of [0, 1, Math.floor(count / 3), count - 2, count - 1]) {
          const at = raw.dataStart + e.data_offsets[0] + i * size;
          expect(data[i], `${tname}[${i}]`).toBe(RAW_READ[e.dtype]!(raw.dv, at));
        }
        // Inputs are random draws, never all zero; references are finite except masked LSE rows.
        if (e.dtype === 'F32') {
          expect(data.every((x) => Number.isFinite(x))).toBe(true);
          expect(data.some((x) => x !== 0)).toBe(true);
        }
      }
      if (name === 'softmax_blocksparse') {
        const mask = st.tensors.block_mask!.data();
        expect(mask.every((x) => x === 0 || x === 1)).toBe(true);
      }
      if (name === 'softmax_empty_rows') {
        const lse = st.tensors.lse!.toFloat64Array();
        expect(lse.filter((x) => x === Number.NEGATIVE_INFINITY).length).toBe(15 * 2);
      }
    });

    test('tensors do not alias the input bytes', () => {
      const bytes = new Uint8Array(readFileSync(join(goldens, 'softmax_causal.safetensors')));
      const st = readSafetensors(bytes);
      const before = st.tensors.q!.get(0, 0, 0, 0);
      bytes.fill(0xff, 8);
      expect(st.tensors.q!.get(0, 0, 0, 0)).toBe(before);
      expect(st.tensors.q!.data().buffer).not.toBe(bytes.buffer);
    });
  });
}

// ---- round trip ------------------------------------------------------------------------------

describe('round trip', () => {
  const rng = new Rng(20240601);
  const values = (n: number, scale: number) =>
    Array.from({ length: n }, () => rng.normal() * scale);

  function allDTypes(): Record<string, Tensor> {
    return {
      f64: rng.randn([3, 5], 'f64'),
      f32: rng.randn([2, 3, 4]),
      f16: rng.randn([7], 'f16', 100),
      bf16: rng.randn([2, 9], 'bf16', 1e20),
      i32: Tensor.from(
        Int32Array.from([...values(10, 1e6), -(2 ** 31), 2 ** 31 - 1], Math.trunc),
        [3, 4],
      ),
      i8: Tensor.from(Int8Array.from([-128, 127, ...values(4, 50)], Math.trunc), [6]),
      u8: Tensor.from(
        Uint8Array.from([0, 255, ...values(6, 100)], (x) => Math.abs(Math.trunc(x))),
        [2, 4],
      ),
      ids: Tensor.from(
        Int32Array.from([-(2 ** 31), -1, 0, 1, 2 ** 31 - 1, ...values(3, 1e9)], Math.trunc),
      ),
      scalar: Tensor.from([Math.PI], [], 'f64'),
      empty: Tensor.zeros([0, 3], 'f32'),
    };
  }

  test('every dtype, with metadata and asI64, reads back bit-exactly', () => {
    const tensors = allDTypes();
    const metadata = { format: 'pt', note: 'snow ☃ and "quotes"', empty: '' };
    const bytes = writeSafetensors(tensors, { metadata, asI64: ['ids'] });
    const st = readSafetensors(bytes);
    expect(st.metadata).toEqual(metadata);
    expect(Object.keys(st.tensors).sort()).toEqual(Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      const back = st.tensors[name]!;
      expect(back.dtype, name).toBe(t.dtype);
      expect([...back.shape], name).toEqual([...t.shape]);
      expect([...back.data()], name).toEqual([...t.data()]);
    }
    expect(st.fileDTypes).toEqual({
      f64: 'F64',
      f32: 'F32',
      f16: 'F16',
      bf16: 'BF16',
      i32: 'I32',
      i8: 'I8',
      u8: 'U8',
      ids: 'I64',
      scalar: 'F64',
      empty: 'F32',
    });
  });

  test('layout: padded header, names sorted, contiguous data, I64 sign-extended', () => {
    const tensors = allDTypes();
    const bytes = writeSafetensors(tensors, { asI64: ['ids'] });
    const raw = rawParse(bytes);
    const headerLen = raw.dataStart - 8;
    expect(headerLen % 8).toBe(0);
    const text = Buffer.from(bytes.subarray(8, raw.dataStart)).toString('utf8');
    expect(text.trimEnd().length).toBeLessThanOrEqual(headerLen);
    expect(text.slice(text.trimEnd().length)).toMatch(/^ *$/);
    expect(raw.metadata).toBeUndefined();

    const names = Object.keys(raw.header);
    expect(names).toEqual([...names].sort());
    let offset = 0;
    for (const name of names) {
      const e = raw.header[name]!;
      expect(e.data_offsets[0], name).toBe(offset);
      offset = e.data_offsets[1];
    }
    expect(raw.dataStart + offset).toBe(bytes.length);

    const ids = raw.header.ids!;
    expect(ids.dtype).toBe('I64');
    const src = tensors.ids!.data();
    for (let i = 0; i < src.length; i++) {
      const at = raw.dataStart + ids.data_offsets[0] + 8 * i;
      expect(raw.dv.getBigInt64(at, true)).toBe(BigInt(src[i]!));
    }
    const f16 = raw.header.f16!;
    const halves = tensors.f16!.toFloat64Array();
    for (let i = 0; i < halves.length; i++) {
      expect(raw.dv.getUint16(raw.dataStart + f16.data_offsets[0] + 2 * i, true)).toBe(
        f16ToBits(halves[i]!),
      );
    }
    const bf = raw.header.bf16!;
    const bfv = tensors.bf16!.toFloat64Array();
    expect(raw.dv.getUint16(raw.dataStart + bf.data_offsets[0], true)).toBe(bf16ToBits(bfv[0]!));
  });

  test('non-contiguous views are written in row-major order', () => {
    const base = rng.randn([4, 6]);
    const view = base.transpose(0, 1).slice(0, 1, 6, 2);
    const st = readSafetensors(writeSafetensors({ view }));
    expect([...st.tensors.view!.shape]).toEqual([3, 4]);
    expect([...st.tensors.view!.toFloat32Array()]).toEqual([...view.contiguous().toFloat32Array()]);
    expect(st.tensors.view!.get(2, 3)).toBe(base.get(3, 5));
  });

  test('unaligned offsets and a Uint8Array at an odd byteOffset read correctly', () => {
    const vals = [1.5, -2.25, Math.fround(Math.E)];
    const f32 = new Uint8Array(new Float32Array(vals).buffer);
    const f64 = new Uint8Array(new Float64Array([Math.PI]).buffer);
    const header = {
      a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
      b: { dtype: 'F32', shape: [3], data_offsets: [1, 13] },
      c: { dtype: 'F64', shape: [], data_offsets: [13, 21] },
    };
    const data = new Uint8Array(21);
    data[0] = 7;
    data.set(f32, 1);
    data.set(f64, 13);
    const file = makeFile(`${JSON.stringify(header)} `, data); // 1-byte padding: odd data start
    const host = new Uint8Array(file.length + 3);
    host.set(file, 3);
    const st = readSafetensors(host.subarray(3));
    expect(st.tensors.a!.get(0)).toBe(7);
    expect([...st.tensors.b!.toFloat64Array()]).toEqual(vals);
    expect(st.tensors.c!.get()).toBe(Math.PI);
  });

  test('BOOL reads as u8 (reported as U8); I64 reads as i32 when it fits', () => {
    const i64 = new DataView(new ArrayBuffer(16));
    i64.setBigInt64(0, -5n, true);
    i64.setBigInt64(8, 2n ** 31n - 1n, true);
    const header = {
      m: { dtype: 'BOOL', shape: [2], data_offsets: [0, 2] },
      n: { dtype: 'I64', shape: [2], data_offsets: [2, 18] },
    };
    const data = new Uint8Array(18);
    data.set([1, 0]);
    data.set(new Uint8Array(i64.buffer), 2);
    const st = readSafetensors(makeFile(header, data));
    expect(st.tensors.m!.dtype).toBe('u8');
    expect(st.fileDTypes.m).toBe('U8');
    expect([...st.tensors.m!.data()]).toEqual([1, 0]);
    expect(st.tensors.n!.dtype).toBe('i32');
    expect([...st.tensors.n!.data()]).toEqual([-5, 2 ** 31 - 1]);
  });

  test('I64 values outside int32 are a ValueError naming the tensor', () => {
    for (const big of [2n ** 31n, -(2n ** 31n) - 1n, 2n ** 40n]) {
      const dv = new DataView(new ArrayBuffer(16));
      dv.setBigInt64(0, 1n, true);
      dv.setBigInt64(8, big, true);
      const file = makeFile(
        { pos: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } },
        new Uint8Array(dv.buffer),
      );
      expect(() => readSafetensors(file)).toThrow(ValueError);
      expect(() => readSafetensors(file)).toThrow(new RegExp(`"pos".*element 1 is ${big}`));
    }
  });
});

// ---- malformed files ---------------------------------------------------------------------------

describe('malformed files are FormatErrors', () => {
  const entry = (over: Record<string, unknown>) => ({
    x: { dtype: 'F32', shape: [2], data_offsets: [0, 8], ...over },
  });

  test('fewer than 8 bytes', () => {
    expectFormatError(() => readSafetensors(new Uint8Array(5)), 'file', /too short.*got 5 bytes/);
  });

  test('header length past the end', () => {
    const file = makeFile('{}', new Uint8Array(0), 50);
    expectFormatError(
      () => readSafetensors(file),
      'file',
      /header length 50 reaches past the end.*10 bytes/,
    );
  });

  test('absurd header length', () => {
    const file = makeFile('{}', new Uint8Array(0), 2 ** 40);
    expectFormatError(() => readSafetensors(file), 'file', /header length 1099511627776 is absurd/);
  });

  test('header not UTF-8', () => {
    const file = makeFile(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]));
    expectFormatError(() => readSafetensors(file), 'file', /not valid UTF-8/);
  });

  test('header not JSON', () => {
    expectFormatError(() => readSafetensors(makeFile('{"x": ')), 'file', /not valid JSON/);
  });

  test('header JSON but not an object', () => {
    expectFormatError(
      () => readSafetensors(makeFile('[1, 2]')),
      'file',
      /must be a JSON object, got an array/,
    );
    expectFormatError(
      () => readSafetensors(makeFile('null')),
      'file',
      /must be a JSON object, got null/,
    );
  });

  test('entry not an object', () => {
    expectFormatError(
      () => readSafetensors(makeFile({ w: 3 })),
      'w',
      /tensor "w": entry must be an object/,
    );
  });

  test('missing dtype', () => {
    const file = makeFile({ x: { shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8));
    expectFormatError(() => readSafetensors(file), 'x', /tensor "x": missing dtype/);
  });

  test('unknown dtype is named', () => {
    const file = makeFile(entry({ dtype: 'F8_E4M3' }), new Uint8Array(8));
    expectFormatError(() => readSafetensors(file), 'x', /unsupported dtype "F8_E4M3"/);
  });

  test('missing shape', () => {
    const file = makeFile({ x: { dtype: 'F32', data_offsets: [0, 8] } }, new Uint8Array(8));
    expectFormatError(() => readSafetensors(file), 'x', /missing shape/);
  });

  test('invalid shape', () => {
    for (const shape of [[-2], [2.5], '2', [2, null]]) {
      const file = makeFile(entry({ shape }), new Uint8Array(8));
      expectFormatError(
        () => readSafetensors(file),
        'x',
        /shape must be an array of non-negative integers/,
      );
    }
  });

  test('missing data_offsets', () => {
    const file = makeFile({ x: { dtype: 'F32', shape: [2] } }, new Uint8Array(8));
    expectFormatError(() => readSafetensors(file), 'x', /missing data_offsets/);
  });

  test('invalid data_offsets', () => {
    for (const data_offsets of [[8, 0], [0], [0, 8, 9], [0, 7.5], [-1, 8], 'x']) {
      const file = makeFile(entry({ data_offsets }), new Uint8Array(8));
      expectFormatError(() => readSafetensors(file), 'x', /data_offsets must be \[begin, end\]/);
    }
  });

  test('offsets past the data region', () => {
    const file = makeFile(entry({}), new Uint8Array(6));
    expectFormatError(
      () => readSafetensors(file),
      'x',
      /\[0, 8\] reach past the data region \(6 bytes\)/,
    );
  });

  test('overlapping ranges', () => {
    const header = {
      a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
      b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
    };
    expectFormatError(
      () => readSafetensors(makeFile(header, new Uint8Array(12))),
      'b',
      /overlap those of "a"/,
    );
  });

  test('duplicate tensor names in the header', () => {
    const x = '{"dtype":"F32","shape":[2],"data_offsets":[0,8]}';
    const y = '{"dtype":"F32","shape":[2],"data_offsets":[8,16]}';
    const data = new Rng(11).randn([4]).data();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    // Without the check JSON.parse keeps the second "w" and the file reads as one valid tensor.
    expectFormatError(
      () => readSafetensors(makeFile(`{"w": ${y}, "w": ${x}}`, bytes.subarray(0, 8))),
      'w',
      /names "w" more than once/,
    );
    // Keys compare decoded ("\u0077" is "w"); nested keys and string contents do not count.
    expectFormatError(
      () => readSafetensors(makeFile(`{"w": ${x}, "\\u0077": ${y}}`, bytes)),
      'w',
      /names "w" more than once/,
    );
    const nested = `{"__metadata__": {"w": "a \\"w\\": {", "x": "w"}, "w": ${x}, "v": ${y}}`;
    const st = readSafetensors(makeFile(nested, bytes));
    expect(Object.keys(st.tensors).sort()).toEqual(['v', 'w']);
    expect(st.metadata.w).toBe('a "w": {');
  });

  test('a hole in the data region', () => {
    const header = {
      a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
      b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    };
    expectFormatError(
      () => readSafetensors(makeFile(header, new Uint8Array(12))),
      'b',
      /leave a hole: bytes \[4, 8\) of the data region belong to no tensor/,
    );
    const late = { a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } };
    expectFormatError(
      () => readSafetensors(makeFile(late, new Uint8Array(8))),
      'a',
      /hole: bytes \[0, 4\)/,
    );
  });

  test('trailing bytes after the last tensor', () => {
    expectFormatError(
      () => readSafetensors(makeFile(entry({}), new Uint8Array(11))),
      'file',
      /3 trailing bytes after the last tensor \(tensors cover \[0, 8\) of a 11-byte/,
    );
    expectFormatError(
      () => readSafetensors(makeFile('{}', new Uint8Array(2))),
      'file',
      /2 trailing bytes/,
    );
    // Empty tensors own no bytes, wherever their offsets point.
    const withEmpty = {
      ...entry({}),
      e: { dtype: 'F32', shape: [0, 3], data_offsets: [4, 4] },
    };
    expect(readSafetensors(makeFile(withEmpty, new Uint8Array(8))).tensors.e!.shape).toEqual([
      0, 3,
    ]);
  });

  test('byte size differs from numel * element size', () => {
    const file = makeFile(entry({ shape: [3] }), new Uint8Array(8));
    expectFormatError(() => readSafetensors(file), 'x', /F32 \[3\] needs 12 bytes.*span 8/);
  });

  test('__metadata__ values not strings', () => {
    const file = makeFile({ __metadata__: { epoch: 3 } });
    expectFormatError(
      () => readSafetensors(file),
      '__metadata__',
      /value of "epoch" must be a string, got 3/,
    );
    const notObject = makeFile({ __metadata__: ['a'] });
    expectFormatError(
      () => readSafetensors(notObject),
      '__metadata__',
      /expected an object of strings/,
    );
  });

  test('non-Uint8Array input is a ValueError', () => {
    expect(() => readSafetensors([1, 2, 3] as unknown as Uint8Array)).toThrow(ValueError);
  });
});

describe('writeSafetensors validates its arguments', () => {
  const t = Tensor.from([1, 2]);
  const argOf = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return [(err as Error).constructor, (err as ValueError).argument];
    }
    return undefined;
  };

  test('tensors must be an object of Tensors', () => {
    expect(argOf(() => writeSafetensors(null as never))).toEqual([ValueError, 'tensors']);
    expect(argOf(() => writeSafetensors({ a: [1, 2] as never }))).toEqual([
      ValueError,
      'tensors.a',
    ]);
    expect(argOf(() => writeSafetensors({ __metadata__: t }))).toEqual([ValueError, 'tensors']);
  });

  test('metadata must map strings to strings', () => {
    expect(argOf(() => writeSafetensors({ t }, { metadata: { n: 1 as never } }))).toEqual([
      ValueError,
      'options.metadata',
    ]);
  });

  test('asI64 must name i32 tensors being written', () => {
    expect(argOf(() => writeSafetensors({ t }, { asI64: ['missing'] }))).toEqual([
      ValueError,
      'options.asI64',
    ]);
    expect(argOf(() => writeSafetensors({ t }, { asI64: ['t'] }))).toEqual([
      DTypeError,
      'options.asI64',
    ]);
    expect(argOf(() => writeSafetensors({ t }, { asI64: 't' as never }))).toEqual([
      ValueError,
      'options.asI64',
    ]);
  });

  test('a tensor named __proto__ survives the round trip as an ordinary entry', () => {
    const named: Record<string, Tensor> = {};
    Object.defineProperty(named, '__proto__', { value: Tensor.from([5, 6]), enumerable: true });
    const st = readSafetensors(
      writeSafetensors(named, { metadata: JSON.parse('{"__proto__": "m"}') }),
    );
    expect(Object.keys(st.tensors)).toEqual(['__proto__']);
    expect([
      ...Object.getOwnPropertyDescriptor(st.tensors, '__proto__')!.value.toFloat32Array(),
    ]).toEqual([5, 6]);
    expect(Object.getPrototypeOf(st.tensors)).toBe(Object.prototype);
    expect(Object.keys(st.metadata)).toEqual(['__proto__']);
  });

  test('an empty tensor set writes a valid file', () => {
    const st = readSafetensors(writeSafetensors({}, { metadata: { a: 'b' } }));
    expect(st.tensors).toEqual({});
    expect(st.metadata).toEqual({ a: 'b' });
  });
});
