import {
  assertShape,
  bytesPerElement,
  DeviceError,
  type DType,
  DTypeError,
  describe,
  numel,
  type Shape,
  type Storage,
  Tensor,
  type TypedArray,
  ValueError,
  viewStorage,
} from '@attnkit/tensor';
import type { WebGpuContext } from './context.js';

/** Dtypes a WebGPU buffer can hold (WGSL has no f64). */
export const WEBGPU_DTYPES: readonly DType[] = ['f32', 'f16', 'bf16', 'i32', 'i8', 'u8'];

/**
 * Tensor storage in a GPUBuffer. Elements sit densely in the buffer's bytes, so 16-bit and 8-bit
 * dtypes are packed two or four to a u32 word: shaders read them as array<u32> and unpack
 * (unpack2x16float, bit shifts), which needs no shader-f16. The buffer comes from the
 * context's pool and returns there on dispose().
 */
export class WebGpuStorage implements Storage {
  readonly device = 'webgpu';
  private disposed = false;
  /** The scope (WebGpuContext.scope) that will dispose this storage, if any; the context sets it. */
  scope: Set<WebGpuStorage> | undefined;

  /** Registers with `ctx`'s current scope and its garbage-collection safety net. */
  constructor(
    readonly ctx: WebGpuContext,
    readonly dtype: DType,
    readonly length: number,
    readonly buffer: GPUBuffer,
  ) {
    ctx.track(this);
  }

  /** Bytes the elements occupy (the buffer may be larger: pooled size class). */
  get byteLength(): number {
    return this.length * bytesPerElement(this.dtype);
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Copies the elements back (f16/bf16 as Uint16Array bit patterns, as CpuStorage holds them). */
  async read(): Promise<TypedArray> {
    this.checkLive('tensor', 'read');
    const bytes = await this.ctx.readBuffer(this.buffer, this.byteLength);
    return viewStorage(this.dtype, bytes, 0, this.length);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.ctx.untrack(this);
    this.ctx.pool.release(this.buffer);
  }

  /** Throws DeviceError naming `argument` (and the operation, when given) once disposed. */
  checkLive(argument: string, op?: string): void {
    if (this.disposed) {
      throw new DeviceError(
        `${argument}: expected a live webgpu tensor, got one whose storage was disposed${op ? ` (${op})` : ''}`,
        argument,
      );
    }
  }
}

function checkDType(dtype: DType, argument: string): void {
  if (!WEBGPU_DTYPES.includes(dtype)) {
    throw new DTypeError(
      `${argument}: expected one of ${WEBGPU_DTYPES.join(', ')} on webgpu (WGSL has no f64), got ${describe(dtype)}`,
      argument,
    );
  }
}

function checkContext(ctx: unknown): WebGpuContext {
  const c = ctx as WebGpuContext;
  if (!c || typeof c !== 'object' || !c.device || !c.pool || typeof c.track !== 'function') {
    throw new ValueError(
      `ctx: expected a WebGpuContext (createWebGpuContext/getWebGpuContext), got ${describe(ctx)}`,
      'ctx',
    );
  }
  return c;
}

/** Uploads a CPU tensor (made contiguous first) to a new webgpu tensor of the same dtype and shape. */
export function toWebGpu(tensor: Tensor, ctx: WebGpuContext): Tensor {
  if (!(tensor instanceof Tensor)) {
    throw new ValueError(`tensor: expected a Tensor, got ${describe(tensor)}`, 'tensor');
  }
  checkContext(ctx);
  if (tensor.device === 'webgpu') return tensor;
  if (tensor.device !== 'cpu') {
    throw new DeviceError(`tensor: expected a cpu tensor, got one on ${tensor.device}`, 'tensor');
  }
  checkDType(tensor.dtype, 'tensor');
  const data = tensor.data();
  const buffer = ctx.createFromData(data, `tensor ${tensor.dtype}[${tensor.shape}]`);
  return new Tensor(new WebGpuStorage(ctx, tensor.dtype, tensor.size, buffer), tensor.shape);
}

/**
 * A new webgpu tensor whose contents are unspecified (NaN when ctx.poisonOutputs is set):
 * what kernels allocate for their outputs.
 */
export function emptyWebGpu(shape: Shape, dtype: DType, ctx: WebGpuContext): Tensor {
  const sh = assertShape(shape);
  checkDType(dtype, 'dtype');
  checkContext(ctx);
  const n = numel(sh);
  const buffer = ctx.createOutput(n * bytesPerElement(dtype), `output ${dtype}[${sh}]`);
  return new Tensor(new WebGpuStorage(ctx, dtype, n, buffer), sh);
}

/**
 * The storage of a webgpu tensor that a kernel can bind whole: contiguous, at offset 0.
 * `argument` names the tensor in the error.
 */
export function webGpuStorageOf(t: Tensor, argument: string): WebGpuStorage {
  if (!(t instanceof Tensor)) {
    throw new ValueError(`${argument}: expected a Tensor, got ${describe(t)}`, argument);
  }
  if (!(t.storage instanceof WebGpuStorage)) {
    throw new DeviceError(
      `${argument}: expected a webgpu tensor (toWebGpu), got one on ${t.device}`,
      argument,
    );
  }
  if (!t.isContiguous() || t.offset !== 0) {
    throw new DeviceError(
      `${argument}: expected a contiguous webgpu tensor at offset 0, got a strided view (strides ${describe([...t.strides])}, offset ${t.offset}); read it back with toCpu() and upload a contiguous copy`,
      argument,
    );
  }
  t.storage.checkLive(argument);
  return t.storage;
}
