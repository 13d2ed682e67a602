import { describe, ValueError } from '@attnkit/tensor';

/**
 * Reuses GPU buffers by size class and usage. Creating a buffer costs a driver allocation;
 * kernels that run per layer allocate the same sizes again and again. Releasing a buffer while
 * earlier commands still use it is safe: WebGPU executes a queue's commands in order, so the
 * next user's writes come after them.
 */
/** A size class's free buffers, newest first, and their creation ranks (the sort key). */
interface FreeList {
  buffers: GPUBuffer[];
  ranks: number[];
}

/** A buffer's creation rank (Infinity: not made by the pool), size, usage; while free, its list
 * and the acquisition count it was released at. */
interface Slot {
  rank: number;
  size: number;
  usage: number;
  list: FreeList | undefined;
  at: number;
}

export class BufferPool {
  /**
   * Free buffers per size class and usage, sorted by creation order, the oldest last: acquire
   * hands out the oldest free one. A loop that allocates the same sizes in the same order (a
   * decoded token, a training step) then gets the same buffers back each time whatever order
   * it released them in, so bind groups made for them are found again (@attnkit/nn caches
   * them by buffer). Handing out the last released one instead permuted the buffers among a
   * token's outputs from token to token once more were free than a token needed (a second
   * generate in a process): every pass missed nn's cache and made its bind group anew (90 a
   * token, ~15% of a GPT-2 decoded token's host time on Dawn's null backend).
   */
  private readonly free = new Map<number, Map<number, FreeList>>();
  /**
   * What the pool knows of each buffer it has seen, read once: a GPUBuffer's size and usage are
   * getters into the WebGPU binding (in Node, a call into Dawn's), and release and acquire run
   * a few hundred times a decoded token; a string key per call and a WeakMap lookup per step of
   * the sorted insert made releaseNow ~6% of GPT decoding's host time on Dawn's null backend.
   */
  private readonly slots = new WeakMap<GPUBuffer, Slot>();
  /** The free buffers in the order they were released (oldest first), with their slots. */
  private readonly lru = new Map<GPUBuffer, Slot>();
  private cached = 0;
  /** Buffers handed out and not yet released, and their bytes. */
  live = 0;
  liveBytes = 0;
  /**
   * The most bytes handed out at once (liveBytes' peak) since the pool was made or
   * `resetHighWater()` last ran: what a caller with a GPU memory budget asserts against.
   */
  highWaterBytes = 0;
  /** Buffers created and destroyed by the pool over its life (a steady workload creates none). */
  created = 0;
  destroyed = 0;
  /** liveBytes' peak over the pool's life (resetHighWater leaves it): the cache's limit. */
  private peakLiveBytes = 0;

  constructor(
    private readonly device: GPUDevice,
    /**
     * Bytes kept for reuse at least; the pool keeps up to the most bytes it ever handed out at
     * once when that is more. Past the limit the buffers released longest ago are destroyed.
     */
    readonly maxCachedBytes = 512 * 1024 * 1024,
    /**
     * Buffers released within this many acquisitions are evicted only past
     * hardCacheLimitBytes (see cacheLimitBytes): a training step or a decoded token asks for
     * its sizes again within a few hundred to a few thousand (GPT-2 small's step: ~2,500).
     */
    readonly recentAcquires = 8192,
  ) {
    if (!Number.isInteger(recentAcquires) || recentAcquires < 0)
      throw new ValueError(
        `recentAcquires: expected a non-negative integer, got ${describe(recentAcquires)}`,
        'recentAcquires',
      );
  }

  /** Acquisitions so far: the clock that ages released buffers. */
  private acquires = 0;

