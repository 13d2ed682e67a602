import type { DType, TypedArray } from './dtype.js';

/**
 * Where a tensor's elements live. `cpu` holds a TypedArray; other devices (webgpu) implement
 * this interface in their own package and register nothing here, so this package stays free
 * of device code.
 */
export interface Storage {
  readonly device: string;
  readonly dtype: DType;
  /** Number of elements (not bytes). */
  readonly length: number;
  /** Releases device memory; a no-op on the CPU. */
  dispose(): void;
}

export class CpuStorage implements Storage {
  readonly device = 'cpu';
  constructor(
    readonly dtype: DType,
    readonly data: TypedArray,
  ) {}
  get length(): number {
    return this.data.length;
  }
  dispose(): void {}
}
