import { describe, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { Param } from '../autograd.js';
import { backendFor, kernelsFor } from '../dispatch.js';

function checkParams(op: string, params: Iterable<Param>): Param[] {
  const list = [...params];
  list.forEach((p, i) => {
    if (!(p instanceof Param))
      throw new ValueError(`${op}: params[${i}] expected a Param, got ${describe(p)}`, 'params');
  });
  return list;
}

export function checkHyper(
  op: string,
  name: string,
  value: unknown,
  lo: number,
  hi = Infinity,
): number {
  if (typeof value !== 'number' || !(value >= lo && value <= hi))
    throw new ValueError(
      `${op}: ${name} expected a number in [${lo}, ${hi}], got ${describe(value)}`,
      name,
    );
  return value;
}

/** Optimizer state is kept in f32 for 16-bit parameters (f16 storage on webgpu), else in theirs. */
export const stateDtype = (dtype: string): 'f32' | 'f64' => (dtype === 'f64' ? 'f64' : 'f32');

/**
 * The optimizer base: its parameters in order, a learning rate the schedule may change, the
 * per-parameter state tensors, and a state dict ("<index>.<slot>" plus "step") that writes to
 * safetensors with the module's.
 */
export abstract class Optimizer {
  readonly params: Param[];
  lr: number;
  stepCount = 0;
  /** state[i][slot]: e.g. exp_avg, exp_avg_sq (AdamW), momentum_buffer (SGD). */
  protected state: Record<string, Tensor>[];
  protected abstract readonly slots: readonly string[];

  constructor(op: string, params: Iterable<Param>, lr: number) {
    this.params = checkParams(op, params);
    this.lr = checkHyper(op, 'lr', lr, 0);
    this.state = this.params.map(() => ({}));
  }

  /** Drops the gradients (on a GPU their buffers return to the pool). */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /**
   * Updates every parameter that has a gradient. The replaced parameter data and state tensors
   * are disposed (on a GPU their buffers return to the pool): read a stateDict() before the
   * next step.
   */
  step(): void {
    this.stepCount++;
    this.params.forEach((p, i) => {
      if (!p.grad) return;
      const k = kernelsFor(
        this.constructor.name,
        backendFor(this.constructor.name, [p.data, p.grad]),
      );
      this.update(k, p, p.grad, this.state[i]!);
    });
  }

  protected abstract update(
    k: ReturnType<typeof kernelsFor>,
    p: Param,
    g: Tensor,
    state: Record<string, Tensor>,
  ): void;

  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    this.state.forEach((s, i) => {
      for (const [slot, t] of Object.entries(s)) out[`${i}.${slot}`] = t;
    });
    // A host counter: a cpu scalar whatever device the parameters are on.
    out.step = Tensor.full([], this.stepCount, 'f64');
    return out;
  }

  /** Restores state from stateDict(); checks every key and shape before changing anything. */
  loadStateDict(state: Record<string, Tensor>): void {
    const next = this.params.map(() => ({}) as Record<string, Tensor>);
    let step: number | undefined;
    for (const [key, t] of Object.entries(state ?? {})) {
      if (key === 'step') {
        step = t.toFloat64Array()[0];
        continue;
      }
      const [index, slot] = key.split('.') as [string, string];
      const p = this.params[Number(index)];
      if (!p || !this.slots.includes(slot) || String(Number(index)) !== index)
        throw new ValueError(`loadStateDict: unexpected key '${key}'`, key);
      if (t.shape.join() !== p.shape.join() || t.dtype !== stateDtype(p.dtype))
        throw new ShapeError(
          `loadStateDict: ${key} expected ${stateDtype(p.dtype)} [${p.shape}], got ${t.dtype} [${t.shape}]`,
          key,
        );
      next[Number(index)]![slot] = t;
    }
    if (step === undefined || !Number.isInteger(step) || step < 0)
      throw new ValueError(
        `loadStateDict: 'step' expected a non-negative integer scalar, got ${describe(step)}`,
        'step',
      );
    this.state = next;
    this.stepCount = step;
  }
}
