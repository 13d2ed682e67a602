import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { dot, numericGrad, randn, relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import { glaRecurrentReference, glaRecurrentReferenceBackward } from './gla.js';

const rng = new Rng(0x61a);

/** Log-space gates in (-inf, 0): log sigmoid of normals, as GLA's gate parametrisation. */
function gates(shape: number[]): Tensor {
  const x = randn(rng, shape).toFloat64Array();
  return Tensor.from(
    x.map((e) => -Math.log1p(Math.exp(-e))),
    shape,
    'f64',
  );
}

describe('glaRecurrentReference', () => {
  test('equals the closed (parallel) form o_t = scale sum_s (q_t * exp(G_t - G_s)) . k_s v_s + scale (q_t * exp(G_t)) h0', () => {
    const [B, T, H, K, V] = [2, 6, 2, 3, 4];
    const q = randn(rng, [B, T, H, K]);
    const k = randn(rng, [B, T, H, K]);
    const v = randn(rng, [B, T, H, V]);
    const gk = gates([B, T, H, K]);
    const h0 = randn(rng, [B, H, K, V]);
    const scale = 0.7;
    const { o, finalState } = glaRecurrentReference(q, k, v, gk, {
      scale,
      initialState: h0,
      outputFinalState: true,
    });
    expect(o.shape).toEqual([B, T, H, V]);
    expect(finalState?.shape).toEqual([B, H, K, V]);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const G = new Array<number[]>(T);
        for (let t = 0; t < T; t++) {
          G[t] = Array.from(
            { length: K },
            (_, x) => (t > 0 ? G[t - 1]![x]! : 0) + gk.get(b, t, h, x),
          );
        }
        for (let t = 0; t < T; t++) {
          for (let y = 0; y < V; y++) {
            let acc = 0;
            for (let x = 0; x < K; x++) {
              let s = Math.exp(G[t]![x]!) * h0.get(b, h, x, y);
              for (let u = 0; u <= t; u++)
                s += Math.exp(G[t]![x]! - G[u]![x]!) * k.get(b, u, h, x) * v.get(b, u, h, y);
              acc += scale * q.get(b, t, h, x) * s;
            }
            expect(Math.abs(o.get(b, t, h, y) - acc)).toBeLessThan(1e-13 * (1 + Math.abs(acc)));
          }
        }
      }
    }
  });

  test('splitting the sequence and passing the final state as the next initial state changes nothing', () => {
    const [B, T, H, K, V] = [1, 7, 2, 3, 2];
    const q = randn(rng, [B, T, H, K]);
    const k = randn(rng, [B, T, H, K]);
    const v = randn(rng, [B, T, H, V]);
    const gk = gates([B, T, H, K]);
    const whole = glaRecurrentReference(q, k, v, gk, { outputFinalState: true });
    const part = (t: Tensor, a: number, e: number) => t.slice(1, a, e);
    const first = glaRecurrentReference(
      part(q, 0, 3),
      part(k, 0, 3),
      part(v, 0, 3),
      part(gk, 0, 3),
      { outputFinalState: true },
    );
    const second = glaRecurrentReference(
      part(q, 3, 7),
      part(k, 3, 7),
      part(v, 3, 7),
      part(gk, 3, 7),
      {
        initialState: first.finalState!,
        outputFinalState: true,
      },
    );
    expect(relL2(part(whole.o, 0, 3).toFloat64Array(), first.o.toFloat64Array())).toBeLessThan(
      1e-15,
    );
    expect(relL2(part(whole.o, 3, 7).toFloat64Array(), second.o.toFloat64Array())).toBeLessThan(
      1e-15,
    );
    expect(
      relL2(whole.finalState!.toFloat64Array(), second.finalState!.toFloat64Array()),
    ).toBeLessThan(1e-15);
    expect(glaRecurrentReference(q, k, v, gk).finalState).toBeUndefined();
  });

  test('errors name the argument', () => {
    const q = randn(rng, [1, 4, 2, 3]);
    const k = randn(rng, [1, 4, 2, 3]);
    const v = randn(rng, [1, 4, 2, 5]);
    const gk = gates([1, 4, 2, 3]);
    const dO = randn(rng, [1, 4, 2, 5]);
    expect(() => glaRecurrentReference(q, randn(rng, [1, 4, 2, 4]), v, gk)).toThrow(
      /^k: expected shape \[1, 4, 2, 3\]/,
    );
    expect(() => glaRecurrentReference(q, k, randn(rng, [1, 3, 2, 5]), gk)).toThrow(ShapeError);
    expect(() => glaRecurrentReference(q, k, v, gates([1, 4, 2, 2]))).toThrow(
      /^gk: expected shape/,
    );
    expect(() => glaRecurrentReference(q, k, v, gk.reshape([4, 2, 3]))).toThrow(
      /^gk: expected rank 4/,
    );
    expect(() => glaRecurrentReference(q, k, v, Tensor.zeros([1, 4, 2, 3], 'i32'))).toThrow(
      DTypeError,
    );
    expect(() => glaRecurrentReference(q, k, v, gk, { scale: Number.NaN })).toThrow(/^scale: /);
    expect(() =>
      glaRecurrentReference(q, k, v, gk, { initialState: randn(rng, [1, 2, 3, 4]) }),
    ).toThrow(/^initialState: expected shape \[1, 2, 3, 5\]/);
    expect(() =>
      glaRecurrentReferenceBackward(q, k, v, gk, dO, { dFinalState: randn(rng, [1, 2, 5, 3]) }),
    ).toThrow(/^dFinalState: /);
    expect(() => glaRecurrentReferenceBackward(q, k, v, gk, randn(rng, [1, 4, 2, 3]))).toThrow(
      /^dO: expected shape/,
    );
    expect(() =>
      glaRecurrentReference(q, k, v, gk, { outputFinalState: 1 as unknown as boolean }),
    ).toThrow(ValueError);
  });
});

