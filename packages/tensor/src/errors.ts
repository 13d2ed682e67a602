/**
 * Typed errors shared by every attnkit package. Each names the argument at fault, what was
 * expected and what came, so a user can fix the call without reading our source.
 */
export class AttnkitError extends Error {
  override name = 'AttnkitError';
  /** The argument (or file, or option) the error is about, when there is one. */
  readonly argument: string | undefined;
  constructor(message: string, argument?: string) {
    super(message);
    this.argument = argument;
  }
}

/** A tensor's shape (rank or a dimension) does not fit what the call needs. */
export class ShapeError extends AttnkitError {
  override name = 'ShapeError';
}

/** A tensor's dtype is not one the call accepts. */
export class DTypeError extends AttnkitError {
  override name = 'DTypeError';
}

/** An option or scalar argument is out of its domain (NaN scale, bad window, non-monotone offsets...). */
export class ValueError extends AttnkitError {
  override name = 'ValueError';
}

/** Tensors live on different devices, or on a device the call cannot use. */
export class DeviceError extends AttnkitError {
  override name = 'DeviceError';
}

/** A file (e.g. safetensors) is malformed: truncated, inconsistent, or of an unknown format. */
export class FormatError extends AttnkitError {
  override name = 'FormatError';
}

/** A backend was asked for but is not available here (no adapter, addon not built). */
export class BackendUnavailableError extends AttnkitError {
  override name = 'BackendUnavailableError';
}

/**
 * A tensor (or array) larger than the runtime can hold: its element count is not a safe
 * integer, it is past the engine's typed-array limit (2^32 elements in Node 20), or the engine
 * could not get the memory. Thrown in place of the engine's bare RangeError, naming the shape,
 * the dtype and the bytes requested.
 */
export class AllocationError extends AttnkitError {
  override name = 'AllocationError';
  readonly shape: readonly number[];
  readonly dtype: string;
  /** Bytes requested (not exact when they exceed 2^53). */
  readonly bytes: number;
  constructor(
    shape: readonly number[],
    dtype: string,
    bytes: number,
    reason: string,
    argument = 'shape',
  ) {
    super(
      `${argument}: [${shape.join(', ')}] of ${dtype} needs ${formatBytes(bytes)}, more than this runtime can allocate (${reason})`,
      argument,
    );
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.bytes = bytes;
  }
}

/** A byte count for a message: exact below 2^53, with a binary-prefixed size beside it. */
export function formatBytes(bytes: number): string {
  const exact = Number.isSafeInteger(bytes) ? String(bytes) : bytes.toExponential(3);
  const units = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let size = bytes;
  let unit = '';
  for (const u of units) {
    if (size < 1024) break;
    size /= 1024;
    unit = u;
  }
  return unit === '' ? `${exact} bytes` : `${exact} bytes (${size.toFixed(1)} ${unit})`;
}

/** Describes a value for an error message: short, and never the whole of a large array. */
export function describe(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null) return 'null';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : String(value);
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) {
    const head = value.slice(0, 8).map(describe).join(', ');
    return `[${head}${value.length > 8 ? ', ...' : ''}]`;
  }
  if (ArrayBuffer.isView(value))
    return `${value.constructor.name}(${(value as Uint8Array).length})`;
  if (typeof value === 'object') return (value as object).constructor?.name ?? 'object';
  return String(value);
}
