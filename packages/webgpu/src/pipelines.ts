import { describe, ValueError } from '@attnkit/tensor';
import { fromGpuError, GpuValidationError } from './errors.js';

/** How a shader binds one resource, in binding order (group 0). */
export type BindingKind = 'uniform' | 'read' | 'storage';

export interface ComputeProgram {
  /** WGSL source. */
  code: string;
  entryPoint?: string;
  /** Pipeline-overridable constants (`override` declarations). */
  constants?: Record<string, number>;
  /** Binding kinds for @group(0) @binding(0..n-1). */
  bindings: readonly BindingKind[];
  label?: string;
}

export interface CompiledProgram {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  bindings: readonly BindingKind[];
}

const BUFFER_TYPE: Record<BindingKind, GPUBufferBindingType> = {
  uniform: 'uniform',
  read: 'read-only-storage',
  storage: 'storage',
};

/**
 * Compute pipelines keyed by WGSL source, entry point, constants and binding layout, as
 * tfjs-backend-webgpu caches its programs: compiling WGSL costs milliseconds to seconds,
 * a lookup costs a hash. Layouts are explicit (not 'auto'), so a binding the shader happens
 * not to read still binds.
 */
export class PipelineCache {
  private readonly cache = new Map<string, Promise<CompiledProgram>>();
  compiled = 0;

  constructor(private readonly device: GPUDevice) {}

  static key(program: ComputeProgram): string {
    const constants = Object.entries(program.constants ?? {})
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
    return `${program.entryPoint ?? 'main'}|${constants}|${program.bindings.join(',')}|${program.code}`;
  }

  get size(): number {
    return this.cache.size;
  }

  /** The compiled pipeline; rejects with GpuValidationError carrying the compiler's messages. */
  get(program: ComputeProgram): Promise<CompiledProgram> {
    if (program === null || typeof program !== 'object' || typeof program.code !== 'string') {
      throw new ValueError(
        `program: expected { code, bindings }, got ${describe(program)}`,
        'program',
      );
    }
    if (!Array.isArray(program.bindings) || program.bindings.some((b) => !(b in BUFFER_TYPE))) {
      throw new ValueError(
        `program.bindings: expected an array of "uniform" | "read" | "storage", got ${describe(program.bindings)}`,
        'program.bindings',
      );
    }
    const key = PipelineCache.key(program);
    let entry = this.cache.get(key);
    if (!entry) {
      entry = this.compile(program);
      // A failed compile is not cached: the caller may fix the source and retry.
      entry.catch(() => this.cache.delete(key));
      this.cache.set(key, entry);
    }
    return entry;
  }

  private async compile(program: ComputeProgram): Promise<CompiledProgram> {
    const device = this.device;
    const label = program.label ?? 'attnkit';
    device.pushErrorScope('validation');
    const module = device.createShaderModule({ code: program.code, label });
    const layout = device.createBindGroupLayout({
      label,
      entries: program.bindings.map((kind, binding) => ({
        binding,
        visibility: GPUShaderStage.COMPUTE,
        buffer: { type: BUFFER_TYPE[kind] },
      })),
    });
    const scoped = await device.popErrorScope();
    if (scoped) {
      const info = await module.getCompilationInfo();
      const errors = info.messages
        .filter((m) => m.type === 'error')
        .map((m) => `${m.lineNum}:${m.linePos} ${m.message}`)
        .join('\n');
      throw new GpuValidationError(
        `${label}: shader rejected:\n${errors || scoped.message}`,
        'program.code',
      );
    }
    let pipeline: GPUComputePipeline;
    try {
      pipeline = await device.createComputePipelineAsync({
        label,
        layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: program.entryPoint ?? 'main', constants: program.constants },
      });
    } catch (e) {
      throw fromGpuError('validation', e as GPUError, `${label}: pipeline creation`);
    }
    this.compiled++;
    return { pipeline, layout, bindings: program.bindings };
  }
}
