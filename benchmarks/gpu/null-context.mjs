// A WebGpuContext on Dawn's null backend (every pass validated and encoded, none run): what
// host-decode.mjs and host-step.mjs time the host's share of nn's work on, without a GPU. Loads
// the built @attnkit/webgpu and the `webgpu` package it depends on (run `pnpm build` first).
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

//
// `{ tensorCores: true }`: the device also declares f16, 32-wide subgroups and f16 x f16 -> f32
// 16x16x16 subgroup matrices as an NVIDIA adapter (Dawn's null backend has them with
// allow_unsafe_apis), so nn's f16 path encodes its tensor-core passes as on the H200.
export async function nullWebGpuContext({ tensorCores = false } = {}) {
  const { CORE_DEFAULT_LIMITS, WebGpuContext } = await import(
    pathToFileURL(join(repo, 'packages/webgpu/dist/index.js')).href
  );
  const { create, globals } = createRequire(join(repo, 'packages/webgpu/package.json'))('webgpu');
  Object.assign(globalThis, globals);
  const gpu = create(
    tensorCores ? ['backend=null', 'enable-dawn-features=allow_unsafe_apis'] : ['backend=null'],
  );
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error("Dawn's null backend gave no adapter");
  // The limits a WebGpuContext reports (the adapter's own, as createWebGpuContext asks for).
  const names = Object.keys(CORE_DEFAULT_LIMITS);
  const requiredLimits = Object.fromEntries(names.map((n) => [n, adapter.limits[n]]));
  const requiredFeatures = tensorCores
    ? ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix'].filter((f) =>
        adapter.features.has(f),
      )
    : [];
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
  const limits = Object.fromEntries(names.map((n) => [n, device.limits[n]]));
  const features = {
    subgroups: tensorCores,
    shaderF16: tensorCores,
    timestampQuery: false,
    subgroupMatrix: tensorCores,
    subgroupMinSize: tensorCores ? 32 : 0,
    subgroupMaxSize: tensorCores ? 32 : 0,
    subgroupMatrixConfigs: tensorCores
      ? [{ component: 'f16', result: 'f32', M: 16, N: 16, K: 16 }]
      : [],
  };
  const info = {
    vendor: tensorCores ? 'nvidia' : '',
    architecture: '',
    device: 'null',
    description: 'Dawn null backend',
  };
  return new WebGpuContext(device, features, limits, 'null', info, [gpu]);
}

/** nn's binding cache counters from webGpuQueueStats (what host-decode / host-step print). */
export function bindingStats(st) {
  return `uniforms reused ${st.uniformHits} / made ${st.uniformsMade}, bind groups reused ${st.groupHits} / made ${st.groupsMade}`;
}
