/**
 * The field's published points for the benchmark every paper reports, ResNet-20 on CIFAR-10
 * under CKKS with bootstrapping: their figures (bootstraps, accuracy change against their own
 * original), with their training and hardware, never measured here. The panel draws them beside a
 * ResNet-20's frontier as labelled references and the benches print them; ../shared/notes/field.md
 * holds the sources.
 */
import type { Report } from '../report';

export interface PublishedPoint {
  system: string;
  bootstraps: number;
  /** Accuracy drop against their original model, pp (negative: above it). */
  drop: number;
  /** How it was obtained, in their words as far as the figure goes. */
  how: string;
}

export const RESNET20_CIFAR10: readonly PublishedPoint[] = [
  {
    system: 'AutoFHE (USENIX Security 2024)',
    bootstraps: 5,
    drop: 0.7,
    how: 'per-layer composite polynomials by evolutionary search, then fine-tuning: GPU-days',
  },
  {
    system: 'AutoFHE (USENIX Security 2024)',
    bootstraps: 11,
    drop: -0.23,
    how: 'per-layer composite polynomials by evolutionary search, then fine-tuning: GPU-days',
  },
  {
    system: 'Lee et al. (ICML 2022)',
    bootstraps: 18,
    drop: 0.07,
    how: "uniform composite minimax ReLU, 14 levels per ReLU, no retraining (he-approx's uniform baseline is the same idea)",
  },
];

/** Published without an accuracy change to plot: listed, not drawn. */
export const RESNET20_CIFAR10_OTHERS: readonly string[] = [
  'AESPA (2022): a network retrained from the start with degree-2 activations, 5 bootstraps, 91.92% top-1',
];

/** The published points as the benches print them. */
export function publishedLines(): string[] {
  return [
    ...RESNET20_CIFAR10.map(
      (p) =>
        `${p.system}: ${p.bootstraps} bootstraps at ${Math.abs(p.drop).toFixed(2)} pp ${p.drop >= 0 ? 'below' : 'above'} the original (${p.how})`,
    ),
    ...RESNET20_CIFAR10_OTHERS,
  ];
}

/**
 * A model shaped as the papers' CIFAR-10 ResNet-20 (He et al. 2016, section 4.2): a 32x32 RGB
 * input and 19 ReLUs (the first convolution's and two in each of nine blocks), recognised from the
 * report whatever the file is called. Only decides whether the published points are drawn beside
 * it, as references.
 */
export function isCifarResNet20(r: Pick<Report, 'model' | 'layers'>): boolean {
  const shape = r.model.inputShape.filter((d) => d > 0);
  const rgb32 = shape.length >= 3 && shape.filter((d) => d === 32).length === 2 && shape.includes(3);
  const relus = r.layers.filter((l) => !l.maxTree && /relu/i.test(l.activation)).length;
  return rgb32 && relus === 19 && r.layers.length === 19;
}
