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

  test('an unknown ATTNKIT_ISA: undefined and one warning naming it', async () => {
    vi.stubEnv('ATTNKIT_ISA', 'neon');
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    const fresh = await import('./index.js');
    expect(fresh.loadNative()).toBeUndefined();
    expect(fresh.loadNative()).toBeUndefined();
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0]![0])).toMatch(/ATTNKIT_ISA=neon/);
    expect(fresh.nativeLoadError()).toMatch(/ATTNKIT_ISA=neon/);
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

describe.runIf(base)('bad arguments throw TypeError / RangeError naming the argument', () => {
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
    base!.flashForwardSync(problem as typeof p, a.q, a.k, a.v, a.o, a.lse);

  test('arrays: type and length', () => {
    const a = args();
    expect(() => fwd(p, { ...a, q: new Float64Array(a.q) as never })).toThrow(TypeError);
    expect(() => fwd(p, { ...a, q: new Float64Array(a.q) as never })).toThrow(
      /^q: expected a Float32Array, got Float64Array/,
    );
    expect(() => fwd(p, { ...a, o: new Float32Array(7) })).toThrow(RangeError);
    expect(() => fwd(p, { ...a, o: new Float32Array(7) })).toThrow(/^o: expected 160 elements/);
    expect(() => fwd(p, { ...a, lse: new Float32Array(21) })).toThrow(/^lse: /);
  });

  test('problem fields', () => {
    expect(() => fwd(null)).toThrow(/^problem: expected an object/);
    expect(() => fwd({ ...p, layout: 'NHD' })).toThrow(/^problem\.layout/);
    expect(() => fwd({ ...p, hkv: 3 })).toThrow(/^problem\.hkv: expected a divisor of hq = 2/);
    expect(() => fwd({ ...p, d: 2.5 })).toThrow(RangeError);
    expect(() => fwd({ ...p, scale: Number.NaN })).toThrow(/^problem\.scale/);
    expect(() => fwd({ ...p, left: -2 })).toThrow(/^problem\.left/);
    expect(() => fwd({ ...p, seqQ: [10] })).toThrow(TypeError);
    expect(() => fwd({ ...p, seqQ: Int32Array.of(11) })).toThrow(/^problem\.seqQ\[0\]/);
    expect(() => fwd({ ...p, blockK: 0 })).toThrow(/^problem\.blockK/);
    const mask = Tensor.from(Uint8Array.of(1, 1, 1, 1), [2, 2]);
    const sparse = resolveAttentionProblem(q, k, v, {
      blockSparse: { blockQ: 5, blockK: 6, mask },
    });
    expect(() =>
      fwd({ ...sparse, blockSparse: { ...sparse.blockSparse!, mask: new Uint8Array(3) } }),
    ).toThrow(/^problem\.blockSparse\.mask: expected at least 4 elements/);
    expect(() => fwd({ ...sparse, blockSparse: { ...sparse.blockSparse!, nbq: 1 } })).toThrow(
      /^problem\.blockSparse\.nbq/,
    );
  });

  test('async calls reject with the same errors', async () => {
    const a = args();
    await expect(base!.flashForward(p, a.q, a.k, a.v, new Float32Array(1), a.lse)).rejects.toThrow(
      /^o: /,
    );
    await expect(
      base!.flashBackward(p, a.q, a.k, a.v, a.o, a.lse, a.o, a.q, a.k, new Float32Array(1)),
    ).rejects.toThrow(/^dv: /);
  });

  test('gemm arguments', () => {
    const e = base!;
    const m = {
      m: 2,
      n: 3,
      k: 4,
      a: new Float32Array(8),
      b: new Float32Array(12),
      c: new Float32Array(6),
    };
    expect(() => e.gemmSync({ ...m, lda: 3 })).toThrow(/^args\.lda: expected an integer in \[4,/);
    expect(() => e.gemmSync({ ...m, c: new Float32Array(5) })).toThrow(
      /^args\.c: expected at least 6/,
    );
    expect(() => e.gemmSync({ ...m, m: -1 })).toThrow(/^args\.m/);
    expect(() => e.gemmSync({ ...m, alpha: Number.POSITIVE_INFINITY })).toThrow(/^args\.alpha/);
    expect(() => e.gemmSync({ ...m, b: [1, 2] as never })).toThrow(TypeError);
    expect(() => e.gemmSync(null as never)).toThrow(/^args: /);
  });
});
