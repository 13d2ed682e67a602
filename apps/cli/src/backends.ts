import {
  type Golden,
  type GoldenKind,
  goldenAttentionOptions,
  goldenGlaOptions,
  goldenHstuOptions,
  goldenSigmoidOptions,
  type KernelTensors,
  registeredKernels,
  runReference,
  selectKernel,
} from '@attnkit/attention';
// The family packages register their kernels when imported.
import { loadNativeBackend } from '@attnkit/flash-attention';
import '@attnkit/hstu-attention';
import '@attnkit/hyper-attention';
import '@attnkit/lean-attention';
import '@attnkit/linear-attention';
import '@attnkit/sage-attention';
import '@attnkit/sigmoid-attention';
import { BackendUnavailableError, type Tensor, ValueError } from '@attnkit/tensor';
import { getWebGpuContext, toWebGpu, type WebGpuContext } from '@attnkit/webgpu';

/** How a user of the CLI gets Dawn, WebGPU for Node (an optional peer dependency, ~132 MB). */
export const DAWN_INSTALL_COMMAND = 'npm install -g webgpu';

/**
 * The WebGPU context of a `--backend webgpu` run. Dawn (the npm package `webgpu`) is an
 * optional peer dependency, so that `attnkit io` and `verify`/`bench` on ts or native install
 * and run without it; @attnkit/webgpu imports it only here, on the first WebGPU run. When it is
 * missing, the error says so and how to install it.
 */
export async function cliWebGpuContext(): Promise<WebGpuContext> {
  try {
    return await getWebGpuContext();
  } catch (e) {
    throw explainMissingDawn(e, '--backend webgpu', 'backend') ?? e;
  }
}

/**
 * When `e` says Dawn could not be loaded: the same failure as a one-line error that says how to
 * install it, prefixed by what needed it (`--backend webgpu`, `attnkit info`); else undefined.
 */
export function explainMissingDawn(
  e: unknown,
  what: string,
  argument: string,
): BackendUnavailableError | undefined {
  const message = (e as Error)?.message ?? String(e);
  if (!(e instanceof BackendUnavailableError && message.includes('Dawn'))) return undefined;
  return new BackendUnavailableError(
    `${what}: needs Dawn (WebGPU for Node), the optional peer dependency "webgpu", which could not be loaded; install it with \`${DAWN_INSTALL_COMMAND}\` beside a global @attnkit/cli, or \`npm install webgpu\` in your project. io, and verify / bench on ts, native or reference, need no Dawn. (${message})`,
    argument,
  );
}

/**
 * Imports the optional @attnkit/native (lazily, once) so that the registry's synchronous
 * choice below sees the native backend when it is installed and its addon loads.
 */
export async function prepareBackends(): Promise<void> {
  await loadNativeBackend();
}

/**
 * What `attnkit verify` can run a golden on: every backend the registry has for the golden's
 * family (ts, native, webgpu, ... as the family packages registered them), plus `reference`
 * (the float64 references of @attnkit/attention, every kind). A new backend needs no change
 * here (it is a registration); a new golden kind needs its entry in FAMILIES below.
 */
export interface GoldenBackend {
  name: string;
  kinds: readonly GoldenKind[];
  /** Computes the golden's reference tensors (forward, and backward when it has `do`). */
  run(golden: Golden, options: { algorithm?: 'fa1' | 'fa2' }): Promise<Record<string, Tensor>>;
}

const ALL_KINDS: readonly GoldenKind[] = ['softmax', 'softmax_varlen', 'sigmoid', 'gla', 'hstu'];

/**
 * The registry family that computes a golden kind, and the golden's options for it. `put`
 * moves a tensor option onto the inputs' device (identity on cpu; an upload for webgpu, whose
 * kernels take tensor options such as HSTU's `rab` only on q's device).
 */
const FAMILIES: Partial<Record<GoldenKind, Route>> = {
  softmax: { family: 'softmax', options: (g) => ({ ...goldenAttentionOptions(g) }) },
  softmax_varlen: { family: 'softmax', options: (g) => ({ ...goldenAttentionOptions(g) }) },
  sigmoid: { family: 'sigmoid', options: (g) => ({ ...goldenSigmoidOptions(g) }) },
  // seqOffsets, maxSeqLen, alpha, causal and the dense rab: exactly HstuAttentionOptions, which
  // the family's registrations take (its toTiled maps them to the skeleton's THD options).
  hstu: {
    family: 'hstu',
    options: (g, put) => {
      const o: Record<string, unknown> = { ...goldenHstuOptions(g) };
      if (o.rab) o.rab = put(o.rab as Tensor);
      return o;
    },
  },
  // GLA (@attnkit/linear-attention): gk beside q, k, v; h0 as initialState; dht with dO.
  gla: {
    family: 'gla',
    options: (g, put) => {
      const o: Record<string, unknown> = { ...goldenGlaOptions(g) };
      if (o.initialState) o.initialState = put(o.initialState as Tensor);
      return o;
    },
    inputs: ['gk'],
    gradInputs: ['dht'],
  },
};

