import { accuracy, softmaxAttentionReference } from '@attnkit/attention';
import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildWorkerForTests } from '../../test/build-worker.js';
import { DeviceWorkerError } from './errors.js';
import { AllReduceGroup, type TiledAllReduceOptions, tiledAllReduceAttention } from './group.js';

beforeAll(buildWorkerForTests, 60000);

interface Case {
  batch: number;
  hq: number;
  hkv: number;
  seqQ: number;
  seqK: number;
  d: number;
  dv: number;
  dModel: number;
  causal: boolean;
}

function inputs(c: Case, seed: number) {
  const rng = new Rng(seed);
  return {
    q: rng.randn([c.batch, c.hq, c.seqQ, c.d]),
    k: rng.randn([c.batch, c.hkv, c.seqK, c.d]),
    v: rng.randn([c.batch, c.hkv, c.seqK, c.dv]),
    wo: rng.randn([c.hq * c.dv, c.dModel], 'f32', 1 / Math.sqrt(c.hq * c.dv)),
  };
}

/** The single-device result in float64: attention of all heads, then concat(O) W_o. */
function reference(q: Tensor, k: Tensor, v: Tensor, wo: Tensor, causal: boolean): Float64Array {
  const o = softmaxAttentionReference(q, k, v, { causal }).o.toFloat64Array();
  const [batch, hq, seqQ] = q.shape as [number, number, number, number];
  const dv = v.shape[3]!;
  const [rows, dModel] = wo.shape as [number, number];
  const W = wo.toFloat64Array();
  const y = new Float64Array(batch * seqQ * dModel);
  for (let b = 0; b < batch; b++)
    for (let i = 0; i < seqQ; i++)
      for (let h = 0; h < hq; h++)
        for (let c = 0; c < dv; c++) {
          const x = o[((b * hq + h) * seqQ + i) * dv + c]!;
          const w = (h * dv + c) * dModel;
          for (let j = 0; j < dModel; j++) y[(b * seqQ + i) * dModel + j]! += x * W[w + j]!;
        }
  expect(rows).toBe(hq * dv);
  return y;
}

describe('tiledAllReduceAttention (native devices)', () => {
  // Odd N, H not divisible by P, GQA, causal with Nq = Nk, Nq < Nk and Nq > Nk (rows with no key).
  const cases: [number, Case, Partial<TiledAllReduceOptions>][] = [
    [
      1,
      { batch: 1, hq: 3, hkv: 3, seqQ: 17, seqK: 17, d: 8, dv: 8, dModel: 12, causal: false },
      {},
    ],
    [
      2,
      { batch: 2, hq: 5, hkv: 5, seqQ: 33, seqK: 33, d: 16, dv: 16, dModel: 24, causal: true },
      { tileRows: 8 },
    ],
    [
      3,
      { batch: 1, hq: 12, hkv: 6, seqQ: 45, seqK: 61, d: 8, dv: 12, dModel: 20, causal: true },
      { tileRows: 7 },
    ],
    [
      4,
      { batch: 1, hq: 8, hkv: 4, seqQ: 29, seqK: 29, d: 32, dv: 32, dModel: 16, causal: true },
      { tileRows: 5, slots: 2 },
    ],
    [
      2,
      { batch: 3, hq: 7, hkv: 7, seqQ: 21, seqK: 9, d: 8, dv: 8, dModel: 8, causal: true },
      { tileRows: 4 },
    ],
    [
      3,
      { batch: 1, hq: 4, hkv: 4, seqQ: 19, seqK: 37, d: 8, dv: 4, dModel: 33, causal: false },
      { tileRows: 3, overlap: false },
    ],
  ];
  for (const [devices, c, opts] of cases) {
    it(`P = ${devices}: B ${c.batch}, Hq ${c.hq}, Hkv ${c.hkv}, Nq ${c.seqQ}, Nk ${c.seqK}, D ${c.d}, Dv ${c.dv}, causal ${c.causal} ${JSON.stringify(opts)}`, async () => {
      const { q, k, v, wo } = inputs(c, 17 * devices + c.seqQ);
      const ref = reference(q, k, v, wo, c.causal);
      for (const overlap of [true, false]) {
        const r = await tiledAllReduceAttention(q, k, v, wo, {
          devices,
          causal: c.causal,
          overlap,
          ...opts,
        });
        expect(r.y.shape).toEqual([c.batch, c.seqQ, c.dModel]);
        expect(r.y.dtype).toBe('f32');
        expect(accuracy(r.y, ref).relL2).toBeLessThan(1e-5);
        expect(r.timings.devices).toHaveLength(devices);
      }
    });
  }

  it('a group reused for several runs (and several shapes) gives the same results', async () => {
    const group = await AllReduceGroup.create({ devices: 2 });
    try {
      for (const seqQ of [9, 40]) {
        const c: Case = {
          batch: 1,
          hq: 4,
          hkv: 2,
          seqQ,
          seqK: seqQ,
          d: 8,
          dv: 8,
          dModel: 10,
          causal: true,
        };
        const { q, k, v, wo } = inputs(c, seqQ);
        const r = await tiledAllReduceAttention(q, k, v, wo, { group, causal: true, tileRows: 4 });
        expect(accuracy(r.y, reference(q, k, v, wo, true)).relL2).toBeLessThan(1e-5);
      }
      expect(group.closed).toBe(false);
      expect(group.liveWorkers).toBe(2);
    } finally {
      await group.close();
    }
    expect(group.liveWorkers).toBe(0);
  });
});

