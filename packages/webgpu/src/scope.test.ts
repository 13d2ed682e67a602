import { Rng, type Tensor } from '@attnkit/tensor';
import { exposedGc, webGpuTestContext as testContext } from '@attnkit/testing';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { releaseCollected, WebGpuContext, webgpuScope } from './context.js';
import { emptyWebGpu, toWebGpu, type WebGpuStorage } from './storage.js';

// Fails here (no silent skip) when no adapter can be had, unless ATTNKIT_ALLOW_NO_WEBGPU=1.
const ctx: WebGpuContext | undefined = await testContext();
afterAll(() => ctx?.destroy());

/** A second context on the same device: its own pool and counters, nothing else to set up. */
function sibling(c: WebGpuContext): WebGpuContext {
  return new WebGpuContext(c.device, c.features, c.limits, c.backend, c.adapterInfo);
}

/** What one forward-like call allocates: uploads, outputs and scratch; it returns `o`. */
function forwardLike(c: WebGpuContext, rng: Rng): Tensor {
  const q = toWebGpu(rng.randn([2, 16]), c);
  const k = toWebGpu(rng.randn([2, 16]), c);
  const v = toWebGpu(rng.randn([2, 16]), c);
  const lse = emptyWebGpu([2], 'f32', c);
  void [q, k, v, lse];
  return emptyWebGpu([2, 16], 'f32', c);
}

const ITERATIONS = 40;

describe.skipIf(!ctx)('scopes', () => {
  it('a loop inside scopes keeps live buffers bounded', async () => {
    const c = sibling(ctx!);
    const rng = new Rng(1);
    let kept: Tensor | undefined;
    for (let i = 0; i < ITERATIONS; i++) {
      const o = await c.scope(async () => forwardLike(c, rng));
      kept?.dispose();
      kept = o;
      expect(c.liveBuffers).toBe(1);
      expect(c.liveTensors).toBe(1);
    }
    expect((await kept!.toCpu()).shape).toEqual([2, 16]);
    kept!.dispose();
    expect(c.liveBuffers).toBe(0);
    c.pool.trim();
  });

  it('the same loop without scopes or dispose() grows by every tensor it makes (why scopes exist)', async () => {
    const c = sibling(ctx!);
    c.warnLeaks = false; // q, k, v and lse leak on purpose here
    const rng = new Rng(1);
    const made: Tensor[] = [];
    for (let i = 0; i < ITERATIONS; i++) made.push(forwardLike(c, rng));
    // Only `o` is kept by the caller, yet q, k, v and lse stay on the GPU until disposed or collected.
    expect(c.liveBuffers).toBe(5 * ITERATIONS);
    // One scope around the whole loop releases all of it at once.
    await c.scope(() => {
      for (let i = 0; i < ITERATIONS; i++) forwardLike(c, rng);
    });
    expect(c.liveBuffers).toBe(5 * ITERATIONS);
    for (const o of made) o.dispose();
    expect(c.liveBuffers).toBe(4 * ITERATIONS);
    c.pool.trim();
  });

  it('nests: a returned tensor belongs to the enclosing scope', async () => {
    const c = sibling(ctx!);
    const rng = new Rng(2);
    let inner: Tensor | undefined;
    const outer = await webgpuScope(c, async () => {
      const a = toWebGpu(rng.randn([4]), c);
      inner = await c.scope(async () => {
        emptyWebGpu([8], 'f32', c);
        return toWebGpu(rng.randn([3]), c);
      });
      expect(c.liveBuffers).toBe(2); // a and inner; the scratch is gone
      expect(inner.storage.isDisposed).toBe(false);
      emptyWebGpu([8], 'f32', c);
      return { a, list: [toWebGpu(rng.randn([2]), c)], n: 3 };
    });
    // inner was returned by the inner scope only: the outer scope released it.
    expect(inner!.storage.isDisposed).toBe(true);
    expect(c.liveBuffers).toBe(2);
    expect((await outer.a.toCpu()).shape).toEqual([4]);
    expect((await outer.list[0]!.toCpu()).shape).toEqual([2]);
    outer.a.dispose();
    outer.list[0]!.dispose();
    expect(c.liveBuffers).toBe(0);
    expect(c.liveTensors).toBe(0);
    c.pool.trim();
  });

  it('returned views, Maps and tensors disposed inside are handled', async () => {
    const c = sibling(ctx!);
    const rng = new Rng(3);
    const out = await c.scope(() => {
      const t = toWebGpu(rng.randn([2, 3]), c);
      const gone = toWebGpu(rng.randn([2]), c);
      gone.dispose();
      return new Map([['view', t.reshape([3, 2])]]);
    });
    expect(c.liveBuffers).toBe(1);
    expect((await out.get('view')!.toCpu()).shape).toEqual([3, 2]);
    out.get('view')!.dispose();
    expect(c.liveBuffers).toBe(0);
    c.pool.trim();
  });

  it('an error inside a scope releases what it created and propagates', async () => {
    const c = sibling(ctx!);
    const rng = new Rng(4);
    let t: Tensor | undefined;
    await expect(
      c.scope(async () => {
        t = toWebGpu(rng.randn([5]), c);
        await c.scope(() => {
          emptyWebGpu([7], 'f32', c);
          throw new Error('boom');
        });
      }),
    ).rejects.toThrow('boom');
    expect(t!.storage.isDisposed).toBe(true);
    expect(c.liveBuffers).toBe(0);
    await expect(t!.toCpu()).rejects.toThrow(/disposed/);
    // The context is usable afterwards, outside any scope.
    const after = emptyWebGpu([1], 'f32', c);
    expect(c.liveBuffers).toBe(1);
    after.dispose();
    await expect(c.scope(1 as never)).rejects.toThrow(/fn: expected a function/);
    c.pool.trim();
  });

  it('interleaved scopes leave no dead scope behind', async () => {
    const c = sibling(ctx!);
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const a = c.scope(async () => {
      await gate;
      emptyWebGpu([4], 'f32', c);
    });
    const b = c.scope(async () => {
      release();
      await new Promise((r) => setTimeout(r, 10)); // a ends while b is still open
      emptyWebGpu([4], 'f32', c);
    });
    await Promise.all([a, b]);
    expect(c.liveBuffers).toBe(0);
    const outside = emptyWebGpu([4], 'f32', c);
    expect((outside.storage as WebGpuStorage).scope).toBeUndefined();
    outside.dispose();
    c.pool.trim();
  });
});

