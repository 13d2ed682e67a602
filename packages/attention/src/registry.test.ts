import { BackendUnavailableError, DeviceError, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { alibiSlopes } from './mods.js';
import {
  type KernelRegistration,
  type KernelRequest,
  registeredFamilies,
  registeredKernels,
  registerKernel,
  selectKernel,
  UnsupportedError,
} from './registry.js';

const FAMILY = 'registry-test';

function reg(backend: string, priority: number, extra: Partial<KernelRegistration> = {}) {
  const r: KernelRegistration = {
    family: FAMILY,
    pass: 'forward',
    backend,
    priority,
    devices: ['cpu'],
    supports: () => true,
    run: async () => ({}),
    outputs: ['o'],
    ...extra,
  };
  registerKernel(r);
  return r;
}

const request = (options: Record<string, unknown> = {}, device = 'cpu'): KernelRequest => ({
  family: FAMILY,
  pass: 'forward',
  device,
  dtype: 'f32',
  options,
});

describe('the family x backend registry', () => {
  reg('slow', 1);
  reg('picky', 5, { supports: (r) => (r.options.fast ? true : 'needs options.fast') });
  reg('absent', 9, { available: () => 'its addon did not load' });
  reg('gpu', 30, { devices: ['webgpu'] });

  test('the highest-priority backend of the device that supports the request wins', () => {
    expect(selectKernel(request()).backend).toBe('slow');
    expect(selectKernel(request({ fast: true })).backend).toBe('picky');
    expect(selectKernel(request({}, 'webgpu')).backend).toBe('gpu');
    expect(registeredKernels({ family: FAMILY }).map((r) => r.backend)).toEqual([
      'gpu',
      'absent',
      'picky',
      'slow',
    ]);
    expect(registeredFamilies()).toContain(FAMILY);
  });

  test('a named backend that cannot run the request says why, with a typed error', () => {
    expect(() => selectKernel(request(), 'picky')).toThrow(UnsupportedError);
    expect(() => selectKernel(request(), 'picky')).toThrow(/needs options.fast/);
    expect(() => selectKernel(request(), 'absent')).toThrow(BackendUnavailableError);
    expect(() => selectKernel(request(), 'gpu')).toThrow(DeviceError);
    expect(() => selectKernel(request(), 'cuda')).toThrow(ValueError);
  });

  test('when no backend can, the error carries every reason', () => {
    let caught: unknown;
    try {
      selectKernel(request({}, 'wasm'));
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(UnsupportedError);
    expect(Object.keys((caught as UnsupportedError).reasons).sort()).toEqual([
      'absent',
      'gpu',
      'picky',
      'slow',
    ]);
    expect(() => selectKernel({ ...request(), family: 'nope' })).toThrow(UnsupportedError);
  });

  test('a bad registration is a ValueError naming the field; the same key replaces', () => {
    expect(() => reg('', 1)).toThrow(expect.objectContaining({ argument: 'registration.backend' }));
    expect(() => reg('x', Number.NaN)).toThrow(
      expect.objectContaining({ argument: 'registration.priority' }),
    );
    reg('slow', 2);
    expect(registeredKernels({ family: FAMILY }).filter((r) => r.backend === 'slow')).toHaveLength(
      1,
    );
  });

  test('alibiSlopes validates its head count', () => {
    expect(() => alibiSlopes(0)).toThrow(expect.objectContaining({ argument: 'heads' }));
    expect(() => alibiSlopes(2.5)).toThrow(ValueError);
  });
});
