import { formatSubgroupMatrixConfig } from '@attnkit/webgpu';
import { gpu, onGpuState } from '../gpu.js';
import { h, reportError } from '../ui.js';

/** The device panel: what `attnkit info` prints, for this tab's navigator.gpu. */
export function devicePanel(): HTMLElement {
  const body = h('div', { id: 'device-body' }, 'asking navigator.gpu for an adapter…');
  const lose = h(
    'button',
    {
      id: 'device-lose',
      type: 'button',
      title: 'device.destroy(): check that a device loss is shown and the next run recovers',
      onclick: async () => {
        const s = await gpu();
        if (s.kind === 'ready') s.ctx.device.destroy();
      },
    },
    'Simulate device loss',
  );
  const refresh = h(
    'button',
    { id: 'device-refresh', type: 'button', onclick: () => void render(body) },
    'Refresh',
  );
  void render(body);
  // A lost device: say so here too, and show the new device once a run has asked for one.
  onGpuState((s) => {
    if (s.kind === 'lost') {
      body.prepend(h('p', { id: 'device-lost', class: 'fail' }, `WebGPU ${s.why}`));
    } else if (s.kind === 'ready' && body.querySelector('#device-lost')) void render(body);
  });
  return h(
    'section',
    { id: 'panel-device', class: 'panel' },
    h('h2', {}, 'Device'),
    body,
    h('p', {}, refresh, ' ', lose),
  );
}

const yesNo = (b: boolean) => (b ? 'yes' : 'no');

function table(rows: [string, string][], id?: string): HTMLTableElement {
  const t = h('table', { class: 'kv', id });
  for (const [k, v] of rows) t.append(h('tr', {}, h('th', {}, k), h('td', {}, v)));
  return t;
}

async function render(body: HTMLElement): Promise<void> {
  try {
    const s = await gpu();
    body.replaceChildren();
    if (s.kind !== 'ready') {
      body.append(
        h(
          'p',
          { id: 'device-status', class: 'warn', 'data-webgpu': 'no' },
          `no WebGPU in this tab: running on ts (${s.why})`,
        ),
      );
      return;
    }
    const { ctx } = s;
    const f = ctx.features;
    const a = ctx.adapterInfo;
    body.append(
      h(
        'p',
        { id: 'device-status', class: 'ok', 'data-webgpu': 'yes' },
        `WebGPU adapter: ${[a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' / ') || '?'}`,
      ),
      table([
        ['vendor', a.vendor || '-'],
        ['architecture', a.architecture || '-'],
        ['device', a.device || '-'],
        ['description', a.description || '-'],
        ['backend', ctx.backend === 'browser' ? 'browser (navigator.gpu)' : ctx.backend],
        [
          'features',
          `shader-f16 ${yesNo(f.shaderF16)}, subgroups ${yesNo(f.subgroups)}, subgroup-matrix ${yesNo(f.subgroupMatrix)}, timestamp-query ${yesNo(f.timestampQuery)}`,
        ],
        [
          'subgroup sizes',
          f.subgroups ? `${f.subgroupMinSize}..${f.subgroupMaxSize}` : '- (no subgroups)',
        ],
        [
          'subgroup matrices',
          f.subgroupMatrixConfigs.length > 0
            ? f.subgroupMatrixConfigs.map(formatSubgroupMatrixConfig).join(', ')
            : '(none: the tensor-core kernels need f16>f32 configs; SIMT kernels are used)',
        ],
        ['enabled features', [...ctx.device.features].map(String).sort().join(' ') || '(none)'],
      ]),
      h('h3', {}, 'Limits'),
      table(
        Object.entries(ctx.limits).map(([k, v]) => [k, String(v)]),
        'device-limits',
      ),
    );
  } catch (e) {
    reportError('device', e);
  }
}
