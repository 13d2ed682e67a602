import './style.css';
import { gpu, onGpuState } from './gpu.js';
import { benchPanel } from './panels/bench.js';
import { devicePanel } from './panels/device.js';
import { ioPanel } from './panels/io.js';
import { mapPanel } from './panels/map.js';
import { runPanel } from './panels/run.js';
import { sagePanel } from './panels/sage.js';
import { h, reportError } from './ui.js';

/** The page: a tab per panel, a banner for the GPU's state and a list of every error. */

const PANELS: [string, string, () => HTMLElement][] = [
  ['device', 'Device', devicePanel],
  ['run', 'Run', runPanel],
  ['map', 'Attention map', mapPanel],
  ['sage', 'Sage', sagePanel],
  ['io', 'I/O model', ioPanel],
  ['bench', 'Bench', benchPanel],
];

const app = document.getElementById('app')!;
const banner = h('div', { id: 'gpu-banner', class: 'banner', hidden: true });
const errors = h(
  'div',
  { id: 'errors-box', class: 'errors', hidden: true },
  h('h3', {}, 'Errors'),
  h('ul', { id: 'errors' }),
);
const nav = h('nav', { id: 'tabs' });
const main = h('main');

window.addEventListener('error', (e) => reportError('uncaught', e.error ?? e.message));
window.addEventListener('unhandledrejection', (e) => reportError('unhandled rejection', e.reason));

onGpuState((s) => {
  if (s.kind === 'lost') {
    banner.className = 'banner fail';
    banner.id = 'gpu-banner';
    banner.dataset.state = 'lost';
    banner.textContent = `WebGPU ${s.why}. The next webgpu run asks for a new device.`;
    banner.hidden = false;
    reportError('webgpu', new Error(s.why));
  } else if (s.kind === 'none') {
    banner.className = 'banner warn';
    banner.dataset.state = 'none';
    banner.textContent = `no WebGPU in this tab: running on ts (${s.why})`;
    banner.hidden = false;
  } else {
    banner.dataset.state = 'ready';
    banner.hidden = true;
  }
});

const sections = new Map<string, HTMLElement>();
function show(id: string): void {
  for (const [k, s] of sections) s.hidden = k !== id;
  for (const b of nav.querySelectorAll('button'))
    b.classList.toggle('active', b.dataset.panel === id);
  history.replaceState(null, '', `#${id}`);
}

for (const [id, label, make] of PANELS) {
  let section: HTMLElement;
  try {
    section = make();
  } catch (e) {
    reportError(label, e);
    section = h(
      'section',
      { id: `panel-${id}`, class: 'panel' },
      h('h2', {}, label),
      'failed to build',
    );
  }
  sections.set(id, section);
  main.append(section);
  const b = h('button', { id: `tab-${id}`, type: 'button', onclick: () => show(id) }, label);
  b.dataset.panel = id;
  nav.append(b);
}

app.append(
  h(
    'header',
    {},
    h('h1', {}, 'attnkit playground'),
    h(
      'p',
      {},
      'Attention kernels on your GPU through WebGPU (or TypeScript), checked against float64 references.',
    ),
  ),
  banner,
  nav,
  errors,
  main,
);
const first = location.hash.slice(1);
show(sections.has(first) ? first : 'device');
void gpu();
