import {
  AttnkitError,
  BackendUnavailableError,
  DeviceError,
  DTypeError,
  Rng,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { webGpuTestContext as testContext } from '@attnkit/testing';
import { afterAll, describe, expect, it } from 'vitest';
import { findAdapter } from './adapter.js';
import {
  bindGroupEntry,
  CORE_DEFAULT_LIMITS,
  createWebGpuContext,
  isBufferRange,
  type WebGpuContext,
  wholeWordBytes,
} from './context.js';
import {
  fromGpuError,
  GpuDeviceLostError,
  GpuInternalError,
  GpuOutOfMemoryError,
  GpuValidationError,
} from './errors.js';
import { PipelineCache } from './pipelines.js';
import { BufferPool } from './pool.js';
import { GpuProfiler } from './profiler.js';
import { emptyWebGpu, toWebGpu, WebGpuStorage, webGpuStorageOf } from './storage.js';

// Fails here (no silent skip) when no adapter can be had, unless ATTNKIT_ALLOW_NO_WEBGPU=1.
const ctx: WebGpuContext | undefined = await testContext();
afterAll(() => ctx?.destroy());

const SCALE_WGSL = `
@group(0) @binding(0) var<uniform> factor: vec4<f32>;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
  if (id.x < arrayLength(&src)) { dst[id.x] = src[id.x] * factor.x; }
}`;

describe('pure parts', () => {
  it('size classes round up and stay within 1/8 above 64 KiB', () => {
    expect(BufferPool.sizeClass(0)).toBe(256);
    expect(BufferPool.sizeClass(257)).toBe(512);
    for (const n of [65537, 100_000, 3_000_001, 2 ** 30 + 1]) {
      const c = BufferPool.sizeClass(n);
      expect(c).toBeGreaterThanOrEqual(n);
      expect(c / n).toBeLessThanOrEqual(1.125);
    }
    expect(() => BufferPool.sizeClass(-1)).toThrow(/bytes: expected a non-negative integer/);
  });

  it('keeps the high-water mark of the bytes handed out, reset on request', () => {
    const made: { size: number; usage: number }[] = [];
    const device = {
      createBuffer: (d: { size: number; usage: number }) => {
        const b = { size: d.size, usage: d.usage, destroy() {} };
        made.push(b);
        return b;
      },
    } as unknown as GPUDevice;
    const pool = new BufferPool(device);
    const a = pool.acquire(1000, 1);
    const b = pool.acquire(300, 1);
    expect(pool.highWaterBytes).toBe(1024 + 512);
    pool.release(a);
    pool.release(b);
    expect(pool.liveBytes).toBe(0);
    expect(pool.highWaterBytes).toBe(1536);
    // A reused buffer counts as handed out again.
    const c = pool.acquire(1000, 1);
    expect(made).toHaveLength(2);
    expect(pool.resetHighWater()).toBe(1024);
    expect(pool.highWaterBytes).toBe(1024);
    pool.release(c);
    expect(pool.highWaterBytes).toBe(1024);
  });

  const fakeDevice = (destroyedBufs: unknown[] = []) =>
    ({
      createBuffer: (d: { size: number; usage: number }) => {
        const b = {
          size: d.size,
          usage: d.usage,
          destroy() {
            destroyedBufs.push(b);
          },
        };
        return b;
      },
    }) as unknown as GPUDevice;

  it('hands out the oldest free buffer of a size: a loop gets the same buffers in the same order whatever order it released them in', () => {
    const pool = new BufferPool(fakeDevice());
    const first = [pool.acquire(300, 1), pool.acquire(300, 1), pool.acquire(300, 1)];
    // Extra free buffers of the same class (a previous workload's), made after.
    const extra = [pool.acquire(300, 1), pool.acquire(300, 1)];
    for (const b of extra) pool.release(b);
    let prev = first;
    for (const order of [
      [0, 1, 2],
      [2, 0, 1],
      [1, 2, 0],
    ]) {
      for (const i of order) pool.release(prev[i]!);
      const again = [pool.acquire(300, 1), pool.acquire(300, 1), pool.acquire(300, 1)];
      expect(again, `released in order ${order}`).toEqual(first);
      prev = again;
    }
    // A buffer the pool did not make sorts as the newest: handed out last.
    const foreign = { size: 512, usage: 1, destroy() {} } as unknown as GPUBuffer;
    pool.release(prev[0]!);
    pool.live++;
    pool.liveBytes += 512;
    pool.release(foreign);
    const next = [0, 1, 2, 3].map(() => pool.acquire(300, 1));
    expect(next).toEqual([first[0], ...extra, foreign]);
  });

  it('releases behind a fence return once it settles, oldest first; a fence returned again after it settled still releases', async () => {
    const pool = new BufferPool(fakeDevice());
    const [a, b, c] = [0, 1, 2].map(() => pool.acquire(300, 1));
    let open!: () => void;
    const fence = new Promise<void>((r) => {
      open = r;
    });
    pool.releaseFence = () => fence;
    pool.release(c!);
    pool.release(a!);
    // Held until the fence settles: nothing is free, so an acquire makes a buffer.
    const d = pool.acquire(300, 1);
    expect([a, b, c]).not.toContain(d);
    expect(pool.live).toBe(4);
    open();
    await fence;
    expect(pool.live).toBe(2);
    expect([pool.acquire(300, 1), pool.acquire(300, 1)]).toEqual([a, c]);
    // The same fence again, already settled.
    pool.release(b!);
    expect(pool.live).toBe(4);
    await fence;
    expect(pool.live).toBe(3);
    expect(pool.acquire(300, 1)).toBe(b);
  });

  it('caches released buffers up to max(maxCachedBytes, peak - live), the oldest destroyed past it', () => {
    const destroyedBufs: unknown[] = [];
    // recentAcquires 0: every released buffer counts as old (the limit alone decides).
    const pool = new BufferPool(fakeDevice(destroyedBufs), 1024, 0);
    // A working set of 4 KiB, released and asked for again: nothing is destroyed or re-made.
    const set = [pool.acquire(2048, 1), pool.acquire(1024, 1), pool.acquire(1024, 1)];
    for (const b of set) pool.release(b);
    expect(pool.cacheLimitBytes).toBe(4096);
    expect(destroyedBufs).toEqual([]);
    expect(pool.cachedBytes).toBe(4096);
    const again = [pool.acquire(2048, 1), pool.acquire(1024, 1), pool.acquire(1024, 1)];
    expect(again).toEqual(expect.arrayContaining(set));
    // resetHighWater is a measurement: the cache keeps its limit.
    pool.resetHighWater();
    for (const b of again) pool.release(b);
    expect(pool.cacheLimitBytes).toBe(4096);
    // A new size: live + cached would pass the peak, so the buffer released longest ago
    // (again[0], 2 KiB) goes, at once.
    const other = pool.acquire(512, 2);
    expect(destroyedBufs).toEqual([again[0]]);
    expect(pool.cachedBytes + pool.liveBytes).toBeLessThanOrEqual(4096);
    pool.release(other);
    expect(pool.cachedBytes).toBe(1024 + 1024 + 512);
    // The new size is served from the cache; the evicted one is made anew.
    expect(pool.acquire(512, 2)).toBe(other);
    expect(pool.acquire(2048, 1)).not.toBe(again[0]);
    expect(pool.cachedBytes + pool.liveBytes).toBeLessThanOrEqual(4096);
    expect(pool.created).toBe(5);
    pool.trim();
    expect(destroyedBufs).toHaveLength(3);
    expect(pool.cachedBytes).toBe(0);
  });

  it('keeps recently released buffers up to a quarter past the peak: a step whose sizes over time pass its peak makes none after the first', () => {
    const pool = new BufferPool(fakeDevice(), 0, 4);
    // 1 KiB then 4 KiB, never both at once: the peak is 4 KiB, the step needs 5. Evicting down
    // to the peak made and destroyed both every step.
    const step = () => {
      pool.release(pool.acquire(1024, 1));
      pool.release(pool.acquire(4096, 1));
    };
    step();
    const made = pool.created;
    for (let i = 0; i < 5; i++) step();
    expect(pool.created).toBe(made);
    expect(pool.destroyed).toBe(0);
    expect(pool.cachedBytes).toBe(5120);
    expect(pool.cachedBytes + pool.liveBytes).toBeLessThanOrEqual(4096 + 1024);
    // Other work for more than recentAcquires, then another size: the old buffers go down to
    // the peak again.
    for (let i = 0; i < 4; i++) pool.release(pool.acquire(256, 3));
    pool.acquire(512, 2);
    expect(pool.destroyed).toBe(2);
    expect(pool.cachedBytes).toBe(256);
  });

  it('recentAcquires must be a non-negative integer (a ValueError naming it); trim counts what it destroys', () => {
    for (const bad of [-1, 1.5, Number.NaN, '8' as unknown as number])
      expect(() => new BufferPool(fakeDevice(), 0, bad)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'recentAcquires' }),
      );
    const pool = new BufferPool(fakeDevice(), 0, 0);
    pool.release(pool.acquire(1024, 1));
    pool.trim();
    expect(pool.destroyed).toBe(1);
  });

  it('tells onDestroy about every buffer it destroys, before destroying it (evicted, oversize, trimmed)', () => {
    const destroyedBufs: unknown[] = [];
    const pool = new BufferPool(fakeDevice(destroyedBufs), 1024, 0);
    const told: unknown[] = [];
    pool.onDestroy = (b) => {
      // Not yet destroyed when told: a cache can still drop what binds it.
      expect(destroyedBufs).not.toContain(b);
      told.push(b);
    };
    const a = pool.acquire(4096, 1);
    pool.release(a);
    pool.acquire(512, 2); // a new size past the peak evicts `a`
    const b = pool.acquire(256, 3);
    pool.release(b);
    pool.trim();
    expect(told).toEqual(destroyedBufs);
    expect(told).toEqual([a, b]);
    expect(pool.destroyed).toBe(2);
  });

  it('never keeps more than a quarter past the peak, recent or not', () => {
    const pool = new BufferPool(fakeDevice(), 0);
    const a = [pool.acquire(4096, 1), pool.acquire(4096, 1)];
    for (const b of a) pool.release(b);
    // Recent buffers of other sizes: peak 8 KiB, so at most 10 KiB in all.
    for (const usage of [2, 3, 4]) {
      pool.release(pool.acquire(2048, usage));
      expect(pool.cachedBytes + pool.liveBytes).toBeLessThanOrEqual(8192 + 2048);
    }
    expect(pool.destroyed).toBeGreaterThan(0);
  });

  it('pipeline keys differ by source, constants, entry point and bindings', () => {
    const base = { code: 'x', bindings: ['read'] as const };
    const keys = new Set([
      PipelineCache.key(base),
      PipelineCache.key({ ...base, code: 'y' }),
      PipelineCache.key({ ...base, constants: { A: 1 } }),
      PipelineCache.key({ ...base, constants: { A: 2 } }),
      PipelineCache.key({ ...base, entryPoint: 'other' }),
      PipelineCache.key({ ...base, bindings: ['storage'] }),
    ]);
    expect(keys.size).toBe(6);
    expect(PipelineCache.key({ ...base, constants: { A: 1, B: 2 } })).toBe(
      PipelineCache.key({ ...base, constants: { B: 2, A: 1 } }),
    );
  });

  it('maps error scopes to typed errors', () => {
    const e = { message: 'boom' } as GPUError;
    expect(fromGpuError('validation', e, 'op')).toBeInstanceOf(GpuValidationError);
    expect(fromGpuError('out-of-memory', e, 'op')).toBeInstanceOf(GpuOutOfMemoryError);
    expect(fromGpuError('internal', e, 'op')).toBeInstanceOf(GpuInternalError);
    expect(fromGpuError('validation', e, 'op')).toBeInstanceOf(AttnkitError);
    expect(fromGpuError('validation', e, 'op').message).toBe('op: boom');
  });

  it('rejects unknown backends by name', async () => {
    await expect(findAdapter({ backend: 'glide' as never })).rejects.toThrow(
      /backend: expected one of vulkan, opengles/,
    );
  });
});

