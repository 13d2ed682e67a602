/**
 * One table from the HSTU benchmark's result files (torch_hstu.py --out, and the JS side's file
 * in the same format: {"rows": [{impl, dtype, pass, ms, tflops, shape, lengths_seed}, ...]}).
 *
 *   node benchmarks/hstu/table.mjs hstu-torch.json hstu-js.json
 *
 * prints a Markdown table per pass, fastest first. Rows of another shape or lengths seed than the
 * first file's are refused: they would not be the same jagged batch.
 */
import { readFileSync } from 'node:fs';
import process from 'node:process';
import { pathToFileURL } from 'node:url';

const KEYS = ['B', 'N', 'H', 'D', 'V', 'L'];

/** The rows of all results, checked to be of one batch; throws naming the first that is not. */
export function mergeRows(results) {
  const rows = results.flatMap((r) => r.rows);
  const first = rows[0];
  for (const row of rows) {
    const same =
      row.lengths_seed === first.lengths_seed && KEYS.every((k) => row.shape[k] === first.shape[k]);
    if (!same)
      throw new Error(
        `${row.impl} ${row.dtype} ${row.pass}: expected shape ${JSON.stringify(first.shape)} ` +
          `seed ${first.lengths_seed} (as ${first.impl}), got ${JSON.stringify(row.shape)} ` +
          `seed ${row.lengths_seed}`,
      );
  }
  return rows;
}

/** Markdown: one table per pass, rows sorted by ms. */
export function formatTable(rows) {
  const passes = [...new Set(rows.map((r) => r.pass))];
  return passes
    .map((pass) => {
      const lines = rows
        .filter((r) => r.pass === pass)
        .sort((a, b) => a.ms - b.ms)
        .map((r) => {
          const note = r.padded ? 'padded batch' : (r.note ?? '');
          return `| ${r.impl} | ${r.dtype} | ${r.ms.toFixed(3)} | ${r.tflops.toPrecision(3)} | ${note} |`;
        });
      return [
        `${pass}:`,
        '',
        '| impl | dtype | ms | TFLOP/s | note |',
        '| --- | --- | ---: | ---: | --- |',
      ]
        .concat(lines)
        .join('\n');
    })
    .join('\n\n');
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const results = process.argv.slice(2).map((f) => JSON.parse(readFileSync(f, 'utf8')));
  const rows = mergeRows(results);
  const s = rows[0].shape;
  console.log(
    `B ${s.B}, N ${s.N}, H ${s.H}, D ${s.D}, L ${s.L}, lengths seed ${rows[0].lengths_seed}\n`,
  );
  console.log(formatTable(rows));
}
