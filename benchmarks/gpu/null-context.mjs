// A WebGpuContext on Dawn's null backend (every pass validated and encoded, none run): what
// host-decode.mjs and host-step.mjs time the host's share of nn's work on, without a GPU. Loads
// the built @attnkit/webgpu and the `webgpu` package it depends on (run `pnpm build` first).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export async function nullWebGpuContext() {
  const { CORE_DEFAULT_LIMITS, WebGpuContext } = await import(
    pathToFileURL(join(repo, 'packages/webgpu/dist/index.js')).href
  );
  const { create, globals } = createRequire(join(repo, 'packages/webgpu/package.json'))('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create(['backend=null']);
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error("Dawn's null backend gave no adapter");
  // The limits a WebGpuContext reports (the adapter's own, as createWebGpuContext asks for).
  const names = Object.keys(CORE_DEFAULT_LIMITS);
  const requiredLimits = Object.fromEntries(names.map((n) => [n, adapter.limits[n]]));
  const device = await adapter.requestDevice({ requiredLimits });
  const limits = Object.fromEntries(names.map((n) => [n, device.limits[n]]));
  const features = {
    subgroups: false,
    shaderF16: false,
    timestampQuery: false,
    subgroupMatrix: false,
    subgroupMinSize: 0,
    subgroupMaxSize: 0,
    subgroupMatrixConfigs: [],
  };
  const info = { vendor: '', architecture: '', device: 'null', description: 'Dawn null backend' };
  return new WebGpuContext(device, features, limits, 'null', info, [gpu]);
}

/** nn's binding cache counters from webGpuQueueStats (what host-decode / host-step print). */
export function bindingStats(st) {
  return `uniforms reused ${st.uniformHits} / made ${st.uniformsMade}, bind groups reused ${st.groupHits} / made ${st.groupsMade}`;
}
