import { accuracy, softmaxAttentionReference } from '@attnkit/attention';
import { type SageBits, sageAttention } from '@attnkit/sage-attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { toWebGpu } from '@attnkit/webgpu';
import { sageRule } from '../families.js';
import { gpu, requireGpu } from '../gpu.js';
import {
  checkbox,
  describeError,
  field,
  fixed,
  guarded,
  h,
  Job,
  nextFrame,
  numberInput,
  readInt,
  sci,
  select,
} from '../ui.js';

const VARIANTS: { bits: SageBits; smooth: boolean }[] = [
  { bits: 8, smooth: true },
  { bits: 8, smooth: false },
  { bits: 4, smooth: true },
  { bits: 4, smooth: false },
];

/**
 * SageAttention2's accuracy against float64 for INT8 / INT4 Q·K, smoothing on and off. With
 * "K outliers" every K channel gets a common offset (what real models' keys show, and what
 * smoothing K removes): without smoothing the quantization scale is spent on the offset.
 */
export function sagePanel(): HTMLElement {
  const N = numberInput('sage-N', 128, 1, 4096);
  const D = numberInput('sage-D', 64, 16, 256);
  const outliers = checkbox('sage-outliers', true);
  const backend = select('sage-backend', [
    ['webgpu', 'webgpu'],
    ['ts', 'ts'],
  ]);
  void gpu().then((s) => {
    if (s.kind !== 'ready') {
      backend.value = 'ts';
      backend.querySelector('option[value="webgpu"]')?.setAttribute('disabled', '');
    }
  });
  const out = h('div', { id: 'sage-out' });
  const button = h('button', { id: 'sage-go', type: 'button', class: 'primary' }, 'Compare');
  button.addEventListener('click', async () => {
    button.disabled = true;
    const job = new Job('sage');
    const body = h('tbody');
    const table = h(
      'table',
      { id: 'sage-table', class: 'grid' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['Q·K', 'smoothing', 'cosine', 'relL1', 'relL2', 'max abs', 'rule', ''].map((t) =>
            h('th', {}, t),
          ),
        ),
      ),
      body,
    );
    out.replaceChildren(job.element, table);
    try {
      const n = readInt(N, 'N');
      const d = readInt(D, 'D');
      const rng = new Rng(3);
      const q = rng.randn([1, 2, n, d]);
      let k = rng.randn([1, 2, n, d]);
      if (outliers.checked) {
        const off = rng.randn([d], 'f32', 8).toFloat32Array();
        k = Tensor.from(
          k.toFloat32Array().map((x, i) => x + off[i % d]!),
          k.shape,
        );
      }
      const v = rng.randn([1, 2, n, d]);
      job.progress(0, VARIANTS.length + 1, 'float64 reference');
      await nextFrame();
      const ref = softmaxAttentionReference(q, k, v).o;
      const ctx = backend.value === 'webgpu' ? await requireGpu() : undefined;
      for (const [i, variant] of VARIANTS.entries()) {
        if (job.signal.aborted) throw new Error('cancelled');
        job.progress(
          i + 1,
          VARIANTS.length + 1,
          `INT${variant.bits}, smoothing ${variant.smooth ? 'on' : 'off'}`,
        );
        await nextFrame();
        const options = {
          qkBits: variant.bits,
          smoothK: variant.smooth,
          smoothQ: variant.smooth,
          backend: backend.value as 'webgpu' | 'ts',
        };
        const work = ctx
          ? ctx.scope(async () => {
              const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx)) as [
                Tensor,
                Tensor,
                Tensor,
              ];
              return (await sageAttention(gq, gk, gv, options)).o.toCpu();
            })
          : sageAttention(q, k, v, options).then((r) => r.o);
        const o = await guarded(work, 60_000, `sage INT${variant.bits}`, job.signal);
        const acc = accuracy(o, ref);
        const verdict = sageRule(acc, variant.bits);
        body.append(
          h(
            'tr',
            {
              class: verdict.pass ? 'pass' : 'fail',
              'data-bits': variant.bits,
              'data-smooth': variant.smooth ? 'on' : 'off',
              'data-cosine': acc.cosine,
            },
            h('td', {}, `INT${variant.bits}`),
            h('td', {}, variant.smooth ? 'on' : 'off'),
            h('td', {}, fixed(acc.cosine, 6)),
            h('td', {}, sci(acc.relL1)),
            h('td', {}, sci(acc.relL2)),
            h('td', {}, sci(acc.maxAbs)),
            h('td', {}, verdict.rule),
            h('td', {}, verdict.pass ? 'pass' : 'fail'),
          ),
        );
      }
      job.finish(`done (${backend.value}, N ${n}, D ${d}, 2 heads)`);
    } catch (e) {
      job.finish('failed');
      out.append(h('p', { class: 'fail', id: 'sage-error' }, describeError(e)));
    } finally {
      button.disabled = false;
    }
  });
  return h(
    'section',
    { id: 'panel-sage', class: 'panel' },
    h('h2', {}, 'Sage: INT8 vs INT4, smoothing on / off'),
    h(
      'div',
      { class: 'controls' },
      field('N', N),
      field('D (multiple of 16)', D),
      field('K outliers', outliers),
      field('backend', backend),
      button,
    ),
    h(
      'p',
      { class: 'note' },
      "KERNELS.md's thresholds are stated for random normal inputs (K outliers off). With outliers " +
        '(a common offset of scale 8 per K channel, as real keys have) smoothing K is what keeps INT8 and INT4 accurate.',
    ),
    out,
  );
}
