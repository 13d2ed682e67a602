import {
  add,
  addLayerNorm,
  argmax,
  crossEntropy,
  dropout,
  Embedding,
  GatedLinearAttention,
  GlaState,
  type KvCache,
  LayerNorm,
  Linear,
  MLP,
  Module,
  MultiHeadAttention,
  matmul,
  noGrad,
  readWebGpuNow,
  reshape,
  scope,
  slice,
  type Var,
} from '@attnkit/nn';
import {
  DeviceError,
  describe,
  formatShape,
  Rng,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { toWebGpu, type WebGpuContext } from '@attnkit/webgpu';
import { type GptConfig, gptConfig } from './config.js';
import { DevicePagedKvCache, PagedKvCache } from './kv-cache.js';
import { type SampleOptions, sampleToken, samplingRng } from './sample.js';

/**
 * What a block keeps while decoding: a KV cache for attention (softmax or sigmoid), the
 * recurrent state for GLA. `length` is the tokens seen so far either way.
 */
export type DecodeCache = KvCache | GlaState;

/**
 * One pre-norm block, as nanoGPT's Block: x + drop(attn(ln1 x)), then x + drop(mlp(ln2 x)).
 * Written here from nn's parts rather than nn's TransformerBlock because that block has no
 * residual dropout and does not pass `bias` to its MLP. With attention 'gla' the attention is a
 * GatedLinearAttention layer (GLA Transformer: the same block around a GLA layer).
 */
class Block extends Module {
  readonly ln1: LayerNorm;
  readonly attn: MultiHeadAttention | GatedLinearAttention;
  readonly ln2: LayerNorm;
  readonly mlp: MLP;
  constructor(
    readonly c: GptConfig,
    rng: Rng,
  ) {
    super();
    this.ln1 = this.child('ln1', new LayerNorm(c.nEmbd));
    this.attn = this.child(
      'attn',
      c.attention === 'gla'
        ? new GatedLinearAttention(c.nEmbd, c.nHead, { bias: c.bias, rng })
        : new MultiHeadAttention(c.nEmbd, c.nHead, {
            kvHeads: c.nKvHead,
            rope: c.positional === 'rope',
            causal: true,
            bias: c.bias,
            rng,
            ...(c.attention === 'standard' ? { family: 'standard' } : {}),
            // b = -log n with n the context length (GptConfig.attention says why it is fixed).
            ...(c.attention === 'sigmoid'
              ? { family: 'sigmoid', sigmoidBias: -Math.log(c.blockSize) }
              : {}),
          }),
    );
    this.ln2 = this.child('ln2', new LayerNorm(c.nEmbd));
    this.mlp = this.child('mlp', new MLP(c.nEmbd, { activation: 'gelu', bias: c.bias, rng }));
  }
  /**
   * x + attn(ln1(x)), then + mlp(ln2(.)), given `normed` = ln1(x) (the previous block made it);
   * returns the output and the output normed by `next` (the next block's ln1, or the final
   * norm). Each residual add and the norm after it are one nn addLayerNorm: add then layerNorm
   * when training, one pass on webgpu when decoding (24 fewer passes a token for 12 layers).
   */
  forward(
    x: Var,
    normed: Var,
    next: LayerNorm,
    drop: Rng,
    cache?: DecodeCache,
  ): { x: Var; normed: Var } {
    const d = (y: Var) => dropout(y, this.c.dropout, drop, this.training);
    const norm = (ln: LayerNorm) => [ln.weight, ln.bias, ln.eps] as const;
    const y =
      this.attn instanceof GatedLinearAttention
        ? this.attn.forward(normed, cache ? { state: cache as GlaState } : {})
        : this.attn.forward(normed, cache ? { kvCache: cache as KvCache } : {});
    const a = addLayerNorm(x, d(y), ...norm(this.ln2));
    const m = addLayerNorm(a.sum, d(this.mlp.forward(a.normed)), ...norm(next));
    return { x: m.sum, normed: m.normed };
  }
}

export interface GenerateOptions extends SampleOptions {
  maxNewTokens: number;
  /**
   * Decode with the paged KV cache (default): one prefill over the prompt, then one forward of
   * one token per new token. `false` recomputes the whole (cropped) context every token.
   */
  cache?: boolean;
  /** Called with each new token as it is chosen, and the logits it was drawn from. */
  onToken?: (token: number, logits: Float32Array) => void;
  /**
   * Greedy decoding (temperature 0) with the cache on webgpu: record the next token's forward
   * from the GPU-side argmax before reading this token back (default true); false reads each
   * token back before recording the next (the sampling path's order), for A/B measurements.
   */
  pipelined?: boolean;
}

/** A GPT (nanoGPT's model.py on attnkit): embeddings, blocks, final norm, lm head. */
export class Gpt extends Module {
  readonly config: GptConfig;
  readonly wte: Embedding;
  readonly wpe: Embedding | null;
  readonly blocks: Block[];
  readonly lnF: LayerNorm;
  readonly lmHead: Linear | null;
  readonly seed: number;
  /** Draws the dropout masks; `reseedDropout(step)` makes them a function of the step. */
  dropoutRng: Rng;
  /** The WebGPU context the parameters live on (toWebGpu), or null: on the cpu. */
  ctx: WebGpuContext | null = null;

  /** `seed` draws the initial weights (and seeds dropout); the config is checked first. */
  constructor(config: Partial<GptConfig> & { vocabSize: number }, options: { seed?: number } = {}) {
    super();
    const c = gptConfig(config);
    this.config = c;
    const seed = options.seed ?? 0;
    const rng = new Rng(seed);
    this.wte = this.child('wte', new Embedding(c.vocabSize, c.nEmbd, { rng, std: 0.02 }));
    this.wpe =
      c.positional === 'learned'
        ? this.child('wpe', new Embedding(c.blockSize, c.nEmbd, { rng, std: 0.02 }))
        : null;
    this.seed = seed;
    this.dropoutRng = new Rng(seed + 1);
    this.blocks = Array.from({ length: c.nLayer }, (_, i) =>
      this.child(`h${i}`, new Block(c, rng)),
    );
    this.lnF = this.child('lnF', new LayerNorm(c.nEmbd));
    this.lmHead = c.tieWeights
      ? null
      : this.child('lmHead', new Linear(c.nEmbd, c.vocabSize, { bias: false, rng }));
    this.#init(rng);
  }

  /**
   * GPT-2's init (nanoGPT's _init_weights): N(0, 0.02) weights, zero biases, and the residual
   * projections scaled by 1 / sqrt(2 nLayer) so the residual stream's variance does not grow
   * with depth (GPT-2 paper, sec. 2.3).
   */
  #init(rng: Rng) {
    const std = 0.02;
    for (const [name, p] of this.namedParameters()) {
      // Norms keep their init (LayerNorm's ones and zeros, GLA's output RMSNorm's ones).
      if (name.startsWith('ln') || name.includes('.ln') || name.includes('.g_norm')) continue;
      if (name.endsWith('.bias')) {
        p.data = Tensor.zeros(p.shape, 'f32');
        continue;
      }
      const residual = ['attn.wo.weight', 'attn.o_proj.weight', 'mlp.fc2.weight'].some((s) =>
        name.endsWith(s),
      );
      p.data = rng.randn(p.shape, 'f32', residual ? std / Math.sqrt(2 * this.config.nLayer) : std);
    }
  }

  /** Dropout masks from (seed, step) alone: a resumed run draws what the uninterrupted one did. */
  reseedDropout(step: number): void {
    this.dropoutRng = new Rng(this.seed * 2 ** 21 + 1 + step);
  }

  /**
   * Moves the parameters onto `ctx`'s GPU (uploads them): forward then runs on nn's webgpu
   * kernels (registerWebGpuKernels(ctx) first) and takes token ids on that GPU (generate
   * uploads its own). Build the optimizer after this: it holds the parameters' tensors.
   */
  toWebGpu(ctx: WebGpuContext): this {
    for (const p of this.parameters()) {
      const old = p.data;
      p.data = toWebGpu(old, ctx);
      if (old !== p.data) old.dispose();
    }
    this.ctx = ctx;
    return this;
  }

  /** Where the parameters are: 'cpu' or 'webgpu'. */
  get device(): string {
    return this.wte.weight.data.device;
  }

  /** Parameters in all (the tied head counted once). */
  numParameters(): number {
    return this.parameters().reduce((n, p) => n + p.data.size, 0);
  }

  /**
   * idx [B, T] token ids (int32, T <= blockSize, on the parameters' device) -> logits
   * [B, T, vocabSize]; with targets [B, T], the mean cross-entropy too. `kvCaches` (one per
   * block) decodes: positions start at the caches' length. `lastOnly` (without targets): the
   * last position's logits alone, [B, 1, vocabSize].
   */
  forward(
    idx: Tensor,
    targets?: Tensor,
    kvCaches?: readonly DecodeCache[],
    options: { lastOnly?: boolean } = {},
  ): { logits: Var; loss?: Var } {
    const c = this.config;
    if (idx.shape.length !== 2)
      throw new ShapeError(
        `Gpt.forward: idx expected [B, T], got ${formatShape(idx.shape)}`,
        'idx',
      );
    for (const [name, ids] of [
      ['idx', idx],
      ['targets', targets],
    ] as const)
      if (ids && ids.device !== this.device)
        throw new DeviceError(
          `Gpt.forward: ${name} expected on the parameters' device (${this.device}), got ${ids.device} (toWebGpu it)`,
          name,
        );
    const [b, t] = idx.shape as [number, number];
    const offset = kvCaches?.[0]?.length ?? 0;
    if (offset + t > c.blockSize)
      throw new ShapeError(
        `Gpt.forward: idx expected at most blockSize = ${c.blockSize} positions, got ${offset} cached + ${t}`,
        'idx',
      );
    if (kvCaches && kvCaches.length !== c.nLayer)
      throw new ValueError(
        `Gpt.forward: kvCaches expected one per layer (${c.nLayer}), got ${kvCaches.length}`,
        'kvCaches',
      );
    // GLA's blocks decode from a GlaState, the attention blocks from a KV cache (newKvCaches).
    const wantState = c.attention === 'gla';
    if (kvCaches?.some((cache) => cache instanceof GlaState !== wantState))
      throw new ValueError(
        `Gpt.forward: kvCaches expected ${wantState ? 'a GlaState per layer (attention gla)' : `a KvCache per layer (attention ${c.attention}), not a GlaState`}: use newKvCaches()`,
        'kvCaches',
      );
    let x = this.wte.forward(idx);
    // Positions offset .. offset + t - 1 are consecutive rows of the table: a slice, not a
    // gather (and no ids to upload); [t, C] broadcasts over the batch.
    if (this.wpe) x = add(x, slice(this.wpe.weight, 0, offset, offset + t));
    x = dropout(x, c.dropout, this.dropoutRng, this.training);
    // The blocks hand each other their output normed by the next one's ln1 (the last block's
    // by the final norm), which fuses each residual add with the norm after it (Block.forward).
    let normed = this.blocks[0]!.ln1.forward(x);
    this.blocks.forEach((block, i) => {
      const next = this.blocks[i + 1]?.ln1 ?? this.lnF;
      ({ x, normed } = block.forward(x, normed, next, this.dropoutRng, kvCaches?.[i]));
    });
    x = normed;
    // Inference wants the next token's logits only (nanoGPT's lm_head(x[:, [-1], :])): the
    // head's [T, vocab] product over the other positions would be thrown away.
    if (options.lastOnly && !targets) x = slice(x, 1, t - 1, t);
    const logits = this.lmHead
      ? this.lmHead.forward(x)
      : matmul(x, this.wte.weight, { transB: true });
    if (!targets) return { logits };
    if (targets.shape.join() !== idx.shape.join())
      throw new ShapeError(
        `Gpt.forward: targets expected ${formatShape(idx.shape)} (as idx), got ${formatShape(targets.shape)}`,
        'targets',
      );
    return {
      logits,
      loss: crossEntropy(reshape(logits, [b * t, c.vocabSize]), targets.reshape([b * t])),
    };
  }

  /**
   * Fresh per-layer caches for decoding `batch` sequences of up to blockSize tokens: the paged
   * pool (lean-attention's KvCache), attended in place: on the cpu PagedKvCache, on webgpu
   * DevicePagedKvCache (its pools are GPU buffers, written by copies queued with nn's passes:
   * the keys and values never come back to the host). With attention 'gla': one GlaState per
   * layer (the recurrent state, [batch, nHead, K, V] on the parameters' device once filled).
   */
  newKvCaches(batch = 1): DecodeCache[] {
    const c = this.config;
    if (c.attention === 'gla') return this.blocks.map(() => new GlaState());
    return this.blocks.map(() =>
      this.ctx && this.device === 'webgpu'
        ? new DevicePagedKvCache({
            batch,
            kvHeads: c.nKvHead,
            headDim: c.nEmbd / c.nHead,
            maxTokens: c.blockSize,
            dtype: this.wte.weight.data.dtype as 'f32' | 'f16',
            context: this.ctx,
          })
        : new PagedKvCache({
            batch,
            kvHeads: c.nKvHead,
            headDim: c.nEmbd / c.nHead,
            maxTokens: c.blockSize,
          }),
    );
  }

  /**
   * Continues `prompt` by maxNewTokens tokens (returned without the prompt), in eval mode and
   * without gradients. With the cache, the context that fills blockSize is cut to its last
   * blockSize / 2 tokens and prefilled again, so the cached and uncached paths agree token for
   * token while prompt + new tokens fit in blockSize (beyond, uncached crops every token).
   * Async: on webgpu each token's logits are read back from the GPU.
   */
  async generate(prompt: readonly number[], options: GenerateOptions): Promise<number[]> {
    const c = this.config;
    const { maxNewTokens, cache = true, onToken } = options;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0)
      throw new ValueError(
        `generate: maxNewTokens expected a non-negative integer, got ${maxNewTokens}`,
        'maxNewTokens',
      );
    if (!Array.isArray(prompt) || prompt.length === 0)
      throw new ValueError('generate: prompt expected at least one token id', 'prompt');
    if (options.pipelined !== undefined && typeof options.pipelined !== 'boolean')
      throw new ValueError(
        `generate: pipelined expected a boolean, got ${describe(options.pipelined)}`,
        'pipelined',
      );
    for (const id of prompt)
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize)
        throw new ValueError(
          `generate: prompt expected token ids in [0, ${c.vocabSize}), got ${id}`,
          'prompt',
        );
    const rng = samplingRng(options);
    const wasTraining = this.training;
    this.eval();
    if (cache && this.ctx && (options.temperature ?? 1) === 0 && options.pipelined !== false) {
      try {
        return await this.greedyOnGpu(prompt, maxNewTokens, onToken);
      } finally {
        this.train(wasTraining);
      }
    }
    const tokens = [...prompt];
    const out: number[] = [];
    // One forward without gradients, the ids uploaded on webgpu; the scope frees the
    // intermediates (GPU buffers), the caches keep what they hold.
    const lastLogits = (xs: number[], caches?: DecodeCache[]) => {
      const x = this.tokenIds(xs);
      const last = noGrad(() =>
        scope(() => this.forward(x, undefined, caches, { lastOnly: true }).logits.data),
      );
      x.dispose(); // released once the queued forward is submitted
      return last;
    };
    let caches: DecodeCache[] | null = null;
    try {
      let next: number[] = [];
      for (let i = 0; i < maxNewTokens; i++) {
        let last: Tensor;
        if (!cache) {
          last = lastLogits(tokens.slice(-c.blockSize));
        } else {
          if (!caches || caches[0]!.length + next.length > c.blockSize)
            ({ caches, context: next } = this.prefill(caches, tokens));
          last = lastLogits(next, caches);
        }
        const logits = (await last.toCpu()).toFloat32Array();
        last.dispose();
        const token = sampleToken(logits, options, rng);
        tokens.push(token);
        out.push(token);
        next = [token];
        onToken?.(token, logits);
      }
    } finally {
      disposeCaches(caches);
      this.train(wasTraining);
    }
    return out;
  }

  /** Token ids as a [1, n] i32 tensor on the parameters' device. */
  private tokenIds(xs: readonly number[]): Tensor {
    const host = Tensor.from(Int32Array.from(xs), [1, xs.length]);
    return this.ctx ? toWebGpu(host, this.ctx) : host;
  }

  /**
   * Fresh caches for a prefill (the old ones disposed) and the context it runs over: the whole
   * prompt the first time, the last blockSize / 2 tokens once the context filled blockSize.
   */
  private prefill(
    caches: DecodeCache[] | null,
    tokens: readonly number[],
  ): { caches: DecodeCache[]; context: number[] } {
    const keep = caches ? Math.max(1, this.config.blockSize >> 1) : this.config.blockSize;
    disposeCaches(caches);
    return { caches: this.newKvCaches(1), context: tokens.slice(-keep) };
  }

  /**
   * Greedy decoding with the cache on webgpu, pipelined: each token's id is the argmax of its
   * logits on the GPU and feeds the next token's forward at once, so the host records token
   * t + 1 while the GPU still runs token t, and token t is read back (its id, 4 bytes; its
   * logits too for onToken) only then. Per token that costs about the larger of the host's
   * recording and the GPU's work instead of their sum plus a read-back's round trip. The tokens
   * are those of sampleToken at temperature 0 (the first largest logit; NaN aside). A prefill
   * (the first, and when the context fills blockSize) needs the tokens on the host: the pending
   * one is read back first.
   */
  private async greedyOnGpu(
    prompt: readonly number[],
    maxNewTokens: number,
    onToken: GenerateOptions['onToken'],
  ): Promise<number[]> {
    const c = this.config;
    const tokens = [...prompt];
    const out: number[] = [];
    let caches: DecodeCache[] | null = null;
    type Step = { logits: Tensor; id: Tensor; reads: Promise<(Tensor | undefined)[]> };
    // One forward through the caches without gradients (the scope frees the intermediates),
    // then its reads: copies submitted now, behind this token's passes and ahead of the next
    // token's (toCpu would wait for those too).
    const step = (x: Tensor): Step => {
      const s = noGrad(() =>
        scope(() => {
          const logits = this.forward(x, undefined, caches!, { lastOnly: true }).logits.data;
          return { logits, id: argmax(logits).data };
        }),
      );
      const reads = Promise.all([
        readWebGpuNow(s.id),
        onToken ? readWebGpuNow(s.logits) : undefined,
      ]);
      // Awaited in settle(); handled here so that a failure before then is not "unhandled".
      reads.catch(() => undefined);
      return { ...s, reads };
    };
    // Recorded and not yet read back, oldest first (at most two: the one being read and the
    // next); whatever is left when an error ends the loop is disposed in `finally`.
    const inflight: Step[] = [];
    const settle = async () => {
      const oldest = inflight[0];
      if (!oldest) return;
      let host: (Tensor | undefined)[];
      try {
        host = await oldest.reads;
      } finally {
        inflight.shift();
        oldest.logits.dispose();
        oldest.id.dispose();
      }
      const token = host[0]!.toFloat64Array()[0]!;
      const row = host[1]?.toFloat32Array();
      tokens.push(token);
      out.push(token);
      if (onToken) onToken(token, row!);
    };
    try {
      for (let i = 0; i < maxNewTokens; i++) {
        if (!caches || caches[0]!.length + 1 > c.blockSize) {
          // A prefill needs every token on the host.
          while (inflight.length > 0) await settle();
          let context: number[];
          ({ caches, context } = this.prefill(caches, tokens));
          const ids = this.tokenIds(context);
          try {
            inflight.push(step(ids));
          } finally {
            ids.dispose(); // released once the queued forward is submitted
          }
        } else {
          // The previous token's id, still on the GPU: [1, 1] i32, as the embedding takes it.
          inflight.push(step(inflight.at(-1)!.id));
        }
        // Token t is read while token t + 1 (just recorded) runs.
        if (inflight.length > 1) await settle();
      }
      while (inflight.length > 0) await settle();
    } finally {
      for (const s of inflight) {
        s.logits.dispose();
        s.id.dispose();
      }
      disposeCaches(caches);
    }
    return out;
  }
}

function disposeCaches(caches: DecodeCache[] | null): void {
  // Any hook with its own buffers (DevicePagedKvCache's pools, DeviceKvCache's tensors); a GLA
  // layer's state tensor.
  for (const c of caches ?? []) {
    if (c instanceof GlaState) c.reset();
    else (c as { dispose?: () => void }).dispose?.();
  }
}
