import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { accuracy } from '@attnkit/attention';
import {
  checkLargeLogitGrads,
  expectLargeLogitGrads,
  LARGE_LOGITS,
  largeLogitCase,
  largeLogitReference,
} from '@attnkit/testing';
import { afterAll, describe, test } from 'vitest';
import { flashAttention, flashAttentionBackward } from './index.js';

// Issue 9 item 2: the backward at large logits, max |logit| over 1e1..1e6, on the CPU backends
// (WebGPU: webgpu/large-logits.test.ts). Odd lengths, Nq != Nk, GQA, causal and not. Before
// the fix native's dv was 7e-3 off at 1e5 and 0.55 at 4.4e6 (P = e^(S - LSE) above 1: S was
// recomputed with the scale applied after the dot product, and LSE went back to log2 units
// through an f32 product).
const DIMS = { hq: 4, hkv: 2, nq: 37, nk: 45, d: 32 };

// With ATTNKIT_REPORT=<file.json> (benchmarks/large-logits.mjs), the errors are also recorded
// and printed as a table.
const report = process.env.ATTNKIT_REPORT;
const rows: Record<string, unknown>[] = [];
afterAll(() => {
  if (!report) return;
  const f = (x: number) => x.toExponential(1);
  const lines = [
    '| backend | causal | max abs logit | dq rel L2 | dk rel L2 | dv rel L2 | worst x bound |',
  ];
  lines.push('| --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows)
    lines.push(
      `| ${r.backend} | ${r.causal ? 'yes' : 'no'} | ${r.maxLogit} | ${f(r.dq as number)} | ${f(r.dk as number)} | ${f(r.dv as number)} | ${(r.worst as number).toFixed(3)} |`,
    );
  console.log(lines.join('\n'));
  mkdirSync(dirname(report), { recursive: true });
  writeFileSync(
    report,
    `${JSON.stringify({ date: new Date().toISOString(), dims: DIMS, rows }, null, 2)}\n`,
  );
});

describe.each(['ts', 'native'] as const)('large logits, backend %s', (backend) => {
  for (const causal of [false, true]) {
    test.each([...LARGE_LOGITS])(`causal ${causal}, max |logit| %d`, async (maxLogit) => {
      const c = largeLogitCase(11 + Math.round(Math.log10(maxLogit) * 10), DIMS, maxLogit, {
        causal,
      });
      const ref = largeLogitReference(c);
      const { o, lse } = await flashAttention(c.q, c.k, c.v, { causal, backend });
      const g = await flashAttentionBackward(c.q, c.k, c.v, o, lse, c.dO, { causal, backend });
      if (report) {
        const worst = Math.max(
          ...checkLargeLogitGrads(c, g, ref).map((x) =>
            x.nonFinite > 0 ? Number.POSITIVE_INFINITY : x.err / x.allowed,
          ),
        );
        const rel = (n: 'dq' | 'dk' | 'dv') => accuracy(g[n], ref[n]).relL2;
        rows.push({
          backend,
          causal,
          maxLogit,
          dq: rel('dq'),
          dk: rel('dk'),
          dv: rel('dv'),
          worst,
        });
      }
      expectLargeLogitGrads(c, g, ref, `${backend} causal ${causal} ${maxLogit}`);
    });
  }
});
