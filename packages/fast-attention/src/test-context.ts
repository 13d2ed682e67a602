import {
  findAdapter,
  type WebGpuContext,
  WebGpuContext as WebGpuContextClass,
  type WebGpuLimits,
} from '@attnkit/webgpu';

/** WebGPU's core default limits (the spec's `GPUSupportedLimits` defaults) the kernels read. */
export const CORE_DEFAULT_LIMITS = {
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupsPerDimension: 65535,
  maxStorageBuffersPerShaderStage: 8,
  maxStorageBufferBindingSize: 134217728,
  maxBufferSize: 268435456,
} as const satisfies WebGpuLimits;

/**
 * Test support (not exported by the package): a WebGPU context whose device was requested with
 * WebGPU's *default* limits and no optional feature — what a low-end or mobile GPU gives. The
 * context of @attnkit/webgpu's createWebGpuContext asks for the adapter's real limits and every
 * optional feature; here requestDevice gets no requiredLimits and no requiredFeatures, and the
 * context reports the limits the device actually has. Outputs start as NaN (poisonOutputs). With
 * ATTNKIT_ALLOW_NO_WEBGPU=1 a machine without an adapter resolves to undefined (the caller skips).
 */
export async function defaultLimitsContext(): Promise<WebGpuContext | undefined> {
  let found: Awaited<ReturnType<typeof findAdapter>>;
  try {
    found = await findAdapter();
  } catch (e) {
    if (process.env.ATTNKIT_ALLOW_NO_WEBGPU === '1') return undefined;
    throw e;
  }
  const { adapter, backend, keepAlive, dawnToggles, wgslLanguageFeatures } = found;
  // Dawn's OpenGL ES path (llvmpipe) makes a compatibility-mode adapter, whose defaults are
  // lower still (128 invocations, 4 storage buffers); request the core spec's defaults
  // explicitly so the device has exactly them, and no optional feature.
  const device = await adapter.requestDevice({ requiredLimits: { ...CORE_DEFAULT_LIMITS } });
  const names: (keyof WebGpuLimits)[] = [
    'maxComputeWorkgroupStorageSize',
    'maxComputeInvocationsPerWorkgroup',
    'maxComputeWorkgroupSizeX',
    'maxComputeWorkgroupsPerDimension',
    'maxStorageBuffersPerShaderStage',
    'maxStorageBufferBindingSize',
    'maxBufferSize',
  ];
  const limits = {} as WebGpuLimits;
  for (const n of names) limits[n] = device.limits[n] as number;
  const info = adapter.info;
  const ctx = new WebGpuContextClass(
    device,
    {
      subgroups: false,
      shaderF16: false,
      timestampQuery: false,
      subgroupMatrix: false,
      subgroupMinSize: 0,
      subgroupMaxSize: 0,
      subgroupMatrixConfigs: [],
    },
    limits,
    backend,
    {
      vendor: info.vendor ?? '',
      architecture: info.architecture ?? '',
      device: info.device ?? '',
      description: info.description ?? '',
    },
    keepAlive,
    dawnToggles,
  );
  ctx.wgslLanguageFeatures = wgslLanguageFeatures;
  ctx.poisonOutputs = true;
  return ctx;
}
