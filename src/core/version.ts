/** he-approx's own version, for reports and `he-approx version`. */
import * as fs from 'fs';
import * as path from 'path';

/** he-approx's version: from the nearest package.json named he-approx above this module (dist/ or bundle/). */
export function toolVersion(): string {
  for (let dir = __dirname, up = 0; up < 6; up++, dir = path.dirname(dir)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
      if (pkg.name === 'he-approx') return pkg.version;
    } catch {
      /* not here */
    }
  }
  return '0.0.0';
}
