/**
 * Every buffer the TS kernels create goes through here, so tests can poison it (fill with NaN
 * to prove each element is written) and account the scratch (to prove no N x N buffer exists).
 * Not part of the public API.
 */

/** `output`: returned (or encoded into what is returned); `tile`: tile scratch, bounded by
 * workspaceBytes(); `rows`: one f32 per query row of the heads in flight (FA1's m and l,
 * the backward's D), which the papers keep in slow memory. */
export type AllocKind = 'output' | 'tile' | 'rows';

export type AllocHook = (array: Float32Array | Int32Array, kind: AllocKind) => void;

let hook: AllocHook | undefined;

/** Installs `next` (or none) and returns the hook it replaces. */
export function setAllocHook(next: AllocHook | undefined): AllocHook | undefined {
  const previous = hook;
  hook = next;
  return previous;
}

export function allocF32(length: number, kind: AllocKind): Float32Array {
  const a = new Float32Array(length);
  hook?.(a, kind);
  return a;
}

/**
 * allocF32 for an output that its kernel writes in full (every element, masked rows included),
 * in Node without zero-filling: V8 zero-fills a new Float32Array (calloc: a fresh 4 MiB output
 * cost 0.6-0.9 ms with its page faults on this project's 2-core VM, against 0.1-0.4 ms
 * uninitialized, which malloc can serve from pages already mapped). Elsewhere (no Buffer) a
 * plain Float32Array. Only for kernels whose tests poison their outputs through this module
 * (a NaN left anywhere fails them), so no stale heap byte can reach a caller.
 */
export function allocF32Written(length: number, kind: AllocKind): Float32Array {
  const B = (globalThis as { Buffer?: { allocUnsafeSlow(n: number): Uint8Array } }).Buffer;
  // Node 20-21 cap a Buffer at 2^32 bytes where a Float32Array goes further: past 2 GiB (where
  // the zero fill no longer matters beside the kernel) the plain array.
  const a =
    B === undefined || length === 0 || 4 * length > ALLOC_UNSAFE_MAX_BYTES
      ? new Float32Array(length)
      : (() => {
          const u = B.allocUnsafeSlow(4 * length);
          return new Float32Array(u.buffer, u.byteOffset, length);
        })();
  hook?.(a, kind);
  return a;
}

/** allocF32Written's largest uninitialized allocation (bytes). */
export const ALLOC_UNSAFE_MAX_BYTES = 2 ** 31;

export function allocI32(length: number, kind: AllocKind): Int32Array {
  const a = new Int32Array(length);
  hook?.(a, kind);
  return a;
}
