import { CORE_DEFAULT_LIMITS, createWebGpuContext, type WebGpuContext } from '@attnkit/webgpu';

export { CORE_DEFAULT_LIMITS };

/**
 * Test support (not exported by the package): a WebGPU context with WebGPU's *default* limits
 * and no optional feature — what a low-end or mobile GPU gives (createWebGpuContext's
 * `limits: 'default'`, `features: []`). Outputs start as NaN (poisonOutputs). With
 * ATTNKIT_ALLOW_NO_WEBGPU=1 a machine without an adapter resolves to undefined (the caller skips).
 */
export async function defaultLimitsContext(): Promise<WebGpuContext | undefined> {
  let ctx: WebGpuContext;
  try {
    ctx = await createWebGpuContext({ limits: 'default', features: [] });
  } catch (e) {
    if (process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1') return undefined;
    throw e;
  }
  ctx.poisonOutputs = true;
  return ctx;
}
