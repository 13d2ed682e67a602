import { describe, ValueError } from '@attnkit/tensor';
import { allocF32 } from '../cpu/alloc.js';
import { tiledForward } from '../cpu/fa2.js';
import { withInt8Operands } from '../cpu/int8.js';
import { CPU_SOFTMAX } from '../cpu/scores.js';
import {
  SAGE_KEY_TILE,
  SAGE_Q_BLOCK,
  type SageCodecCpu,
  type SageKernelOptions,
  sageProblem,
} from './codec.js';

const EMPTY = new Float32Array(0);

/**
 * SageAttention2's kernel in TypeScript, the specification of ARITHMETIC.md "Kernel": the
 * skeleton's FA2 loop (cpu/fa2.ts) with the int8 `operands` hook (cpu/int8.ts) on 64-key
 * tiles. The mask rule (causal bottom-right, window) is @attnkit/attention's, through the
 * problem built here. Returns O [B, Hq, Nq, Dv] and, with returnLse, LSE [B, Hq, Nq]
 * (f32; a row with no allowed key: O = 0, LSE = -inf). ValueError naming scale / causal /
 * window / returnLse; ShapeError naming the codec array that does not fit its dims.
 */
export function sageForwardTs(
  codec: SageCodecCpu,
  opts: SageKernelOptions,
): { o: Float32Array; lse?: Float32Array } {
  if (
    codec === null ||
    typeof codec !== 'object' ||
    codec.dims === null ||
    typeof codec.dims !== 'object'
  )
    throw new ValueError(`codec: expected a SageCodecCpu, got ${describe(codec)}`, 'codec');
  if (opts === null || typeof opts !== 'object')
    throw new ValueError(`options: expected SageKernelOptions, got ${describe(opts)}`, 'options');
  if (typeof opts.returnLse !== 'boolean')
    throw new ValueError(
      `returnLse: expected a boolean, got ${describe(opts.returnLse)}`,
      'returnLse',
    );
  if (opts.scale === undefined)
    throw new ValueError('scale: expected a finite number, got undefined', 'scale');
  const { batch, hq, nq, dv } = codec.dims;
  // Validates scale, causal, window and the head counts, folds causal into the window.
  const p = sageProblem(codec.dims, opts);
  const bq = Math.max(1, Math.min(SAGE_Q_BLOCK, nq));
  const hooks = withInt8Operands(p, CPU_SOFTMAX, { kind: 'int8', codec }, bq, SAGE_KEY_TILE);
  const O = allocF32(batch * hq * nq * dv, 'output');
  const LSE = allocF32(batch * hq * nq, 'output');
  tiledForward(p, hooks, EMPTY, EMPTY, codec.v ?? EMPTY, O, LSE, bq, SAGE_KEY_TILE);
  return opts.returnLse ? { o: O, lse: LSE } : { o: O };
}
