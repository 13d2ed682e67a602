import { ioSweep, sweepSvg } from '@attnkit/io-complexity';
import { field, h, numberInput, readInt, reportError } from '../ui.js';

/** The I/O model: slow-memory traffic against fast-memory size M, with the lower bound. */
export function ioPanel(): HTMLElement {
  const N = numberInput('io-N', 4096, 2, 1 << 20);
  const d = numberInput('io-d', 64, 1, 1024);
  const plot = h('div', { id: 'io-plot', class: 'plot' });
  const draw = () => {
    try {
      // sweepSvg's output is our own package's SVG text (numbers and fixed labels only).
      plot.innerHTML = sweepSvg(ioSweep({ N: readInt(N, 'N'), d: readInt(d, 'd') }));
    } catch (e) {
      reportError('I/O model', e);
    }
  };
  queueMicrotask(draw);
  return h(
    'section',
    { id: 'panel-io', class: 'panel' },
    h('h2', {}, 'I/O model'),
    h(
      'p',
      { class: 'note' },
      'Exact slow-memory reads + writes (elements) of standard attention, FlashAttention, FlashAttention-2 (forward and backward) and the small-cache algorithm against the fast-memory size M, with the lower bound (closed forms: @attnkit/io-complexity ioSweep / sweepSvg).',
    ),
    h(
      'div',
      { class: 'controls' },
      field('N', N),
      field('d', d),
      h('button', { id: 'io-go', type: 'button', class: 'primary', onclick: draw }, 'Plot'),
    ),
    plot,
  );
}