describe('tiledAllReduceAttention failures', () => {
  const c: Case = {
    batch: 1,
    hq: 4,
    hkv: 4,
    seqQ: 64,
    seqK: 64,
    d: 16,
    dv: 16,
    dModel: 16,
    causal: true,
  };
  const t = inputs(c, 5);

  for (const [kind, reason] of [
    ['exit', 'exit'],
    ['throw', 'error'],
    ['hang', 'timeout'],
  ] as const) {
    it(`a device whose worker ${kind === 'hang' ? 'hangs' : kind === 'exit' ? 'exits' : 'throws'} mid-run rejects with DeviceWorkerError (${reason}) and closes the group`, async () => {
      const group = await AllReduceGroup.create({ devices: 3 });
      const started = performance.now();
      const err = await tiledAllReduceAttention(t.q, t.k, t.v, t.wo, {
        group,
        causal: true,
        tileRows: 4,
        timeoutMs: 400,
        fault: { device: 1, tile: 5, kind },
      }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(DeviceWorkerError);
      expect((err as DeviceWorkerError).reason).toBe(reason);
      if (reason !== 'timeout') expect((err as DeviceWorkerError).device).toBe(1);
      expect(performance.now() - started).toBeLessThan(10000);
      // Every worker is gone; the group refuses further runs.
      expect(group.closed).toBe(true);
      expect(group.liveWorkers).toBe(0);
      await expect(tiledAllReduceAttention(t.q, t.k, t.v, t.wo, { group })).rejects.toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'group' }),
      );
    });
  }

  it('bad inputs are typed errors naming the argument, before any worker starts', async () => {
    const create = vi.spyOn(AllReduceGroup, 'create');
    const { q, k, v, wo } = t;
    const bad: [unknown[], unknown, string][] = [
      [[q, k, v, wo, { devices: 0 }], ValueError, 'devices'],
      [[q, k, v, wo, { devices: 5 }], ValueError, 'devices'],
      [[q, k, v, wo, { devices: 1.5 }], ValueError, 'devices'],
      [[q, k, v, wo, {}], ValueError, 'devices'],
      [[q, k, v, wo, { devices: 2, tileRows: 0 }], ValueError, 'tileRows'],
      [[q, k, v, wo, { devices: 2, window: [4, 0] }], ValueError, 'window'],
      [[q, k, v, wo, { devices: 2, timeoutMs: -1 }], ValueError, 'timeoutMs'],
      [[q, k, v, wo, { devices: 2, causal: 'yes' }], ValueError, 'causal'],
      [[q, k, v, Tensor.zeros([63, 16]), { devices: 2 }], ShapeError, 'wo'],
      [[q, k, v, Tensor.zeros([64]), { devices: 2 }], ShapeError, 'wo'],
      [[q, k, v, Tensor.zeros([64, 16], 'f16'), { devices: 2 }], DTypeError, 'wo'],
      [
        [q, Tensor.zeros([1, 3, 64, 16]), Tensor.zeros([1, 3, 64, 16]), wo, { devices: 2 }],
        ShapeError,
        'k',
      ],
      [[q.astype('f64'), k.astype('f64'), v.astype('f64'), wo, { devices: 2 }], DTypeError, 'q'],
    ];
    for (const [args, Type, argument] of bad) {
      const e = await (tiledAllReduceAttention as (...a: unknown[]) => Promise<unknown>)(
        ...args,
      ).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(e, `${argument}: ${String(e)}`).toBeInstanceOf(Type as typeof ValueError);
      expect((e as ValueError).argument).toBe(argument);
    }
    expect(create).not.toHaveBeenCalled();
    create.mockRestore();
  });

  it('buffers past what the runtime can allocate are an AllocationError before any worker starts', async () => {
    const create = vi.spyOn(AllReduceGroup, 'create');
    const rng = new Rng(1);
    // 2^20 rows x 2^20 columns: 8 TiB of partials with overlap off.
    const q = rng.randn([1, 2, 2 ** 20, 1]);
    const kv = rng.randn([1, 2, 4, 1]);
    const wo = rng.randn([2, 2 ** 20]);
    await expect(
      tiledAllReduceAttention(q, kv, kv, wo, { devices: 2, overlap: false }),
    ).rejects.toThrow(expect.objectContaining({ name: 'AllocationError', argument: 'slots' }));
    expect(create).not.toHaveBeenCalled();
    create.mockRestore();
  });

  it('AllReduceGroup.create rejects bad options', async () => {
    await expect(AllReduceGroup.create({ devices: 0 })).rejects.toThrow(ValueError);
    await expect(AllReduceGroup.create({ devices: 1, backend: 'gpu' as never })).rejects.toThrow(
      expect.objectContaining({ argument: 'backend' }),
    );
    await expect(
      AllReduceGroup.create({ devices: 1, workerUrl: new URL('file:///nonexistent/worker.js') }),
    ).rejects.toThrow(expect.objectContaining({ name: 'BackendUnavailableError' }));
  });
});

afterAll(() => vi.restoreAllMocks());
