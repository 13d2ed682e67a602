/** One training step's loss, and the validation loss at the steps that evaluated it. */
export interface LossPoint {
  step: number;
  train: number;
  val?: number;
}

/**
 * The loss curve as a standalone SVG: Vega-Lite compiled and rendered headless by Vega (no
 * browser, no canvas), as benchmarks/hyper/plot.mjs does. Train loss per step as a line,
 * val loss as points joined by a line.
 */
export async function lossCurveSvg(
  history: readonly LossPoint[],
  title = 'attnkit-gpt',
): Promise<string> {
  // Loaded on first use: Vega is large and only the trainer draws.
  const [{ parse, View }, { compile }] = await Promise.all([import('vega'), import('vega-lite')]);
  const values = history.flatMap((p) => [
    { step: p.step, loss: p.train, split: 'train' },
    ...(p.val !== undefined ? [{ step: p.step, loss: p.val, split: 'val' }] : []),
  ]);
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle: 'cross-entropy (nats per token), backend ts' },
    width: 480,
    height: 280,
    data: { values },
    encoding: {
      x: { field: 'step', type: 'quantitative', title: 'step' },
      y: { field: 'loss', type: 'quantitative', title: 'loss', scale: { zero: false } },
      color: { field: 'split', type: 'nominal', title: null },
    },
    // A line per split; points only on the (sparse) validation losses.
    layer: [
      { mark: { type: 'line', strokeWidth: 1.5 } },
      { mark: { type: 'point', filled: true }, transform: [{ filter: "datum.split === 'val'" }] },
    ],
  };
  // biome-ignore lint/suspicious/noExplicitAny: Vega-Lite's TopLevelSpec is a deep union; the spec above is one.
  const view = new View(parse(compile(spec as any).spec), { renderer: 'none' });
  try {
    const svg = await view.toSVG();
    // A <title> for screen readers, and without Vega's ARIA roles on <g>/<path> (which a11y
    // linters flag on committed results): the picture is the same.
    return svg
      .replace(/^<svg([^>]*)>/, (open) => `${open}<title>${escapeXml(title)}</title>`)
      .replace(/ role="graphics-[a-z]+"/g, '');
  } finally {
    view.finalize();
  }
}

function escapeXml(text: string): string {
  return text.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
}
