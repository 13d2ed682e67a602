import { UnsupportedError } from '@attnkit/attention';
import {
  CpuStorage,
  DeviceError,
  DTypeError,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  add,
  exp,
  GraphError,
  gradcheck,
  keep,
  layerNorm,
  matmul,
  mul,
  noGrad,
  Param,
  registeredKernelNames,
  registerKernel,
  scope,
  setDeviceBackend,
  sum,
  tsKernels,
  Var,
} from './index.js';

const f64 = (values: number[], shape = [values.length]) => Tensor.from(values, shape, 'f64');
const arr = (t: Tensor | null) => Array.from(t!.toFloat64Array());

afterEach(() => vi.restoreAllMocks());

describe('tape', () => {
  it('seeds a scalar with 1, accumulates across backward calls, and frees the graph', () => {
    const x = new Param(f64([1, 2, 3]));
    const loss = sum(mul(x, x));
    loss.backward();
    expect(arr(x.grad)).toEqual([2, 4, 6]);
    sum(mul(x, 3)).backward();
    expect(arr(x.grad)).toEqual([5, 7, 9]);
    expect(() => loss.backward()).toThrowError(GraphError);
    expect(() => loss.backward()).toThrowError(/'sum' was freed/);
  });

  it('retainGraph allows a second backward; a given grad seeds a non-scalar', () => {
    const x = new Param(f64([1, -2]));
    const y = mul(x, x);
    y.backward(f64([1, 10]), { retainGraph: true });
    y.backward(f64([1, 10]));
    expect(arr(x.grad)).toEqual([4, -80]);
    expect(() => mul(x, x).backward()).toThrowError(/needs grad in its shape/);
    expect(() => mul(x, x).backward(f64([1, 2, 3]))).toThrowError(ValueError);
  });

  it('noGrad records nothing; detach cuts the graph; constants get no grad', () => {
    const x = new Param(f64([1, 2]));
    const y = noGrad(() => mul(x, x));
    expect(y.requiresGrad).toBe(false);
    expect(() => sum(y).backward()).toThrowError(GraphError);
    const c = new Var(f64([5, 5]));
    const z = add(mul(x.detach(), x), c);
    sum(z).backward();
    expect(arr(x.grad)).toEqual([1, 2]);
    expect(c.grad).toBeNull();
  });

  it('a deep chain backpropagates without recursion', () => {
    const x = new Param(f64([0.5]));
    let y: Var = x;
    for (let i = 0; i < 2000; i++) y = mul(y, 1);
    sum(y).backward();
    expect(arr(x.grad)).toEqual([1]);
  });

  it('scope disposes the intermediates the result does not need, and keeps leaf grads', () => {
    const disposed: Tensor[] = [];
    vi.spyOn(Tensor.prototype, 'dispose').mockImplementation(function (this: Tensor) {
      disposed.push(this);
    });
    const w = new Param(f64([1, 2, 3]));
    let kept: Var | undefined;
    const value = scope(() => {
      const a = exp(w); // intermediate, not needed by the result
      kept = mul(w, 2);
      const loss = sum(mul(kept, kept));
      loss.backward();
      void a;
      return loss.item();
    });
    expect(value).toBe(56);
    expect(disposed.length).toBeGreaterThan(0);
    expect(disposed).not.toContain(w.data);
    expect(disposed).not.toContain(w.grad);
    expect(arr(w.grad)).toEqual([8, 16, 24]);
    // The graph a returned value still needs survives the scope.
    disposed.length = 0;
    const y = scope(() => sum(mul(exp(w), 2)));
    const saved = y.node!.inputs[0]!.node!.saved!;
    expect(saved.every((t) => !disposed.includes(t))).toBe(true);
    y.backward();
    // keep() marks state (a KV cache) that no scope disposes.
    disposed.length = 0;
    const cache = scope(() => {
      keep(exp(w));
      return 1;
    });
    expect(cache).toBe(1);
    expect(disposed).toHaveLength(0);
  });
});

describe('dispatch errors', () => {
  it('a shape mismatch names the op', () => {
    const a = new Param(f64([1, 2, 3]));
    expect(() => add(a, f64([1, 2]))).toThrowError(ShapeError);
    expect(() => add(a, f64([1, 2]))).toThrowError(/^add: shapes \[3\] and \[2\]/);
    expect(() => matmul(f64([1, 2, 3, 4], [2, 2]), f64([1, 2, 3], [3, 1]))).toThrowError(
      /^matmul: inner dims/,
    );
    expect(() => layerNorm(f64([1, 2, 3], [1, 3]), f64([1, 2]))).toThrowError(
      /layerNorm: weight expected \[3\]/,
    );
  });

  it('a dtype mix and an unsupported dtype name the op', () => {
    const a = Tensor.from([1, 2], [2], 'f32');
    expect(() => mul(a, f64([1, 2]))).toThrowError(DTypeError);
    expect(() => mul(a, f64([1, 2]))).toThrowError(/^mul: expected one floating dtype/);
    const half = Tensor.from([1, 2], [2], 'f16');
    // 'cpu' runs on native when the engine loads, else on ts: each names itself.
    expect(() => exp(half)).toThrowError(DTypeError);
    expect(() => exp(half)).toThrowError(
      /^exp: backend '(ts' takes f32 or f64|native' takes f32 tensors \(f64 runs on the ts kernels\)), got x in f16/,
    );
  });

  it('a device mix is a DeviceError; a missing kernel is an UnsupportedError naming op and backend', () => {
    class FakeStorage extends CpuStorage {
      override readonly device = 'fake' as 'cpu';
    }
    const fake = new Tensor(new FakeStorage('f32', new Float32Array(2)), [2]);
    expect(() => add(fake, Tensor.from([1, 2]))).toThrowError(DeviceError);
    setDeviceBackend('fake', 'fakebackend');
    registerKernel('binary', 'fakebackend', () => fake);
    expect(add(fake, fake).data).toBe(fake);
    const err = (() => {
      try {
        exp(fake);
      } catch (e) {
        return e as UnsupportedError;
      }
    })();
    expect(err).toBeInstanceOf(UnsupportedError);
    expect(err!.message).toBe("exp: backend 'fakebackend' has no 'unary' kernel");
  });

  it('the ts backend registers every kernel the ops call', () => {
    expect(registeredKernelNames('ts').sort()).toEqual(Object.keys(tsKernels).sort());
    expect(registeredKernelNames('ts')).toHaveLength(37);
  });

  it('gradcheck rejects f32 inputs', () => {
    expect(() => gradcheck((x) => x, [Tensor.from([1])])).toThrowError(DTypeError);
  });
});
