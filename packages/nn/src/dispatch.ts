import { UnsupportedError } from '@attnkit/attention';
import {
  BackendUnavailableError,
  DeviceError,
  DTypeError,
  describe,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import { registerNativeKernels } from './kernels/native/index.js';
import type { KernelName, Kernels } from './kernels/table.js';
import { tsKernels } from './kernels/ts/index.js';

/**
 * The op table: (kernel, backend) -> function. The ts kernels are in it from the start (no
 * import side effects); native (kernels/native, on the first cpu op) and webgpu register
 * theirs. A kernel missing for the backend an op runs on is an UnsupportedError naming both:
 * nothing falls back to another backend.
 */
const table = new Map<string, Partial<Kernels>>([['ts', { ...tsKernels }]]);

/**
 * Which backend runs ops on tensors of each device. 'cpu' is decided on its first op unless set:
 * 'native' when the engine loads (registerNativeKernels), else 'ts' (@attnkit/native has warned
 * once why; outside Node silently).
 */
const deviceBackend = new Map<string, string>([['webgpu', 'webgpu']]);

function defaultBackend(device: string): string | undefined {
  if (device !== 'cpu') return undefined;
  const backend = registerNativeKernels() === true ? 'native' : 'ts';
  deviceBackend.set(device, backend);
  return backend;
}

export function registerKernel<K extends KernelName>(
  kernel: K,
  backend: string,
  fn: Kernels[K],
): void {
  if (typeof fn !== 'function')
    throw new ValueError(`fn: expected a function, got ${describe(fn)}`, 'fn');
  let entry = table.get(backend);
  if (!entry) table.set(backend, (entry = {}));
  entry[kernel] = fn;
}

/**
 * Runs the ops on `device`'s tensors with `backend` (e.g. setDeviceBackend('cpu', 'ts') to
 * force the ts kernels). 'native' registers the native kernels first: a BackendUnavailableError
 * saying why when the engine does not load.
 */
export function setDeviceBackend(device: string, backend: string): void {
  if (typeof backend !== 'string' || backend.length === 0)
    throw new ValueError(
      `backend: expected a non-empty string, got ${describe(backend)}`,
      'backend',
    );
  if (backend === 'native') {
    const ok = registerNativeKernels();
    if (ok !== true)
      throw new BackendUnavailableError(`backend: 'native' is unavailable: ${ok}`, 'backend');
  }
  deviceBackend.set(device, backend);
}

/** The backend ops on `device`'s tensors run with (deciding 'cpu' if no op has yet). */
export function deviceBackendOf(device: string): string | undefined {
  return deviceBackend.get(device) ?? defaultBackend(device);
}

export function registeredKernelNames(backend: string): KernelName[] {
  return Object.keys(table.get(backend) ?? {}) as KernelName[];
}

/**
 * The kernels of `backend` as `op` sees them: looking up one the backend lacks throws the
 * UnsupportedError naming the op, the kernel and the backend.
 */
export function kernelsFor(op: string, backend: string): Kernels {
  const key = `${op}\u0000${backend}`;
  let view = views.get(key);
  if (!view) {
    // The proxy reads the table on every access, so a kernel registered later is seen.
    view = new Proxy({} as Kernels, {
      // `name in kernels`: whether the backend has it (optional kernels such as addLayerNorm).
      has(_, name: string) {
        return table.get(backend)?.[name as KernelName] !== undefined;
      },
      get(_, name: string) {
        const fn = table.get(backend)?.[name as KernelName];
        if (!fn) {
          const why = `backend '${backend}' has no '${name}' kernel`;
          throw new UnsupportedError(`${op}: ${why}`, op, { [backend]: why });
        }
        return fn;
      },
    });
    views.set(key, view);
  }
  return view;
}

const views = new Map<string, Kernels>();

/**
 * The backend for an op's tensors: one device for all (a mix is a DeviceError naming the op)
 * and, among `floats`, one floating dtype (a mix is a DTypeError naming the op).
 */
export function backendFor(op: string, tensors: readonly Tensor[], floats = tensors): string {
  const device = tensors[0]?.device ?? 'cpu';
  for (const t of tensors) {
    if (t.device !== device)
      throw new DeviceError(
        `${op}: expected every tensor on one device, got ${device} and ${t.device} (move one explicitly)`,
        op,
      );
  }
  const dtype = floats[0]?.dtype;
  for (const t of floats) {
    if (t.dtype !== dtype)
      throw new DTypeError(
        `${op}: expected one floating dtype for every input, got ${dtype} and ${t.dtype}`,
        op,
      );
  }
  const backend = deviceBackendOf(device);
  if (!backend) {
    const why = `no backend runs tensors on device '${device}'`;
    throw new UnsupportedError(`${op}: ${why}`, op, {});
  }
  return backend;
}