/**
 * Families `attnkit verify --family <name>` runs a golden through instead of its kind's own
 * (FAMILIES): LeanAttention's decode kernels ('lean', @attnkit/lean-attention) compute softmax
 * attention, so they verify the softmax goldens (softmax_decode is theirs) with the golden's
 * options plus the `partition` (fa2, splitK or streamK; default the family's, streamK).
 * SageAttention2 ('sage', @attnkit/sage-attention) is quantized softmax attention: it runs the
 * BHND softmax goldens' forward (o) with the golden's options plus its own (qkBits,
 * granularity), and verify judges it by KERNELS.md's accuracy bars, not the f32 tolerance.
 * GLA ('gla', @attnkit/linear-attention) verifies the gla goldens on its kernels with the
 * `form` (chunk, the default, or recurrent), as without --family but naming the form.
 * HyperAttention ('hyper', @attnkit/hyper-attention) is approximate; verify runs it in its exact
 * limit on the BHND softmax goldens without window or block mask: one sorted diagonal block of
 * every key (blockSize past any length), no samples, and the causal recursion down to leaves of
 * one row (minSeqLen 1), so the LSH sort, the permutations, the recursion and the LSE merges
 * all run and the result must equal the golden within the f32 tolerance, forward and backward.
 */
export const VERIFY_FAMILIES = ['lean', 'sage', 'gla', 'hyper'] as const;
export type VerifyFamily = (typeof VERIFY_FAMILIES)[number];
export const LEAN_PARTITIONS = ['fa2', 'splitK', 'streamK'] as const;
export type LeanPartitionName = (typeof LEAN_PARTITIONS)[number];

/** How one golden run is routed: the registry family and the golden's options for it. */
interface Route {
  family: string;
  options: (g: Golden, put: (t: Tensor) => Tensor) => Record<string, unknown>;
  /** Golden tensors the forward takes beside q, k, v (GLA's gk). */
  inputs?: readonly string[];
  /** Golden tensors the backward takes beside dO, when the file has them (GLA's dht). */
  gradInputs?: readonly string[];
  /** With --family: the golden kinds it verifies. */
  kinds?: readonly GoldenKind[];
}

const VERIFY_ROUTES: Record<VerifyFamily, { kinds: readonly GoldenKind[]; route: Route }> = {
  lean: {
    kinds: ['softmax', 'softmax_varlen'],
    route: { family: 'lean', options: (g) => ({ ...goldenAttentionOptions(g) }) },
  },
  sage: {
    kinds: ['softmax'],
    route: { family: 'sage', options: (g) => ({ ...goldenAttentionOptions(g) }) },
  },
  gla: { kinds: ['gla'], route: FAMILIES.gla! },
  hyper: {
    kinds: ['softmax'],
    route: {
      family: 'hyper',
      options: (g) => ({
        ...goldenAttentionOptions(g),
        blockSize: 2 ** 30,
        sampleSize: 0,
        minSeqLen: 1,
        returnLse: true,
      }),
    },
  },
};

/**
 * The route of `--family` (with its `--partition`, and a family's own options `extra`), typed
 * errors naming the flag.
 */
function verifyRoute(
  family: string,
  kind: GoldenKind,
  partition: string | undefined,
  extra: Record<string, unknown> = {},
): Route {
  if (!(VERIFY_FAMILIES as readonly string[]).includes(family))
    throw new ValueError(
      `--family: expected one of ${VERIFY_FAMILIES.join(', ')}, got "${family}"`,
      'family',
    );
  const r = VERIFY_ROUTES[family as VerifyFamily];
  if (!r.kinds.includes(kind))
    throw new ValueError(
      `--family: "${family}" verifies golden kinds ${r.kinds.join(', ')}, got a golden of kind "${kind}"`,
      'family',
    );
  if (partition !== undefined && family !== 'lean')
    throw new ValueError(
      `--partition: expected only with --family lean, got --partition ${partition} with --family ${family}`,
      'partition',
    );
  if (partition !== undefined && !(LEAN_PARTITIONS as readonly string[]).includes(partition))
    throw new ValueError(
      `--partition: expected one of ${LEAN_PARTITIONS.join(', ')}, got "${partition}"`,
      'partition',
    );
  return {
    ...r.route,
    kinds: r.kinds,
    options: (g, put) => ({
      ...r.route.options(g, put),
      ...(partition === undefined ? {} : { partition }),
      ...extra,
    }),
  };
}

function kindsOf(backend: string): GoldenKind[] {
  return ALL_KINDS.filter((kind) => {
    const f = FAMILIES[kind];
    return f && registeredKernels({ family: f.family }).some((r) => r.backend === backend);
  });
}

