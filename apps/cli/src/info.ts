import { registeredKernels } from '@attnkit/attention';
import { loadNativeBackend } from '@attnkit/flash-attention';
import { ValueError } from '@attnkit/tensor';
import {
  createWebGpuContext,
  type DawnBackend,
  formatSubgroupMatrixConfig,
  type SubgroupMatrixConfig,
  type WebGpuLimits,
} from '@attnkit/webgpu';
import { explainMissingDawn } from './backends.js';

/**
 * `attnkit info`: what this machine offers attnkit — the first thing to run on a new machine.
 * Which backends load (ts always; native when its addon loads; webgpu when Dawn or
 * navigator.gpu gives an adapter), and for WebGPU the adapter, the Dawn backend and toggles,
 * the features attnkit's kernels use, subgroup sizes, subgroup-matrix (tensor-core) configs
 * and the limits the kernels plan against.
 */

export interface BackendStatus {
  name: string;
  available: boolean;
  /** What it is when available, why not otherwise. */
  detail: string;
}

export interface WebGpuInfo {
  /** 'browser' or the Dawn backend that answered (vulkan, opengles, metal, ...). */
  backend: string;
  adapter: { vendor: string; architecture: string; device: string; description: string };
  /** Dawn toggles the adapter was created with ([] in browsers). */
  dawnToggles: string[];
  /** Whether shaders clamp out-of-bounds accesses (false with Dawn's disable_robustness). */
  robustAccess: boolean;
  /** The optional features attnkit uses, as enabled on the device. */
  features: {
    shaderF16: boolean;
    subgroups: boolean;
    subgroupMatrix: boolean;
    timestampQuery: boolean;
  };
  /** Every feature of the device, sorted. */
  deviceFeatures: string[];
  /** Subgroup sizes (0 without the subgroups feature). */
  subgroupSizes: { min: number; max: number };
  subgroupMatrixConfigs: SubgroupMatrixConfig[];
  limits: WebGpuLimits;
}

export interface InfoReport {
  node: string;
  platform: string;
  arch: string;
  backends: BackendStatus[];
  /** null when no adapter could be had (`webgpuError` says why). */
  webgpu: WebGpuInfo | null;
  webgpuError?: string;
}

export interface InfoOptions {
  /** Dawn backend(s) to try (Node); default as @attnkit/webgpu picks per machine. */
  webgpuBackend?: DawnBackend | DawnBackend[];
  /** Dawn toggles; default @attnkit/webgpu's DEFAULT_DAWN_TOGGLES. */
  dawnToggles?: string[];
}

const BACKEND_DETAILS: Record<string, string> = {
  ts: 'pure TypeScript (always)',
  reference: 'float64 references (always)',
};

