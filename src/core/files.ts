/**
 * The file system as an untrusted workspace presents it. he-approx reads the files a user names
 * (model, data, labels, held-out data, report) and the files a model names (tfjs weight shards,
 * ONNX external data), and writes only under --out. Every path it reads is checked to be a regular
 * file it can read, and read through one descriptor checked to be the file it stat'ed (a FIFO
 * would block a read for ever, a folder or a device is no data); a path from inside a file is
 * resolved inside the model's folder and refused when it leaves it, links resolved. Each refusal is
 * one UserError naming the path and the fix.
 */
import * as fs from 'fs';
import * as path from 'path';
import { ErrorCode, UserError } from './errors';

/** What a path is, in words, for anything but a regular file. */
function kindOf(st: fs.Stats): string | null {
  if (st.isFile()) return null;
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

export interface FileRole {
  /** How messages name it: "data file", "model file", "report", "weight shard 'w.bin'". */
  what: string;
  code: ErrorCode;
  /** What the user should pass instead. */
  fix: string;
}

/** fileProblem's answer for a path where nothing is (a caller may have its own message for that). */
export const MISSING = 'does not exist';

/**
 * Why `file` cannot be read as a regular file, or null: missing, a dangling link, a folder, a
 * FIFO, a device, a socket. Stat only (no open, so a FIFO is never opened).
 */
export function fileProblem(file: string): string | null {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      let link = false;
      try {
        link = fs.lstatSync(file).isSymbolicLink();
      } catch {
        /* missing */
      }
      return link ? `is a symbolic link to ${fs.readlinkSync(file)}, which does not exist` : MISSING;
    }
    if (code === 'ELOOP') return 'is a loop of symbolic links';
    if (code === 'EACCES') return 'cannot be reached (permission denied)';
    if (code === 'ENOTDIR') return 'does not exist (a part of its path is a file, not a folder)';
    return `cannot be read (${code ?? (e as Error).message})`;
  }
  const kind = kindOf(st);
  return kind ? `is ${kind}, not a file` : null;
}

/** Throws the role's error when `file` is not a regular file (see fileProblem). */
export function checkFile(file: string, role: FileRole): void {
  const p = fileProblem(file);
  if (p) throw new UserError(role.code, `${role.what} ${file} ${p}`, role.fix);
}

/**
 * Reads a regular file whole: opened without blocking (a FIFO swapped in after the check opens
 * at once, and is then refused), checked through its descriptor to be a regular file, and
 * checked again after reading, so a file that changes while it is read is refused rather than
 * read half old, half new.
 */
export function readUserFile(file: string, role: FileRole): Buffer {
  checkFile(file, role);
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(
      role.code,
      `${role.what} ${file} cannot be read (${code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (code ?? (e as Error).message)})`,
      code === 'EACCES' || code === 'EPERM' ? 'make it readable (chmod u+r), or pass a copy you can read' : role.fix,
    );
  }
  try {
    const before = fs.fstatSync(fd);
    const kind = kindOf(before);
    if (kind) throw new UserError(role.code, `${role.what} ${file} is ${kind}, not a file`, role.fix);
    const buf = Buffer.allocUnsafe(before.size);
    let off = 0;
    while (off < buf.length) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, off, buf.length - off, off);
      } catch (e) {
        throw new UserError(
          role.code,
          `${role.what} ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
          role.fix,
        );
      }
      if (n === 0) break;
      off += n;
    }
    const after = fs.fstatSync(fd);
    // One more byte past the size seen: a file still being written grew meanwhile.
    const grew = fs.readSync(fd, Buffer.alloc(1), 0, 1, off) > 0;
    if (off !== before.size || after.size !== before.size || after.mtimeMs !== before.mtimeMs || grew) {
      throw new UserError(
        role.code,
        `${role.what} ${file} changed while he-approx read it (${before.size} bytes, then ${after.size})`,
        'wait until whatever writes it has finished, or pass a copy that nothing writes to',
      );
    }
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** The model file a user names. */
export const MODEL_FILE: FileRole = {
  what: 'model file',
  code: 'MODEL_UNREADABLE',
  fix: 'pass the path of a TensorFlow.js model.json, an .onnx, .h5 or .keras file',
};

/**
 * Replaces `file` by `data` all at once: written to a new file beside it (never through a link
 * planted there) and renamed over it, so a crash or a kill mid-write leaves the old file whole.
 * The temporary file is removed if anything fails; the error is rethrown.
 */
export function replaceFile(file: string, data: string | Uint8Array): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    // A leftover of a killed run with this pid, or a link planted at the name, goes first (rm removes a link, not its target).
    fs.rmSync(tmp, { force: true });
    fs.writeFileSync(tmp, data, { flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** True if `p` is `folder` or lies inside it (both absolute and normalised). */
export function isWithin(folder: string, p: string): boolean {
  const rel = path.relative(folder, p);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/** The real path of `p`, or of its longest existing ancestor joined with the rest (p need not exist). */
export function realPathOf(p: string): string {
  const abs = path.resolve(p);
  let head = abs;
  const rest: string[] = [];
  for (let hops = 0; ;) {
    try {
      return path.join(fs.realpathSync(head), ...[...rest].reverse());
    } catch {
      // A dangling link still says where it leads: follow it (a bounded number of times: loops).
      let target: string | null = null;
      try {
        if (fs.lstatSync(head).isSymbolicLink() && hops++ < 40) target = fs.readlinkSync(head);
      } catch {
        /* missing */
      }
      if (target !== null) {
        head = path.resolve(path.dirname(head), target);
        continue;
      }
      const up = path.dirname(head);
      if (up === head) return abs;
      rest.push(path.basename(head));
      head = up;
    }
  }
}

/**
 * A path named inside a model file (a weight shard, an external data file), resolved in the model's
 * folder. Refused when it is absolute or leads out of the folder, lexically or through a
 * symbolic link: any file the user can read could otherwise be pulled in as weights, and written
 * back out under --out inside the approximated model.
 */
export function resolveInside(modelFile: string, named: string, what: string): string {
  const folder = path.dirname(path.resolve(modelFile));
  const fix = `keep the model's files inside its folder (${folder}), or re-export the model there`;
  const refuse = (how: string): never => {
    throw new UserError(
      'MODEL_UNREADABLE',
      `${path.basename(modelFile)} names ${what} '${named}', which ${how}; he-approx reads a model's files only from its own folder`,
      fix,
    );
  };
  if (path.isAbsolute(named) || /^[a-zA-Z]:[\\/]/.test(named)) refuse('is an absolute path');
  const file = path.resolve(folder, named);
  if (!isWithin(folder, file)) refuse("leads out of the model's folder");
  const real = realPathOf(file);
  if (!isWithin(realPathOf(folder), real)) refuse(`is a symbolic link leading out of the model's folder (to ${real})`);
  return file;
}
