/** Public API of the he-approx core (no `vscode` import anywhere below this folder). */
export { analyze, AnalyzeOptions, DEFAULT_DEGREES, SEAL_LEVELS } from './analyze';
export { UserError, CancelledError, isUserError } from './errors';
export { loadModel, LoadedModel } from './model/load';
export { loadDataset } from './data/read';
export { checkOutputs, writeOutputs, coefficientsFile, approximatedTopology } from './export/export';
export { registerPolyLayer, HEPolyActivation } from './export/polyLayer';
export * from './report';
