import {
  AttnkitError,
  BackendUnavailableError,
  DeviceError,
  describe,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';

/**
 * The family x backend registry (DESIGN.md "The skeleton and the families"; the shape of fla's
 * per-op backend registry). A family package registers one kernel per (pass, backend); the
 * family's public function, `attnkit verify`, `attnkit bench` and the conformance runner all
 * select through here, so a new family or backend is one registration.
 */

export type KernelPass = 'forward' | 'backward';

/** What a kernel is asked to run: enough to decide support without running it. */
export interface KernelRequest {
  family: string;
  pass: KernelPass;
  /** Device of the inputs ('cpu' or 'webgpu'). */
  device: string;
  /** dtype of q. */
  dtype: string;
  /** The family's options as the caller passed them (already validated by the family). */
  options: Readonly<Record<string, unknown>>;
}

/** Named input tensors (q, k, v; o, lse, do for softmax backward) -> named outputs. */
export type KernelTensors = Record<string, Tensor>;

export interface KernelRegistration {
  family: string;
  pass: KernelPass;
  backend: string;
  /** Higher wins among the backends that support a request on its device. */
  priority: number;
  /** Devices whose tensors this backend reads. */
  devices: readonly string[];
  /** Whether the backend can run at all here (addon built, adapter present): true or why not. */
  available?: () => true | string;
  /** true, or a sentence saying why this request is not supported. */
  supports: (request: KernelRequest) => true | string;
  /** Runs the pass: inputs by name, options as the family's public function takes them. */
  run: (inputs: KernelTensors, options: Record<string, unknown>) => Promise<KernelTensors>;
  /** Output names this pass produces (verify compares each reference tensor by name). */
  outputs: readonly string[];
}

/** No registered kernel can run a request; the message lists each backend's reason. */
export class UnsupportedError extends AttnkitError {
  override name = 'UnsupportedError';
  constructor(
    message: string,
    argument: string,
    /** backend -> why it declined. */
    readonly reasons: Readonly<Record<string, string>>,
  ) {
    super(message, argument);
  }
}

const registry: KernelRegistration[] = [];

/** Adds (or, for the same family / pass / backend, replaces) a kernel. */
export function registerKernel(reg: KernelRegistration): void {
  for (const key of ['family', 'pass', 'backend'] as const) {
    if (typeof reg[key] !== 'string' || reg[key].length === 0)
      throw new ValueError(
        `registration.${key}: expected a non-empty string, got ${describe(reg[key])}`,
        `registration.${key}`,
      );
  }
  if (!Number.isFinite(reg.priority))
    throw new ValueError(
      `registration.priority: expected a finite number, got ${describe(reg.priority)}`,
      'registration.priority',
    );
  const at = registry.findIndex(
    (r) => r.family === reg.family && r.pass === reg.pass && r.backend === reg.backend,
  );
  if (at >= 0) registry[at] = reg;
  else registry.push(reg);
}

/** Registered kernels, optionally of one family / pass, highest priority first. */
export function registeredKernels(
  filter: { family?: string; pass?: KernelPass } = {},
): KernelRegistration[] {
  return registry
    .filter(
      (r) =>
        (filter.family === undefined || r.family === filter.family) &&
        (filter.pass === undefined || r.pass === filter.pass),
    )
    .sort((a, b) => b.priority - a.priority);
}

/** Families with at least one registered kernel. */
export function registeredFamilies(): string[] {
  return [...new Set(registry.map((r) => r.family))].sort();
}

/**
 * Why `reg` cannot run `request` (undefined when it can): wrong device, unavailable, or its
 * own supports() answer.
 */
export function declineReason(reg: KernelRegistration, request: KernelRequest): string | undefined {
  if (!reg.devices.includes(request.device))
    return `reads ${reg.devices.join('/')} tensors, the inputs are on ${request.device}`;
  const avail = reg.available?.() ?? true;
  if (avail !== true) return avail;
  const ok = reg.supports(request);
  return ok === true ? undefined : ok;
}

/**
 * The kernel to run: the named backend (a typed error saying why when it cannot run the
 * request), else the highest-priority backend of the inputs' device that supports it.
 */
export function selectKernel(request: KernelRequest, backend?: string): KernelRegistration {
  const candidates = registeredKernels({ family: request.family, pass: request.pass });
  if (candidates.length === 0) {
    throw new UnsupportedError(
      `family: no kernel is registered for ${request.family} ${request.pass} (import its package first)`,
      'family',
      {},
    );
  }
  if (backend !== undefined) {
    const reg = candidates.find((r) => r.backend === backend);
    if (!reg) {
      throw new ValueError(
        `backend: expected one of ${candidates.map((r) => r.backend).join(', ')} for ${request.family} ${request.pass}, got ${describe(backend)}`,
        'backend',
      );
    }
    // A named backend that cannot take these tensors or is not available here gets the
    // precise error (nothing moves between devices implicitly; no silent fallback).
    if (!reg.devices.includes(request.device)) {
      throw new DeviceError(
        `q: expected a tensor on ${reg.devices.join(' or ')} for backend '${backend}', got one on ${request.device}`,
        'q',
      );
    }
    const avail = reg.available?.() ?? true;
    if (avail !== true) {
      throw new BackendUnavailableError(
        `backend: expected the ${backend} backend, but it is unavailable: ${avail}`,
        'backend',
      );
    }
    const why = declineReason(reg, request);
    if (why !== undefined) {
      throw new UnsupportedError(
        `backend: '${backend}' cannot run this ${request.family} ${request.pass}: ${why}`,
        'backend',
        { [backend]: why },
      );
    }
    return reg;
  }
  const reasons: Record<string, string> = {};
  for (const reg of candidates) {
    const why = declineReason(reg, request);
    if (why === undefined) return reg;
    reasons[reg.backend] = why;
  }
  throw new UnsupportedError(
    `options: no backend runs this ${request.family} ${request.pass} on ${request.device} ${request.dtype}: ${Object.entries(
      reasons,
    )
      .map(([b, w]) => `${b}: ${w}`)
      .join('; ')}`,
    'options',
    reasons,
  );
}