describe.skipIf(!ctx)('on a device', () => {
  it("limits: 'default' gives WebGPU's core default limits (capped by the adapter's); a bad value is a ValueError", async () => {
    const small = await createWebGpuContext({ limits: 'default', features: [] });
    try {
      for (const [name, value] of Object.entries(CORE_DEFAULT_LIMITS)) {
        const key = name as keyof typeof CORE_DEFAULT_LIMITS;
        // ctx asked for the adapter's own limits.
        expect(small.limits[key], name).toBe(Math.min(value, ctx!.limits[key]));
      }
      expect(small.limits.maxComputeWorkgroupStorageSize).toBe(16384);
      expect(small.features.subgroups).toBe(false);
      expect(small.features.shaderF16).toBe(false);
    } finally {
      small.destroy();
    }
    await expect(createWebGpuContext({ limits: 'huge' as never })).rejects.toThrow(
      /limits: expected 'adapter' or 'default', got "huge"/,
    );
  });

  it('requests the adapter limits and detects features', () => {
    const c = ctx!;
    expect(c.limits.maxComputeWorkgroupStorageSize).toBeGreaterThanOrEqual(16384);
    expect(c.limits.maxComputeInvocationsPerWorkgroup).toBeGreaterThanOrEqual(256);
    expect(typeof c.features.subgroups).toBe('boolean');
    expect(c.features.shaderF16).toBe(c.device.features.has('shader-f16'));
    expect(c.features.timestampQuery).toBe(c.device.features.has('timestamp-query'));
    expect(c.backend).not.toBe('');
    // Subgroup-matrix configs only with the feature on the device (none on llvmpipe).
    if (!c.features.subgroupMatrix) expect(c.features.subgroupMatrixConfigs).toEqual([]);
    // Dawn's default toggles in Node (they change nothing on llvmpipe, they are still passed).
    if (c.backend !== 'browser') {
      expect(c.dawnToggles).toEqual(['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia']);
    }
    expect(c.pipelines.timeoutMs).toBe(20_000);
  });

  it('round-trips every dtype, odd lengths included', async () => {
    const c = ctx!;
    const rng = new Rng(7);
    for (const dtype of ['f32', 'f16', 'bf16', 'i32', 'i8', 'u8'] as const) {
      for (const n of [1, 3, 5, 1027]) {
        const cpu =
          dtype === 'i32' || dtype === 'i8' || dtype === 'u8'
            ? Tensor.from(
                Array.from({ length: n }, () => rng.int(dtype === 'u8' ? 0 : -100, 100)),
                [n],
                dtype,
              )
            : rng.randn([n], dtype);
        const gpu = toWebGpu(cpu, c);
        expect(gpu.device).toBe('webgpu');
        expect(gpu.dtype).toBe(dtype);
        const back = await gpu.toCpu();
        expect(Array.from(back.data())).toEqual(Array.from(cpu.data()));
        gpu.dispose();
      }
    }
  });

  it('uploads views as their contiguous elements', async () => {
    const rng = new Rng(3);
    const t = rng.randn([3, 4, 5]).transpose(0, 2).slice(1, 1, 3);
    const back = await toWebGpu(t, ctx!).toCpu();
    expect(back.shape).toEqual([5, 2, 3]);
    expect(Array.from(back.toFloat32Array())).toEqual(Array.from(t.toFloat32Array()));
  });

  it('refuses f64 and strided webgpu views', () => {
    expect(() => toWebGpu(Tensor.zeros([2], 'f64'), ctx!)).toThrow(DTypeError);
    const g = toWebGpu(new Rng(1).randn([4, 4]), ctx!);
    expect(() => webGpuStorageOf(g.transpose(0, 1), 'q')).toThrow(DeviceError);
    expect(webGpuStorageOf(g, 'q')).toBeInstanceOf(WebGpuStorage);
    expect(() => webGpuStorageOf(new Rng(1).randn([2]), 'k')).toThrow(
      /k: expected a webgpu tensor/,
    );
  });

  it('poisons outputs with NaN and reuses released buffers', async () => {
    const c = ctx!;
    const out = emptyWebGpu([2, 3], 'f32', c);
    const values = (await out.toCpu()).toFloat32Array();
    expect(values.every(Number.isNaN)).toBe(true);
    const buffer = (out.storage as WebGpuStorage).buffer;
    out.dispose();
    out.dispose();
    const again = emptyWebGpu([6], 'f32', c);
    expect((again.storage as WebGpuStorage).buffer).toBe(buffer);
    again.dispose();
    await expect(out.toCpu()).rejects.toThrow(/disposed/);
  });

  it('reads empty tensors and rejects bad reads with typed errors', async () => {
    const c = ctx!;
    for (const shape of [[0], [0, 3], [2, 0, 4]]) {
      const t = emptyWebGpu(shape, 'f32', c);
      const back = await t.toCpu();
      expect(back.shape).toEqual(shape);
      expect(back.size).toBe(0);
      t.dispose();
    }
    const buffer = c.createStorageBuffer(16);
    expect((await c.readBuffer(buffer, 0)).byteLength).toBe(0);
    await expect(c.readBuffer(buffer, -1)).rejects.toBeInstanceOf(ValueError);
    await expect(c.readBuffer(buffer, 4, 1.5)).rejects.toThrow(/offset: expected a non-negative/);
    // Past the end of the source: the copy fails validation, reported as a typed error.
    await expect(c.readBuffer(buffer, 8, buffer.size)).rejects.toBeInstanceOf(GpuValidationError);
    c.pool.release(buffer);
  });

  it('turns a failing map into GpuValidationError, not a DOMException', async () => {
    const c = ctx!;
    const src = toWebGpu(new Rng(9).randn([4]), c);
    // A staging buffer without MAP_READ makes mapAsync reject with an OperationError.
    const acquire = c.pool.acquire;
    c.pool.acquire = (bytes, _usage, label) =>
      acquire.call(c.pool, bytes, GPUBufferUsage.COPY_DST, label);
    const live = c.pool.live;
    try {
      const read = c.readBuffer((src.storage as WebGpuStorage).buffer, 16);
      await expect(read).rejects.toBeInstanceOf(GpuValidationError);
      await expect(read).rejects.toThrow(/read: /);
    } finally {
      c.pool.acquire = acquire;
    }
    expect(c.pool.live).toBe(live);
    expect(Array.from((await src.toCpu()).data())).toHaveLength(4);
    src.dispose();
  });

  it("names the caller's argument when a disposed tensor is used", async () => {
    const g = toWebGpu(new Rng(4).randn([3]), ctx!);
    g.dispose();
    let caught: unknown;
    try {
      webGpuStorageOf(g, 'q');
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(DeviceError);
    expect((caught as DeviceError).argument).toBe('q');
    expect((caught as DeviceError).message).toMatch(/^q: .*disposed/);
    await expect(g.toCpu()).rejects.toMatchObject({ argument: 'tensor' });
  });

  it('caches pipelines and runs a kernel', async () => {
    const c = ctx!;
    const program = { code: SCALE_WGSL, bindings: ['uniform', 'read', 'storage'] as const };
    const compiled = await c.pipelines.get(program);
    expect(await c.pipelines.get({ ...program })).toBe(compiled);
    const x = new Rng(5).randn([300]);
    const src = toWebGpu(x, c);
    const dst = emptyWebGpu([300], 'f32', c);
    const factor = c.createUniform(new Float32Array([2.5, 0, 0, 0]));
    const profiler = new GpuProfiler(c.device);
    await c.dispatch(
      [
        {
          program: compiled,
          buffers: [
            factor,
            (src.storage as WebGpuStorage).buffer,
            (dst.storage as WebGpuStorage).buffer,
          ],
          workgroups: [Math.ceil(300 / 64)],
          label: 'scale',
        },
      ],
      profiler,
    );
    c.pool.release(factor);
    const y = (await dst.toCpu()).toFloat32Array();
    const want = x.toFloat32Array().map((v) => v * 2.5);
    expect(Array.from(y)).toEqual(Array.from(want));
    const timings = await profiler.read();
    expect(timings.length).toBe(profiler.enabled ? 1 : 0);
    if (profiler.enabled) expect(timings[0]!.ns).toBeGreaterThan(0);
    profiler.destroy();
  });

  it('reports shader errors and invalid commands as GpuValidationError', async () => {
    const c = ctx!;
    await expect(
      c.pipelines.get({ code: 'fn main( {', bindings: [], label: 'broken' }),
    ).rejects.toThrow(GpuValidationError);
    const compiled = await c.pipelines.get({
      code: SCALE_WGSL,
      bindings: ['uniform', 'read', 'storage'],
    });
    const tiny = c.createStorageBuffer(4);
    // A uniform binding given a storage-only buffer is a validation error.
    await expect(
      c.dispatch([{ program: compiled, buffers: [tiny, tiny, tiny], workgroups: [1] }]),
    ).rejects.toThrow(GpuValidationError);
    c.pool.release(tiny);
  });

  it('grids beyond the device limit or not integers are ValueErrors naming workgroups, before anything is encoded', async () => {
    const c = ctx!;
    const compiled = await c.pipelines.get({
      code: SCALE_WGSL,
      bindings: ['uniform', 'read', 'storage'],
    });
    const max = c.limits.maxComputeWorkgroupsPerDimension;
    for (const workgroups of [[max + 1], [1, 2.5], [1, 1, -1]] as [number, number?, number?][]) {
      const step = { program: compiled, buffers: [], workgroups, label: 'too big' };
      expect(() => c.checkSteps([step])).toThrow(ValueError);
      expect(() => c.checkSteps([step])).toThrow(
        /workgroups: expected integers in \[0, \d+\].*\(too big\)/,
      );
      await expect(c.dispatch([step])).rejects.toThrow(ValueError);
    }
    expect(() =>
      c.checkSteps([{ program: compiled, buffers: [], workgroups: [max, 1, 0] }]),
    ).not.toThrow();
  });
});

describe('robustness', () => {
  it('is on by default and off with robustness: false (Dawn toggle), where kernels still run', async () => {
    expect(ctx!.robustAccess).toBe(true);
    const c = await testContext({ robustness: false });
    if (!c) return;
    try {
      if (c.backend !== 'browser') {
        expect(c.dawnToggles).toContain('disable_robustness');
        expect(c.robustAccess).toBe(false);
      }
      const program = { code: SCALE_WGSL, bindings: ['uniform', 'read', 'storage'] as const };
      const compiled = await c.pipelines.get(program);
      const x = new Rng(11).randn([77]);
      const src = toWebGpu(x, c);
      const dst = emptyWebGpu([77], 'f32', c);
      const factor = c.createUniform(new Float32Array([-1.5, 0, 0, 0]));
      await c.dispatch([
        {
          program: compiled,
          buffers: [
            factor,
            (src.storage as WebGpuStorage).buffer,
            (dst.storage as WebGpuStorage).buffer,
          ],
          workgroups: [2],
        },
      ]);
      const y = (await dst.toCpu()).toFloat32Array();
      expect(Array.from(y)).toEqual(Array.from(x.toFloat32Array().map((v) => v * -1.5)));
    } finally {
      c.destroy();
    }
  });

  it('rejects a robustness that is not a boolean, naming it', async () => {
    await expect(findAdapter({ robustness: 'off' as unknown as boolean })).rejects.toThrow(
      /^robustness: expected a boolean, got/,
    );
    await expect(findAdapter({ robustness: 0 as unknown as boolean })).rejects.toBeInstanceOf(
      ValueError,
    );
  });
});

describe('device loss', () => {
  it('turns a destroyed device into GpuDeviceLostError', async () => {
    const c = await testContext();
    if (!c) return;
    const t = toWebGpu(new Rng(2).randn([8]), c);
    c.destroy();
    await c.device.lost;
    expect(c.lost).toBe(true);
    await expect(t.toCpu()).rejects.toBeInstanceOf(GpuDeviceLostError);
    expect(() => emptyWebGpu([2], 'f32', c)).toThrow(GpuDeviceLostError);
  });

  it('fails loudly when no adapter can be had', async () => {
    await expect(
      findAdapter({ gpu: { requestAdapter: async () => null } as unknown as GPU }),
    ).rejects.toBeInstanceOf(BackendUnavailableError);
  });
});

describe('sizes past 2 GiB', () => {
  it('wholeWordBytes keeps every size a number of whole words (no int32 bit operations)', () => {
    expect(wholeWordBytes(0)).toBe(0);
    expect(wholeWordBytes(7)).toBe(4);
    expect(wholeWordBytes(2 ** 31)).toBe(2 ** 31);
    expect(wholeWordBytes(2 ** 31 + 3)).toBe(2 ** 31);
    expect(wholeWordBytes(2 ** 33 + 6)).toBe(2 ** 33 + 4);
    for (const bad of [-4, 2.5, Number.NaN])
      expect(() => wholeWordBytes(bad)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'bytes' }),
      );
  });

  it('the pool never rounds a request one binding holds into a buffer it cannot', () => {
    const max = 2 ** 31 - 4;
    // Steps of 2^27 there: 2^31 - 2^26 would round up to 2^31, past the binding limit.
    expect(BufferPool.sizeClass(2 ** 31 - 2 ** 26)).toBe(2 ** 31);
    expect(BufferPool.sizeClass(2 ** 31 - 2 ** 26, max)).toBe(2 ** 31 - 2 ** 26);
    expect(BufferPool.sizeClass(2 ** 31 - 6, max)).toBe(2 ** 31 - 4);
    expect(BufferPool.sizeClass(max, max)).toBe(max);
    for (const bad of [Number.NaN, 0, '1024'])
      expect(() => BufferPool.sizeClass(64, bad as number)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'cap' }),
      );
    // Past the limit (it cannot be bound whole anyway) and below it the classes stand.
    expect(BufferPool.sizeClass(2 ** 31 + 1, max)).toBe(BufferPool.sizeClass(2 ** 31 + 1));
    expect(BufferPool.sizeClass(2 ** 30 + 1, max)).toBe(2 ** 30 + 2 ** 27);
    // A pool on a device with that limit acquires such buffers at the exact size.
    const sizes: number[] = [];
    const device = {
      limits: { maxStorageBufferBindingSize: max },
      createBuffer: (d: { size: number }) => {
        sizes.push(d.size);
        return { size: d.size, destroy() {} } as unknown as GPUBuffer;
      },
    } as unknown as GPUDevice;
    new BufferPool(device).acquire(2 ** 31 - 2 ** 26, GPUBufferUsage.STORAGE);
    expect(sizes).toEqual([2 ** 31 - 2 ** 26]);
  });

  it('bindGroupEntry binds whole buffers whole and ranges as given', () => {
    const big = { size: 2 ** 31 } as unknown as GPUBuffer;
    expect(bindGroupEntry(big, 1)).toEqual({ binding: 1, resource: { buffer: big } });
    expect(bindGroupEntry({ buffer: big, offset: 256, size: 64 }, 2)).toEqual({
      binding: 2,
      resource: { buffer: big, offset: 256, size: 64 },
    });
  });

  it('isBufferRange tells a range from a buffer', () => {
    const buffer = { size: 64 } as unknown as GPUBuffer;
    expect(isBufferRange(buffer)).toBe(false);
    expect(isBufferRange({ buffer, offset: 0, size: 16 })).toBe(true);
  });
});
