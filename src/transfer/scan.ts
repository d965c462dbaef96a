import { type Dir, type Dirent, lstatSync, opendirSync, type Stats, statSync } from 'node:fs';
import path from 'node:path';
import picomatch from 'picomatch';

/** One regular file found by the scanner. */
export interface ScannedFile {
  /** Path relative to the root, with "/" separators (the remote path under a prefix). */
  relPath: string;
  absPath: string;
  size: number;
  mtimeMs: number;
}

export interface ScanOptions {
  /** Globs over the relative path; a file must match one (default: every file). */
  include?: readonly string[];
  /** Globs over the relative path; a matching file is skipped, a matching folder is not entered. */
  exclude?: readonly string[];
  /** Extensions to keep (".wav" or "wav", any case); empty: every extension. */
  extensions?: readonly string[];
  /** Follow symbolic links to files and folders (default false: skipped, like sockets and devices). */
  followSymlinks?: boolean;
  /** Dot files and folders are included unless excluded (default true). */
  dot?: boolean;
  /** Called for an entry that could not be read (permission denied, vanished); the scan goes on. */
  onError?: (absPath: string, err: NodeJS.ErrnoException) => void;
  /** Called for entries skipped because they are not regular files (symlinks, sockets, FIFOs, devices). */
  onSkip?: (absPath: string, reason: 'symlink' | 'special') => void;
  signal?: AbortSignal;
}

/** Directory entries read (and stat'ed) per step. */
const READ_BATCH = 256;

/** A filter over relative paths built from the include/exclude globs and extensions. */
export function pathFilter(opts: Pick<ScanOptions, 'include' | 'exclude' | 'extensions' | 'dot'>): {
  file: (rel: string) => boolean;
  folder: (rel: string) => boolean;
} {
  const dot = opts.dot ?? true;
  const inc = opts.include?.length ? picomatch(opts.include as string[], { dot }) : undefined;
  const exc = opts.exclude?.length ? picomatch(opts.exclude as string[], { dot }) : undefined;
  const exts = (opts.extensions ?? []).map((e) => (e.startsWith('.') ? e : `.${e}`).toLowerCase());
  return {
    file: (rel) => {
      if (exc?.(rel)) return false;
      if (inc && !inc(rel)) return false;
      if (exts.length > 0 && !exts.includes(path.posix.extname(rel).toLowerCase())) return false;
      return true;
    },
    folder: (rel) => !exc?.(rel),
  };
}

/**
 * Walk a tree and yield its regular files as they are found: an async
 * generator over opendir, so memory holds one batch of a folder's entries and
 * the list of folders still to visit, never the whole tree. Symbolic links and
 * special files are skipped unless asked.
 *
 * Directory reads and lstat calls are synchronous, a batch of entries at a time
 * (a few hundred microseconds on the main thread): on a warm cache they cost a
 * microsecond or two each, where a promise and a thread-pool round trip per
 * entry cost some thirty.
 */
export async function* scanTree(root: string, opts: ScanOptions = {}): AsyncGenerator<ScannedFile> {
  for await (const batch of scanBatches(root, opts)) yield* batch;
}

/**
 * `scanTree` a batch at a time (up to a few hundred files of one folder): one
 * generator step per batch instead of per file, for callers that decide in
 * batches anyway (push). Measured on 1,000,000 files: the per-file steps of an
 * async generator cost as much as the lstat calls.
 */
export async function* scanBatches(root: string, opts: ScanOptions = {}): AsyncGenerator<ScannedFile[]> {
  const base = path.resolve(root);
  const filter = pathFilter(opts);
  const pending: string[] = [''];
  const visited = opts.followSymlinks ? new Set<string>() : undefined;
  const fail = (p: string, err: unknown) => opts.onError?.(p, err as NodeJS.ErrnoException);
  const statOf = opts.followSymlinks ? statSync : lstatSync;

  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const dirAbs = rel === '' ? base : path.join(base, rel);
    if (visited) {
      try {
        const st = statSync(dirAbs);
        const id = `${st.dev}:${st.ino}`;
        if (visited.has(id)) continue;
        visited.add(id);
      } catch (err) {
        fail(dirAbs, err);
        continue;
      }
    }
    let dir: Dir;
    try {
      dir = opendirSync(dirAbs, { bufferSize: READ_BATCH });
    } catch (err) {
      fail(dirAbs, err);
      continue;
    }
    try {
      for (;;) {
        const out: ScannedFile[] = [];
        let d: Dirent | null = null;
        for (let read = 0; read < READ_BATCH; read++) {
          d = dir.readSync();
          if (d === null) break;
          const childRel = rel === '' ? d.name : `${rel}/${d.name}`;
          const abs = `${dirAbs}${path.sep}${d.name}`;
          if (d.isDirectory()) {
            if (filter.folder(childRel)) pending.push(childRel);
            continue;
          }
          if (d.isSymbolicLink() && !opts.followSymlinks) {
            opts.onSkip?.(abs, 'symlink');
            continue;
          }
          const unknownType = !d.isFile() && !d.isSymbolicLink() && !d.isFIFO() && !d.isSocket() && !d.isBlockDevice() && !d.isCharacterDevice();
          if (!d.isFile() && !d.isSymbolicLink() && !unknownType) {
            opts.onSkip?.(abs, 'special');
            continue;
          }
          // The name filter before any stat.
          if (d.isFile() && !filter.file(childRel)) continue;
          let st: Stats | undefined;
          try {
            st = statOf(abs, { throwIfNoEntry: false });
          } catch (err) {
            fail(abs, err);
            continue;
          }
          if (!st) continue;
          if (st.isDirectory()) {
            if (filter.folder(childRel)) pending.push(childRel);
          } else if (st.isFile()) {
            if (filter.file(childRel)) out.push({ relPath: childRel, absPath: abs, size: st.size, mtimeMs: st.mtimeMs });
          } else {
            opts.onSkip?.(abs, st.isSymbolicLink() ? 'symlink' : 'special');
          }
        }
        if (out.length > 0) yield out;
        if (d === null) break;
      }
    } catch (err) {
      fail(dirAbs, err);
    } finally {
      try {
        dir.closeSync();
      } catch {
        // already closed
      }
    }
  }
}
