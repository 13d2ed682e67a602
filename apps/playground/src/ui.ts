/** Small DOM and async helpers shared by the panels (no framework: plain elements). */

type Listener = (e: Event) => void;
type Attrs = Record<string, string | number | boolean | undefined | Listener>;

/** `h('button', { id: 'x' }, 'Run')`: an element with attributes (or properties for on*) and children. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Node | string | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

/** A labelled control: `<label>text <input></label>`. */
export function field(text: string, control: HTMLElement): HTMLLabelElement {
  return h('label', { class: 'field' }, h('span', {}, text), control);
}

export function numberInput(id: string, value: number, min = 1, max = 65536): HTMLInputElement {
  return h('input', { id, type: 'number', value, min, max, step: 1 });
}

export function select(
  id: string,
  options: readonly (readonly [string, string])[],
  value?: string,
) {
  const s = h('select', { id });
  for (const [v, text] of options) s.append(h('option', { value: v, selected: v === value }, text));
  return s;
}

export function checkbox(id: string, checked: boolean): HTMLInputElement {
  return h('input', { id, type: 'checkbox', checked });
}

/** The integer in an input, or a clear error naming the field (shown in the page). */
export function readInt(input: HTMLInputElement, name: string): number {
  const n = Number(input.value);
  const min = Number(input.min || '-Infinity');
  const max = Number(input.max || 'Infinity');
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new RangeError(`${name}: expected an integer in [${min}, ${max}], got "${input.value}"`);
  }
  return n;
}

export class TimeoutError extends Error {
  override name = 'TimeoutError';
}

export class CancelledError extends Error {
  override name = 'CancelledError';
}

/**
 * `work` raced against a time limit and a cancel signal, so the page never waits forever: a
 * GPU queue that never drains or a lost device still gives a result here. (Work already on the
 * GPU, or a TypeScript kernel running on this thread, finishes in the background; its result
 * is dropped.)
 */
export function guarded<T>(work: Promise<T>, ms: number, what: string, signal?: AbortSignal) {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new TimeoutError(`${what}: no result after ${ms / 1000} s (timed out)`)),
      ms,
    );
    const onAbort = () => reject(new CancelledError(`${what}: cancelled`));
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    });
  });
}

/** Lets the browser paint (progress text) before a long synchronous step. */
export const nextFrame = () =>
  new Promise<void>((r) => {
    // requestAnimationFrame does not fire in a hidden tab; the timeout keeps runs going there.
    const t = setTimeout(r, 50);
    requestAnimationFrame(() => {
      clearTimeout(t);
      setTimeout(r, 0);
    });
  });

/** An error as one line: its class name and message. */
export function describeError(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return String(e);
}

const log: HTMLElement[] = [];

/** Shows an error in the page's error list (errors are never only in the console). */
export function reportError(where: string, e: unknown): void {
  const list = document.getElementById('errors');
  const line = h('li', {}, h('b', {}, `${where}: `), describeError(e));
  log.push(line);
  if (list) {
    list.append(line);
    list.parentElement?.removeAttribute('hidden');
  }
  console.error(where, e);
}

/** A progress bar with a Cancel button for long runs. */
export class Job {
  readonly controller = new AbortController();
  readonly element: HTMLElement;
  private readonly bar: HTMLProgressElement;
  private readonly text: HTMLElement;

  constructor(id: string) {
    this.bar = h('progress', { id: `${id}-progress`, max: 1, value: 0 });
    this.text = h('span', { id: `${id}-progress-text`, class: 'progress-text' }, 'starting');
    const cancel = h(
      'button',
      { id: `${id}-cancel`, type: 'button', onclick: () => this.controller.abort() },
      'Cancel',
    );
    this.element = h('div', { class: 'job' }, this.bar, cancel, this.text);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  progress(done: number, total: number, what: string): void {
    this.bar.value = total > 0 ? done / total : 0;
    this.text.textContent = `${done}/${total} ${what}`;
  }

  finish(text: string): void {
    this.bar.value = 1;
    this.text.textContent = text;
    this.element.querySelector('button')?.setAttribute('disabled', '');
  }
}

/** 3 significant digits in scientific form for errors (1.23e-7), plain for others. */
export const sci = (x: number) =>
  Number.isFinite(x) ? (x === 0 ? '0' : x.toExponential(2)) : String(x);
export const fixed = (x: number, digits = 2) =>
  Number.isFinite(x) ? x.toFixed(digits) : String(x);
