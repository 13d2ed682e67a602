export { type Checkpoint, loadCheckpoint, saveCheckpoint } from './checkpoint.js';
export {
  GPT_ATTENTIONS,
  type GptAttention,
  type GptConfig,
  gptConfig,
  PRESETS,
  type PresetName,
  presetConfig,
} from './config.js';
export { type Batch, DataLoader } from './data.js';
export { DeviceKvCache, DevicePagedKvCache, PagedKvCache } from './kv-cache.js';
export { type DecodeCache, type GenerateOptions, Gpt } from './model.js';
export { type SampleOptions, sampleToken } from './sample.js';
export { CharTokenizer, Gpt2Tokenizer, type Tokenizer, tokenizerFromJson } from './tokenizer.js';