  /**
   * Bytes of released buffers the pool keeps now, past which the ones released longest ago
   * are destroyed: max(maxCachedBytes, peak - liveBytes), where peak is the most bytes it ever
   * handed out at once. An iterative workload (a training step, a layer loop) releases what it
   * allocated and asks for the same sizes next time; capping the cache below its working set
   * destroyed and re-created hundreds of MiB of buffers every step (on the H200, a
   * TransformerBlock step at 1.6 GiB live spent ~60 ms of its 79 in that churn). Counting what is
   * live keeps live + cached near the peak: a new size evicts old ones instead of the pool
   * growing without bound. Buffers released within recentAcquires are kept up to
   * hardCacheLimitBytes (the peak and a quarter, at most 1 GiB more), though: a step's sizes
   * over time can need more buffers than its peak holds at once (a size wanted while its buffer
   * waits behind a fence), and evicting those made and destroyed buffers every step (2 ms of
   * the H200 block step's). `trim()` gives the cache back.
   */
  get cacheLimitBytes(): number {
    return Math.max(this.maxCachedBytes, this.peakLiveBytes - this.liveBytes);
  }

  /**
   * The limit recently released buffers are kept to: live + cached within the peak plus a
   * quarter of it, at most 1 GiB more (bounded: a process that trained near the GPU's memory
   * and then decodes must not hold twice its peak; the H200's 8K decoding slowed 2x with the
   * cache allowed to twice a 56 GiB peak).
   */
  get hardCacheLimitBytes(): number {
    const slack = Math.min(this.peakLiveBytes / 4, 2 ** 30);
    return Math.max(this.maxCachedBytes, this.peakLiveBytes + slack - this.liveBytes);
  }

  /**
   * Size classes: multiples of 256 bytes up to 64 KiB, then steps of 1/8 of the power of two
   * below, so a reused buffer wastes at most ~12%.
   */
  static sizeClass(bytes: number, cap = Number.POSITIVE_INFINITY): number {
    if (!Number.isInteger(bytes) || bytes < 0) {
      throw new ValueError(
        `bytes: expected a non-negative integer, got ${describe(bytes)}`,
        'bytes',
      );
    }
    if (typeof cap !== 'number' || Number.isNaN(cap) || cap < 4)
      throw new ValueError(`cap: expected a number of bytes >= 4, got ${describe(cap)}`, 'cap');
    const n = Math.max(bytes, 4);
    if (n <= 65536) return Math.ceil(n / 256) * 256;
    const step = 2 ** (Math.floor(Math.log2(n)) - 3);
    const size = Math.ceil(n / step) * step;
    // A request under `cap` (a binding or buffer limit) never gets a class past it: kernels bind
    // buffers whole, and rounding 2^31 - 2^26 bytes up to 2^31 passed Dawn's 2^31 - 4 on NVIDIA
    // (a validation error at dispatch for a tensor that fits). Such sizes get the words they need.
    if (size > cap && n <= cap) return Math.ceil(n / 4) * 4;
    return size;
  }

  /**
   * sizeClass's cap for a request: the device's maxStorageBufferBindingSize when one binding can
   * hold the request, else its maxBufferSize (a size class past it would fail to allocate);
   * unbounded on a device without limits (test doubles).
   */
  private capFor(bytes: number): number {
    const l = this.device.limits;
    const binding = l?.maxStorageBufferBindingSize ?? Number.POSITIVE_INFINITY;
    return bytes <= binding ? binding : (l?.maxBufferSize ?? Number.POSITIVE_INFINITY);
  }

  /** A buffer of at least `bytes` bytes (its `size` is the size class) with `usage`. */
  acquire(bytes: number, usage: GPUBufferUsageFlags, label?: string): GPUBuffer {
    const size = BufferPool.sizeClass(bytes, this.capFor(bytes));
    this.acquires++;
    const list = this.free.get(usage)?.get(size);
    let buffer = list?.buffers.pop();
    const made = !buffer;
    if (buffer) {
      list!.ranks.pop();
      this.cached -= size;
      this.lru.delete(buffer);
    } else {
      buffer = this.device.createBuffer({ size, usage, label });
      this.slots.set(buffer, { rank: this.created++, size, usage, list: undefined, at: 0 });
    }
    this.live++;
    this.liveBytes += size;
    if (this.liveBytes > this.highWaterBytes) this.highWaterBytes = this.liveBytes;
    if (this.liveBytes > this.peakLiveBytes) this.peakLiveBytes = this.liveBytes;
    // A new buffer may leave the cache over its (now lower) limit.
    if (made) this.evict(0);
    return buffer;
  }

