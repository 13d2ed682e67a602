import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveAttentionProblem } from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { engineOrSkip } from '@attnkit/testing';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { loadNative, NATIVE_ISAS, nativeAddonPath } from './index.js';

const base = engineOrSkip();

afterEach(() => {
  vi.unstubAllEnvs();
  vi.restoreAllMocks();
  vi.resetModules();
});

describe.runIf(base)('loading', () => {
  test('engine facts: an ISA of this CPU, a pool of >= 1 threads', () => {
    const e = base!;
    expect(NATIVE_ISAS).toContain(e.isa);
    expect(e.availableIsas[0]).toBe(e.isa);
    expect(e.availableIsas).toContain('scalar');
    expect(e.threads).toBeGreaterThanOrEqual(1);
    if (process.arch === 'x64') expect(e.availableIsas.length).toBeGreaterThan(1);
  });

  test('ATTNKIT_ISA forces the kernels; an explicit isa must be one this CPU has', () => {
    vi.stubEnv('ATTNKIT_ISA', 'scalar');
    expect(loadNative()!.isa).toBe('scalar');
    expect(() => loadNative({ isa: 'sse' as never })).toThrow(RangeError);
    expect(() => loadNative({ isa: 'sse' as never })).toThrow(/options\.isa/);
  });

  test('ATTNKIT_NUM_THREADS sizes the pool', () => {
    const script = `console.log(require(${JSON.stringify(nativeAddonPath())}).info().threads)`;
    const out = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, ATTNKIT_NUM_THREADS: '3' },
      encoding: 'utf8',
    });
    expect(out.stdout.trim()).toBe('3');
  });

  test('ATTNKIT_ISA naming an ISA the CPU lacks: undefined and the ISAs it has', async () => {
    const lacking = NATIVE_ISAS.find((isa) => !base!.availableIsas.includes(isa));
    if (lacking === undefined) return; // this CPU runs every ISA
    vi.stubEnv('ATTNKIT_ISA', lacking);
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    const fresh = await import('./index.js');
    expect(fresh.loadNative()).toBeUndefined();
    expect(fresh.nativeLoadError()).toBe(
      `ATTNKIT_ISA: expected one of the ISAs this CPU supports (${base!.availableIsas.join(', ')}), got "${lacking}"`,
    );
  });
});

describe('an unknown ATTNKIT_ISA is an error at load, not a silent fallback (issue 9)', () => {
  const reason = 'ATTNKIT_ISA: expected one of avx512vnni, avx512, avx2, scalar, got "avx9"';

  test('ATTNKIT_ISA=avx9: undefined, one warning and nativeLoadError() with the reason', async () => {
    vi.stubEnv('ATTNKIT_ISA', 'avx9');
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const fresh = await import('./index.js');
    expect(fresh.nativeLoadError()).toBe(reason);
    expect(fresh.loadNative()).toBeUndefined();
    expect(fresh.loadNative()).toBeUndefined();
    // An explicit isa does not paper over a bad environment.
    expect(fresh.loadNative({ isa: 'scalar' })).toBeUndefined();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toContain(reason);
    expect(fresh.nativeLoadError()).toBe(reason);
  });

  test('checked before the addon: the reason is the same when the addon is missing', async () => {
    vi.stubEnv('ATTNKIT_ISA', 'avx9');
    vi.stubEnv('ATTNKIT_NATIVE_ADDON', `${nativeAddonPath()}.missing`);
    vi.spyOn(console, 'warn').mockImplementation(() => {});
    const fresh = await import('./index.js');
    expect(fresh.loadNative()).toBeUndefined();
    expect(fresh.nativeLoadError()).toBe(reason);
  });

  test('case and whitespace are not forgiven; empty means unset', async () => {
    for (const value of ['AVX2', ' scalar', 'neon']) {
      vi.resetModules();
      vi.stubEnv('ATTNKIT_ISA', value);
      vi.spyOn(console, 'warn').mockImplementation(() => {});
      const fresh = await import('./index.js');
      expect(fresh.nativeLoadError()).toBe(
        `ATTNKIT_ISA: expected one of avx512vnni, avx512, avx2, scalar, got ${JSON.stringify(value)}`,
      );
    }
    if (!base) return;
    vi.resetModules();
    vi.stubEnv('ATTNKIT_ISA', '');
    const fresh = await import('./index.js');
    expect(fresh.nativeLoadError()).toBeUndefined();
    expect(fresh.loadNative()!.isa).toBe(base.isa);
  });
});

