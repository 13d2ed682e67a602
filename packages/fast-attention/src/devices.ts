import { describe, ValueError } from '@attnkit/tensor';

/**
 * Device classes the two-level planner (./planner.ts) plans for: a GPU seen through WebGPU
 * (workgroup storage is the outer tile's fast memory, invocations and registers bound the inner
 * per-thread block) or a CPU core (its L2 is the outer tile's fast memory, its SIMD registers
 * bound the inner block). The numbers are the limits a WebGPU device reports (or a CPU's cache
 * and vector register file); `registerFloats` is not a WebGPU limit but the planner's budget of
 * 32-bit registers per invocation, so a tile that would spill is never chosen.
 */

export interface WebGpuDeviceClass {
  kind: 'webgpu';
  name: string;
  /** What the class stands for, in words. */
  description: string;
  /** GPUSupportedLimits.maxComputeWorkgroupStorageSize (bytes). */
  maxComputeWorkgroupStorageSize: number;
  /** GPUSupportedLimits.maxComputeInvocationsPerWorkgroup (also the workgroup's x extent here). */
  maxComputeInvocationsPerWorkgroup: number;
  /** The `subgroups` feature. */
  subgroups: boolean;
  /** Smallest subgroup size with subgroups (ignored without). */
  subgroupMinSize?: number;
  /** The `shader-f16` feature (f16 tensors are stored as u32 pairs without it; same tiles). */
  f16: boolean;
  /** 32-bit registers per invocation the inner tile may use (the planner's budget). */
  registerFloats: number;
}

export interface CpuDeviceClass {
  kind: 'cpu';
  name: string;
  description: string;
  /** L2 cache per core, bytes: the outer tile's working set must fit. */
  l2Bytes: number;
  /** f32 lanes of one SIMD register (4 SSE/NEON, 8 AVX2, 16 AVX-512). */
  simdWidth: number;
  /** SIMD registers of the ISA (16 SSE/AVX2, 32 AVX-512/NEON). */
  vectorRegisters: number;
}

export type DeviceClass = WebGpuDeviceClass | CpuDeviceClass;

/**
 * WebGPU's default limits (the spec's guaranteed minimum, what a device requested without
 * requiredLimits gets, and about what low-end and mobile GPUs offer): 16 KiB of workgroup
 * storage, 256 invocations, no subgroups, no shader-f16. 128 registers per invocation is the
 * budget of a mobile GPU at useful occupancy (Mali / Adreno: 64-128 at full occupancy).
 */
export const WEBGPU_DEFAULT: WebGpuDeviceClass = {
  kind: 'webgpu',
  name: 'webgpu-default',
  description:
    "WebGPU's default limits (low-end / mobile GPU): 16 KiB workgroup storage, 256 invocations, no subgroups, no f16",
  maxComputeWorkgroupStorageSize: 16384,
  maxComputeInvocationsPerWorkgroup: 256,
  subgroups: false,
  f16: false,
  registerFloats: 128,
};

/**
 * A mid-range desktop GPU in a browser (Chrome's limits on a discrete NVIDIA / AMD card, and
 * what llvmpipe offers when asked): 32 KiB, 1024 invocations, 32-wide subgroups, shader-f16.
 */
export const WEBGPU_DESKTOP: WebGpuDeviceClass = {
  kind: 'webgpu',
  name: 'webgpu-desktop',
  description:
    'mid-range desktop GPU in a browser: 32 KiB workgroup storage, 1024 invocations, subgroups (32), f16',
  maxComputeWorkgroupStorageSize: 32768,
  maxComputeInvocationsPerWorkgroup: 1024,
  subgroups: true,
  subgroupMinSize: 32,
  f16: true,
  registerFloats: 255,
};

/**
 * NVIDIA H200 through Dawn / Vulkan (measured: benchmarks/gpu/results/2026-12-02-h200-attnkit-info.json):
 * 48 KiB workgroup storage, 1024 invocations, 32-wide subgroups, f16; 255 registers per thread.
 */
export const WEBGPU_H200: WebGpuDeviceClass = {
  kind: 'webgpu',
  name: 'h200',
  description:
    'NVIDIA H200 via Dawn/Vulkan: 48 KiB workgroup storage, 1024 invocations, subgroups (32), f16',
  maxComputeWorkgroupStorageSize: 49152,
  maxComputeInvocationsPerWorkgroup: 1024,
  subgroups: true,
  subgroupMinSize: 32,
  f16: true,
  registerFloats: 255,
};

