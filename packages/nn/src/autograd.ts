import { describe, type Storage, type Tensor, ValueError } from '@attnkit/tensor';
import { backendFor, kernelsFor } from './dispatch.js';
import { GraphError } from './errors.js';
import type { Kernels } from './kernels/table.js';

/**
 * An op: its forward (tensors in, one tensor out, saving what the backward needs) and its
 * backward (the upstream gradient in, one gradient per input, null where none is needed).
 * Both call kernels through `k`, the op table of the backend the inputs' device maps to.
 */
export interface OpDef<A> {
  name: string;
  forward(ctx: ForwardContext, inputs: readonly Tensor[], attrs: A): Tensor;
  backward(ctx: BackwardContext, dy: Tensor, attrs: A): readonly (Tensor | null)[];
}

export interface ForwardContext {
  k: Kernels;
  backend: string;
  /** Which inputs need a gradient (an op may skip saving what only the others need). */
  needsGrad: readonly boolean[];
  save(...tensors: Tensor[]): void;
  /** Non-tensor values the backward needs (counts, masks' parameters). */
  meta: Record<string, unknown>;
}

export interface BackwardContext {
  k: Kernels;
  backend: string;
  needsGrad: readonly boolean[];
  saved: readonly Tensor[];
  meta: Record<string, unknown>;
  inputShapes: readonly (readonly number[])[];
}

interface Node {
  op: OpDef<unknown>;
  attrs: unknown;
  inputs: readonly Var[];
  backend: string;
  /** null once a backward has freed the graph. */
  saved: Tensor[] | null;
  meta: Record<string, unknown>;
}

/**
 * A tensor in the autograd graph: `data` (a Tensor), whether it needs a gradient, the node
 * that made it (none for leaves), and `grad` for leaves after backward(). Ops take Vars and
 * return Vars; plain Tensors passed to an op are constants.
 */
export class Var {
  grad: Tensor | null = null;
  /** @internal the op that produced this value (null for leaves and under noGrad). */
  node: Node | null = null;
  constructor(
    public data: Tensor,
    public requiresGrad = false,
  ) {
    if (!isTensor(data))
      throw new ValueError(`data: expected a Tensor, got ${describe(data)}`, 'data');
  }

  get shape(): readonly number[] {
    return this.data.shape;
  }
  get dtype() {
    return this.data.dtype;
  }
  get device(): string {
    return this.data.device;
  }
  get isLeaf(): boolean {
    return this.node === null;
  }

  /** The same data, cut from the graph. */
  detach(): Var {
    return new Var(this.data);
  }

  /** The value of a one-element cpu tensor. */
  item(): number {
    if (this.data.size !== 1)
      throw new ValueError(
        `item: expected a one-element tensor, got shape [${this.shape}]`,
        'item',
      );
    return this.data.toFloat64Array()[0]!;
  }

  /**
   * Accumulates d this / d leaf into every leaf's `grad` that requires one. A scalar is seeded
   * with 1; otherwise pass `grad` in this value's shape. The graph is freed afterwards unless
   * `retainGraph`; a second backward through it is a GraphError naming the op.
   */
  backward(grad?: Tensor | Var, options: { retainGraph?: boolean } = {}): void {
    backward(this, grad instanceof Var ? grad.data : grad, options.retainGraph ?? false);
  }

