import { ValueError } from '@attnkit/tensor';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  GpuDeviceLostError,
  GpuValidationError,
  PipelineFallbackError,
  PipelineTimeoutError,
} from './errors.js';
import {
  compileFirstInTime,
  createComputePipelineInTime,
  DEFAULT_PIPELINE_TIMEOUT_MS,
  describeConfig,
  PipelineCache,
  withTimeLimit,
} from './pipelines.js';

/**
 * Pipelines under a time limit (issue 20 item 4) without a GPU: a fake device whose
 * createComputePipelineAsync never resolves for the sources the test marks slow, as NVIDIA's
 * Vulkan compiler hung on some subgroup-matrix shaders on the H200.
 */
beforeAll(() => {
  // Dawn installs this global; the fake device needs only its COMPUTE bit.
  (globalThis as Record<string, unknown>).GPUShaderStage ??= { COMPUTE: 4 };
});
afterEach(() => {
  vi.useRealTimers();
});

const never = () => new Promise<never>(() => {});

/** A device whose pipelines of sources containing 'SLOW' never come back. */
function fakeDevice() {
  const calls = { async: 0, sync: 0 };
  const device = {
    calls,
    pushErrorScope() {},
    popErrorScope: async () => null,
    createShaderModule: (d: { code: string }) => ({ code: d.code }),
    createBindGroupLayout: () => ({}),
    createPipelineLayout: () => ({}),
    createComputePipeline() {
      calls.sync++;
      throw new Error('the synchronous call must not be used');
    },
    createComputePipelineAsync(d: { compute: { module: { code: string } } }) {
      calls.async++;
      return d.compute.module.code.includes('SLOW') ? never() : Promise.resolve({ pipeline: d });
    },
  };
  return device as typeof device & GPUDevice;
}

describe('withTimeLimit', () => {
  it('resolves with the work, rejects with its error, or with the timeout error', async () => {
    await expect(
      withTimeLimit(
        async () => 1,
        50,
        () => new Error('late'),
      ),
    ).resolves.toBe(1);
    await expect(
      withTimeLimit(
        () => Promise.reject(new Error('bad')),
        50,
        () => new Error('late'),
      ),
    ).rejects.toThrow('bad');
    await expect(withTimeLimit(never, 5, () => new Error('late'))).rejects.toThrow('late');
  });

  it('a synchronous throw becomes a rejection', async () => {
    const p = withTimeLimit(
      () => {
        throw new Error('sync');
      },
      5,
      () => new Error('late'),
    );
    await expect(p).rejects.toThrow('sync');
  });

  it('Infinity and delays past setTimeout range mean no limit (not an immediate timeout)', async () => {
    vi.useFakeTimers();
    let settled = false;
    withTimeLimit(never, Number.POSITIVE_INFINITY, () => new Error('late')).catch(() => {
      settled = true;
    });
    withTimeLimit(never, 2 ** 40, () => new Error('late')).catch(() => {
      settled = true;
    });
    await vi.advanceTimersByTimeAsync(10 * 24 * 3600 * 1000);
    expect(settled).toBe(false);
  });
});

describe('describeConfig', () => {
  it('flat objects as k=v, others as JSON', () => {
    expect(describeConfig({ br: 64, bc: 64, tc: true })).toBe('br=64 bc=64 tc=true');
    expect(describeConfig([1, 2])).toBe('[1,2]');
    expect(describeConfig({ m: [4, 4] })).toBe('{"m":[4,4]}');
    expect(describeConfig(undefined)).toBe('(none)');
  });
});

describe('createComputePipelineInTime', () => {
  it('rejects with PipelineTimeoutError naming the kernel and tile config (default 20 s)', async () => {
    vi.useFakeTimers();
    const device = fakeDevice();
    const module = { code: 'SLOW' } as unknown as GPUShaderModule;
    const p = createComputePipelineInTime(
      device,
      { layout: 'auto', compute: { module } },
      { kernel: 'fa2-forward-tc', config: { br: 128, bc: 64, matrices: '4x4' } },
    );
    const seen = expect(p).rejects.toThrow(PipelineTimeoutError);
    await vi.advanceTimersByTimeAsync(DEFAULT_PIPELINE_TIMEOUT_MS - 1);
    let error: unknown;
    p.catch((e) => {
      error = e;
    });
    await Promise.resolve();
    expect(error).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    await seen;
    expect(error).toMatchObject({
      name: 'PipelineTimeoutError',
      kernel: 'fa2-forward-tc',
      config: { br: 128, bc: 64, matrices: '4x4' },
      timeoutMs: 20000,
      argument: 'pipeline',
    });
    expect((error as Error).message).toBe(
      'fa2-forward-tc: compute pipeline not created within 20000 ms (tile config br=128 bc=64 matrices=4x4); ' +
        'a smaller tile config compiles faster (or raise pipelineTimeoutMs)',
    );
    expect(device.calls).toEqual({ async: 1, sync: 0 });
  });

  it('names the descriptor label when no kernel is given; rejects a bad limit', async () => {
    const device = fakeDevice();
    const module = { code: 'SLOW' } as unknown as GPUShaderModule;
    const desc = { label: 'mine', layout: 'auto' as const, compute: { module } };
    await expect(createComputePipelineInTime(device, desc, { timeoutMs: 5 })).rejects.toThrow(
      /^mine: compute pipeline not created within 5 ms \(tile config \(none\)\)/,
    );
    expect(() => createComputePipelineInTime(device, desc, { timeoutMs: -1 })).toThrow(ValueError);
  });
});