describe('missing or broken addon', () => {
  test('not built: undefined, one warning, and the reason', async () => {
    vi.stubEnv('ATTNKIT_NATIVE_ADDON', `${nativeAddonPath()}.missing`);
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const fresh = await import('./index.js');
    expect(fresh.loadNative()).toBeUndefined();
    expect(fresh.loadNative()).toBeUndefined();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(fresh.nativeLoadError()).toMatch(/not built/);
    // How to build it, both inside this repository and as an installed dependency.
    expect(fresh.nativeLoadError()).toContain('pnpm --filter @attnkit/native build:addon');
    expect(fresh.nativeLoadError()).toContain('npm rebuild @attnkit/native');
  });

  test('not an addon: "failed to load"', async () => {
    const bogus = join(mkdtempSync(join(tmpdir(), 'attnkit-')), 'bogus.node');
    writeFileSync(bogus, 'not a shared object');
    for (const path of [bogus, new URL('../package.json', import.meta.url).pathname]) {
      vi.resetModules();
      vi.stubEnv('ATTNKIT_NATIVE_ADDON', path);
      vi.spyOn(console, 'warn').mockImplementation(() => {});
      const fresh = await import('./index.js');
      expect(fresh.loadNative()).toBeUndefined();
      expect(fresh.nativeLoadError()).toMatch(/failed to load/);
    }
  });
});

// @attnkit/nn's native backend (src/engine/nn_ops.h); tested against its ts kernels in nn.
const NN_OPS = [
  'nn.adamw',
  'nn.crossEntropy',
  'nn.crossEntropyBackward',
  'nn.decodeHalf',
  'nn.gather',
  'nn.map',
  'nn.matmul',
  'nn.norm',
  'nn.normBackward',
  'nn.rope',
  'nn.scatterAdd',
  'nn.sgd',
  'nn.softmax',
  'nn.sumSquares',
  'nn.unary',
];

describe.runIf(base)('the op registry', () => {
  test('ops(): every op with its ISAs (best first), the chosen one, and its array names', () => {
    const e = base!;
    const ops = e.ops();
    expect(Object.keys(ops).sort()).toEqual([
      'attention.backward',
      'attention.forward',
      'gemm',
      'gla.backward',
      'gla.forward',
      ...NN_OPS,
      'sage.forward',
      'sage.quantize',
    ]);
    // avx512vnni has kernels of the int8 ops only; sage.forward has none on plain avx512 (its
    // AVX-512 kernel is VNNI's), so a CPU without VNNI runs it on avx2.
    const all = e.availableIsas;
    const isasOf: Record<string, readonly string[]> = {
      'attention.forward': all.filter((x) => x !== 'avx512vnni'),
      'attention.backward': all.filter((x) => x !== 'avx512vnni'),
      gemm: all.filter((x) => x !== 'avx512vnni'),
      'gla.forward': all.filter((x) => x !== 'avx512vnni'),
      'gla.backward': all.filter((x) => x !== 'avx512vnni'),
      'sage.quantize': all,
      'sage.forward': all.filter((x) => x !== 'avx512'),
      ...Object.fromEntries(NN_OPS.map((op) => [op, all.filter((x) => x !== 'avx512vnni')])),
    };
    for (const [op, info] of Object.entries(ops)) {
      expect(info.isas, op).toEqual(isasOf[op]);
      expect(info.chosen, op).toBe(isasOf[op]![0]);
    }
    expect(ops['sage.quantize'].inputs).toEqual(['q', 'k', 'v', 'qBits']);
    expect(ops['sage.quantize'].outputs).toEqual([
      'qCodes',
      'qScale',
      'kCodes',
      'kScale',
      'vCodes',
      'vScale',
      'bias',
    ]);
    expect(ops['sage.forward'].inputs).toEqual([
      'qCodes',
      'qScale',
      'kCodes',
      'kScale',
      'vCodes',
      'vScale',
      'v',
      'bias',
    ]);
    expect(ops['sage.forward'].outputs).toEqual(['o', 'lse']);
    expect(ops['gla.forward'].inputs).toEqual(['q', 'k', 'v', 'gk', 'h0', 'cuSeqlens']);
    expect(ops['gla.forward'].outputs).toEqual(['o', 'ht']);
    expect(ops['gla.backward'].inputs).toEqual([
      'q',
      'k',
      'v',
      'gk',
      'h0',
      'dO',
      'dht',
      'cuSeqlens',
    ]);
    expect(ops['gla.backward'].outputs).toEqual(['dq', 'dk', 'dv', 'dgk', 'dh0']);
    expect(ops['attention.forward'].inputs).toEqual(['q', 'k', 'v', 'permQ', 'permK']);
    expect(ops['attention.forward'].outputs).toEqual(['o', 'lse']);
    expect(ops['attention.backward'].inputs).toEqual([
      'q',
      'k',
      'v',
      'o',
      'lse',
      'dO',
      'permQ',
      'permK',
    ]);
    expect(ops['attention.backward'].outputs).toEqual([
      'dq',
      'dk',
      'dv',
      'dsinks',
      'dPositionTable',
      'dTimestampTable',
    ]);
    expect(ops.gemm.inputs).toEqual(['a', 'b']);
    // A forced ISA caps the choice per op.
    const scalar = loadNative({ isa: 'scalar' })!;
    expect(scalar.ops()['attention.forward'].chosen).toBe('scalar');
  });

  test('one *Sync twin: runSync (for synchronous callers); every other call is a promise', () => {
    const e = base! as unknown as Record<string, unknown>;
    expect(Object.keys(e).filter((name) => name.endsWith('Sync'))).toEqual(['runSync']);
  });

  test('the addon loads lazily: importing the module loads nothing', async () => {
    vi.resetModules();
    // A path that would fail loudly if it were loaded at import time.
    vi.stubEnv('ATTNKIT_NATIVE_ADDON', `${nativeAddonPath()}.not-loaded-at-import`);
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    await import('./index.js');
    expect(warn).not.toHaveBeenCalled();
  });
});