describe('glaRecurrentReferenceBackward (central finite differences)', () => {
  test('with h0 and dFinalState: dq, dk, dv, dgk, dh0', () => {
    const [B, T, H, K, V] = [2, 5, 2, 3, 2];
    const q = randn(rng, [B, T, H, K]);
    const k = randn(rng, [B, T, H, K]);
    const v = randn(rng, [B, T, H, V]);
    const gk = gates([B, T, H, K]);
    const h0 = randn(rng, [B, H, K, V]);
    const dO = randn(rng, [B, T, H, V]);
    const dht = randn(rng, [B, H, K, V]);
    const scale = 0.9;
    const g = glaRecurrentReferenceBackward(q, k, v, gk, dO, {
      scale,
      initialState: h0,
      dFinalState: dht,
    });
    const loss = ([a, b, c, d, e]: Tensor[]) => {
      const r = glaRecurrentReference(a!, b!, c!, d!, {
        scale,
        initialState: e!,
        outputFinalState: true,
      });
      return dot(r.o, dO) + dot(r.finalState!, dht);
    };
    const inputs = [q, k, v, gk, h0];
    [g.dq, g.dk, g.dv, g.dgk, g.dh0!].forEach((grad, w) => {
      expect(grad.shape).toEqual(inputs[w]!.shape);
      expect(relL2(grad.toFloat64Array(), numericGrad(loss, inputs, w))).toBeLessThan(1e-6);
    });
  });

  test('without h0 or dFinalState (no dh0 returned)', () => {
    const [B, T, H, K, V] = [1, 4, 1, 2, 3];
    const q = randn(rng, [B, T, H, K]);
    const k = randn(rng, [B, T, H, K]);
    const v = randn(rng, [B, T, H, V]);
    const gk = gates([B, T, H, K]);
    const dO = randn(rng, [B, T, H, V]);
    const g = glaRecurrentReferenceBackward(q, k, v, gk, dO);
    expect(g.dh0).toBeUndefined();
    const loss = ([a, b, c, d]: Tensor[]) => dot(glaRecurrentReference(a!, b!, c!, d!).o, dO);
    [g.dq, g.dk, g.dv, g.dgk].forEach((grad, w) => {
      expect(relL2(grad.toFloat64Array(), numericGrad(loss, [q, k, v, gk], w))).toBeLessThan(1e-6);
    });
  });
});
