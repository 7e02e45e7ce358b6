/**
 * The panel's tables as HTML strings (every value escaped) and the encrypted test's section: the
 * parts of the page that are text, not charts.
 */
import type { Report } from '../src/core/report';

export const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

export const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '–');

export function row(cells: string[], head = false): string {
  const tag = head ? 'th' : 'td';
  return `<tr>${cells.map((x, i) => `<${tag}${i ? ' class="num"' : ''}>${x}</${tag}>`).join('')}</tr>`;
}

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

export function renderEncrypted(r: Report): void {
  const e = r.encrypted;
  $('encrypted-section').hidden = !e?.model && !e?.layers;
  const parts: string[] = [];
  if (e?.model) {
    const m = e.model;
    parts.push(
      `<table id="encrypted-model">${[
        row([
          'engine',
          `${m.engine === 'lattigo' ? 'Lattigo' : 'Microsoft SEAL'}, ${esc(m.security ?? '128-bit')} security`,
        ]),
        row(['images', String(m.samples.length)]),
        row(['top-1 agrees with plaintext approximation', `${fmt(100 * m.agreement, 0)}%`]),
        row(['max |logit error|', m.maxAbsErrLogits.toExponential(2)]),
        row([
          m.bootstrapping ? 'levels used after the last bootstrap / between bootstraps' : 'levels used / available',
          `${m.levelsUsed} / ${m.params.levels} (N=${m.params.ringSize})`,
        ]),
        ...(m.bootstrapping
          ? [
              row([
                'bootstraps planned / executed',
                `${m.bootstrapping.planned} / ${m.bootstrapping.executed} (${m.bootstrapping.ciphertexts} ciphertexts per run, ${fmt(m.bootstrapping.secondsPerBootstrap, 1)} s each)`,
              ]),
              row([
                'precision after each bootstrap',
                `${m.bootstrapping.precisionBits.map((b) => fmt(b, 1)).join(', ')} bits`,
              ]),
            ]
          : []),
        row([
          'packing',
          m.packing?.kind === 'latency'
            ? `latency: one image per run${m.packing.inputCopies ? `, ${m.packing.inputCopies} copies of the input per ciphertext` : m.packing.channelsPerCiphertext > 1 ? `, ${m.packing.channelsPerCiphertext} channels per ciphertext${m.packing.multiplexed ? ` (${m.packing.multiplexed} where strides left gaps)` : ''}` : ''}`
            : `throughput: ${m.params.samplesPerCiphertext} images per ciphertext`,
        ]),
        row([
          'latency per run',
          `${fmt(m.latencySeconds, 1)} s (${m.params.samplesPerCiphertext} image${m.params.samplesPerCiphertext === 1 ? '' : 's'})`,
        ]),
        row(['amortised per image', `${fmt(m.amortisedSecondsPerSample)} s`]),
        row(['threads', String(m.workers ?? 1)]),
        row(['peak memory', `${m.peakRssMB} MB`]),
      ].join('')}</table>`,
    );
  }
  if (e?.layers) {
    parts.push(
      `<table id="encrypted-layers">${row(['layer', 'degree', 'bits', 'max err', 'levels'], true)}${e.layers.layers
        .map((l) =>
          row([
            esc(l.name),
            String(l.degree),
            fmt(l.precisionBits, 1),
            l.maxAbsErrVsPlainPoly.toExponential(1),
            `${l.levelsUsed}/${l.levelsAvailable}`,
          ]),
        )
        .join('')}</table>`,
    );
  }
  $('encrypted').innerHTML = parts.join('');
}