/** Runs a golden through the registry's forward (and backward) of one backend. */
function registryBackend(name: string, route?: Route): GoldenBackend {
  return {
    name,
    kinds: route ? (route.kinds ?? []) : kindsOf(name),
    async run(g, { algorithm }) {
      const f = route ?? FAMILIES[g.kind]!;
      const pick = (pass: 'forward' | 'backward') =>
        registeredKernels({ family: f.family, pass }).find((r) => r.backend === name)!;
      const forward = pick('forward');
      const device = forward.devices[0]!;
      const ctx = device === 'webgpu' ? await cliWebGpuContext() : undefined;
      const uploaded: Tensor[] = [];
      const put = (t: Tensor) => {
        if (!ctx) return t;
        const u = toWebGpu(t, ctx);
        uploaded.push(u);
        return u;
      };
      // algorithm only when named: families without one (hyper) refuse unknown option keys.
      const options = {
        ...f.options(g, put),
        ...(algorithm === undefined ? {} : { algorithm }),
        backend: name,
      };
      const inputs: KernelTensors = {};
      for (const n of ['q', 'k', 'v', ...(f.inputs ?? [])]) inputs[n] = put(g.tensors[n]!);
      const fwd = await forward.run(inputs, options);
      const produced: KernelTensors = { ...fwd };
      // An inference family (sage) registers no backward: its goldens' gradients stay unproduced.
      if (g.hasBackward && g.tensors.do && pick('backward')) {
        const upstream: KernelTensors = { do: put(g.tensors.do) };
        for (const n of f.gradInputs ?? []) if (g.tensors[n]) upstream[n] = put(g.tensors[n]!);
        const grads = await pick('backward').run({ ...inputs, ...fwd, ...upstream }, options);
        Object.assign(produced, grads);
      }
      const out: Record<string, Tensor> = {};
      for (const [n, t] of Object.entries(produced)) {
        out[n] = ctx ? await t.toCpu() : t;
        if (ctx) uploaded.push(t);
      }
      for (const t of uploaded) t.dispose();
      return out;
    },
  };
}

const reference: GoldenBackend = {
  name: 'reference',
  kinds: ALL_KINDS,
  async run(g) {
    return runReference(g);
  },
};

/** Every backend name the registry knows, then `reference`. */
export function goldenBackends(): GoldenBackend[] {
  const names = [...new Set(registeredKernels().map((r) => r.backend))];
  return [...names.map((n) => registryBackend(n)), reference];
}

/**
 * The backend used when none is named, as the library picks for cpu tensors (the registry's
 * choice: native when its addon loads and supports the options, else ts), else the float64
 * reference for kinds with no fast implementation yet. WebGPU is used only when named.
 */
export function defaultBackendFor(kind: GoldenKind, algorithm?: 'fa1' | 'fa2'): GoldenBackend {
  const f = FAMILIES[kind];
  if (!f) return reference;
  const options = algorithm ? { algorithm } : {};
  const reg = selectKernel({
    family: f.family,
    pass: 'forward',
    device: 'cpu',
    dtype: 'f32',
    options,
  });
  return registryBackend(reg.backend);
}

/**
 * A backend of `--family` (its registrations): `name`, else the registry's choice for cpu
 * tensors (native when its addon loads, else ts). The float64 reference is not one of its
 * backends (it is no kernel of the family).
 */
export function familyGoldenBackend(
  family: string,
  name: string | undefined,
  kind: GoldenKind,
  partition?: string,
  extra?: Record<string, unknown>,
): GoldenBackend {
  const route = verifyRoute(family, kind, partition, extra);
  const names = [
    ...new Set(registeredKernels({ family: route.family, pass: 'forward' }).map((r) => r.backend)),
  ];
  const chosen =
    name ??
    selectKernel({
      family: route.family,
      pass: 'forward',
      device: 'cpu',
      dtype: 'f32',
      options: {},
    }).backend;
  if (!names.includes(chosen))
    throw new ValueError(
      `--backend: expected one of ${names.join(', ')} (the "${family}" registrations), got "${chosen}"`,
      'backend',
    );
  return registryBackend(chosen, route);
}

export function goldenBackend(
  name: string | undefined,
  kind: GoldenKind,
  algorithm?: 'fa1' | 'fa2',
): GoldenBackend {
  if (name === undefined) return defaultBackendFor(kind, algorithm);
  const all = goldenBackends();
  const backend = all.find((b) => b.name === name);
  if (!backend) {
    throw new ValueError(
      `--backend: expected one of ${all.map((b) => b.name).join(', ')}, got "${name}"`,
      'backend',
    );
  }
  if (!backend.kinds.includes(kind)) {
    const able = all.filter((b) => b.kinds.includes(kind)).map((b) => b.name);
    throw new ValueError(
      `--backend: "${name}" does not implement golden kind "${kind}" (available: ${able.join(', ')})`,
      'backend',
    );
  }
  return backend;
}
