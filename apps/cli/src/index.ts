export { runCli, USAGE, type CliIo } from './cli.js';
export {
  verifyGolden,
  verifyFile,
  formatVerifyReport,
  reportToJson,
  type VerifyReport,
  type TensorVerdict,
  type VerifyOptions,
} from './verify.js';
export { runBench, formatBenchTable, parseShape, DEFAULT_BENCH, type BenchOptions, type BenchRow } from './bench.js';
export { GOLDEN_BACKENDS, goldenBackend, defaultBackendFor, type GoldenBackend } from './backends.js';
