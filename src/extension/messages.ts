/**
 * Every message between the extension host and the side-panel webview (types only, as in
 * vscode-eslint's customMessages.ts): both sides import this file, nothing else defines messages.
 */
import type { Report } from '../core/report';
import type { FrontierSeries, LayerCurves } from './curves';

/** Host -> webview. */
export type ToWebview =
  | {
      type: 'report';
      report: Report;
      curves: Record<string, LayerCurves>;
      frontier: FrontierSeries[];
      stale: boolean;
      model: string;
    }
  | { type: 'selectLayer'; node: string }
  | { type: 'progress'; fraction: number; message: string }
  | { type: 'error'; message: string; fix: string }
  | { type: 'clear' };

/** Webview -> host. */
export type FromWebview =
  { type: 'ready' } | { type: 'selectLayer'; node: string } | { type: 'runEncryptedTest' } | { type: 'analyze' };

export function isFromWebview(m: unknown): m is FromWebview {
  if (!m || typeof m !== 'object') return false;
  const t = (m as { type?: unknown }).type;
  if (t === 'selectLayer') return typeof (m as { node?: unknown }).node === 'string';
  return t === 'ready' || t === 'runEncryptedTest' || t === 'analyze';
}
