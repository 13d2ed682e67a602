export {
  defaultBackendFor,
  GOLDEN_BACKENDS,
  type GoldenBackend,
  goldenBackend,
} from './backends.js';
export {
  type BenchOptions,
  type BenchRow,
  DEFAULT_BENCH,
  formatBenchTable,
  parseShape,
  runBench,
} from './bench.js';
export { type CliIo, runCli, USAGE } from './cli.js';
export {
  formatVerifyReport,
  reportToJson,
  type TensorVerdict,
  type VerifyOptions,
  type VerifyReport,
  verifyFile,
  verifyGolden,
} from './verify.js';