/** Gathers the report; a missing Dawn or native addon is reported, not thrown. */
export async function collectInfo(options: InfoOptions = {}): Promise<InfoReport> {
  let webgpu: WebGpuInfo | null = null;
  let webgpuError: string | undefined;
  try {
    const ctx = await createWebGpuContext({
      backend: options.webgpuBackend,
      dawnToggles: options.dawnToggles,
      warnLeaks: false,
    });
    try {
      const f = ctx.features;
      webgpu = {
        backend: ctx.backend,
        adapter: { ...ctx.adapterInfo },
        dawnToggles: [...ctx.dawnToggles],
        robustAccess: ctx.robustAccess,
        features: {
          shaderF16: f.shaderF16,
          subgroups: f.subgroups,
          subgroupMatrix: f.subgroupMatrix,
          timestampQuery: f.timestampQuery,
        },
        deviceFeatures: [...ctx.device.features].map(String).sort(),
        subgroupSizes: { min: f.subgroupMinSize, max: f.subgroupMaxSize },
        subgroupMatrixConfigs: f.subgroupMatrixConfigs.map((c) => ({ ...c })),
        limits: { ...ctx.limits },
      };
    } finally {
      ctx.destroy();
    }
  } catch (e) {
    // A bad option is the user's to fix (exit 2); anything else is what this machine lacks.
    if (e instanceof ValueError) throw e;
    webgpuError = (explainMissingDawn(e, 'webgpu', 'webgpu') ?? (e as Error)).message ?? String(e);
  }
  const native = await loadNativeBackend();
  const names = [
    ...new Set(['ts', 'native', 'webgpu', ...registeredKernels().map((r) => r.backend)]),
  ];
  const backends = names.map((name): BackendStatus => {
    if (name === 'native') {
      return native === true
        ? { name, available: true, detail: 'C++ engine (threads + SIMD), addon loaded' }
        : { name, available: false, detail: native };
    }
    if (name === 'webgpu') {
      return webgpu
        ? {
            name,
            available: true,
            detail: `${webgpu.backend} adapter: ${adapterName(webgpu)}`,
          }
        : { name, available: false, detail: webgpuError ?? 'no adapter' };
    }
    return { name, available: true, detail: BACKEND_DETAILS[name] ?? 'registered' };
  });
  const report: InfoReport = {
    node: process.version,
    platform: process.platform,
    arch: process.arch,
    backends,
    webgpu,
  };
  if (webgpuError !== undefined) report.webgpuError = webgpuError;
  return report;
}

function adapterName(w: WebGpuInfo): string {
  const a = w.adapter;
  return [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' / ') || '?';
}

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

/** The report as text: one `key  value` line each, limits indented. */
export function formatInfo(r: InfoReport): string {
  const lines = [`attnkit info (node ${r.node}, ${r.platform} ${r.arch})`, '', 'Backends'];
  const width = Math.max(...r.backends.map((b) => b.name.length));
  for (const b of r.backends) {
    lines.push(
      `  ${b.name.padEnd(width)}  ${b.available ? 'available' : 'unavailable'}: ${b.detail}`,
    );
  }
  lines.push('');
  const w = r.webgpu;
  if (!w) {
    lines.push(`WebGPU: no adapter (${r.webgpuError ?? 'unknown reason'})`);
    return lines.join('\n');
  }
  const row = (k: string, v: string | number) => lines.push(`  ${k.padEnd(20)}${v}`);
  lines.push('WebGPU adapter');
  row('vendor', w.adapter.vendor || '-');
  row('architecture', w.adapter.architecture || '-');
  row('device', w.adapter.device || '-');
  row('description', w.adapter.description || '-');
  row('backend', w.backend === 'browser' ? 'browser (navigator.gpu)' : `${w.backend} (Dawn)`);
  row('dawn toggles', w.dawnToggles.length > 0 ? w.dawnToggles.join(', ') : '(none)');
  row(
    'robust access',
    w.robustAccess ? 'yes' : 'no (disable_robustness: no bounds checks in shaders)',
  );
  row(
    'features',
    `shader-f16 ${yesNo(w.features.shaderF16)}, subgroups ${yesNo(w.features.subgroups)}, ` +
      `subgroup-matrix ${yesNo(w.features.subgroupMatrix)}, timestamp-query ${yesNo(w.features.timestampQuery)}`,
  );
  row(
    'subgroup sizes',
    w.features.subgroups ? `${w.subgroupSizes.min}..${w.subgroupSizes.max}` : '- (no subgroups)',
  );
  row(
    'subgroup matrices',
    w.subgroupMatrixConfigs.length > 0
      ? w.subgroupMatrixConfigs.map(formatSubgroupMatrixConfig).join(', ')
      : '(none: the tensor-core kernels need f16>f32 configs; SIMT kernels are used)',
  );
  row('enabled features', w.deviceFeatures.join(' ') || '(none)');
  lines.push('  limits');
  for (const [k, v] of Object.entries(w.limits)) lines.push(`    ${k.padEnd(34)}${v}`);
  return lines.join('\n');
}
