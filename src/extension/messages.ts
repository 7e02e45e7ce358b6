/**
 * Every message between the extension host and the side-panel webview (types only, as in
 * vscode-eslint's customMessages.ts): both sides import this file, nothing else defines messages.
 */
import type { Report } from '../core/report';
import type { PublishedPoint } from '../core/analysis/published';
import type { FrontierSeries, LayerCurves } from './curves';

/** Host -> webview. */
export type ToWebview =
  | {
      type: 'report';
      report: Report;
      curves: Record<string, LayerCurves>;
      frontier: FrontierSeries[];
      /** The field's published points for this kind of model (a CIFAR ResNet-20), drawn as references. */
      published: PublishedPoint[];
      stale: boolean;
      model: string;
    }
  | { type: 'selectLayer'; node: string }
  | { type: 'progress'; fraction: number; message: string }
  | { type: 'error'; message: string; fix: string }
  | { type: 'clear' };

/** Webview -> host. */
export type FromWebview =
  | { type: 'ready' }
  | { type: 'selectLayer'; node: string }
  | { type: 'runEncryptedTest' }
  | { type: 'analyze' }
  /** Make a frontier point the model's result: its levels and degrees (activation name -> degree). */
  | { type: 'pickPoint'; levels: number; degrees: Record<string, number> }
  /** Back to the cheapest choice that meets the budget. */
  | { type: 'clearPick' };

/** A picked point as the webview sends it: whole positive levels, and degrees by name. */
function isPick(m: { levels?: unknown; degrees?: unknown }): boolean {
  const d = m.degrees;
  return (
    Number.isInteger(m.levels) &&
    (m.levels as number) > 0 &&
    !!d &&
    typeof d === 'object' &&
    !Array.isArray(d) &&
    Object.values(d).every((x) => Number.isInteger(x))
  );
}

export function isFromWebview(m: unknown): m is FromWebview {
  if (!m || typeof m !== 'object') return false;
  const t = (m as { type?: unknown }).type;
  if (t === 'selectLayer') return typeof (m as { node?: unknown }).node === 'string';
  if (t === 'pickPoint') return isPick(m as { levels?: unknown; degrees?: unknown });
  return t === 'ready' || t === 'runEncryptedTest' || t === 'analyze' || t === 'clearPick';
}
