import { describe, formatShape, ShapeError, ValueError } from '@attnkit/tensor';
import { apply, type OpDef, type Var, type VarLike } from '../autograd.js';
import type { RopeSection } from '../kernels/table.js';

interface RopeAttrs {
  sections: readonly RopeSection[];
  base: number;
}

// A rotation's inverse is the rotation by -theta: the backward is the same kernel, inverted.
const ropeOp: OpDef<RopeAttrs> = {
  name: 'rope',
  forward: ({ k }, [x], { sections, base }) => k.rope(x!, sections, base, false),
  backward: ({ k }, dy, { sections, base }) => [k.rope(dy, sections, base, true)],
};

function checkBase(base: number) {
  if (typeof base !== 'number' || !(base > 0) || !Number.isFinite(base))
    throw new ValueError(`rope: base expected a positive number, got ${describe(base)}`, 'base');
}

/**
 * Rotary position embedding (Su et al., RoFormer) over the last dim of x [..., T, D], rotate-
 * half layout; token t sits at position offset + t (offset: the KV-cache length when decoding).
 */
export function rope(x: VarLike, options: { offset?: number; base?: number } = {}): Var {
  const { offset = 0, base = 10000 } = options;
  checkBase(base);
  const s = x.shape;
  const d = s[s.length - 1]!;
  if (s.length < 2 || d % 2 !== 0)
    throw new ShapeError(`rope: x expected [..., T, D] with even D, got ${formatShape(s)}`, 'x');
  if (!Number.isInteger(offset) || offset < 0)
    throw new ValueError(
      `rope: offset expected a non-negative integer, got ${describe(offset)}`,
      'offset',
    );
  const t = s[s.length - 2]!;
  const positions = Float64Array.from({ length: t }, (_, i) => offset + i);
  return apply(ropeOp, [x], { sections: [{ dim: d, positions }], base });
}

/**
 * 3D rotary embedding for video tokens (t, h, w) in row-major order over x [..., T*H*W, D]:
 * the head dim splits into `dims` = [dt, dh, dw] (even; default dh = dw = 2 floor(D / 6),
 * dt the rest), each rotated by its own coordinate.
 */
export function rope3d(
  x: VarLike,
  options: {
    grid: readonly [number, number, number];
    dims?: readonly [number, number, number];
    base?: number;
  },
): Var {
  const { grid, base = 10000 } = options;
  checkBase(base);
  const s = x.shape;
  const d = s[s.length - 1]!;
  const n = s[s.length - 2];
  if (!Array.isArray(grid) || grid.length !== 3 || grid.some((g) => !Number.isInteger(g) || g < 1))
    throw new ValueError(
      `rope3d: grid expected [t, h, w] positive integers, got ${describe(grid)}`,
      'grid',
    );
  const [gt, gh, gw] = grid;
  if (s.length < 2 || n !== gt * gh * gw)
    throw new ShapeError(
      `rope3d: x expected [..., ${gt * gh * gw}, D] (t*h*w tokens), got ${formatShape(s)}`,
      'x',
    );
  const side = 2 * Math.floor(d / 6);
  const dims = options.dims ?? [d - 2 * side, side, side];
  if (dims.some((v) => v % 2 !== 0 || v < 0) || dims[0] + dims[1] + dims[2] !== d)
    throw new ValueError(
      `rope3d: dims expected three even numbers summing to D = ${d}, got ${describe(dims)}`,
      'dims',
    );
  const coord = (f: (i: number) => number) => Float64Array.from({ length: n }, (_, i) => f(i));
  const sections: RopeSection[] = [
    { dim: dims[0], positions: coord((i) => Math.floor(i / (gh * gw))) },
    { dim: dims[1], positions: coord((i) => Math.floor(i / gw) % gh) },
    { dim: dims[2], positions: coord((i) => i % gw) },
  ];
  return apply(ropeOp, [x], { sections, base });
}
