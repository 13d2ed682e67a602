import { createWebGpuContext, type WebGpuContext, type WebGpuContextOptions } from './context.js';

/**
 * Test support (not exported): a context for the test file, or a failure when no adapter can
 * be had, unless ATTNKIT_ALLOW_NO_WEBGPU=1 says a machine without WebGPU is expected (then the
 * caller skips). A missing adapter must never pass silently in CI.
 */
export async function testContext(
  options: WebGpuContextOptions = {},
): Promise<WebGpuContext | undefined> {
  try {
    const ctx = await createWebGpuContext(options);
    ctx.poisonOutputs = true;
    return ctx;
  } catch (e) {
    if (process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1') return undefined;
    throw e;
  }
}
