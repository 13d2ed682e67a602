import { webGpuTestContext } from '@attnkit/testing';
import { describe, expect, it } from 'vitest';
import { BindingCache } from './bindings.js';

const ctx = await webGpuTestContext();

describe.skipIf(!ctx)('BindingCache', () => {
  const device = ctx!.device;
  const layout = () =>
    device.createBindGroupLayout({
      entries: [
        { binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } },
        { binding: 1, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } },
      ],
    });
  const storage = () =>
    device.createBuffer({ size: 256, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });

  it('reuses a uniform for the same words only; evicts the one used longest ago, retiring it and forgetting its bind groups', () => {
    const retired: GPUBuffer[] = [];
    const cache = new BindingCache(device, (b) => retired.push(b), 2);
    const w = (x: number) => Uint32Array.from([x, 0, 7, 0xff800000]);
    const u1 = cache.uniform(w(1));
    expect(cache.uniform(w(1))).toBe(u1);
    const u2 = cache.uniform(w(2));
    expect(u2).not.toBe(u1);
    // A words array changed after the call does not change the cached uniform's key.
    const words = w(3);
    const l = layout();
    const s = storage();
    const g1 = cache.bindGroup(l, [u1, s]);
    cache.uniform(w(2)); // u1 is now the one used longest ago
    const u3 = cache.uniform(words);
    words[0] = 1;
    expect(retired).toEqual([u1]);
    expect(cache.size.uniforms).toBe(2);
    expect(cache.size.groups).toBe(0);
    // u1's words again make a new uniform (and retire u2, used before u3).
    const again = cache.uniform(w(1));
    expect(again).not.toBe(u1);
    expect(retired).toEqual([u1, u2]);
    expect(cache.uniform(w(3))).toBe(u3);
    expect(cache.bindGroup(l, [again, s])).not.toBe(g1);
    expect(cache.stats).toEqual({ uniformHits: 3, uniformsMade: 4, groupHits: 0, groupsMade: 2 });
  });

  it('reuses a bind group for the same layout and buffers; forget() drops the ones binding a buffer; bounded', () => {
    const cache = new BindingCache(device, () => {}, 16, 3);
    const u = cache.uniform(Uint32Array.from([1, 2, 3, 4]));
    const [a, b] = [storage(), storage()];
    const [l1, l2] = [layout(), layout()];
    const g = cache.bindGroup(l1, [u, a]);
    expect(cache.bindGroup(l1, [u, a])).toBe(g);
    expect(cache.bindGroup(l2, [u, a])).not.toBe(g);
    const gb = cache.bindGroup(l1, [u, b]);
    expect(cache.size.groups).toBe(3);
    cache.forget(a);
    expect(cache.size.groups).toBe(1);
    expect(cache.bindGroup(l1, [u, b])).toBe(gb);
    expect(cache.bindGroup(l1, [u, a])).not.toBe(g);
    // Past maxGroups (3) the cache starts over rather than growing.
    cache.bindGroup(l2, [u, b]);
    cache.bindGroup(l2, [u, a]);
    expect(cache.size.groups).toBe(1);
  });
});
