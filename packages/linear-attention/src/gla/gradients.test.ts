import { Rng, Tensor } from '@attnkit/tensor';
import { dot, relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
  type GlaGrads,
  type GlaResult,
} from '../index.js';

/**
 * Every gradient of both forms against central finite differences of the forward itself (not of
 * the reference), in float64 (the ts backend computes f64 inputs in f64), so a wrong term of the
 * chunk backward cannot hide behind f32 rounding. The loss reads o and the final state:
 * L = <o, dO> + <hT, dht>.
 */

const rng = new Rng(0x6d1f);

function inputs(B: number, T: number, H: number, K: number, V: number, N: number, strong = false) {
  const z = rng.randn([B, T, H, K], 'f64').toFloat64Array();
  const g = z.map((x, i) => (strong && i % 3 === 0 ? -20 : -Math.log1p(Math.exp(-x))));
  return {
    q: rng.randn([B, T, H, K], 'f64'),
    k: rng.randn([B, T, H, K], 'f64'),
    v: rng.randn([B, T, H, V], 'f64'),
    gk: Tensor.from(g, [B, T, H, K], 'f64'),
    h0: rng.randn([N, H, K, V], 'f64'),
    dO: rng.randn([B, T, H, V], 'f64'),
    dht: rng.randn([N, H, K, V], 'f64'),
  };
}

type Forward = (q: Tensor, k: Tensor, v: Tensor, gk: Tensor, o: object) => Promise<GlaResult>;
type Backward = (
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  o: object,
) => Promise<GlaGrads>;

/** d loss / d inputs[which] by central differences (eps 1e-5) of an async float64 loss. */
async function numericGradAsync(
  loss: (args: Tensor[]) => Promise<number>,
  list: Tensor[],
  which: number,
  eps = 1e-5,
): Promise<Float64Array> {
  const data = list[which]!.toFloat64Array();
  const grad = new Float64Array(data.length);
  const at = (i: number, value: number) => {
    const copy = data.slice();
    copy[i] = value;
    const args = list.slice();
    args[which] = Tensor.from(copy, list[which]!.shape, 'f64');
    return loss(args);
  };
  for (let i = 0; i < data.length; i++)
    grad[i] = ((await at(i, data[i]! + eps)) - (await at(i, data[i]! - eps))) / (2 * eps);
  return grad;
}

async function check(
  fwd: Forward,
  bwd: Backward,
  x: ReturnType<typeof inputs>,
  options: Record<string, unknown>,
) {
  const opts = { ...options, outputFinalState: true, backend: 'ts' };
  const g = await bwd(x.q, x.k, x.v, x.gk, x.dO, { ...opts, initialState: x.h0, dht: x.dht });
  const loss = async ([q, k, v, gk, h0]: Tensor[]) => {
    const r = await fwd(q!, k!, v!, gk!, { ...opts, initialState: h0 });
    return dot(r.o, x.dO) + dot(r.finalState!, x.dht);
  };
  const list = [x.q, x.k, x.v, x.gk, x.h0];
  const grads = [g.dq, g.dk, g.dv, g.dgk, g.dh0!];
  for (let w = 0; w < list.length; w++) {
    expect(grads[w]!.shape).toEqual(list[w]!.shape);
    expect(grads[w]!.dtype).toBe('f64');
    const numeric = await numericGradAsync(loss, list, w);
    expect(
      relL2(grads[w]!.toFloat64Array(), numeric),
      ['dq', 'dk', 'dv', 'dgk', 'dh0'][w],
    ).toBeLessThan(1e-7);
  }
}

describe('finite differences, float64', () => {
  test('chunkGla, C 32 (two sub-chunks of 16), T 37 (a ragged second chunk), K 3 != V 2', async () => {
    await check(chunkGla, chunkGlaBackward, inputs(1, 37, 1, 3, 2, 1), { chunkSize: 32 });
  });

  test('chunkGla, C 4, B 2, H 2, strongly negative gates in a third of the channels', async () => {
    await check(chunkGla, chunkGlaBackward, inputs(2, 11, 2, 2, 3, 2, true), { chunkSize: 4 });
  });

  test('chunkGla, varlen [0, 5, 5, 14] (an empty sequence), C 8', async () => {
    await check(chunkGla, chunkGlaBackward, inputs(1, 14, 1, 2, 2, 3), {
      chunkSize: 8,
      cuSeqlens: [0, 5, 5, 14],
    });
  });

  test('fusedRecurrentGla, T 70 (two checkpoint segments), K 2, V 3', async () => {
    await check(fusedRecurrentGla, fusedRecurrentGlaBackward, inputs(1, 70, 1, 2, 3, 1), {});
  });

  test('fusedRecurrentGla reverse, varlen [0, 4, 9], H 2', async () => {
    await check(fusedRecurrentGla, fusedRecurrentGlaBackward, inputs(1, 9, 2, 2, 2, 2), {
      reverse: true,
      cuSeqlens: Int32Array.of(0, 4, 9),
    });
  });
});
