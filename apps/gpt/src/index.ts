export { type CliIo, runCli, USAGE } from './cli.js';
export { type LossPoint, lossCurveSvg } from './plot.js';
export { type SampleCommandOptions, sample } from './sample.js';
export { checkFile, type TrainOptions, type TrainResult, train } from './train.js';
