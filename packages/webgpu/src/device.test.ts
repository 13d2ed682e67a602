import { ValueError } from '@attnkit/tensor';
import { describe, expect, it, vi } from 'vitest';
import {
  checkDawnToggles,
  DEFAULT_DAWN_TOGGLES,
  dawnCreateFlags,
  findAdapter,
  wgslLanguageFeaturesOf,
} from './adapter.js';
import { createWebGpuContext } from './context.js';
import {
  formatSubgroupMatrixConfig,
  parseSubgroupMatrixConfigs,
  type SubgroupMatrixConfig,
} from './subgroup-matrix.js';

/**
 * Device options of issue 20 item 1 without a GPU: Dawn is replaced by a fake module that
 * records the flags of every `create([...])` and answers with an adapter described by the test
 * (here the H200's Vulkan adapter, as Dawn 0.6.2 reported it with both toggles on 2026-12-02).
 */
const dawn = vi.hoisted(() => ({
  flags: [] as string[][],
  adapter: undefined as unknown,
  wgslLanguageFeatures: undefined as unknown,
}));
vi.mock('webgpu', () => ({
  create(flags: string[]) {
    dawn.flags.push(flags);
    return {
      requestAdapter: async () => dawn.adapter,
      wgslLanguageFeatures: dawn.wgslLanguageFeatures,
    };
  },
  globals: {},
}));

// The H200's configs (../shared/gpu/README.md section 2), as Dawn's adapter info lists them.
const H200_INFO = {
  vendor: 'nvidia',
  architecture: 'hopper',
  device: '',
  description: 'NVIDIA H200',
  subgroupMinSize: 32,
  subgroupMaxSize: 32,
  subgroupMatrixConfigs: [
    ...(['f16', 'f32'] as const).flatMap((result) =>
      [
        [16, 16, 16],
        [16, 8, 16],
        [16, 8, 8],
      ].map(([M, N, K]) => ({ componentType: 'f16', resultComponentType: result, M, N, K })),
    ),
    ...(
      [
        ['u8', 'u32'],
        ['i8', 'i32'],
      ] as const
    ).flatMap(([componentType, resultComponentType]) =>
      [
        [16, 16, 32],
        [16, 8, 32],
      ].map(([M, N, K]) => ({
        componentType,
        resultComponentType,
        // The IDL's `unsigned long long`: some bindings hand out BigInts.
        M: BigInt(M!),
        N: BigInt(N!),
        K: BigInt(K!),
      })),
    ),
  ],
};

const ALL = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query'];

function fakeAdapter(info: object, features: string[]) {
  const limits = {
    maxComputeWorkgroupStorageSize: 49152,
    maxComputeInvocationsPerWorkgroup: 1024,
    maxComputeWorkgroupSizeX: 1024,
    maxComputeWorkgroupsPerDimension: 65535,
    maxStorageBuffersPerShaderStage: 16,
    maxStorageBufferBindingSize: 2 ** 31 - 4,
    maxBufferSize: 2 ** 31 - 4,
  };
  const requested: { requiredFeatures?: string[] }[] = [];
  return {
    requested,
    info,
    limits,
    features: new Set(features),
    async requestDevice(desc: { requiredFeatures?: string[] }) {
      requested.push(desc);
      return {
        features: new Set(desc.requiredFeatures),
        limits,
        lost: new Promise(() => {}),
        destroy() {},
      };
    },
  };
}