describe('PipelineCache under a time limit', () => {
  const fast = { code: 'fast', bindings: ['storage'] as const, label: 'k' };
  const slow = {
    code: 'SLOW',
    bindings: ['storage'] as const,
    label: 'fa2-forward-tc',
    config: { br: 128, bc: 64 },
  };

  it('compiles with createComputePipelineAsync, never the synchronous call', async () => {
    const device = fakeDevice();
    const cache = new PipelineCache(device, { timeoutMs: 5 });
    const a = await cache.get(fast);
    expect(await cache.get({ ...fast })).toBe(a);
    expect(device.calls).toEqual({ async: 1, sync: 0 });
    expect(cache.compiled).toBe(1);
  });

  it('a timeout rejects with the kernel and config, and is remembered (no second compile)', async () => {
    const device = fakeDevice();
    const cache = new PipelineCache(device, { timeoutMs: 5 });
    expect(cache.timeoutMs).toBe(5);
    const first = await cache.get(slow).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(PipelineTimeoutError);
    expect(first).toMatchObject({ kernel: 'fa2-forward-tc', config: { br: 128, bc: 64 } });
    expect(cache.failure(slow)).toBe(first);
    // The same program again: the same error at once, no compile piled on the driver.
    await expect(cache.get({ ...slow })).rejects.toBe(first);
    expect(device.calls.async).toBe(1);
    expect(cache.failure(fast)).toBeUndefined();
    cache.forget(slow);
    await expect(cache.get(slow)).rejects.toThrow(PipelineTimeoutError);
    expect(device.calls.async).toBe(2);
  });

  it('ready() gives a program object its pipeline synchronously once compiled, never a failed one', async () => {
    const device = fakeDevice();
    const cache = new PipelineCache(device, { timeoutMs: 5 });
    const program = { ...fast };
    expect(cache.ready(program)).toBeUndefined();
    const pending = cache.get(program);
    expect(cache.ready(program)).toBeUndefined();
    const a = await pending;
    expect(cache.ready(program)).toBe(a);
    // Another object with the same source: compiled, but not asked for by this object yet.
    expect(cache.ready({ ...fast })).toBeUndefined();
    cache.forget(program);
    expect(cache.ready(program)).toBeUndefined();
    const late = { ...slow };
    await cache.get(late).catch(() => undefined);
    expect(cache.ready(late)).toBeUndefined();
  });

  it('the same program object is served without its key; a failed one goes through the key again', async () => {
    const device = fakeDevice();
    const cache = new PipelineCache(device, { timeoutMs: 5 });
    const keyOf = vi.spyOn(PipelineCache, 'key');
    const program = { ...fast };
    const a = await cache.get(program);
    const keys = keyOf.mock.calls.length;
    expect(await cache.get(program)).toBe(a);
    expect(keyOf.mock.calls.length).toBe(keys);
    // A timed-out program object: not kept per object; the key path rejects it at once.
    const late = { ...slow };
    const first = await cache.get(late).catch((e: unknown) => e);
    expect(first).toBeInstanceOf(PipelineTimeoutError);
    await expect(cache.get(late)).rejects.toBe(first);
    expect(keyOf.mock.calls.length).toBeGreaterThan(keys + 1);
    cache.forget(late);
    await expect(cache.get(late)).rejects.toThrow(PipelineTimeoutError);
    expect(device.calls.async).toBe(3);
    keyOf.mockRestore();
  });

  it('defaults to 20 s; rejects a bad limit', () => {
    expect(new PipelineCache(fakeDevice()).timeoutMs).toBe(20_000);
    expect(() => new PipelineCache(fakeDevice(), { timeoutMs: 0 })).toThrow(
      /^pipelineTimeoutMs: expected a positive number/,
    );
  });
});

