import { declineReason, registeredKernels } from '@attnkit/attention';
import { BackendUnavailableError, Tensor } from '@attnkit/tensor';
import { afterEach, describe, expect, test } from 'vitest';
import { defineTiledFamily } from './family.js';
import {
  loadNativeBackend,
  NATIVE_INSTALL_COMMAND,
  nativeAvailable,
  setNativeImporter,
  tiledForwardNative,
} from './native.js';

/**
 * @attnkit/native is an optional dependency, imported lazily (issue 9 item 5): without it the
 * native backend is declined with the reason and the install command, a family still runs on
 * ts, and `backend: 'native'` is a typed error naming how to install it.
 */
const family = defineTiledFamily({
  family: 'native-optional-test',
  normalize: () => ({ kind: 'softmax' }),
  extraOptions: [],
  forwardOutputs: ['o', 'lse'],
});

const qkv = () => {
  const t = (seed: number) =>
    Tensor.from(
      Float32Array.from({ length: 32 }, (_, i) => Math.sin(seed + i)),
      [1, 1, 4, 8],
    );
  return [t(1), t(2), t(3)] as const;
};

const request = {
  family: 'native-optional-test',
  pass: 'forward' as const,
  device: 'cpu',
  dtype: 'f32',
  options: {},
};
const nativeReg = () =>
  registeredKernels({ family: 'native-optional-test', pass: 'forward' }).find(
    (r) => r.backend === 'native',
  )!;

/** What Node's import() throws for a package that is not installed. */
function notInstalled(): Promise<never> {
  const e = new Error(
    "Cannot find package '@attnkit/native' imported from /app/node_modules/@attnkit/skeleton/dist/index.js",
  );
  return Promise.reject(Object.assign(e, { code: 'ERR_MODULE_NOT_FOUND' }));
}

afterEach(() => setNativeImporter());

describe('without @attnkit/native installed', () => {
  test('the native backend is declined with the reason and the install command', async () => {
    setNativeImporter(notInstalled);
    const why = await loadNativeBackend();
    expect(why).toContain('@attnkit/native is not installed');
    expect(why).toContain(NATIVE_INSTALL_COMMAND);
    expect(nativeAvailable()).toBe(why);
    expect(declineReason(nativeReg(), request)).toBe(why);
  });

  test('a family call without a backend runs on ts', async () => {
    setNativeImporter(notInstalled);
    const [q, k, v] = qkv();
    const out = await family.forward(q, k, v);
    const ts = await family.forward(q, k, v, { backend: 'ts' });
    expect(Array.from(out.o.toFloat32Array())).toEqual(Array.from(ts.o.toFloat32Array()));
  });

  test("backend: 'native' is a BackendUnavailableError naming how to install it", async () => {
    setNativeImporter(notInstalled);
    const [q, k, v] = qkv();
    const err = await family.forward(q, k, v, { backend: 'native' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BackendUnavailableError);
    expect((err as BackendUnavailableError).argument).toBe('backend');
    expect((err as Error).message).toContain(`\`${NATIVE_INSTALL_COMMAND}\``);
    // The kernel itself (registry bypassed) refuses the same way.
    const { p, hooks } = family.resolve(q, k, v);
    setNativeImporter(notInstalled);
    const direct = await tiledForwardNative(p, hooks, q, k, v).catch((e: unknown) => e);
    expect(direct).toBeInstanceOf(BackendUnavailableError);
    expect((direct as Error).message).toContain(NATIVE_INSTALL_COMMAND);
  });

  test('a package that imports but is not the engine is named as such', async () => {
    setNativeImporter(async () => ({ something: 1 }));
    expect(await loadNativeBackend()).toContain(
      '@attnkit/native failed to import: it exports no loadNative / nativeLoadError',
    );
  });

  test('an import that fails for another reason says so (no install hint)', async () => {
    setNativeImporter(() => Promise.reject(new SyntaxError('Unexpected token')));
    const why = await loadNativeBackend();
    expect(why).toContain('@attnkit/native failed to import: Unexpected token');
    expect(why).not.toContain(NATIVE_INSTALL_COMMAND);
  });
});

describe('with @attnkit/native installed', () => {
  test('the package is imported on the first need, not when the skeleton loads', async () => {
    let imports = 0;
    setNativeImporter(() => {
      imports += 1;
      return import('@attnkit/native');
    });
    expect(imports).toBe(0);
    // Synchronously, before the import settles: a reason, and the import starts.
    expect(nativeAvailable()).toContain('still loading');
    expect(imports).toBe(1);
    const answer = await loadNativeBackend();
    expect(imports).toBe(1);
    if (answer !== true && process.env.ATTNKIT_ALLOW_NO_NATIVE === '1') return;
    expect(answer).toBe(true);
    expect(declineReason(nativeReg(), request)).toBeUndefined();
  });

  test('a family call imports it before choosing, so native is picked on the first call', async () => {
    setNativeImporter(() => import('@attnkit/native'));
    const [q, k, v] = qkv();
    const out = await family.forward(q, k, v);
    const ts = await family.forward(q, k, v, { backend: 'ts' });
    if (nativeAvailable() !== true && process.env.ATTNKIT_ALLOW_NO_NATIVE === '1') return;
    expect(nativeAvailable()).toBe(true);
    const native = await family.forward(q, k, v, { backend: 'native' });
    const o = out.o.toFloat32Array();
    expect(Array.from(o)).toEqual(Array.from(native.o.toFloat32Array()));
    const ref = ts.o.toFloat32Array();
    for (let i = 0; i < o.length; i++) expect(o[i]).toBeCloseTo(ref[i]!, 5);
  });
});
