import { type BindingResource, bindGroupEntry, isBufferRange } from '@attnkit/webgpu';

/**
 * Uniform buffers and bind groups reused across passes. A decoded token or a training step
 * runs the same passes on the same buffers again and again (the pool hands the same sizes back
 * in the same order), and Dawn's API is what a pass costs the host: on its null backend a
 * createBindGroup took ~14 us and a pooled uniform ~6 us of the ~35 us a pass took, at 162
 * passes a GPT-2 token. Here a uniform is keyed by its words (immutable once written, so a
 * command buffer that binds it never sees it change) and a bind group by its layout and
 * buffers. Both caches are bounded; a bind group is forgotten when one of its buffers is
 * destroyed (BufferPool.onDestroy, or a uniform evicted here).
 */
/** A bind group of `layout` binding `buffers` (whole buffers or ranges of them) at 0.. in order. */
export function createBindGroup(
  device: GPUDevice,
  layout: GPUBindGroupLayout,
  buffers: readonly BindingResource[],
): GPUBindGroup {
  return device.createBindGroup({ layout, entries: buffers.map(bindGroupEntry) });
}

export class BindingCache {
  /** Uniforms by hash of their words; the words are compared on a hit. */
  private readonly uniforms = new Map<number, { words: Uint32Array; buffer: GPUBuffer }[]>();
  /** Uniforms in the order they were last used (oldest first), for eviction. */
  private readonly uniformOrder = new Map<GPUBuffer, number>();
  private readonly groups = new Map<string, { group: GPUBindGroup; buffers: GPUBuffer[] }>();
  /** Bind-group keys per buffer, to forget them when the buffer goes. */
  private readonly byBuffer = new Map<GPUBuffer, Set<string>>();
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;
  readonly stats = { uniformHits: 0, uniformsMade: 0, groupHits: 0, groupsMade: 0 };

  constructor(
    private readonly device: GPUDevice,
    /** Destroys an evicted uniform once the work encoded so far that may bind it is submitted. */
    private readonly retire: (buffer: GPUBuffer) => void,
    readonly maxUniforms = 4096,
    readonly maxGroups = 8192,
  ) {}

  private id(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) {
      id = this.nextId++;
      this.ids.set(o, id);
    }
    return id;
  }

  /** A uniform buffer holding `words` (at least 16 bytes; never written again while cached). */
  uniform(words: Uint32Array): GPUBuffer {
    let h = 0x811c9dc5;
    for (let i = 0; i < words.length; i++) h = Math.imul(h ^ words[i]!, 0x01000193);
    const list = this.uniforms.get(h);
    if (list) {
      for (const e of list) {
        if (e.words.length !== words.length) continue;
        let same = true;
        for (let i = 0; i < words.length && same; i++) same = e.words[i] === words[i];
        if (!same) continue;
        this.stats.uniformHits++;
        this.uniformOrder.delete(e.buffer);
        this.uniformOrder.set(e.buffer, h);
        return e.buffer;
      }
    }
    const size = Math.max(16, Math.ceil(words.byteLength / 16) * 16);
    const buffer = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      label: 'nn uniform',
    });
    this.device.queue.writeBuffer(buffer, 0, words.buffer, words.byteOffset, words.byteLength);
    const entry = { words: words.slice(), buffer };
    if (list) list.push(entry);
    else this.uniforms.set(h, [entry]);
    this.uniformOrder.set(buffer, h);
    this.stats.uniformsMade++;
    if (this.uniformOrder.size > this.maxUniforms) {
      const [old, oh] = this.uniformOrder.entries().next().value as [GPUBuffer, number];
      this.uniformOrder.delete(old);
      const l = this.uniforms.get(oh)!;
      l.splice(
        l.findIndex((e) => e.buffer === old),
        1,
      );
      if (l.length === 0) this.uniforms.delete(oh);
      this.forget(old);
      this.retire(old);
    }
    return buffer;
  }

  /** createBindGroup's group, made once per layout and buffers. */
  bindGroup(layout: GPUBindGroupLayout, resources: readonly BindingResource[]): GPUBindGroup {
    // Ranges (a tensor bound in pieces) are rare and not cached: the key would need their offsets.
    if (resources.some(isBufferRange)) return createBindGroup(this.device, layout, resources);
    const buffers = resources as readonly GPUBuffer[];
    let key = `${this.id(layout)}`;
    for (const b of buffers) key += `,${this.id(b)}`;
    const hit = this.groups.get(key);
    if (hit) {
      this.stats.groupHits++;
      return hit.group;
    }
    const group = createBindGroup(this.device, layout, buffers);
    if (this.groups.size >= this.maxGroups) this.clearGroups();
    this.groups.set(key, { group, buffers: [...buffers] });
    for (const b of buffers) {
      let keys = this.byBuffer.get(b);
      if (!keys) this.byBuffer.set(b, (keys = new Set()));
      keys.add(key);
    }
    this.stats.groupsMade++;
    return group;
  }

  /** Forgets the bind groups that bind `buffer` (about to be destroyed). */
  forget(buffer: GPUBuffer): void {
    const keys = this.byBuffer.get(buffer);
    if (!keys) return;
    this.byBuffer.delete(buffer);
    for (const key of keys) {
      const e = this.groups.get(key);
      if (!e) continue;
      this.groups.delete(key);
      for (const b of e.buffers) {
        const others = b === buffer ? undefined : this.byBuffer.get(b);
        others?.delete(key);
        if (others?.size === 0) this.byBuffer.delete(b);
      }
    }
  }

  private clearGroups(): void {
    this.groups.clear();
    this.byBuffer.clear();
  }

  /** Cached uniforms and bind groups (for tests). */
  get size(): { uniforms: number; groups: number } {
    return { uniforms: this.uniformOrder.size, groups: this.groups.size };
  }
}
