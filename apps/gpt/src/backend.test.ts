import { clipGradNorm, Param, setDeviceBackend } from '@attnkit/nn';
import { Rng } from '@attnkit/tensor';
import { expect, test } from 'vitest';
import { clipGradNormOnDevice, openBackend } from './backend.js';

test.each([0.5, 100])(
  'clipGradNormOnDevice scales as clipGradNorm does (maxNorm %s)',
  (maxNorm) => {
    setDeviceBackend('cpu', 'ts');
    const rng = new Rng(2);
    const grads = [rng.randn([3, 4]), rng.randn([5])];
    const params = (): Param[] =>
      grads.map((g) => {
        const p = new Param(rng.randn(g.shape));
        p.grad = g;
        return p;
      });
    const [host, device] = [params(), params()];
    clipGradNorm(host, maxNorm);
    clipGradNormOnDevice(device, maxNorm);
    host.forEach((p, i) => {
      const want = p.grad!.toFloat32Array();
      device[i]!.grad!.toFloat32Array().forEach((v, j) => {
        expect(v).toBeCloseTo(want[j]!, 5);
      });
    });
  },
);

test('openBackend: a name it does not know is a ValueError naming --backend', async () => {
  await expect(openBackend('cuda')).rejects.toMatchObject({
    name: 'ValueError',
    argument: 'backend',
  });
});
