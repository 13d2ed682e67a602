import type { Tensor } from '@attnkit/tensor';
import { apply, type OpDef, type Var, type VarLike } from '../autograd.js';
import type { BinaryOp, UnaryOp } from '../kernels/table.js';
import { broadcastShapes } from '../kernels/ts/util.js';

const binaryOp = (name: BinaryOp): OpDef<null> => ({
  name,
  forward({ k, save }, [a, b]) {
    broadcastShapes(name, a!.shape, b!.shape);
    if (name === 'mul' || name === 'div') save(a!, b!);
    return k.binary(name, a!, b!);
  },
  backward({ k, saved, needsGrad, inputShapes }, dy) {
    const [sa, sb] = inputShapes as [readonly number[], readonly number[]];
    const [a, b] = saved;
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (name === 'add' || name === 'sub') {
      if (needsGrad[0]) da = k.sumTo(dy, sa);
      if (needsGrad[1]) db = k.sumTo(name === 'add' ? dy : k.affine(dy, -1, 0), sb);
    } else if (name === 'mul') {
      if (needsGrad[0]) da = k.sumTo(k.binary('mul', dy, b!), sa);
      if (needsGrad[1]) db = k.sumTo(k.binary('mul', dy, a!), sb);
    } else {
      // d(a/b)/db = -a / b^2
      if (needsGrad[0]) da = k.sumTo(k.binary('div', dy, b!), sa);
      if (needsGrad[1]) {
        const q = k.binary('div', k.binary('div', a!, b!), b!);
        db = k.sumTo(k.affine(k.binary('mul', dy, q), -1, 0), sb);
      }
    }
    return [da, db];
  },
});

const BINARY = {
  add: binaryOp('add'),
  sub: binaryOp('sub'),
  mul: binaryOp('mul'),
  div: binaryOp('div'),
};

/** a x + b for scalars a and b. */
const affineOp: OpDef<{ a: number; b: number }> = {
  name: 'affine',
  forward: ({ k }, [x], { a, b }) => k.affine(x!, a, b),
  backward: ({ k }, dy, { a }) => [k.affine(dy, a, 0)],
};

/** a x + b elementwise, a and b numbers. */
export const affine = (x: VarLike, a: number, b = 0): Var => apply(affineOp, [x], { a, b });

function binary(name: BinaryOp, a: VarLike | number, b: VarLike | number): Var {
  if (typeof b === 'number') {
    if (typeof a === 'number')
      throw new TypeError(`${name}: at least one operand must be a tensor`);
    if (name === 'add') return affine(a, 1, b);
    if (name === 'sub') return affine(a, 1, -b);
    if (name === 'mul') return affine(a, b, 0);
    return affine(a, 1 / b, 0);
  }
  if (typeof a === 'number') {
    if (name === 'add') return affine(b, 1, a);
    if (name === 'sub') return affine(b, -1, a);
    if (name === 'mul') return affine(b, a, 0);
  }
  return apply(BINARY[name], [a as VarLike, b], null);
}

/** Broadcasting a + b (numpy rules; either may be a number). */
export const add = (a: VarLike | number, b: VarLike | number) => binary('add', a, b);
export const sub = (a: VarLike | number, b: VarLike | number) => binary('sub', a, b);
export const mul = (a: VarLike | number, b: VarLike | number) => binary('mul', a, b);
export const div = (a: VarLike | number, b: VarLike | number) => binary('div', a, b);
export const neg = (x: VarLike) => affine(x, -1, 0);

const unaryOp = (name: UnaryOp): OpDef<null> => ({
  name,
  forward({ k, save }, [x]) {
    const y = k.unary(name, x!);
    save(x!, y);
    return y;
  },
  backward: ({ k, saved }, dy) => [k.unaryBackward(name, saved[0]!, saved[1]!, dy)],
});

/** nn's unary ops by name. */
export const UNARY_OPS = ['exp', 'log', 'relu', 'gelu', 'silu', 'sigmoid', 'tanh'] as const;

const UNARY = Object.fromEntries(UNARY_OPS.map((n) => [n, unaryOp(n)])) as Record<
  UnaryOp,
  OpDef<null>
>;

/** nn's unary op `name` (one of UNARY_OPS) of x, by name. */
export const applyUnary = (name: UnaryOp, x: VarLike) => apply(UNARY[name], [x], null);
/** Whether `name` names one of nn's unary ops. */
export const isUnaryOp = (name: unknown): name is UnaryOp =>
  typeof name === 'string' && Object.hasOwn(UNARY, name);

export const exp = (x: VarLike) => apply(UNARY.exp, [x], null);
export const log = (x: VarLike) => apply(UNARY.log, [x], null);
export const relu = (x: VarLike) => apply(UNARY.relu, [x], null);
/** GELU, tanh approximation (as GPT-2). */
export const gelu = (x: VarLike) => apply(UNARY.gelu, [x], null);
export const silu = (x: VarLike) => apply(UNARY.silu, [x], null);
export const sigmoid = (x: VarLike) => apply(UNARY.sigmoid, [x], null);
export const tanh = (x: VarLike) => apply(UNARY.tanh, [x], null);