  /**
   * Destroys the buffers released longest ago until `incoming` more bytes fit under
   * cacheLimitBytes, except that those released within recentAcquires go only past
   * hardCacheLimitBytes.
   */
  private evict(incoming: number): void {
    const limit = this.cacheLimitBytes;
    if (this.cached + incoming <= limit) return;
    const hard = this.hardCacheLimitBytes;
    const recent = this.acquires - this.recentAcquires;
    for (const [old, slot] of this.lru) {
      if (this.cached + incoming <= limit) break;
      // Oldest first: from here on every buffer is recent.
      if (slot.at > recent && this.cached + incoming <= hard) break;
      this.lru.delete(old);
      const list = slot.list!;
      const i = list.buffers.indexOf(old);
      list.buffers.splice(i, 1);
      list.ranks.splice(i, 1);
      this.cached -= slot.size;
      this.destroyBuffer(old);
    }
  }

  /**
   * Set by code that encodes GPU work later than its callers ask for it (@attnkit/nn's webgpu
   * kernels queue theirs): while it returns a promise, a released buffer goes back to the free
   * lists (or is destroyed) only once that promise settles, i.e. once the queued work that may
   * still read or write the buffer has been submitted. Queue order then makes reuse safe, as
   * for buffers released after a submit.
   */
  releaseFence: (() => Promise<unknown> | undefined) | undefined = undefined;

  /**
   * Called with each buffer the pool destroys, before it is destroyed: a cache of bind groups
   * (@attnkit/nn's) forgets the ones that bind it, which could not be submitted again.
   */
  onDestroy: ((buffer: GPUBuffer) => void) | undefined = undefined;

  private destroyBuffer(buffer: GPUBuffer): void {
    this.onDestroy?.(buffer);
    buffer.destroy();
    this.destroyed++;
  }

  release(buffer: GPUBuffer): void {
    const fence = this.releaseFence?.();
    if (fence) {
      const now = () => this.releaseNow(buffer);
      fence.then(now, now);
      return;
    }
    this.releaseNow(buffer);
  }

  /** release() without the fence: for buffers no queued work can use. */
  releaseNow(buffer: GPUBuffer): void {
    let slot = this.slots.get(buffer);
    if (!slot) {
      // A buffer the pool did not make sorts as the newest.
      slot = {
        rank: Number.POSITIVE_INFINITY,
        size: buffer.size,
        usage: buffer.usage,
        list: undefined,
        at: 0,
      };
      this.slots.set(buffer, slot);
    }
    const size = slot.size;
    this.live--;
    this.liveBytes -= size;
    const limit = this.hardCacheLimitBytes;
    if (size > limit) {
      this.destroyBuffer(buffer);
      return;
    }
    // Over the limit, the buffers unused longest go first: a workload that changed its sizes (f32
    // then f16, another batch shape) must not keep the old sizes cached while the new ones are
    // destroyed and re-made every step.
    this.evict(size);
    let bySize = this.free.get(slot.usage);
    if (!bySize) this.free.set(slot.usage, (bySize = new Map()));
    let list = bySize.get(size);
    if (!list) bySize.set(size, (list = { buffers: [], ranks: [] }));
    // Sorted newest first (acquire pops the oldest).
    const rank = slot.rank;
    const ranks = list.ranks;
    let lo = 0;
    let hi = ranks.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (ranks[mid]! >= rank) lo = mid + 1;
      else hi = mid;
    }
    if (lo === ranks.length) {
      list.buffers.push(buffer);
      ranks.push(rank);
    } else {
      list.buffers.splice(lo, 0, buffer);
      ranks.splice(lo, 0, rank);
    }
    slot.list = list;
    slot.at = this.acquires;
    this.lru.set(buffer, slot);
    this.cached += size;
  }

  /** Starts a new high-water mark at the bytes handed out now; returns them. */
  resetHighWater(): number {
    this.highWaterBytes = this.liveBytes;
    return this.liveBytes;
  }

  /** Bytes held for reuse. */
  get cachedBytes(): number {
    return this.cached;
  }

  /** Destroys every cached buffer (live ones are untouched). */
  trim(): void {
    for (const bySize of this.free.values())
      for (const list of bySize.values()) for (const b of list.buffers) this.destroyBuffer(b);
    this.free.clear();
    this.lru.clear();
    this.cached = 0;
  }
}
