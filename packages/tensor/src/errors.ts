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