/** A small-cache CPU core: 256 KiB L2, AVX2 (8 f32 lanes, 16 registers). */
export const CPU_L2_256K: CpuDeviceClass = {
  kind: 'cpu',
  name: 'cpu-256k',
  description: 'CPU core with a 256 KiB L2 and AVX2 (8 lanes, 16 vector registers)',
  l2Bytes: 256 * 1024,
  simdWidth: 8,
  vectorRegisters: 16,
};

/** A server CPU core: 1 MiB L2, AVX-512 (16 f32 lanes, 32 registers). */
export const CPU_L2_1M: CpuDeviceClass = {
  kind: 'cpu',
  name: 'cpu-1m',
  description: 'CPU core with a 1 MiB L2 and AVX-512 (16 lanes, 32 vector registers)',
  l2Bytes: 1024 * 1024,
  simdWidth: 16,
  vectorRegisters: 32,
};

/** A small ARM core: 512 KiB L2, NEON (4 lanes, 32 registers). */
export const CPU_L2_512K_NEON: CpuDeviceClass = {
  kind: 'cpu',
  name: 'cpu-512k-neon',
  description: 'ARM core with a 512 KiB L2 and NEON (4 lanes, 32 vector registers)',
  l2Bytes: 512 * 1024,
  simdWidth: 4,
  vectorRegisters: 32,
};

/** Every documented class, by name. */
export const DEVICE_CLASSES: Readonly<Record<string, DeviceClass>> = Object.freeze({
  [WEBGPU_DEFAULT.name]: WEBGPU_DEFAULT,
  [WEBGPU_DESKTOP.name]: WEBGPU_DESKTOP,
  [WEBGPU_H200.name]: WEBGPU_H200,
  [CPU_L2_256K.name]: CPU_L2_256K,
  [CPU_L2_512K_NEON.name]: CPU_L2_512K_NEON,
  [CPU_L2_1M.name]: CPU_L2_1M,
});

function int(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new ValueError(`${name}: expected an integer >= ${min}, got ${describe(value)}`, name);
  }
  return value;
}

/** Validates a device class (a name from DEVICE_CLASSES or an object); typed errors name the field. */
export function resolveDevice(device: unknown): DeviceClass {
  if (typeof device === 'string') {
    const d = DEVICE_CLASSES[device];
    if (d === undefined) {
      throw new ValueError(
        `device: expected one of ${Object.keys(DEVICE_CLASSES).join(', ')} or a device object, got ${describe(device)}`,
        'device',
      );
    }
    return d;
  }
  if (device === null || typeof device !== 'object') {
    throw new ValueError(
      `device: expected a device class name or { kind: 'webgpu' | 'cpu', ... }, got ${describe(device)}`,
      'device',
    );
  }
  const d = device as DeviceClass;
  if (d.kind === 'webgpu') {
    int(d.maxComputeWorkgroupStorageSize, 'device.maxComputeWorkgroupStorageSize', 16);
    int(d.maxComputeInvocationsPerWorkgroup, 'device.maxComputeInvocationsPerWorkgroup', 1);
    int(d.registerFloats, 'device.registerFloats', 16);
    if (typeof d.subgroups !== 'boolean')
      throw new ValueError(
        `device.subgroups: expected a boolean, got ${describe(d.subgroups)}`,
        'device.subgroups',
      );
    if (d.subgroups) int(d.subgroupMinSize ?? 0, 'device.subgroupMinSize', 1);
    if (typeof d.f16 !== 'boolean')
      throw new ValueError(`device.f16: expected a boolean, got ${describe(d.f16)}`, 'device.f16');
    return d;
  }
  if (d.kind === 'cpu') {
    int(d.l2Bytes, 'device.l2Bytes', 1);
    int(d.simdWidth, 'device.simdWidth', 1);
    int(d.vectorRegisters, 'device.vectorRegisters', 3);
    return d;
  }
  throw new ValueError(
    `device.kind: expected "webgpu" or "cpu", got ${describe((d as { kind: unknown }).kind)}`,
    'device.kind',
  );
}
