import { BackendUnavailableError, describe, ValueError } from '@attnkit/tensor';

/**
 * Finding a WebGPU adapter: `navigator.gpu` in browsers, Dawn (the npm package `webgpu`) in
 * Node. Dawn's backend is chosen per machine (../shared/gpu/README.md): Vulkan on Linux GPUs,
 * else OpenGL ES over Mesa (llvmpipe on CPU-only machines, which needs the compatibility
 * feature level and EGL_PLATFORM=surfaceless); Metal on macOS, D3D12 on Windows.
 */

/** Dawn backends attnkit knows how to ask for (Node only). */
export type DawnBackend = 'vulkan' | 'opengles' | 'opengl' | 'metal' | 'd3d12' | 'd3d11';

const DAWN_BACKENDS: readonly DawnBackend[] = [
  'vulkan',
  'opengles',
  'opengl',
  'metal',
  'd3d12',
  'd3d11',
];

/** Optional features attnkit's kernels use when present. */
export const OPTIONAL_FEATURES = [
  'subgroups',
  'shader-f16',
  'timestamp-query',
  'chromium-experimental-subgroup-matrix',
] as const;
export type OptionalFeature = (typeof OPTIONAL_FEATURES)[number];

/**
 * Dawn toggles attnkit turns on by default (Node only):
 * - `allow_unsafe_apis` exposes Dawn's experimental features, among them
 *   `chromium-experimental-subgroup-matrix` (the tensor cores from WGSL);
 * - `vulkan_enable_f16_on_nvidia` lifts Dawn's block of `shader-f16` on NVIDIA's Vulkan driver
 *   (kept for old drivers' conformance bugs; the H200's driver 580 runs f16 correctly).
 * Without them the H200's Vulkan adapter offers neither shader-f16 nor subgroup matrices
 * (../shared/gpu/README.md section 2); onnxruntime's and llama.cpp's WebGPU backends enable the
 * same two. On other adapters (Mesa llvmpipe, Metal, D3D12) they change nothing attnkit uses.
 */
export const DEFAULT_DAWN_TOGGLES: readonly string[] = [
  'allow_unsafe_apis',
  'vulkan_enable_f16_on_nvidia',
];

/**
 * The Dawn toggle `robustness: false` adds: no bounds clamping of buffer and workgroup-memory
 * accesses in the generated shaders. On the H200 (driver 580) Tint's clamping of every
 * subgroup-matrix load was what held the tensor-core kernels back: a workgroup-memory matrix
 * load cost ~19 SM cycles with it and ~4 without, and the tensor-core FA2 forward ran 2x faster
 * (BENCHMARKS.md "WebGPU tensor cores without robustness").
 */
export const DISABLE_ROBUSTNESS_TOGGLE = 'disable_robustness';

/** Dawn toggle names are snake_case identifiers; a comma would split one into two. */
const TOGGLE_NAME = /^[a-z0-9_]+$/;

/** Checks a `dawnToggles` option; returns a copy (the default when undefined). */
export function checkDawnToggles(toggles: unknown, argument = 'dawnToggles'): string[] {
  if (toggles === undefined) return [...DEFAULT_DAWN_TOGGLES];
  if (
    !Array.isArray(toggles) ||
    toggles.some((t) => typeof t !== 'string' || !TOGGLE_NAME.test(t))
  ) {
    throw new ValueError(
      `${argument}: expected an array of Dawn toggle names (snake_case, e.g. "allow_unsafe_apis"), got ${describe(toggles)}`,
      argument,
    );
  }
  return [...new Set(toggles as string[])];
}

/**
 * The flags of Dawn's `create([...])` for one backend: `backend=<name>` and, unless there are
 * no toggles, one `enable-dawn-features=<a>,<b>` string (Dawn reads the toggles comma-joined
 * from a single flag; a second `enable-dawn-features=` would replace the first), and likewise
 * one `disable-dawn-features=` for the toggles to turn off.
 */
export function dawnCreateFlags(
  backend: DawnBackend,
  toggles: readonly string[],
  disabled: readonly string[] = [],
): string[] {
  const flags = [`backend=${checkBackend(backend, 'backend')}`];
  const list = checkDawnToggles(toggles);
  if (list.length > 0) flags.push(`enable-dawn-features=${list.join(',')}`);
  const off = checkDawnToggles(disabled, 'disabledDawnToggles');
  if (off.length > 0) flags.push(`disable-dawn-features=${off.join(',')}`);
  return flags;
}