describe('dawnToggles', () => {
  it('defaults to allow_unsafe_apis and vulkan_enable_f16_on_nvidia', () => {
    expect(DEFAULT_DAWN_TOGGLES).toEqual(['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia']);
    expect(checkDawnToggles(undefined)).toEqual([...DEFAULT_DAWN_TOGGLES]);
  });

  it('go comma-joined in one enable-dawn-features= string beside backend=', () => {
    expect(dawnCreateFlags('vulkan', DEFAULT_DAWN_TOGGLES)).toEqual([
      'backend=vulkan',
      'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
    ]);
    expect(dawnCreateFlags('opengles', ['use_dxc'])).toEqual([
      'backend=opengles',
      'enable-dawn-features=use_dxc',
    ]);
  });

  it('an empty array passes no enable-dawn-features flag at all', () => {
    expect(dawnCreateFlags('vulkan', [])).toEqual(['backend=vulkan']);
  });

  it('duplicates are dropped, order kept', () => {
    expect(checkDawnToggles(['b', 'a', 'b'])).toEqual(['b', 'a']);
  });

  it.each([
    ['a string', 'allow_unsafe_apis'],
    ['a comma inside a name', ['allow_unsafe_apis,vulkan_enable_f16_on_nvidia']],
    ['a flag instead of a name', ['enable-dawn-features=x']],
    ['a number', [1]],
    ['an empty name', ['']],
  ])('rejects %s, naming the option', (_, value) => {
    expect(() => checkDawnToggles(value)).toThrow(ValueError);
    expect(() => checkDawnToggles(value)).toThrow(/^dawnToggles: expected an array of Dawn/);
  });

  it('findAdapter passes them to Dawn, and reports them', async () => {
    dawn.adapter = fakeAdapter({}, []);
    dawn.flags.length = 0;
    const found = await findAdapter({ backend: 'vulkan' });
    expect(dawn.flags).toEqual([
      ['backend=vulkan', 'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia'],
    ]);
    expect(found.dawnToggles).toEqual([...DEFAULT_DAWN_TOGGLES]);

    dawn.flags.length = 0;
    const none = await findAdapter({ backend: 'vulkan', dawnToggles: [] });
    expect(dawn.flags).toEqual([['backend=vulkan']]);
    expect(none.dawnToggles).toEqual([]);
  });

  it('disabledDawnToggles go in one disable-dawn-features= string; a bad one names the option', async () => {
    expect(dawnCreateFlags('vulkan', [], ['timestamp_quantization'])).toEqual([
      'backend=vulkan',
      'disable-dawn-features=timestamp_quantization',
    ]);
    dawn.adapter = fakeAdapter({}, []);
    dawn.flags.length = 0;
    await findAdapter({
      backend: 'vulkan',
      dawnToggles: ['allow_unsafe_apis'],
      disabledDawnToggles: ['timestamp_quantization', 'lazy_clear_resource_on_first_use'],
    });
    expect(dawn.flags).toEqual([
      [
        'backend=vulkan',
        'enable-dawn-features=allow_unsafe_apis',
        'disable-dawn-features=timestamp_quantization,lazy_clear_resource_on_first_use',
      ],
    ]);
    dawn.flags.length = 0;
    await expect(
      findAdapter({ backend: 'vulkan', disabledDawnToggles: 'timestamp_quantization' as never }),
    ).rejects.toThrow(/^disabledDawnToggles: expected an array of Dawn/);
    // A toggle both enabled and disabled (robustness: false enables disable_robustness).
    await expect(
      findAdapter({
        backend: 'vulkan',
        robustness: false,
        disabledDawnToggles: ['disable_robustness'],
      }),
    ).rejects.toThrow(
      /^disabledDawnToggles: expected toggles not also enabled.*disable_robustness/,
    );
    await expect(
      findAdapter({
        backend: 'vulkan',
        dawnToggles: ['allow_unsafe_apis'],
        disabledDawnToggles: ['allow_unsafe_apis'],
      }),
    ).rejects.toThrow(ValueError);
    expect(dawn.flags).toEqual([]);
  });

  it('findAdapter rejects a bad option before touching Dawn', async () => {
    dawn.flags.length = 0;
    await expect(findAdapter({ backend: 'vulkan', dawnToggles: ['a,b'] })).rejects.toThrow(
      ValueError,
    );
    expect(dawn.flags).toEqual([]);
  });

  it('an explicit gpu object ignores the toggles (they are Dawn instance flags)', async () => {
    const gpu = { requestAdapter: async () => fakeAdapter({}, []) } as unknown as GPU;
    expect((await findAdapter({ gpu })).dawnToggles).toEqual([]);
  });
});