describe.runIf(base)(
  'bad arguments: run() rejects with TypeError / RangeError naming the argument',
  () => {
    const rng = new Rng(1);
    const q = rng.randn([1, 2, 10, 16]);
    const k = rng.randn([1, 1, 12, 16]);
    const v = rng.randn([1, 1, 12, 8]);
    const p = resolveAttentionProblem(q, k, v, { causal: true });
    const args = () => ({
      q: q.toFloat32Array(),
      k: k.toFloat32Array(),
      v: v.toFloat32Array(),
      o: new Float32Array(2 * 10 * 8),
      lse: new Float32Array(2 * 10),
    });
    const fwd = (problem: unknown, a = args()) =>
      base!.run(
        'attention.forward',
        problem as typeof p,
        { q: a.q, k: a.k, v: a.v },
        { o: a.o, lse: a.lse },
      );

    test('runSync: the kernel runs before it returns; the same checks, thrown', () => {
      const e = base!;
      const a = Float32Array.of(1, 2, 3, 4);
      const b = Float32Array.of(5, 6, 7, 8);
      const c = new Float32Array(4).fill(Number.NaN);
      e.runSync('gemm', { m: 2, n: 2, k: 2 }, { a, b }, { c });
      expect([...c]).toEqual([19, 22, 43, 50]);
      expect(() =>
        e.runSync('gemm', { m: 2, n: 2, k: 2 }, { a, b }, { c: new Float32Array(3) }),
      ).toThrow(/^outputs\.c: expected at least 4 elements/);
      expect(() => e.runSync('nn.fwd' as 'gemm', {} as never, {}, {})).toThrow(RangeError);
      const ids = Int32Array.of(0, 3);
      expect(() =>
        e.runSync(
          'nn.gather',
          { rows: 3, dim: 1, count: 2 },
          { weight: a.subarray(0, 3), ids },
          { y: c.subarray(0, 2) },
        ),
      ).toThrow(/^inputs\.ids\[1\]: expected an integer in \[0, 2\], got 3/);
      // Lengths from huge fields saturate instead of wrapping around to a real array's length.
      const big = 2 ** 40;
      expect(() =>
        e.runSync(
          'nn.softmax',
          { rows: big, cols: big, log: 0, backward: 0 },
          { x: a },
          { out: c },
        ),
      ).toThrow(/^inputs\.x: expected 9223372036854775807 elements/);
    });

    test('op: unknown names and non-strings', async () => {
      const e = base!;
      const a = args();
      const run = (op: unknown) => e.run(op as 'gemm', {} as never, {} as never, {} as never);
      await expect(run('attention.fwd')).rejects.toThrow(RangeError);
      await expect(run('attention.fwd')).rejects.toThrow(
        /^op: expected one of "attention\.forward", "attention\.backward", "gemm", "sage\.quantize", "sage\.forward", "gla\.forward", "gla\.backward", "nn\.map", .*"nn\.sumSquares", "nn\.decodeHalf", got "attention\.fwd"/,
      );
      await expect(run(42)).rejects.toThrow(TypeError);
      await expect(run(42)).rejects.toThrow(/^op: expected a string/);
      await expect(
        e.run('attention.forward', p, { q: a.q, k: a.k, v: a.v }, { o: a.o, lse: a.lse }),
      ).resolves.toBeUndefined();
    });

    test('inputs / outputs: types, lengths, unknown and missing names', async () => {
      const a = args();
      const e = base!;
      const f = (inputs: object, outputs: object) =>
        e.run('attention.forward', p, inputs as never, outputs as never);
      const ok = { q: a.q, k: a.k, v: a.v };
      const out = { o: a.o, lse: a.lse };
      await expect(f({ ...ok, q: new Float64Array(a.q) }, out)).rejects.toThrow(TypeError);
      await expect(f({ ...ok, q: new Float64Array(a.q) }, out)).rejects.toThrow(
        /^inputs\.q: expected a Float32Array, got Float64Array/,
      );
      await expect(f(ok, { ...out, o: new Float32Array(7) })).rejects.toThrow(RangeError);
      await expect(f(ok, { ...out, o: new Float32Array(7) })).rejects.toThrow(
        /^outputs\.o: expected 160 elements \(query rows x dv\), got 7 elements/,
      );
      await expect(f(ok, { ...out, lse: new Float32Array(21) })).rejects.toThrow(/^outputs\.lse: /);
      await expect(f({ ...ok, k: undefined }, out)).rejects.toThrow(
        /^inputs\.k: expected a Float32Array, got undefined/,
      );
      await expect(f({ ...ok, qq: a.q }, out)).rejects.toThrow(
        /^inputs\.qq: expected one of q, k, v, permQ, permK \(the inputs of attention\.forward\)/,
      );
      await expect(f(ok, null as never)).rejects.toThrow(/^outputs: expected an object/);
      await expect(f([a.q, a.k, a.v], out)).rejects.toThrow(TypeError);
      // An output may not share memory with another array of the call.
      await expect(f(ok, { o: a.o, lse: a.o.subarray(0, 20) })).rejects.toThrow(
        /^outputs\.lse: expected an array sharing no memory with outputs\.o/,
      );
      await expect(f(ok, { o: new Float32Array(a.q.buffer, 0, 160), lse: a.lse })).rejects.toThrow(
        /^outputs\.o: expected an array sharing no memory with inputs\.q/,
      );
    });

    test('hooks decide which arrays exist: sigmoid and silu have no lse, sinks add dsinks', async () => {
      const a = args();
      const e = base!;
      const sigmoid = { ...p, normalize: { kind: 'sigmoid' as const, bias: Float32Array.of(0) } };
      await expect(
        e.run('attention.forward', sigmoid, { q: a.q, k: a.k, v: a.v }, { o: a.o, lse: a.lse }),
      ).rejects.toThrow(/^outputs\.lse: expected undefined \(sigmoid attention has no LSE\)/);
      await expect(
        e.run('attention.forward', sigmoid, { q: a.q, k: a.k, v: a.v }, { o: a.o }),
      ).resolves.toBeUndefined();
      const grads = () => ({
        dq: new Float32Array(a.q.length),
        dk: new Float32Array(a.k.length),
        dv: new Float32Array(a.v.length),
      });
      const dO = new Float32Array(a.o.length);
      await expect(e.run('attention.backward', sigmoid, { ...a, dO }, grads())).rejects.toThrow(
        /^inputs\.o: expected undefined \(sigmoid's backward reads no forward output/,
      );
      const silu = { ...p, normalize: { kind: 'silu' as const, factor: 0.5 } };
      await expect(
        e.run('attention.forward', silu, { q: a.q, k: a.k, v: a.v }, { o: a.o, lse: a.lse }),
      ).rejects.toThrow(/^outputs\.lse: expected undefined \(silu attention has no LSE\)/);
      await expect(e.run('attention.backward', silu, { ...a, dO }, grads())).rejects.toThrow(
        /^inputs\.o: expected undefined \(silu's backward reads no forward output/,
      );
      const sinks = { ...p, normalize: { kind: 'softmax' as const, sinks: Float32Array.of(0, 1) } };
      await expect(e.run('attention.backward', sinks, { ...a, dO }, grads())).rejects.toThrow(
        /^outputs\.dsinks: expected a Float32Array, got undefined/,
      );
      await expect(
        e.run('attention.backward', p, { ...a, dO }, { ...grads(), dsinks: new Float32Array(2) }),
      ).rejects.toThrow(/^outputs\.dsinks: expected undefined \(the problem has no sinks\)/);
      await expect(
        e.run(
          'attention.backward',
          sinks,
          { ...a, dO },
          { ...grads(), dsinks: new Float32Array(3) },
        ),
      ).rejects.toThrow(/^outputs\.dsinks: expected 2 elements \(one per query head\)/);
    });

    test('problem fields', async () => {
      await expect(fwd(null)).rejects.toThrow(/^problem: expected an object/);
      await expect(fwd({ ...p, layout: 'NHD' })).rejects.toThrow(/^problem\.layout/);
      await expect(fwd({ ...p, hkv: 3 })).rejects.toThrow(
        /^problem\.hkv: expected a divisor of hq = 2/,
      );
      await expect(fwd({ ...p, d: 2.5 })).rejects.toThrow(RangeError);
      await expect(fwd({ ...p, scale: Number.NaN })).rejects.toThrow(/^problem\.scale/);
      await expect(fwd({ ...p, left: -2 })).rejects.toThrow(/^problem\.left/);
      await expect(fwd({ ...p, seqQ: [10] })).rejects.toThrow(TypeError);
      await expect(fwd({ ...p, seqQ: Int32Array.of(11) })).rejects.toThrow(/^problem\.seqQ\[0\]/);
      await expect(fwd({ ...p, blockK: 0 })).rejects.toThrow(/^problem\.blockK/);
      const mask = Tensor.from(Uint8Array.of(1, 1, 1, 1), [2, 2]);
      const sparse = resolveAttentionProblem(q, k, v, {
        blockSparse: { blockQ: 5, blockK: 6, mask },
      });
      await expect(
        fwd({ ...sparse, blockSparse: { ...sparse.blockSparse!, mask: new Uint8Array(3) } }),
      ).rejects.toThrow(/^problem\.blockSparse\.mask: expected at least 4 elements/);
      await expect(
        fwd({ ...sparse, blockSparse: { ...sparse.blockSparse!, nbq: 1 } }),
      ).rejects.toThrow(/^problem\.blockSparse\.nbq/);
    });

    test('problem.hstuMask: seqQ <= seqK, numTargets per batch entry, counts', async () => {
      const hm = {
        numTargets: Int32Array.of(3),
        contextual: 1,
        maxAttnLen: 2,
        minFull: 0,
        causal: true,
      };
      const sq = { ...p, seqK: Int32Array.of(10) };
      // Queries are the sequence's last tokens: more queries than keys is refused.
      await expect(
        fwd({ ...p, seqK: Int32Array.of(p.seqQ[0]! - 1), hstuMask: hm }),
      ).rejects.toThrow(
        /^problem\.seqQ\[0\]: expected at most seqK = \d+ \(HSTU's queries are the sequence's last tokens\)/,
      );
      await expect(fwd({ ...sq, hstuMask: { ...hm, numTargets: [3] } })).rejects.toThrow(TypeError);
      await expect(
        fwd({ ...sq, hstuMask: { ...hm, numTargets: Int32Array.of(1, 2) } }),
      ).rejects.toThrow(/^problem\.hstuMask\.numTargets/);
      await expect(
        fwd({ ...sq, hstuMask: { ...hm, numTargets: Int32Array.of(11) } }),
      ).rejects.toThrow(
        /^problem\.hstuMask\.numTargets\[0\]: expected an integer in \[0, seqK = 10\], got 11/,
      );
      await expect(fwd({ ...sq, hstuMask: { ...hm, contextual: -1 } })).rejects.toThrow(
        /^problem\.hstuMask\.contextual/,
      );
      await expect(fwd({ ...sq, hstuMask: { ...hm, causal: 1 } })).rejects.toThrow(TypeError);
      await expect(fwd({ ...sq, hstuMask: hm })).resolves.toBeUndefined(); // valid: runs
    });

    test('problem hooks: normalize and score mods', async () => {
      const norm = (normalize: unknown) => fwd({ ...p, normalize });
      await expect(norm({ kind: 'relu' })).rejects.toThrow(
        /^problem\.normalize\.kind: expected "softmax", "sigmoid" or "silu", got "relu"/,
      );
      await expect(norm('softmax')).rejects.toThrow(TypeError);
      await expect(norm({ kind: 'softmax', sinks: Float32Array.of(1) })).rejects.toThrow(
        /^problem\.normalize\.sinks: expected 2 elements \(one per query head\)/,
      );
      await expect(
        norm({ kind: 'softmax', sinks: Float32Array.of(1, Number.NaN) }),
      ).rejects.toThrow(/^problem\.normalize\.sinks\[1\]: expected a finite number/);
      await expect(norm({ kind: 'sigmoid' })).rejects.toThrow(
        /^problem\.normalize\.bias: expected a Float32Array, got undefined/,
      );
      // silu (HSTU): one finite factor.
      await expect(norm({ kind: 'silu' })).rejects.toThrow(
        /^problem\.normalize\.factor: expected a finite number, got undefined/,
      );
      await expect(norm({ kind: 'silu', factor: Number.POSITIVE_INFINITY })).rejects.toThrow(
        /^problem\.normalize\.factor: expected a finite number/,
      );
      const mods = (scoreMods: unknown) => fwd({ ...p, scoreMods });
      await expect(mods({ kind: 'softcap', cap: 1 })).rejects.toThrow(
        /^problem\.scoreMods: expected an Array/,
      );
      await expect(mods([{ kind: 'softcap', cap: 0 }])).rejects.toThrow(
        /^problem\.scoreMods\[0\]\.cap: expected a finite number > 0/,
      );
      await expect(
        mods([
          { kind: 'softcap', cap: 5 },
          { kind: 'alibi', slopes: [1, 2] },
        ]),
      ).rejects.toThrow(/^problem\.scoreMods\[1\]\.slopes: expected a Float32Array, got an Array/);
      await expect(mods([{ kind: 'custom', name: 'f' }])).rejects.toThrow(
        /^problem\.scoreMods\[0\]\.kind: expected "softcap", "alibi" or "bias" \(the native engine runs the built-in score mods only/,
      );
      const bias = { kind: 'bias', bias: new Float32Array(10 * 12), batchStride: 0, headStride: 0 };
      await expect(mods([{ ...bias, rowStride: 12 }])).resolves.toBeUndefined();
      await expect(mods([{ ...bias, rowStride: 13 }])).rejects.toThrow(
        /^problem\.scoreMods\[0\]\.bias: expected at least 129 elements/,
      );
      await expect(
        mods(Array.from({ length: 9 }, () => ({ kind: 'softcap', cap: 1 }))),
      ).rejects.toThrow(/^problem\.scoreMods: expected at most 8 mods/);
      // A mask mod is a TS / WGSL function: the engine cannot evaluate it.
      await expect(fwd({ ...p, maskMod: { name: 'm', ts: () => true } })).rejects.toThrow(
        /^problem\.maskMod: expected undefined \(the native engine runs no user mask mods/,
      );
    });

    test('gemm problem and matrices', async () => {
      const e = base!;
      const m = {
        m: 2,
        n: 3,
        k: 4,
        a: new Float32Array(8),
        b: new Float32Array(12),
        c: new Float32Array(6),
      };
      await expect(e.gemm({ ...m, lda: 3 })).rejects.toThrow(
        /^problem\.lda: expected an integer in \[4,/,
      );
      await expect(e.gemm({ ...m, c: new Float32Array(5) })).rejects.toThrow(
        /^outputs\.c: expected at least 6 elements/,
      );
      await expect(e.gemm({ ...m, m: -1 })).rejects.toThrow(/^problem\.m/);
      await expect(e.gemm({ ...m, alpha: Number.POSITIVE_INFINITY })).rejects.toThrow(
        /^problem\.alpha/,
      );
      await expect(e.gemm({ ...m, b: [1, 2] as never })).rejects.toThrow(TypeError);
      await expect(e.gemm(null as never)).rejects.toThrow(/^args: /);
    });
  },
);
