import { AttnkitError, allocStorage, describe, ValueError } from '@attnkit/tensor';
import { counts, type IOCounts, positiveInt } from './problem.js';

/**
 * A two-level memory (Dao et al. 2022, Sec. 2.1; Hong & Kung's red-blue pebble game): a slow
 * memory of named arrays and a fast memory of `capacity` elements. Arithmetic may only touch
 * fast buffers, and data moves only through explicit `load`/`store` calls, each counted element
 * by element. Nothing is cached behind the algorithm's back: loading the same element twice
 * costs two reads.
 */

/** Fast memory would hold more than its capacity: the algorithm's working set does not fit. */
export class FastMemoryOverflowError extends AttnkitError {
  override name = 'FastMemoryOverflowError';
  readonly requested: number;
  readonly inUse: number;
  readonly capacity: number;
  constructor(label: string, requested: number, inUse: number, capacity: number) {
    super(
      `M: fast memory of ${capacity} elements cannot hold "${label}" (${requested} elements) beside the ${inUse} in use`,
      'M',
    );
    this.requested = requested;
    this.inUse = inUse;
    this.capacity = capacity;
  }
}

/** A row-major `rows x cols` array in slow memory. `data` exists only in compute mode. */
export interface SlowArray {
  readonly name: string;
  readonly rows: number;
  readonly cols: number;
  readonly data: Float64Array | undefined;
}

/** A scratch buffer in fast memory. `data` exists only in compute mode (filled with NaN on alloc). */
export interface FastBuffer {
  readonly label: string;
  readonly length: number;
  readonly data: Float64Array | undefined;
}

/** Flat element positions in a slow array: a contiguous range, or a list of indices. */
export type Span = { readonly start: number; readonly count: number } | readonly number[];

/** A rectangle of a slow array; it lands in fast memory as a contiguous `rows x cols` block. */
export interface Tile {
  readonly row: number;
  readonly rows: number;
  readonly col: number;
  readonly cols: number;
}

export interface TwoLevelMemoryOptions {
  /** Carry values (float64) so the algorithms' arithmetic can be checked; default false (counts only). */
  compute?: boolean;
}

export class TwoLevelMemory {
  readonly capacity: number;
  readonly compute: boolean;
  private readonly arrays = new Map<string, SlowArray>();
  private readonly live = new Set<FastBuffer>();
  private used = 0;
  private peak = 0;
  private readCount = 0;
  private writeCount = 0;

  constructor(capacity: number, options: TwoLevelMemoryOptions = {}) {
    this.capacity = positiveInt(capacity, 'capacity');
    if (options === null || typeof options !== 'object') {
      throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
    }
    this.compute = options.compute ?? false;
  }

  /**
   * Declares a slow-memory array. In compute mode `init` gives its values; without it the array
   * starts as NaN, so reading a value no one wrote poisons the result.
   */
  declare(name: string, rows: number, cols: number, init?: Float64Array): SlowArray {
    if (typeof name !== 'string' || name.length === 0) {
      throw new ValueError(`name: expected a non-empty string, got ${describe(name)}`, 'name');
    }
    if (this.arrays.has(name)) {
      throw new ValueError(`name: expected a new array name, got "${name}" twice`, 'name');
    }
    positiveInt(rows, 'rows');
    positiveInt(cols, 'cols');
    let data: Float64Array | undefined;
    if (this.compute) {
      if (init !== undefined) {
        if (!(init instanceof Float64Array) || init.length !== rows * cols) {
          throw new ValueError(
            `init: expected a Float64Array of ${rows * cols} elements for "${name}", got ${describe(init)}`,
            'init',
          );
        }
        data = init.slice();
      } else {
        // Through @attnkit/tensor's allocator: an array past what the runtime can hold is an
        // AllocationError naming [rows, cols], not the engine's RangeError.
        data = allocStorage('f64', rows * cols, [rows, cols]).fill(Number.NaN);
      }
    }
    const array: SlowArray = { name, rows, cols, data };
    this.arrays.set(name, array);
    return array;
  }

  /** The slow array called `name`. */
  array(name: string): SlowArray {
    const array = this.arrays.get(name);
    if (array === undefined) {
      throw new ValueError(
        `name: expected one of ${describe([...this.arrays.keys()])}, got ${describe(name)}`,
        'name',
      );
    }
    return array;
  }

  /** Reserves `length` elements of fast memory; throws FastMemoryOverflowError past the capacity. */
  alloc(label: string, length: number): FastBuffer {
    positiveInt(length, 'length');
    if (this.used + length > this.capacity) {
      throw new FastMemoryOverflowError(label, length, this.used, this.capacity);
    }
    const buffer: FastBuffer = {
      label,
      length,
      data: this.compute ? new Float64Array(length).fill(Number.NaN) : undefined,
    };
    this.live.add(buffer);
    this.used += length;
    if (this.used > this.peak) this.peak = this.used;
    return buffer;
  }

  free(...buffers: FastBuffer[]): void {
    for (const buffer of buffers) {
      if (!this.live.delete(buffer)) {
        throw new ValueError(
          `buffer: expected a live fast buffer, got ${describe(buffer?.label ?? buffer)} (freed or foreign)`,
          'buffer',
        );
      }
      this.used -= buffer.length;
    }
  }

