import {
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  readSafetensors,
  ShapeError,
  type Tensor,
  ValueError,
  writeSafetensors,
} from '@attnkit/tensor';
import { Param } from '../autograd.js';

/**
 * A layer: named parameters and child modules (registered with `param` / `child`, in
 * construction order), a training flag, and the state dict their dotted names make
 * ("blocks.0.attn.wq.weight"), as PyTorch's nn.Module.
 */
export class Module {
  training = true;
  readonly #params = new Map<string, Param>();
  readonly #children = new Map<string, Module>();

  /** Registers a parameter under `name` and returns it. */
  protected param(name: string, data: Tensor): Param {
    this.#checkName(name);
    const p = new Param(data);
    this.#params.set(name, p);
    return p;
  }

  /** Registers a child module under `name` and returns it. */
  protected child<M extends Module>(name: string, module: M): M {
    this.#checkName(name);
    if (!(module instanceof Module))
      throw new ValueError(`child: ${name} expected a Module, got ${describe(module)}`, name);
    this.#children.set(name, module);
    return module;
  }

  #checkName(name: string) {
    if (typeof name !== 'string' || name === '' || name.includes('.'))
      throw new ValueError(
        `name: expected a non-empty string without '.', got ${describe(name)}`,
        'name',
      );
    if (this.#params.has(name) || this.#children.has(name))
      throw new ValueError(
        `name: '${name}' is already registered on ${this.constructor.name}`,
        'name',
      );
  }

  namedChildren(): [string, Module][] {
    return [...this.#children];
  }

  children(): Module[] {
    return [...this.#children.values()];
  }

  /** Every parameter with its dotted name, this module's first, then each child's in order. */
  namedParameters(prefix = ''): [string, Param][] {
    const out: [string, Param][] = [];
    for (const [n, p] of this.#params) out.push([prefix + n, p]);
    for (const [n, m] of this.#children) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  parameters(): Param[] {
    return this.namedParameters().map(([, p]) => p);
  }

  /** Sets the training flag here and in every child (dropout reads it). */
  train(mode = true): this {
    this.training = mode;
    for (const m of this.#children.values()) m.train(mode);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  zeroGrad(): void {
    for (const p of this.parameters()) p.grad = null;
  }

  /** Parameter tensors by dotted name (the tensors themselves, not copies). */
  stateDict(): Record<string, Tensor> {
    return Object.fromEntries(this.namedParameters().map(([n, p]) => [n, p.data]));
  }

  /**
   * Replaces every parameter's tensor with the one of the same name. Missing names, extra
   * names, another shape or dtype are errors naming the key, found before anything changes:
   * a failed load leaves the module as it was.
   */
  loadStateDict(state: Record<string, Tensor>): void {
    if (state === null || typeof state !== 'object')
      throw new ValueError(
        `loadStateDict: state expected an object of tensors, got ${describe(state)}`,
        'state',
      );
    const params = new Map(this.namedParameters());
    const missing = [...params.keys()].filter((n) => !(n in state));
    const extra = Object.keys(state).filter((n) => !params.has(n));
    if (missing.length > 0 || extra.length > 0)
      throw new ValueError(
        `loadStateDict: ${[
          missing.length ? `missing keys ${describe(missing)}` : '',
          extra.length ? `unexpected keys ${describe(extra)}` : '',
        ]
          .filter(Boolean)
          .join('; ')}`,
        missing[0] ?? extra[0],
      );
    for (const [n, p] of params) {
      const t = state[n]!;
      if (t?.shape?.join() !== p.shape.join())
        throw new ShapeError(
          `loadStateDict: ${n} expected shape ${formatShape(p.shape)}, got ${t?.shape ? formatShape(t.shape) : describe(t)}`,
          n,
        );
      if (t.dtype !== p.dtype)
        throw new DTypeError(`loadStateDict: ${n} expected ${p.dtype}, got ${t.dtype}`, n);
      if (t.device !== p.device)
        throw new DeviceError(
          `loadStateDict: ${n} expected a ${p.device} tensor, got one on ${t.device}`,
          n,
        );
    }
    for (const [n, p] of params) {
      p.data = state[n]!;
      p.grad = null;
    }
  }
}

/** A state dict (a module's or an optimizer's) as safetensors bytes. */
export function toSafetensors(
  state: Record<string, Tensor>,
  metadata?: Record<string, string>,
): Uint8Array {
  return writeSafetensors(state, metadata ? { metadata } : {});
}

/** The tensors of safetensors bytes, for `loadStateDict`. */
export function fromSafetensors(bytes: Uint8Array): Record<string, Tensor> {
  return readSafetensors(bytes).tensors;
}
