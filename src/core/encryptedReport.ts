/**
 * What the encrypted tests (he/layerTest.ts, he/modelTest.ts) add to a report, under
 * `encrypted` (docs/report-schema.md).
 */
import type { CkksParams } from './he/params';

export interface LayerEncryptedResult {
  name: string;
  degree: number;
  values: number;
  ciphertexts: number;
  ringSize: number;
  levelsAvailable: number;
  levelsUsed: number;
  /** Levels the plaintext simulator predicted; equal to levelsUsed when the plan holds. */
  levelsPredicted: number;
  simulatorScaleMatches: boolean;
  nonScalarMults: number;
  maxAbsErrVsPlainPoly: number;
  /** -log2 of the max absolute error against the plaintext polynomial. */
  precisionBits: number;
  maxAbsErrVsActivation: number;
  secondsPerCiphertext: number;
  keyBytes: { publicKey: number; relinKeys: number };
}

export interface EncryptedLayerReport {
  mode: 'layer';
  createdAt: string;
  samples: number;
  scaleBits: number;
  security: '128-bit (HomomorphicEncryption.org standard via SEAL CoeffModulus bounds)';
  layers: LayerEncryptedResult[];
  peakRssMB: number;
  seconds: number;
}

export interface SampleResult {
  index: number;
  label: number | null;
  plainOriginal: number;
  plainApproximated: number;
  encrypted: number;
  maxAbsErrLogits: number;
}

export interface EncryptedModelReport {
  mode: 'model';
  createdAt: string;
  /** The CKKS library that ran it: SEAL (node-seal, in process) or Lattigo (engines/lattigo, with bootstrapping). Absent in older reports: SEAL. */
  engine?: 'seal' | 'lattigo';
  /** The parameters' security as the engine states it ('128-bit', or 'insecure (test parameters)'). */
  security?: string;
  /**
   * Bootstrapping (Lattigo): value refreshes the analysis planned (report.final.bootstraps), the ones
   * the program made (its trace), the ciphertext bootstraps the engine executed per run, and per
   * refreshed value its bound and whether it was scaled into [-1, 1] first; per bootstrap executed,
   * the precision kept (bits, the worst over runs) and seconds.
   */
  bootstrapping?: {
    planned: number;
    executed: number;
    ciphertexts: number;
    values: { node: string; bound: number; scaled: boolean }[];
    precisionBits: number[];
    secondsPerBootstrap: number;
  };
  params: CkksParams & { samplesPerCiphertext: number };
  /**
   * How samples were packed: 'throughput' (many samples per ciphertext, one ciphertext per channel)
   * or 'latency' (one sample; its channels side by side, channelsPerCiphertext of them, or a flat
   * input in inputCopies permuted copies for the dense layer reading it, unless `why`).
   * Absent in reports made before it existed: throughput.
   */
  packing?: {
    kind: 'throughput' | 'latency';
    channelsPerCiphertext: number;
    /** The most channels one ciphertext holds where strides left gaps in the blocks (absent: none did). */
    multiplexed?: number;
    inputCopies?: number;
    why: string | null;
  };
  levelsNeeded: number;
  levelsPredicted: number;
  levelsUsed: number;
  galoisSteps: number[];
  keyBytes: { publicKey: number; relinKeys: number; galoisKeys: number; bootstrappingKeys?: number };
  samples: SampleResult[];
  /** Fraction of samples whose encrypted top-1 equals the plaintext approximated model's. */
  agreement: number;
  maxAbsErrLogits: number;
  /** Seconds per run of each layer: the mean of the runs after each thread's first where there are any (as latencySeconds). */
  layerSeconds: Record<string, number>;
  /**
   * Seconds for one run of the program (one ciphertext set: B samples, or one sample in latency
   * packing) once the weights' plaintexts are encoded: the mean of the runs after each thread's
   * first (the first's own time when there is no other).
   */
  latencySeconds: number;
  /** Seconds of each thread's first run, which also encodes the weights (absent in older reports). */
  firstRunSeconds?: number;
  /** Threads the batches ran on (each with its own keys), and the wall time of all batches (key generation excluded; amortised = wall / samples). Absent in older reports. */
  workers?: number;
  wallSeconds?: number;
  /** Estimated memory of one thread: keys, live ciphertexts and the bound on its weights' plaintexts (absent in older reports). */
  memoryPerThreadMB?: number;
  amortisedSecondsPerSample: number;
  keygenSeconds: number;
  peakRssMB: number;
}