describe('the WGSL lint (ATTNKIT_WGSL_LINT=1, on in every vitest run)', () => {
  const bare = {
    code: 'fn main() {\n  for (var i = 0u; i < 4u; i++) {\n    var acc: array<f32, 4>;\n  }\n}',
    bindings: ['storage'] as const,
    label: 'gla states',
  };

  it('rejects a bare var in a loop body before the device sees it', async () => {
    expect(process.env.ATTNKIT_WGSL_LINT).toBe('1');
    const device = fakeDevice();
    const cache = new PipelineCache(device, { timeoutMs: 50 });
    await expect(cache.get(bare)).rejects.toThrow(
      /^gla states: WGSL lint: var declared without an initializer inside a loop \(acc \(line 3\)\)/,
    );
    await expect(cache.get(bare)).rejects.toBeInstanceOf(GpuValidationError);
    expect(device.calls.async).toBe(0);
    const fixed = {
      ...bare,
      code: bare.code.replace('var acc: array<f32, 4>;', 'var acc = array<f32, 4>();'),
    };
    await expect(cache.get(fixed)).resolves.toBeDefined();
  });

  it('is off without the variable (what users get)', async () => {
    vi.stubEnv('ATTNKIT_WGSL_LINT', '');
    try {
      await expect(
        new PipelineCache(fakeDevice(), { timeoutMs: 50 }).get(bare),
      ).resolves.toBeDefined();
    } finally {
      vi.unstubAllEnvs();
    }
  });
});

describe('compileFirstInTime (the planner falls back to the next config)', () => {
  const configs = [{ matrices: '4x8' }, { matrices: '4x4' }, { matrices: '2x2' }];

  it('skips the config whose compile never comes back and returns the next', async () => {
    const device = fakeDevice();
    const cache = new PipelineCache(device, { timeoutMs: 60_000 });
    const build = (c: { matrices: string }) =>
      cache.get({
        code: c.matrices === '4x8' ? 'SLOW 4x8' : `fast ${c.matrices}`,
        bindings: [],
        label: 'fa2-forward-tc',
        config: c,
      });
    const result = await compileFirstInTime(configs, build, {
      kernel: 'fa2-forward-tc',
      timeoutMs: 10,
    });
    expect(result.config).toEqual({ matrices: '4x4' });
    expect(result.value.pipeline).toBeDefined();
    expect(result.failures).toHaveLength(1);
    expect(result.failures[0]!.config).toEqual({ matrices: '4x8' });
    expect(result.failures[0]!.error).toBeInstanceOf(PipelineTimeoutError);
    expect(result.failures[0]!.error.message).toMatch(/^fa2-forward-tc: .*matrices=4x8/);
    // 4x8 and 4x4 were compiled, 2x2 never tried.
    expect(device.calls.async).toBe(2);
  });

  it('with fake timers and the default limit', async () => {
    vi.useFakeTimers();
    const build = vi.fn((c: { matrices: string }) =>
      c.matrices === '2x2' ? Promise.resolve('pipeline 2x2') : never(),
    );
    const p = compileFirstInTime(configs, build, { kernel: 'fa2-dkdv-tc' });
    await vi.advanceTimersByTimeAsync(2 * DEFAULT_PIPELINE_TIMEOUT_MS);
    const result = await p;
    expect(result).toMatchObject({ config: { matrices: '2x2' }, value: 'pipeline 2x2' });
    expect(result.failures.map((f) => f.error.name)).toEqual([
      'PipelineTimeoutError',
      'PipelineTimeoutError',
    ]);
    expect(build).toHaveBeenCalledTimes(3);
  });

  it('falls back on a rejected shader too; a lost device or a bug propagates at once', async () => {
    const rejected = await compileFirstInTime(
      configs,
      async (c) => {
        if (c.matrices !== '2x2') throw new GpuValidationError('too much workgroup memory');
        return c.matrices;
      },
      { kernel: 'k', timeoutMs: 50 },
    );
    expect(rejected.value).toBe('2x2');
    expect(rejected.failures).toHaveLength(2);

    const lost = new GpuDeviceLostError('lost', 'unknown');
    await expect(
      compileFirstInTime(configs, () => Promise.reject(lost), { kernel: 'k', timeoutMs: 50 }),
    ).rejects.toBe(lost);
    const bug = new TypeError('x is undefined');
    const build = vi.fn(() => Promise.reject(bug));
    await expect(compileFirstInTime(configs, build, { kernel: 'k' })).rejects.toBe(bug);
    expect(build).toHaveBeenCalledTimes(1);
  });

  it('every config failing rejects with PipelineFallbackError listing them', async () => {
    const error = await compileFirstInTime(configs, never, {
      kernel: 'fa2-forward-tc',
      timeoutMs: 5,
    }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PipelineFallbackError);
    const f = error as PipelineFallbackError;
    expect(f.kernel).toBe('fa2-forward-tc');
    expect(f.failures.map((x) => x.config)).toEqual(configs);
    expect(f.message).toMatch(/^fa2-forward-tc: no tile config compiled in time \(3 tried\)/);
    expect(f.message).toContain('matrices=2x2: PipelineTimeoutError');
  });

  it('checks its arguments', async () => {
    await expect(compileFirstInTime([], async () => 1, { kernel: 'k' })).rejects.toThrow(
      /^configs: expected a non-empty array/,
    );
    await expect(
      compileFirstInTime([1], async () => 1, {} as unknown as { kernel: string }),
    ).rejects.toThrow(/^options.kernel/);
    await expect(
      compileFirstInTime([1], async () => 1, { kernel: 'k', timeoutMs: Number.NaN }),
    ).rejects.toThrow(/^timeoutMs/);
  });
});
