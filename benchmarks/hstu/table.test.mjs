import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatTable, mergeRows } from './table.mjs';

const shape = { B: 2, N: 8, H: 1, D: 4, V: 4, L: 13 };
const row = (impl, pass, ms, extra = {}) => ({
  impl,
  dtype: 'fp16',
  pass,
  ms,
  tflops: 1,
  shape,
  lengths_seed: 0,
  ...extra,
});

test('rows of several files merge into one table per pass, fastest first', () => {
  const rows = mergeRows([
    { rows: [row('torch', 'forward', 2), row('torch', 'forward+backward', 5)] },
    { rows: [row('attnkit', 'forward', 1), row('sdpa', 'forward', 3, { padded: true })] },
  ]);
  const text = formatTable(rows);
  assert.match(text, /^forward:\n/);
  const fwd = text.split('forward+backward:')[0];
  assert.ok(fwd.indexOf('attnkit') < fwd.indexOf('| torch'));
  assert.match(fwd, /\| sdpa \| fp16 \| 3\.000 \| 1\.00 \| padded batch \|/);
});

test('a row of another batch is refused, named', () => {
  const other = { ...row('attnkit', 'forward', 1), lengths_seed: 1 };
  assert.throws(
    () => mergeRows([{ rows: [row('torch', 'forward', 2)] }, { rows: [other] }]),
    /attnkit fp16 forward/,
  );
});