describe('subgroup-matrix configs', () => {
  it("parses the H200's adapter info (Dawn's field names, BigInt dimensions)", () => {
    const configs = parseSubgroupMatrixConfigs(H200_INFO);
    expect(configs.map(formatSubgroupMatrixConfig)).toEqual([
      'f16>f16 16x16x16',
      'f16>f16 16x8x16',
      'f16>f16 16x8x8',
      'f16>f32 16x16x16',
      'f16>f32 16x8x16',
      'f16>f32 16x8x8',
      'u8>u32 16x16x32',
      'u8>u32 16x8x32',
      'i8>i32 16x16x32',
      'i8>i32 16x8x32',
    ]);
    expect(configs[3]).toEqual({ M: 16, N: 16, K: 16, component: 'f16', result: 'f32' });
    expect(typeof configs[6]!.K).toBe('number');
  });

  it('none: no field, an empty list, not an object (llvmpipe, browsers without the feature)', () => {
    expect(parseSubgroupMatrixConfigs({ vendor: 'mesa' })).toEqual([]);
    expect(parseSubgroupMatrixConfigs({ subgroupMatrixConfigs: [] })).toEqual([]);
    expect(parseSubgroupMatrixConfigs(undefined)).toEqual([]);
    expect(parseSubgroupMatrixConfigs({ subgroupMatrixConfigs: 'f16' })).toEqual([]);
  });

  it('accepts resultType and any iterable; skips malformed entries and duplicates', () => {
    const ok = { componentType: 'f16', resultType: 'f32', M: 16, N: 8, K: 8 };
    const configs = parseSubgroupMatrixConfigs({
      subgroupMatrixConfigs: new Set([
        ok,
        { ...ok },
        { ...ok, componentType: 'bf16' },
        { ...ok, M: 0 },
        { ...ok, N: 1.5 },
        { ...ok, K: '16' },
        null,
        7,
      ]),
    });
    expect(configs).toEqual<SubgroupMatrixConfig[]>([
      { M: 16, N: 8, K: 8, component: 'f16', result: 'f32' },
    ]);
  });

  it('createWebGpuContext exposes them with shader-f16, and requests the features', async () => {
    const adapter = fakeAdapter(H200_INFO, ALL);
    dawn.adapter = adapter;
    const ctx = await createWebGpuContext({ backend: 'vulkan' });
    expect(ctx.features.shaderF16).toBe(true);
    expect(ctx.features.subgroupMatrix).toBe(true);
    expect(ctx.features.subgroupMinSize).toBe(32);
    expect(ctx.features.subgroupMatrixConfigs).toHaveLength(10);
    expect(ctx.features.subgroupMatrixConfigs).toContainEqual({
      M: 16,
      N: 16,
      K: 16,
      component: 'f16',
      result: 'f32',
    });
    expect(ctx.dawnToggles).toEqual([...DEFAULT_DAWN_TOGGLES]);
    expect(adapter.requested[0]!.requiredFeatures).toEqual(expect.arrayContaining(ALL));
  });

  it('are empty when the feature is not enabled on the device (features: [])', async () => {
    dawn.adapter = fakeAdapter(H200_INFO, ALL);
    const ctx = await createWebGpuContext({ backend: 'vulkan', features: [] });
    expect(ctx.features.subgroupMatrix).toBe(false);
    expect(ctx.features.subgroupMatrixConfigs).toEqual([]);
  });

  it('are empty when the adapter lacks the feature (toggles off on NVIDIA)', async () => {
    // What the H200 offers with `backend=vulkan` alone: subgroups, no f16, no matrices.
    dawn.adapter = fakeAdapter({ ...H200_INFO, subgroupMatrixConfigs: [] }, [
      'subgroups',
      'timestamp-query',
    ]);
    const ctx = await createWebGpuContext({ backend: 'vulkan', dawnToggles: [] });
    expect(ctx.features.shaderF16).toBe(false);
    expect(ctx.features.subgroupMatrixConfigs).toEqual([]);
    expect(ctx.dawnToggles).toEqual([]);
  });

  it('rejects a bad pipelineTimeoutMs', async () => {
    await expect(createWebGpuContext({ pipelineTimeoutMs: 0 })).rejects.toThrow(
      /^pipelineTimeoutMs: expected a positive number/,
    );
  });
});

describe('wgslLanguageFeatures', () => {
  it('copies the GPU object set-like; undefined where it has none', () => {
    const f = wgslLanguageFeaturesOf({
      wgslLanguageFeatures: new Set(['packed_4x8_integer_dot_product']),
    });
    expect(f).toEqual(new Set(['packed_4x8_integer_dot_product']));
    expect(wgslLanguageFeaturesOf({})).toBeUndefined();
    expect(wgslLanguageFeaturesOf(undefined)).toBeUndefined();
  });

  it('createWebGpuContext exposes those of the Dawn GPU object that gave the adapter', async () => {
    dawn.adapter = fakeAdapter(H200_INFO, ALL);
    dawn.wgslLanguageFeatures = new Set(['packed_4x8_integer_dot_product', 'subgroup_id']);
    try {
      const ctx = await createWebGpuContext({ backend: 'vulkan' });
      expect(ctx.wgslLanguageFeatures?.has('packed_4x8_integer_dot_product')).toBe(true);
      dawn.wgslLanguageFeatures = undefined;
      const old = await createWebGpuContext({ backend: 'vulkan' });
      expect(old.wgslLanguageFeatures).toBeUndefined();
    } finally {
      dawn.wgslLanguageFeatures = undefined;
    }
  });
});
