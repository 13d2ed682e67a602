export {
  defaultBackendFor,
  type GoldenBackend,
  goldenBackend,
  goldenBackends,
} from './backends.js';
export {
  BENCH_FAMILIES,
  type BenchFamily,
  type BenchOptions,
  type BenchRow,
  DEFAULT_BENCH,
  formatBenchTable,
  hstuBenchOptions,
  parseScoreMod,
  parseShape,
  runBench,
} from './bench.js';
export { type CliIo, runCli, USAGE } from './cli.js';
export {
  type BackendStatus,
  collectInfo,
  formatInfo,
  type InfoOptions,
  type InfoReport,
  type WebGpuInfo,
} from './info.js';
export {
  formatVerifyReport,
  reportToJson,
  type TensorVerdict,
  type VerifyOptions,
  type VerifyReport,
  verifyFile,
  verifyGolden,
} from './verify.js';