describe.skipIf(!ctx)('garbage-collection safety net', () => {
  it('the registry callback releases the buffer and warns once with the fix', async () => {
    const c = sibling(ctx!);
    c.warnLeaks = true;
    const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const t = emptyWebGpu([16], 'f32', c);
      const s = t.storage as WebGpuStorage;
      // Play the collector: what the FinalizationRegistry calls for an undisposed storage.
      c.untrack(s);
      c.liveTensors++;
      releaseCollected({ ctx: c, buffer: s.buffer });
      releaseCollected({ ctx: c, buffer: c.pool.acquire(64, s.buffer.usage) });
      expect(c.liveBuffers).toBe(0);
      expect(c.leakedTensors).toBe(2);
      await new Promise((r) => setTimeout(r, 10));
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]![0])).toMatch(/2 webgpu tensor.*dispose\(\).*scope/s);
      c.liveTensors++;
      releaseCollected({ ctx: c, buffer: c.pool.acquire(64, s.buffer.usage) });
      await new Promise((r) => setTimeout(r, 10));
      expect(warn).toHaveBeenCalledTimes(1); // once per context
    } finally {
      warn.mockRestore();
    }
    c.pool.trim();
  });

  it('a tensor collected without dispose() returns its buffer (real GC)', async () => {
    const gc = exposedGc();
    const c = sibling(ctx!);
    c.warnLeaks = false;
    const leak = () => {
      for (let i = 0; i < 8; i++) emptyWebGpu([32], 'f32', c);
    };
    leak();
    expect(c.liveBuffers).toBe(8);
    for (let i = 0; i < 50 && c.liveBuffers > 0; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(c.liveBuffers).toBe(0);
    expect(c.leakedTensors).toBe(8);
    expect(c.liveTensors).toBe(0);
    c.pool.trim();
  });
});
