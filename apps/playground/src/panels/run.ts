import { runAndCheck } from '../check.js';
import { FAMILIES, type FamilyId, type Outcome, type RunSpec } from '../families.js';
import { gpu, requireGpu } from '../gpu.js';
import {
  checkbox,
  describeError,
  field,
  fixed,
  h,
  Job,
  numberInput,
  readInt,
  sci,
  select,
} from '../ui.js';

/** Runs longer than this are abandoned (reported as timed out) so the page never hangs. */
export const RUN_TIMEOUT_MS = 90_000;

/** The run panel: one family on one shape and backend, checked against float64. */
export function runPanel(): HTMLElement {
  const family = select(
    'run-family',
    Object.values(FAMILIES).map((f) => [f.id, f.label] as const),
    'flash',
  );
  const B = numberInput('run-B', 1, 1, 64);
  const H = numberInput('run-H', 2, 1, 64);
  const N = numberInput('run-N', 128, 1, 16384);
  const D = numberInput('run-D', 64, 1, 256);
  const causal = checkbox('run-causal', true);
  const backend = select('run-backend', [
    ['webgpu', 'webgpu'],
    ['ts', 'ts (TypeScript)'],
  ]);
  const note = h('p', { id: 'run-note', class: 'note' });
  const showNote = () => {
    const f = FAMILIES[family.value as FamilyId];
    note.textContent = f.note;
    causal.disabled = !f.causalOption;
  };
  family.addEventListener('change', showNote);
  showNote();
  // Without WebGPU the ts backend is the only choice.
  void gpu().then((s) => {
    if (s.kind !== 'ready') {
      backend.value = 'ts';
      backend.querySelector('option[value="webgpu"]')?.setAttribute('disabled', '');
    }
  });

  const out = h('div', { id: 'run-out' });
  const button = h('button', { id: 'run-go', type: 'button', class: 'primary' }, 'Run');
  button.addEventListener('click', async () => {
    button.disabled = true;
    const job = new Job('run');
    out.replaceChildren(job.element);
    try {
      const spec: RunSpec = {
        family: family.value as FamilyId,
        shape: { B: readInt(B, 'B'), H: readInt(H, 'H'), N: readInt(N, 'N'), D: readInt(D, 'D') },
        causal: causal.checked && FAMILIES[family.value as FamilyId].causalOption,
        backend: backend.value as 'webgpu' | 'ts',
        seed: Math.floor(Math.random() * 2 ** 31),
      };
      const ctx = spec.backend === 'webgpu' ? await requireGpu() : undefined;
      const steps = [`${spec.backend} kernel`, 'float64 reference'];
      const r = await runAndCheck(spec, ctx, job.signal, RUN_TIMEOUT_MS, (what) =>
        job.progress(steps.indexOf(what), steps.length, what),
      );
      job.finish('done');
      out.append(result(r));
    } catch (e) {
      job.finish('failed');
      out.append(
        h('p', { id: 'run-result', class: 'fail', 'data-status': 'error' }, describeError(e)),
      );
    } finally {
      button.disabled = false;
    }
  });

  return h(
    'section',
    { id: 'panel-run', class: 'panel' },
    h('h2', {}, 'Run'),
    h(
      'div',
      { class: 'controls' },
      field('family', family),
      field('B', B),
      field('H', H),
      field('N', N),
      field('D', D),
      field('causal', causal),
      field('backend', backend),
      button,
    ),
    note,
    out,
  );
}

function result(r: Outcome): HTMLElement {
  const { spec, acc, verdict } = r;
  // An approximation over its target is not a wrong result: amber, not red.
  const status = verdict.pass ? 'pass' : verdict.kind === 'approx' ? 'approx' : 'fail';
  const label = { pass: 'PASS', fail: 'FAIL', approx: 'OVER TARGET (approximate)' }[status];
  const s = spec.shape;
  return h(
    'div',
    {
      id: 'run-result',
      class: status === 'approx' ? 'warn' : status,
      'data-status': status,
      'data-family': spec.family,
      'data-backend': spec.backend,
      'data-rel-l2': acc.relL2,
      'data-max-abs': acc.maxAbs,
      'data-cosine': acc.cosine,
      'data-ms': r.ms,
    },
    h(
      'p',
      { class: 'verdict' },
      `${label} — ${FAMILIES[spec.family].label} on ${spec.backend}, ` +
        `B ${s.B} H ${s.H} N ${s.N} D ${s.D}${spec.causal ? ', causal' : ''}`,
    ),
    h(
      'table',
      { class: 'kv' },
      h(
        'tr',
        {},
        h('th', {}, 'time'),
        h(
          'td',
          {},
          `${fixed(r.ms, 1)} ms (kernel + read-back; the first webgpu run compiles its pipelines)`,
        ),
      ),
      h(
        'tr',
        {},
        h('th', {}, 'GFLOP/s'),
        h('td', {}, r.gflops < 1 ? r.gflops.toPrecision(3) : fixed(r.gflops, 1)),
      ),
      h('tr', {}, h('th', {}, 'relL2 vs float64'), h('td', { class: 'rel-l2' }, sci(acc.relL2))),
      h('tr', {}, h('th', {}, 'max abs'), h('td', {}, sci(acc.maxAbs))),
      h('tr', {}, h('th', {}, 'cosine'), h('td', {}, fixed(acc.cosine, 6))),
      h('tr', {}, h('th', {}, 'relL1'), h('td', {}, sci(acc.relL1))),
      h('tr', {}, h('th', {}, 'non-finite'), h('td', {}, String(acc.nonFinite))),
      h('tr', {}, h('th', {}, 'rule'), h('td', {}, verdict.rule)),
    ),
  );
}
