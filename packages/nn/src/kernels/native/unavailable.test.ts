import { BackendUnavailableError, Tensor } from '@attnkit/tensor';
import { expect, it, vi } from 'vitest';

// Without the engine (here: ATTNKIT_NATIVE_ADDON names no file, before anything loads it), cpu
// tensors run on ts after @attnkit/native's one warning, and asking for native says why.
it('without the engine: cpu runs on ts after one warning; native is a BackendUnavailableError', async () => {
  vi.stubEnv('ATTNKIT_NATIVE_ADDON', '/nonexistent/attnkit_native.node');
  const warn = vi.spyOn(console, 'warn').mockImplementation(() => {});
  const nn = await import('../../index.js');
  const x = Tensor.from(Float32Array.of(0, 1), [2]);
  expect([...nn.exp(x).data.toFloat32Array()]).toEqual([1, Math.fround(Math.E)]);
  expect(nn.deviceBackendOf('cpu')).toBe('ts');
  expect(nn.registeredKernelNames('native')).toEqual([]);
  expect(warn).toHaveBeenCalledTimes(1);
  expect(String(warn.mock.calls[0]![0])).toMatch(/^@attnkit\/native: native engine unavailable/);
  expect(() => nn.setDeviceBackend('cpu', 'native')).toThrow(BackendUnavailableError);
  expect(() => nn.setDeviceBackend('cpu', 'native')).toThrow(
    /^backend: 'native' is unavailable: .*ATTNKIT_NATIVE_ADDON/,
  );
  expect(nn.deviceBackendOf('cpu')).toBe('ts');
  vi.unstubAllEnvs();
});
