/** Renders the encrypted tests' results (whole model and per activation) for the terminal. */
import type { EncryptedLayerReport, EncryptedModelReport } from '../core/report';

export function renderModelTest(r: EncryptedModelReport): string {
  const lines: string[] = [];
  const lib = r.engine === 'lattigo' ? `Lattigo CKKS${r.bootstrapping ? ' with bootstrapping' : ''}` : 'SEAL CKKS';
  lines.push(
    `encrypted whole-model test (${lib}, N=${r.params.ringSize}, ${r.params.levels} levels${r.bootstrapping ? ' between bootstraps' : ''}, 40-bit scale, ${r.security ?? '128-bit'} security, ${describePacking(r)})`,
  );
  lines.push('sample  label  original  approximated  encrypted  max |logit err|');
  for (const s of r.samples) {
    lines.push(
      `${String(s.index).padStart(6)}  ${String(s.label ?? '-').padStart(5)}  ${String(s.plainOriginal).padStart(8)}  ${String(s.plainApproximated).padStart(12)}  ${String(s.encrypted).padStart(9)}  ${s.maxAbsErrLogits.toExponential(2).padStart(15)}`,
    );
  }
  lines.push(
    `encrypted top-1 = plaintext approximated top-1 on ${(100 * r.agreement).toFixed(1)}% of ${r.samples.length} samples; max logit error ${r.maxAbsErrLogits.toExponential(2)}`,
  );
  const b = r.bootstrapping;
  if (b) {
    lines.push(
      `bootstraps: planned ${b.planned}, executed ${b.executed} (${b.ciphertexts} ciphertexts per run, ${b.secondsPerBootstrap.toFixed(1)} s each); ` +
        `precision kept by each: ${b.precisionBits.map((x) => x.toFixed(1)).join(', ')} bits`,
    );
    lines.push(
      `values refreshed: ${b.values.map((v) => `${v.node} (|x| <= ${v.bound.toPrecision(3)}${v.scaled ? ', scaled into [-1, 1]' : ''})`).join(', ')}`,
    );
    lines.push(
      `levels after the last bootstrap: predicted ${r.levelsPredicted}, used ${r.levelsUsed}, of ${r.params.levels} between bootstraps`,
    );
  } else {
    lines.push(
      `levels: needed ${r.levelsNeeded}, simulator predicted ${r.levelsPredicted}, used ${r.levelsUsed}, available ${r.params.levels}`,
    );
  }
  lines.push(
    `time per layer (s): ${Object.entries(r.layerSeconds)
      .map(([k, v]) => `${k} ${v.toFixed(2)}`)
      .join(', ')}`,
  );
  const per =
    (r.params.samplesPerCiphertext === 1
      ? 'per sample (one sample per run)'
      : `per ciphertext of ${r.params.samplesPerCiphertext} samples`) +
    (r.firstRunSeconds !== undefined && Math.abs(r.firstRunSeconds - r.latencySeconds) > 0.005
      ? ` (first run ${r.firstRunSeconds.toFixed(2)} s: it also encodes the weights)`
      : '');
  const threads = r.workers && r.workers > 1 ? ` on ${r.workers} threads` : '';
  lines.push(
    `latency ${r.latencySeconds.toFixed(2)} s ${per}; amortised ${r.amortisedSecondsPerSample.toFixed(3)} s per sample${threads}; key generation ${r.keygenSeconds.toFixed(1)} s`,
  );
  lines.push(
    `keys: public ${(r.keyBytes.publicKey / 1e6).toFixed(1)} MB, relinearisation ${(r.keyBytes.relinKeys / 1e6).toFixed(1)} MB, Galois ${(r.keyBytes.galoisKeys / 1e6).toFixed(1)} MB (${r.galoisSteps.length} rotation steps)` +
      (r.keyBytes.bootstrappingKeys ? `, bootstrapping ${(r.keyBytes.bootstrappingKeys / 1e6).toFixed(0)} MB` : '') +
      `; peak memory ${r.peakRssMB} MB` +
      (r.memoryPerThreadMB ? ` (estimated ${r.memoryPerThreadMB} MB per thread, weights' plaintexts included)` : ''),
  );
  return lines.join('\n');
}

/** The packing, as the CLI and the extension print it. */
export function describePacking(r: EncryptedModelReport): string {
  const p = r.packing;
  if (!p || p.kind === 'throughput')
    return `throughput packing: ${r.params.samplesPerCiphertext} samples per ciphertext, one ciphertext per channel`;
  if (p.inputCopies)
    return `latency packing: one sample, ${p.inputCopies} permuted copies of its input in one ciphertext (the first dense layer's diagonals split among them)`;
  if (p.channelsPerCiphertext > 1)
    return `latency packing: one sample, ${p.channelsPerCiphertext} channels per ciphertext${p.multiplexed ? ` (${p.multiplexed} where strides left gaps)` : ''}`;
  return `latency packing: one sample per ciphertext${p.why ? ` (channels not packed together: ${p.why})` : ''}`;
}

/** The per-activation test as a table, with the simulator's verdict, memory and time. */
export function renderLayerTest(res: EncryptedLayerReport, reportPath: string): string {
  const out: string[] = [];
  const rows = [
    [
      'layer',
      'degree',
      'values',
      'N',
      'levels used/avail',
      'mults',
      'max |enc - poly|',
      'bits',
      'max |enc - act|',
      's/ciphertext',
    ],
  ];
  for (const l of res.layers) {
    rows.push([
      l.name,
      String(l.degree),
      String(l.values),
      String(l.ringSize),
      `${l.levelsUsed}/${l.levelsAvailable}` +
        (l.levelsPredicted === l.levelsUsed && l.simulatorScaleMatches ? '' : ' (!)'),
      String(l.nonScalarMults),
      l.maxAbsErrVsPlainPoly.toExponential(2),
      l.precisionBits.toFixed(1),
      l.maxAbsErrVsActivation.toExponential(2),
      l.secondsPerCiphertext.toFixed(2),
    ]);
  }
  const w = rows[0].map((_, j) => Math.max(...rows.map((r) => r[j].length)));
  out.push(`encrypted test per activation (SEAL CKKS, 128-bit security, 40-bit scale), ${res.samples} samples\n`);
  out.push(
    rows.map((r) => r.map((c, j) => (j === 0 ? c.padEnd(w[j]) : c.padStart(w[j]))).join('  ')).join('\n') + '\n',
  );
  out.push(
    `simulator prediction of levels and scales: ${res.layers.every((l) => l.levelsPredicted === l.levelsUsed && l.simulatorScaleMatches) ? 'matches the encrypted run' : 'DIFFERS (!)'}\n`,
  );
  out.push(
    `peak memory ${res.peakRssMB} MB, ${res.seconds.toFixed(1)} s; results added to ${reportPath} (field "encrypted.layers")\n`,
  );
  return out.join('');
}