export interface AdapterRequest {
  /** Node only: Dawn backend(s) to try in order; default from the platform (or $ATTNKIT_WEBGPU_BACKEND). */
  backend?: DawnBackend | readonly DawnBackend[];
  /**
   * Node only: Dawn toggles to enable (default DEFAULT_DAWN_TOGGLES: `allow_unsafe_apis`,
   * `vulkan_enable_f16_on_nvidia`); `[]` enables none. Browsers and an explicit `gpu` ignore it.
   */
  dawnToggles?: readonly string[];
  /**
   * Node only: Dawn toggles to disable (default none), e.g. `timestamp_quantization`, which
   * Dawn enables by default and which rounds every timestamp query down to 65.536 us (2^16 ns):
   * a profile of short passes needs it off. Browsers and an explicit `gpu` ignore it.
   */
  disabledDawnToggles?: readonly string[];
  /**
   * Node only: `false` adds Dawn's `disable_robustness` toggle (DISABLE_ROBUSTNESS_TOGGLE): the
   * shaders of this device run without bounds checks, so a kernel bug reads or writes outside
   * its buffers instead of being clamped. attnkit's kernels keep their accesses in bounds and
   * the tensor-core kernels were verified on the H200 this way; they run up to 2x faster.
   * Default true (robust). Browsers always keep robustness (and ignore it, as dawnToggles);
   * `ctx.robustAccess` says what the device got.
   */
  robustness?: boolean;
  powerPreference?: GPUPowerPreference;
  /** An explicit GPU object (e.g. navigator.gpu of another realm); skips discovery. */
  gpu?: GPU;
}

export interface FoundAdapter {
  adapter: GPUAdapter;
  /** 'browser' when navigator.gpu was used, else the Dawn backend that answered. */
  backend: 'browser' | DawnBackend;
  /** Objects that must stay reachable while the device lives (Dawn's instance). */
  keepAlive: unknown[];
  /** The Dawn toggles the adapter was created with ([] in browsers and for an explicit `gpu`). */
  dawnToggles: string[];
  /**
   * The WGSL language features of the GPU object that gave the adapter (`navigator.gpu` or
   * Dawn's; e.g. `packed_4x8_integer_dot_product`), or undefined where it does not say.
   */
  wgslLanguageFeatures: ReadonlySet<string> | undefined;
}

/** A copy of `gpu.wgslLanguageFeatures` (a set-like), or undefined when the object has none. */
export function wgslLanguageFeaturesOf(gpu: unknown): ReadonlySet<string> | undefined {
  const f = (gpu as { wgslLanguageFeatures?: Iterable<unknown> } | null | undefined)
    ?.wgslLanguageFeatures;
  if (f === undefined || f === null || typeof f[Symbol.iterator] !== 'function') return undefined;
  return new Set([...f].filter((x): x is string => typeof x === 'string'));
}

interface DawnModule {
  create(flags: string[]): GPU;
  globals: Record<string, unknown>;
}

const VULKAN_ICD_DIRS = [
  '/usr/share/vulkan/icd.d',
  '/etc/vulkan/icd.d',
  '/usr/local/share/vulkan/icd.d',
];

/** Whether a Vulkan driver is declared (ICD manifests, or the loader's env overrides). */
async function hasVulkanDriver(): Promise<boolean> {
  if (process.env.VK_DRIVER_FILES || process.env.VK_ICD_FILENAMES) return true;
  const { readdirSync } = await import('node:fs');
  return VULKAN_ICD_DIRS.some((dir) => {
    try {
      return readdirSync(dir).some((f) => f.endsWith('.json'));
    } catch {
      return false;
    }
  });
}

async function defaultBackends(): Promise<DawnBackend[]> {
  const env = process.env.ATTNKIT_WEBGPU_BACKEND;
  if (env) return env.split(',').map((b) => checkBackend(b.trim(), '$ATTNKIT_WEBGPU_BACKEND'));
  if (process.platform === 'darwin') return ['metal'];
  if (process.platform === 'win32') return ['d3d12', 'vulkan'];
  // Without a Vulkan driver, Dawn would only print that it found none before GL answers.
  return (await hasVulkanDriver()) ? ['vulkan', 'opengles'] : ['opengles'];
}

function checkBackend(b: unknown, argument: string): DawnBackend {
  if (!DAWN_BACKENDS.includes(b as DawnBackend)) {
    throw new ValueError(
      `${argument}: expected one of ${DAWN_BACKENDS.join(', ')}, got ${describe(b)}`,
      argument,
    );
  }
  return b as DawnBackend;
}

let dawn: Promise<DawnModule> | undefined;

