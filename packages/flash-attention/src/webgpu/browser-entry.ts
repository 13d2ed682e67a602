import { accuracy, goldenAttentionOptions, parseGolden } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import { createWebGpuContext, toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import {
  flashAttentionBackwardWebGpu,
  flashAttentionWebGpu,
  planWebGpuFlash,
  type WebGpuFlashOptions,
} from '../index.js';

/**
 * The page side of the browser test (browser.test.ts bundles this for the browser): runs a
 * golden file's forward and backward on navigator.gpu with the given tile sizes and returns
 * the relative L2 error of every reference tensor, the adapter's description and whether the
 * forward took the subgroup path. One context serves the page, so kernels compile once.
 */
let shared: Promise<WebGpuContext> | undefined;

async function runGolden(bytes: Uint8Array, name: string, tiles: WebGpuFlashOptions['tiles']) {
  // SwiftShader compiles each pipeline on the CPU; while every other package's tests share CI's
  // two cores one compile took over the 20 s default (CI, 2026-12-03). The test's own 180 s
  // limit still bounds the run.
  shared ??= createWebGpuContext({ pipelineTimeoutMs: 150_000 });
  const ctx = await shared;
  ctx.poisonOutputs = true;
  {
    const g = parseGolden(bytes, name);
    const t = g.tensors;
    const options = { ...goldenAttentionOptions(g), tiles };
    const plan = planWebGpuFlash({
      kernel: 'forward',
      d: t.q!.shape.at(-1)!,
      dv: t.v!.shape.at(-1)!,
      maxComputeWorkgroupStorageSize: ctx.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: ctx.limits.maxComputeInvocationsPerWorkgroup,
      subgroupMinSize: ctx.features.subgroups ? ctx.features.subgroupMinSize : 0,
      tiles: tiles?.forward,
    });
    const [q, k, v] = [t.q!, t.k!, t.v!].map((x) => toWebGpu(x, ctx));
    const { o, lse } = await flashAttentionWebGpu(q!, k!, v!, options);
    const got: Record<string, Tensor> = {
      o: await o.toCpu(),
      lse: await lse.toCpu(),
    };
    if (g.hasBackward) {
      const grads = await flashAttentionBackwardWebGpu(
        q!,
        k!,
        v!,
        o,
        lse,
        toWebGpu(t.do!, ctx),
        options,
      );
      for (const [n, x] of Object.entries(grads)) got[n] = await x.toCpu();
    }
    const errors: Record<string, { relL2: number; nonFinite: number }> = {};
    for (const n of g.references) {
      if (!got[n]) continue;
      const a = accuracy(got[n]!, t[n]!);
      errors[n] = { relL2: a.relL2, nonFinite: a.nonFinite };
    }
    return {
      adapter: ctx.adapterInfo,
      features: ctx.features,
      subgroupReduce: plan.subgroupReduce,
      errors,
    };
  }
}

(globalThis as { attnkitRunGolden?: typeof runGolden }).attnkitRunGolden = runGolden;