  toString(): string {
    return `Var(${this.data.toString()}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

/** A trainable leaf: requiresGrad, updated in place (its `data` replaced) by optimizers. */
export class Param extends Var {
  constructor(data: Tensor) {
    super(data, true);
  }
}

/**
 * A Tensor of any copy of @attnkit/tensor (a bundle beside a dist, two installed versions):
 * duck-typed, as the family packages do, since instanceof would reject the other copy's.
 */
export function isTensor(t: unknown): t is Tensor {
  const x = t as Tensor;
  return (
    !!x &&
    typeof x === 'object' &&
    Array.isArray(x.shape) &&
    typeof x.device === 'string' &&
    typeof x.data === 'function'
  );
}

export type VarLike = Var | Tensor;
export const asVar = (x: VarLike): Var => (x instanceof Var ? x : new Var(x));

let gradEnabled = true;

/** Runs fn without recording a graph (inference, optimizer updates). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

export function isGradEnabled(): boolean {
  return gradEnabled;
}

// ---- scopes --------------------------------------------------------------------------------

const scopes: Set<Tensor>[] = [];

function track(t: Tensor): Tensor {
  scopes[scopes.length - 1]?.add(t);
  return t;
}

/**
 * Runs fn and disposes every tensor the ops made inside it, except those reachable from the
 * result (Vars, their grads, and what their graph saved for backward) and leaves' grads. What
 * survives moves to the enclosing scope. On the cpu dispose is a no-op; on a GPU this is what
 * returns the intermediates' buffers to the pool.
 */
export function scope<T>(fn: () => T): T {
  const made = new Set<Tensor>();
  scopes.push(made);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  const keep = new Set<Storage>();
  const seen = new Set<unknown>();
  const visit = (value: unknown): void => {
    if (value === null || typeof value !== 'object' || seen.has(value)) return;
    seen.add(value);
    if (isTensor(value)) keep.add(value.storage);
    else if (value instanceof Var) {
      visit(value.data);
      visit(value.grad);
      if (value.node) {
        for (const t of value.node.saved ?? []) visit(t);
        for (const v of value.node.inputs) visit(v);
      }
    } else if (Array.isArray(value)) for (const v of value) visit(v);
    else if (Object.getPrototypeOf(value) === Object.prototype)
      for (const v of Object.values(value)) visit(v);
  };
  visit(result);
  const parent = scopes[scopes.length - 1];
  const disposed = new Set<Storage>();
  for (const t of made) {
    if (keep.has(t.storage) || persistent.has(t.storage)) parent?.add(t);
    else if (!disposed.has(t.storage)) {
      disposed.add(t.storage);
      t.dispose();
    }
  }
  return result;
}

// Leaf grads and what keep() marks are state, never a scope's intermediates.
const persistent = new WeakSet<Storage>();

/**
 * Marks the tensors of `value` (a Tensor, a Var's data and grad, arrays of them) as state that
 * no scope disposes: a KV cache, running statistics. Returns value.
 */
export function keep<T>(value: T): T {
  if (isTensor(value)) persistent.add(value.storage);
  else if (value instanceof Var) {
    keep(value.data);
    if (value.grad) keep(value.grad);
  } else if (Array.isArray(value)) for (const v of value) keep(v);
  return value;
}

// ---- recording and backward ----------------------------------------------------------------

/**
 * Runs `op` on the inputs' backend and, when grad mode is on and an input requires a
 * gradient, records the node. `floats` are the inputs that must share one floating dtype
 * (indices are not).
 */
export function apply<A>(
  op: OpDef<A>,
  inputs: readonly VarLike[],
  attrs: A,
  floats: readonly number[] = inputs.map((_, i) => i),
): Var {
  const vars = inputs.map(asVar);
  const tensors = vars.map((v) => v.data);
  const backend = backendFor(
    op.name,
    tensors,
    floats.map((i) => tensors[i]!),
  );
  const k = kernelsFor(op.name, backend);
  const record = gradEnabled && vars.some((v) => v.requiresGrad);
  const needsGrad = vars.map((v) => record && v.requiresGrad);
  const saved: Tensor[] = [];
  const meta: Record<string, unknown> = {};
  const ctx: ForwardContext = {
    k,
    backend,
    needsGrad,
    meta,
    save: (...ts) => {
      // What the op made is the scope's to dispose; the inputs (or views of them) are not.
      // Under noGrad too: what a kernel returns beside the output (an LSE, a norm's
      // statistics) is then nobody's, and only a scope gives its GPU buffer back.
      for (const t of ts) if (!tensors.some((u) => u.storage === t.storage)) track(t);
      if (record) saved.push(...ts);
    },
  };
  const out = new Var(track(op.forward(ctx, tensors, attrs)), record);
  if (record) out.node = { op: op as OpDef<unknown>, attrs, inputs: vars, backend, saved, meta };
  return out;
}

/**
 * A kernel with several outputs where no gradient can be recorded (a fused inference path such
 * as addLayerNorm's): dispatched as apply dispatches (one device, one float dtype over `floats`),
 * its outputs tracked by the enclosing scope and returned as Vars without a graph. Undefined,
 * having run nothing, when a gradient would be recorded or the backend's kernels return
 * undefined from `run` (it has no such kernel): the caller then composes differentiable ops.
 */
export function applyWithoutGrad(
  name: string,
  inputs: readonly VarLike[],
  run: (k: Kernels, tensors: Tensor[]) => Tensor[] | undefined,
  floats: readonly number[] = inputs.map((_, i) => i),
): Var[] | undefined {
  const vars = inputs.map(asVar);
  if (gradEnabled && vars.some((v) => v.requiresGrad)) return undefined;
  const tensors = vars.map((v) => v.data);
  const backend = backendFor(
    name,
    tensors,
    floats.map((i) => tensors[i]!),
  );
  const outs = run(kernelsFor(name, backend), tensors);
  return outs?.map((t) => new Var(track(t)));
}

function backward(root: Var, seed: Tensor | undefined, retainGraph: boolean): void {
  if (!root.requiresGrad)
    throw new GraphError(
      'backward: this value does not require a gradient (no input had requiresGrad, or it was made under noGrad)',
      'backward',
    );
  const order: Var[] = [];
  const seen = new Set<Var>();
  // Iterative post-order DFS: a deep graph (many layers) must not overflow the JS stack.
  const stack: [Var, boolean][] = [[root, false]];
  while (stack.length > 0) {
    const [v, done] = stack.pop()!;
    if (done) {
      order.push(v);
      continue;
    }
    if (seen.has(v)) continue;
    seen.add(v);
    stack.push([v, true]);
    for (const u of v.node?.inputs ?? [])
      if (u.requiresGrad && !seen.has(u)) stack.push([u, false]);
  }
  const backendOf = root.node?.backend ?? backendFor('backward', [root.data]);
  let dy = seed;
  if (dy === undefined) {
    if (root.data.size !== 1)
      throw new ValueError(
        `backward: a non-scalar output (shape [${root.shape}]) needs grad in its shape`,
        'grad',
      );
    dy = track(kernelsFor('backward', backendOf).full(root.shape, 1, root.dtype as 'f32' | 'f64'));
  } else if (!isTensor(dy) || dy.shape.join() !== root.shape.join())
    throw new ValueError(
      `backward: grad expected a Tensor of shape [${root.shape}], got ${isTensor(dy) ? `[${dy.shape}]` : describe(dy)}`,
      'grad',
    );
  // The caller's gradient is theirs: gradients that alias it (an add passes dy through) would
  // be disposed by a scope or zeroGrad, so the backward starts from a copy of it.
  else dy = track(kernelsFor('backward', backendOf).affine(dy, 1, 0));
  const grads = new Map<Var, Tensor>([[root, dy]]);
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    for (let i = order.length - 1; i >= 0; i--) {
      const v = order[i]!;
      const g = grads.get(v);
      grads.delete(v);
      if (g === undefined) continue;
      const node = v.node;
      if (!node) {
        accumulate(v, g);
        continue;
      }
      if (node.saved === null)
        throw new GraphError(
          `backward: the graph through '${node.op.name}' was freed by an earlier backward(); pass { retainGraph: true } to the first one to go through it twice`,
          node.op.name,
        );
      const k = kernelsFor(node.op.name, node.backend);
      const inputGrads = node.op.backward(
        {
          k,
          backend: node.backend,
          needsGrad: node.inputs.map((u) => u.requiresGrad),
          saved: node.saved,
          meta: node.meta,
          inputShapes: node.inputs.map((u) => u.shape),
        },
        g,
        node.attrs,
      );
      node.inputs.forEach((u, j) => {
        const gu = inputGrads[j];
        if (!gu) return;
        // A gradient the input does not need (an op may compute all of them) is still the
        // scope's to dispose: dropped untracked, its GPU buffer would wait for the collector.
        track(gu);
        if (!u.requiresGrad) return;
        const before = grads.get(u);
        grads.set(u, before ? track(k.binary('add', before, gu)) : gu);
      });
      if (!retainGraph) node.saved = null;
    }
  } finally {
    gradEnabled = prev;
  }
}

function accumulate(leaf: Var, g: Tensor): void {
  const k = kernelsFor('backward', backendFor('backward', [leaf.data]));
  leaf.grad = leaf.grad ? k.binary('add', leaf.grad, g) : g;
  persistent.add(leaf.grad.storage);
}
