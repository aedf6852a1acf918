/**
 * grng: train neural networks in Node.js with regularized natural gradients, as RxJS pipelines
 * of TensorFlow.js tensors. Public API: everything a pipeline is composed of.
 */
export {
  initBackend,
  activeBackend,
  BACKENDS,
  type BackendChoice,
  type BackendName,
  type BackendInfo,
} from './runtime/backend.js';
export { GrngError, isGrngError, type GrngErrorCode } from './errors.js';
export type {
  Batch,
  Step,
  LayerSignals,
  UpdateInfo,
  MetricsRow,
  Params,
  Curvature,
  KroneckerInverse,
  StepHealth,
  SkippedStep,
} from './types.js';
export { sampledLabelPass, sampleLabels } from './nn/sampledLabels.js';
export {
  resolveCurvatureOptions,
  type CurvatureOptions,
  type DampingRule,
} from './curvature/options.js';

export { loadMnist, MNIST_TEST_FRACTION } from './data/mnist.js';
export { syntheticDataset, type SyntheticOptions } from './data/synthetic.js';
export {
  loadDatasetFile,
  ARROW_SHAPE_METADATA,
  DATASET_NAMES,
  DATASET_FILE_EXTENSIONS,
  FILE_TEST_FRACTION,
} from './data/fileDataset.js';
export {
  validateDataset,
  exampleShape,
  withExampleShape,
  parseShape,
  labelsPerExample,
  type Dataset,
  type Split,
} from './data/dataset.js';
export {
  loadIdxDataset,
  readIdxFile,
  parseIdx,
  type IdxArray,
  type IdxDatasetOptions,
  type IdxType,
} from './data/idx.js';
export {
  loadMnistFull,
  loadFashionMnist,
  FASHION_MNIST_CLASSES,
  FASHION_MNIST_DIR,
} from './data/imageDatasets.js';
export {
  loadTextDataset,
  loadFortunes,
  textWindows,
  FORTUNES_DIR,
  TEXT_TEST_FRACTION,
  type TextDatasetOptions,
} from './data/textDataset.js';

export {
  Sequential,
  mlp,
  parseModelSpec,
  type MlpOptions,
  type DenseSpec,
  type DenseLayerInfo,
} from './nn/sequential.js';
export {
  hasSignal,
  type Layer,
  type SignalLayer,
  type LayerTap,
  type LayerApplyOptions,
} from './nn/layer.js';
export { denseLayer, type DenseLayer } from './nn/dense.js';
export { flattenLayer } from './nn/flatten.js';
export {
  parseCnnSpec,
  parseGptSpec,
  parseModelJson,
  type ModelSpec,
  type LayerSpec,
} from './nn/modelSpec.js';
export {
  blockFor,
  curvatureBlocks,
  foldStatistics,
  type KroneckerBlock,
  type OuterProductRows,
} from './curvature/blocks/index.js';
export { denseBlock } from './curvature/blocks/dense.js';
export { ACTIVATIONS, activate, type Activation } from './nn/activations.js';
export { INITIALIZERS, type Initializer } from './nn/init.js';
export { softmaxCrossEntropy, softmaxCrossEntropyPerSample, correctCount } from './nn/losses.js';
export {
  layerMatMul,
  matMulInput,
  rowMaxNoGradient,
  exp as differentiableExp,
  tanh as differentiableTanh,
} from './nn/ops.js';

export {
  batches,
  batchesPerEpoch,
  type BatchOptions,
  type SourceControl,
  type SourcePosition,
} from './streams/batches.js';

export {
  forwardBackward,
  computeStep,
  type ForwardBackwardOptions,
} from './operators/forwardBackward.js';
export { update, type UpdateOptions } from './operators/update.js';
export { evaluate, type EvaluateOptions } from './operators/evaluate.js';
export { metrics, pearsonFromSums, type MetricsOptions } from './operators/metrics.js';
export { fisherScan, type FisherScanRun, type ScanState } from './operators/fisherScan.js';
export { guardFinite, stepHealth, DEFAULT_MAX_BAD_STEPS } from './operators/guardFinite.js';
export { StateSlot } from './operators/stateSlot.js';
export { summarize, type RunSummary, type SummaryContext } from './sinks/summarize.js';

export type { GradientTransformation, TransformResult, UpdateContext } from './optim/transform.js';
export { chain } from './optim/chain.js';
export { scaleByLearningRate } from './optim/scaleByLearningRate.js';
export { addDecayedWeights } from './optim/addDecayedWeights.js';
export { traceMomentum } from './optim/traceMomentum.js';
export { scaleByAdam, type AdamOptions } from './optim/scaleByAdam.js';
export { sgd, type SgdOptions } from './optim/sgd.js';
export { adamw, type AdamwOptions } from './optim/adamw.js';
export {
  createOptimizer,
  optimizerDefaults,
  resolveOptimizerOptions,
  OPTIMIZERS,
  type OptimizerName,
  type NamedOptimizer,
  type NamedOptimizerOptions,
} from './optim/registry.js';
export { kfac, type KfacOptions, type CurvatureOptimizer } from './optim/kfac.js';
export { ring, type RingOptions } from './optim/ring.js';
export {
  reng,
  hessianGradientProduct,
  finiteDifferenceHg,
  type RengOptions,
} from './optim/reng.js';
export { sophia, type SophiaOptions } from './optim/sophia.js';
export { rkalman, type RkalmanOptions } from './optim/rkalman.js';
export {
  naturalGradient,
  precondition,
  type NaturalGradientOptions,
} from './optim/naturalGradient.js';
export {
  valueAt,
  constantSchedule,
  stepSchedule,
  cosineSchedule,
  warmupSchedule,
  type Schedule,
  type Hyper,
} from './optim/schedules.js';
export {
  partition,
  type PartitionOptions,
  type PartitionState,
  type ParameterLabel,
} from './optim/partition.js';
export { globalNorm } from './linalg/reductions.js';

