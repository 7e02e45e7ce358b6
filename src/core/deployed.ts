import type { Report } from './report';

/**
 * What the user deploys: the fine-tuned model when fine-tuning was kept (its measured drop), else
 * the analysis's result with the user's weights. The CLI's exit status and the editor's messages
 * judge the budget on it.
 */
export function deployed(r: Pick<Report, 'final' | 'finetune' | 'options'>): {
  measuredDrop: number;
  safe: boolean;
  meetsBudget: boolean;
  finetuned: boolean;
} {
  const ft = r.finetune;
  if (ft?.kept)
    return {
      measuredDrop: ft.measuredDrop,
      safe: ft.safe,
      meetsBudget: ft.safe && ft.measuredDrop <= r.options.budget + 1e-9,
      finetuned: true,
    };
  return { measuredDrop: r.final.measuredDrop, safe: r.final.safe, meetsBudget: r.final.meetsBudget, finetuned: false };
}