  /** Copies `span` of `src` (slow) into `dst` from `offset` on; reads += its length. */
  load(src: SlowArray, span: Span, dst: FastBuffer, offset = 0): void {
    const n = this.checkSpan(src, span);
    this.checkBuffer(dst, offset, n);
    this.readCount += n;
    if (this.compute) transfer(src.data!, span, dst.data!, offset, true);
  }

  /** Copies `src` (fast) from `offset` on into `span` of `dst` (slow); writes += its length. */
  store(dst: SlowArray, span: Span, src: FastBuffer, offset = 0): void {
    const n = this.checkSpan(dst, span);
    this.checkBuffer(src, offset, n);
    this.writeCount += n;
    if (this.compute) transfer(dst.data!, span, src.data!, offset, false);
  }

  /** Loads a rectangle of `src` into `dst` as a contiguous `rows x cols` block; reads += rows * cols. */
  loadTile(src: SlowArray, tile: Tile, dst: FastBuffer, offset = 0): void {
    const n = this.checkTile(src, tile);
    this.checkBuffer(dst, offset, n);
    this.readCount += n;
    if (this.compute) copyTile(src, tile, dst.data!, offset, true);
  }

  /** Stores a contiguous `rows x cols` block of `src` into a rectangle of `dst`; writes += rows * cols. */
  storeTile(dst: SlowArray, tile: Tile, src: FastBuffer, offset = 0): void {
    const n = this.checkTile(dst, tile);
    this.checkBuffer(src, offset, n);
    this.writeCount += n;
    if (this.compute) copyTile(dst, tile, src.data!, offset, false);
  }

  get reads(): number {
    return this.readCount;
  }
  get writes(): number {
    return this.writeCount;
  }
  /** Fast-memory elements currently allocated. */
  get inUse(): number {
    return this.used;
  }
  get peakFast(): number {
    return this.peak;
  }
  counts(): IOCounts {
    return counts(this.readCount, this.writeCount, this.peak);
  }

  private checkSpan(array: SlowArray, span: Span): number {
    const size = array.rows * array.cols;
    if (Array.isArray(span)) {
      for (const i of span as readonly number[]) {
        if (!Number.isInteger(i) || i < 0 || i >= size) {
          throw new ValueError(
            `span: expected indices in [0, ${size}) of "${array.name}", got ${describe(i)}`,
            'span',
          );
        }
      }
      return span.length;
    }
    const range = span as { start: unknown; count: unknown };
    if (range === null || typeof range !== 'object') {
      throw new ValueError(
        `span: expected { start, count } or an index list, got ${describe(span)}`,
        'span',
      );
    }
    const { start, count } = range;
    if (
      !Number.isInteger(start) ||
      !Number.isInteger(count) ||
      (start as number) < 0 ||
      (count as number) < 1 ||
      (start as number) + (count as number) > size
    ) {
      throw new ValueError(
        `span: expected a non-empty range inside the ${size} elements of "${array.name}", got start ${describe(start)}, count ${describe(count)}`,
        'span',
      );
    }
    return count as number;
  }

  private checkTile(array: SlowArray, tile: Tile): number {
    const { row, rows, col, cols } = tile ?? ({} as Tile);
    const ok =
      Number.isInteger(row) &&
      Number.isInteger(rows) &&
      Number.isInteger(col) &&
      Number.isInteger(cols) &&
      row >= 0 &&
      col >= 0 &&
      rows >= 1 &&
      cols >= 1 &&
      row + rows <= array.rows &&
      col + cols <= array.cols;
    if (!ok) {
      throw new ValueError(
        `tile: expected a non-empty rectangle inside "${array.name}" (${array.rows} x ${array.cols}), got rows ${describe(row)}+${describe(rows)}, cols ${describe(col)}+${describe(cols)}`,
        'tile',
      );
    }
    return rows * cols;
  }

  private checkBuffer(buffer: FastBuffer, offset: number, n: number): void {
    if (!this.live.has(buffer)) {
      throw new ValueError(
        `buffer: expected a live fast buffer, got ${describe(buffer?.label ?? buffer)} (freed or foreign)`,
        'buffer',
      );
    }
    if (!Number.isInteger(offset) || offset < 0 || offset + n > buffer.length) {
      throw new ValueError(
        `offset: expected ${n} elements to fit in "${buffer.label}" (${buffer.length}) from the offset, got offset ${describe(offset)}`,
        'offset',
      );
    }
  }
}

function transfer(
  slow: Float64Array,
  span: Span,
  fast: Float64Array,
  offset: number,
  toFast: boolean,
): void {
  if (Array.isArray(span)) {
    const idx = span as readonly number[];
    for (let t = 0; t < idx.length; t++) {
      if (toFast) fast[offset + t] = slow[idx[t]!]!;
      else slow[idx[t]!] = fast[offset + t]!;
    }
    return;
  }
  const { start, count } = span as { start: number; count: number };
  if (toFast) fast.set(slow.subarray(start, start + count), offset);
  else slow.set(fast.subarray(offset, offset + count), start);
}

function copyTile(
  array: SlowArray,
  tile: Tile,
  fast: Float64Array,
  offset: number,
  toFast: boolean,
): void {
  const slow = array.data!;
  for (let r = 0; r < tile.rows; r++) {
    const s = (tile.row + r) * array.cols + tile.col;
    const f = offset + r * tile.cols;
    if (toFast) fast.set(slow.subarray(s, s + tile.cols), f);
    else slow.set(fast.subarray(f, f + tile.cols), s);
  }
}