export { progressBar, type ProgressBarOptions } from './sinks/progressBar.js';
export { formatSummaryTable } from './sinks/summaryTable.js';

export {
  trainingPipeline,
  type TrainingPipelineOptions,
  type PipelineOptimizer,
} from './run/pipeline.js';
export { prepareRun, train, liveTensors, type PreparedRun, type RunMetadata } from './run/train.js';
export {
  resolveTrainOptions,
  RESUME_MAY_CHANGE,
  type TrainOptions,
  type RunSettings,
} from './run/options.js';
export { RunControl } from './run/runControl.js';
export {
  loadCheckpoint,
  saveCheckpoint,
  disposeCheckpoint,
  restoreCheckpoint,
  runSourceControl,
  type Checkpoint,
  type CheckpointContent,
  type CheckpointPlan,
  type ResumableOptions,
  type RunState,
} from './run/checkpoint.js';
export { describeRun, type PipelineRunFacts, type RunNaming } from './run/describeRun.js';
export {
  generateText,
  generateTokens,
  modelFromCheckpoint,
  type GenerateOptions,
} from './run/generate.js';

export { evaluateModel, predictClasses, type ModelEvaluation } from './run/evaluateModel.js';
export { loadSavedModel, savedModelFromCheckpoint, type SavedModel } from './run/savedModel.js';
export { modelLayout } from './nn/modelLayout.js';
export {
  mapKerasTopology,
  SUPPORTED_KERAS_LAYERS,
  type KerasMapping,
} from './interop/kerasTopology.js';
export {
  EXPORT_OUTPUTS,
  fromLayersModel,
  toLayersModel,
  type ExportOutput,
  type GrngExportMetadata,
  type ToLayersModelOptions,
} from './interop/layersModel.js';
export {
  isLayersModelPath,
  layersModelFiles,
  loadLayersModelFile,
  readLayersModelTopology,
  saveLayersModel,
} from './interop/layersModelFiles.js';
export {
  GrngEmbedding,
  GrngTransformerBlock,
  registerGrngLayers,
  type GrngEmbeddingArgs,
  type GrngTransformerBlockArgs,
} from './interop/tfjsLayers.js';
export { readFeatureRows, type FeatureRows } from './data/featureRows.js';
export {
  predictionsCsv,
  writePredictions,
  PREDICTION_FILE_EXTENSIONS,
  type Predictions,
} from './sinks/predictionFile.js';

export {
  expandTrials,
  parseSweepConfig,
  trialArgv,
  trialId,
  SWEEP_METRICS,
  type Axis,
  type FlagValue,
  type Halving,
  type ReportSpec,
  type SweepConfig,
  type SweepMetricName,
} from './sweep/config.js';
export { FULL_RUN, runHalving, type SweepRow } from './sweep/halving.js';
export { sweepSnapshot, type SweepSnapshot } from './sweep/snapshot.js';
export {
  followRecording,
  RecordingFollower,
  type FollowEvent,
  type FollowRecordingOptions,
} from './streams/followRecording.js';
export { localPool, threadEnv } from './sweep/localPool.js';
export { readResult, runTrial, type RunTrialOptions } from './sweep/runTrial.js';
export {
  runRemoteTrial,
  type RemoteTrialOptions,
  type TrialFilesEndpoint,
} from './sweep/remoteTrial.js';
export { trialFilesRoutes, MAX_CHUNK_BYTES } from './sweep/trialFiles.js';
export {
  ablation,
  comparison,
  configurations,
  metricView,
  type Ablation,
  type Comparison,
  type Configuration,
} from './report/analysis.js';
export { renderReport, type RenderedReport } from './report/markdown.js';
export { renderSvg, type ChartSpec } from './report/charts.js';
export {
  digestPath,
  loadDigest,
  loadSweep,
  sweepDigest,
  type SweepData,
  type TrialData,
  type TrialSummary,
} from './report/sweepData.js';
export { compare, stat, type Stat, type Verdict } from './report/statistics.js';
export {
  formatSweepTable,
  sweepTable,
  sweepTableArrow,
  sweepTableCsv,
  type SweepRecord,
  type SweepTable,
} from './sweep/table.js';
export type {
  Trial,
  TrialExecutor,
  TrialOptions,
  TrialRequest,
  TrialResult,
} from './sweep/types.js';

export {
  METRIC_COLUMNS,
  metricsSchema,
  runOfSchema,
  rowsToRecordBatch,
  recordBatchToRows,
  type RecordedRun,
} from './metrics/schema.js';
export { toRecordBatches, type RecordBatchOptions } from './sinks/toRecordBatches.js';
export { recordArrow, type RecordArrowOptions } from './sinks/recordArrow.js';
export { arrowSink, type ArrowSinkOptions } from './sinks/arrowSink.js';
export { broadcast } from './sinks/broadcast.js';
export { RunHub, type HubRun, type HubEvent } from './sinks/runHub.js';
export { startServer, type ServerOptions, type ServerHandle } from './sinks/server.js';
export { encodeStream } from './sinks/encodeStream.js';
export { readRecording, parseRecording, type Recording } from './streams/readRecording.js';
export { replayArrow, type ReplayedRow, type ReplayOptions } from './streams/replayArrow.js';
export { VERSION } from './version.js';