async function loadDawn(): Promise<DawnModule> {
  // A computed specifier keeps browser bundlers from following this Node-only import.
  const specifier = 'webgpu';
  dawn ??= import(/* @vite-ignore */ specifier).then(
    (m) => {
      const mod = m as unknown as DawnModule;
      // Dawn's constants (GPUBufferUsage, GPUMapMode, ...) are what browsers provide as globals.
      for (const [name, value] of Object.entries(mod.globals)) {
        if (!(name in globalThis)) (globalThis as Record<string, unknown>)[name] = value;
      }
      return mod;
    },
    (e: unknown) => {
      // Dawn is an optional peer dependency (browsers do not need it): say how to get it, and
      // let a later call try again.
      dawn = undefined;
      throw new BackendUnavailableError(
        `webgpu: no navigator.gpu here and Dawn for Node could not be loaded (install the optional peer dependency: npm i webgpu): ${(e as Error).message}`,
        'webgpu',
      );
    },
  );
  return dawn;
}

/** Requests an adapter, trying navigator.gpu first and then Dawn's backends in order. */
export async function findAdapter(request: AdapterRequest = {}): Promise<FoundAdapter> {
  if (request === null || typeof request !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(request)}`, 'options');
  }
  const powerPreference = request.powerPreference ?? 'high-performance';
  // Checked here, before any adapter is requested, in browsers too: a typo is an error everywhere.
  const toggles = checkDawnToggles(request.dawnToggles);
  const disabled =
    request.disabledDawnToggles === undefined
      ? []
      : checkDawnToggles(request.disabledDawnToggles, 'disabledDawnToggles');
  if (request.robustness !== undefined && typeof request.robustness !== 'boolean') {
    throw new ValueError(
      `robustness: expected a boolean, got ${describe(request.robustness)}`,
      'robustness',
    );
  }
  if (request.robustness === false && !toggles.includes(DISABLE_ROBUSTNESS_TOGGLE))
    toggles.push(DISABLE_ROBUSTNESS_TOGGLE);
  const both = disabled.filter((t) => toggles.includes(t));
  if (both.length > 0)
    throw new ValueError(
      `disabledDawnToggles: expected toggles not also enabled (dawnToggles or robustness: false), got ${both.join(', ')} in both`,
      'disabledDawnToggles',
    );
  if (request.gpu) {
    const adapter = await request.gpu.requestAdapter({ powerPreference });
    if (!adapter)
      throw new BackendUnavailableError('webgpu: the given GPU offered no adapter', 'gpu');
    return {
      adapter,
      backend: 'browser',
      keepAlive: [],
      dawnToggles: [],
      wgslLanguageFeatures: wgslLanguageFeaturesOf(request.gpu),
    };
  }
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu && request.backend === undefined) {
    const adapter = await nav.gpu.requestAdapter({ powerPreference });
    if (!adapter) {
      throw new BackendUnavailableError(
        'webgpu: navigator.gpu.requestAdapter() returned null (WebGPU disabled or no usable GPU)',
        'adapter',
      );
    }
    return {
      adapter,
      backend: 'browser',
      keepAlive: [],
      dawnToggles: [],
      wgslLanguageFeatures: wgslLanguageFeaturesOf(nav.gpu),
    };
  }
  const backends =
    request.backend === undefined
      ? await defaultBackends()
      : (Array.isArray(request.backend) ? request.backend : [request.backend]).map((b) =>
          checkBackend(b, 'backend'),
        );
  let mod: DawnModule;
  try {
    mod = await loadDawn();
  } catch (e) {
    throw new BackendUnavailableError(
      `webgpu: no navigator.gpu and the Dawn package "webgpu" could not be loaded (${(e as Error).message})`,
      'adapter',
    );
  }
  const tried: string[] = [];
  for (const backend of backends) {
    // Mesa's EGL picks a display platform from the environment; without a display server
    // only the surfaceless one works, and Dawn then finds no GL adapter at all.
    if ((backend === 'opengles' || backend === 'opengl') && typeof process !== 'undefined') {
      process.env.EGL_PLATFORM ??= 'surfaceless';
    }
    const gpu = mod.create(dawnCreateFlags(backend, toggles, disabled));
    const featureLevel = backend === 'opengles' || backend === 'opengl' ? 'compatibility' : 'core';
    const adapter = await gpu.requestAdapter({
      powerPreference,
      featureLevel,
    } as GPURequestAdapterOptions);
    if (adapter)
      return {
        adapter,
        backend,
        keepAlive: [gpu],
        dawnToggles: toggles,
        wgslLanguageFeatures: wgslLanguageFeaturesOf(gpu),
      };
    tried.push(backend);
  }
  throw new BackendUnavailableError(
    `webgpu: Dawn found no adapter (tried backends ${tried.join(', ')}; on CPU-only Linux install libegl1 libegl-mesa0 libgles2 libgl1-mesa-dri)`,
    'adapter',
  );
}
