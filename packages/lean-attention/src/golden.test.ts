import { existsSync } from 'node:fs';
import { join } from 'node:path';
import {
  goldenAttentionOptions,
  type KernelTensors,
  loadGolden,
  registeredKernels,
  toleranceFor,
} from '@attnkit/attention';
import { loadNativeBackend } from '@attnkit/skeleton';
import type { Tensor } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { goldenSets } from '@attnkit/vitest-config';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import './index.js'; // registers the 'lean' kernels (ts, native, webgpu)

// The registry asks synchronously whether native is available: import it first.
await loadNativeBackend();

/**
 * The shared PyTorch float64 golden `softmax_decode` (B 2, H 4, Nq 1, Nk 1000, D 128, causal
 * bottom-right) through every 'lean' registration and every partition, with default and odd
 * worker / split counts; webgpu outputs are poisoned (NaN-filled) first by the test context.
 */
const PARTITIONS: Record<string, unknown>[] = [
  { partition: 'fa2' },
  { partition: 'splitK' },
  { partition: 'splitK', splits: 7 },
  { partition: 'streamK' },
  { partition: 'streamK', workers: 3 },
  { partition: 'streamK', workers: 1000 },
];

let ctx: WebGpuContext | undefined;
beforeAll(async () => {
  ctx = await webGpuTestContext();
});
afterAll(() => ctx?.destroy());

for (const { name: setName, dir } of goldenSets()) {
  const file = join(dir, 'softmax_decode.safetensors');
  describe(`softmax_decode golden (${setName})`, () => {
    test('is present', () => expect(existsSync(file)).toBe(true));
    const backends = registeredKernels({ family: 'lean', pass: 'forward' });
    test('lean is registered on ts, native and webgpu', () => {
      expect(backends.map((r) => r.backend).sort()).toEqual(['native', 'ts', 'webgpu']);
    });
    for (const reg of backends) {
      test.each(PARTITIONS.map((p) => [JSON.stringify(p), p] as const))(
        `${reg.backend} %s`,
        async (_label, partition) => {
          if (reg.backend === 'native' && reg.available?.() !== true) return;
          const g = await loadGolden(file);
          const t = g.tensors;
          const webgpu = reg.devices[0] === 'webgpu';
          if (webgpu && !ctx) return; // no adapter (ATTNKIT_ALLOW_NO_WEBGPU=1)
          const put = (x: Tensor) => (webgpu ? toWebGpu(x, ctx!) : x);
          const inputs: KernelTensors = { q: put(t.q!), k: put(t.k!), v: put(t.v!) };
          const options = { ...goldenAttentionOptions(g), ...partition, backend: reg.backend };
          const out = await reg.run(inputs, options);
          const tol = toleranceFor({ dtype: 'f32', maxSeqLen: t.k!.shape.at(-2)! });
          const o = webgpu ? await out.o!.toCpu() : out.o!;
          const lse = webgpu ? await out.lse!.toCpu() : out.lse!;
          expectClose(o, t.o!, tol, 'o');
          expectClose(lse, t.lse!, tol, 'lse');
          if (webgpu)
            for (const x of [...Object.values(inputs), ...Object.values(out)]) x.dispose();
        },
      );
    }
  });
}
