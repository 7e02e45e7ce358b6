/**
 * Fine-tuning's usual starting point: each activation's Chebyshev interpolant (the uniform fit;
 * Orion, OpenFHE's EvalChebyshevFunction) of the given degree on the layer's interval, one
 * polynomial per layer. The alternative start is he-approx's own result (polysFromReport).
 */
import { GraphNode } from '../model/graph';
import { ActivationSpec, activationFn } from '../numerics/activations';
import { Interval, chebInterpolate } from '../numerics/chebyshev';
import { PolyActivation } from '../numerics/polynomial';

export function uniformStart(
  acts: GraphNode[],
  specs: ActivationSpec[],
  intervals: Interval[],
  degrees: number[],
): Map<number, PolyActivation> {
  if (degrees.length !== acts.length || intervals.length !== acts.length)
    throw new Error(
      `uniformStart: ${acts.length} activations, ${degrees.length} degrees, ${intervals.length} intervals`,
    );
  return new Map(
    acts.map((a, k) => [
      a.id,
      {
        coeffs: Array.from(chebInterpolate(activationFn(specs[k]), degrees[k], intervals[k])),
        a: intervals[k].a,
        b: intervals[k].b,
      },
    ]),
  );
}
