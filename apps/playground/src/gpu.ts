import { createWebGpuContext, type WebGpuContext } from '@attnkit/webgpu';
import { describeError } from './ui.js';

/**
 * The page's one WebGPU context. A lost device (driver reset, `device.destroy()`, the GPU
 * process crashing) is reported through `onLost` and the context dropped, so the next run asks
 * for a new one instead of failing on a dead device forever.
 */

export type GpuState =
  | { kind: 'ready'; ctx: WebGpuContext }
  | { kind: 'none'; why: string }
  | { kind: 'lost'; why: string };

let current: Promise<GpuState> | undefined;
const listeners: ((s: GpuState) => void)[] = [];

export function onGpuState(f: (s: GpuState) => void): void {
  listeners.push(f);
}

function emit(s: GpuState): void {
  for (const f of listeners) f(s);
}

/**
 * How long a pipeline may take to compile: 30 s, or `?pipelineTimeoutMs=N` in the page's URL
 * (a software adapter such as SwiftShader on a loaded machine can need more; the e2e test
 * passes it).
 */
function pipelineTimeoutMs(): number {
  const raw =
    typeof location === 'undefined'
      ? null
      : new URLSearchParams(location.search).get('pipelineTimeoutMs');
  const n = raw === null ? Number.NaN : Number(raw);
  return Number.isFinite(n) && n > 0 ? n : 30_000;
}

async function open(): Promise<GpuState> {
  if (typeof navigator === 'undefined' || !('gpu' in navigator) || !navigator.gpu) {
    return {
      kind: 'none',
      why: 'navigator.gpu is missing (this browser or context has no WebGPU)',
    };
  }
  try {
    // warnLeaks off: every run disposes its tensors through ctx.scope; the console stays quiet.
    const ctx = await createWebGpuContext({
      warnLeaks: false,
      pipelineTimeoutMs: pipelineTimeoutMs(),
    });
    ctx.device.lost.then((info) => {
      const message = (info.message || 'no message').replace(/\.+$/, '');
      const why = `device lost (${info.reason || 'unknown'}): ${message}`;
      current = undefined;
      emit({ kind: 'lost', why });
    });
    return { kind: 'ready', ctx };
  } catch (e) {
    return { kind: 'none', why: describeError(e) };
  }
}

/** The context, opened on first use (and again after a loss). */
export function gpu(): Promise<GpuState> {
  if (!current) {
    current = open().then((s) => {
      if (s.kind !== 'ready') current = undefined;
      emit(s);
      return s;
    });
  }
  return current;
}

/** The context or a clear error for a run that asked for webgpu. */
export async function requireGpu(): Promise<WebGpuContext> {
  const s = await gpu();
  if (s.kind !== 'ready') throw new Error(`webgpu backend unavailable: ${s.why}; pick ts`);
  s.ctx.checkAlive();
  return s.ctx;
}
