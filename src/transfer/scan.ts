import type { Dirent } from 'node:fs';
import { lstat, opendir, stat } from 'node:fs/promises';
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

/** Entries stat'ed at once within one folder. */
const STAT_BATCH = 64;

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
 * generator over fs.opendir, so memory holds one folder's pending entries and
 * the list of folders still to visit, never the whole tree. Symbolic links and
 * special files are skipped unless asked.
 */
export async function* scanTree(root: string, opts: ScanOptions = {}): AsyncGenerator<ScannedFile> {
  const base = path.resolve(root);
  const filter = pathFilter(opts);
  const pending: string[] = [''];
  const visited = opts.followSymlinks ? new Set<string>() : undefined;
  const fail = (p: string, err: unknown) => opts.onError?.(p, err as NodeJS.ErrnoException);

  for (let rel = pending.pop(); rel !== undefined; rel = pending.pop()) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    const dirAbs = rel === '' ? base : path.join(base, rel);
    if (visited) {
      try {
        const st = await stat(dirAbs);
        const id = `${st.dev}:${st.ino}`;
        if (visited.has(id)) continue;
        visited.add(id);
      } catch (err) {
        fail(dirAbs, err);
        continue;
      }
    }
    let dir: Awaited<ReturnType<typeof opendir>>;
    try {
      dir = await opendir(dirAbs, { bufferSize: 256 });
    } catch (err) {
      fail(dirAbs, err);
      continue;
    }
    let batch: Dirent[] = [];
    const flush = async function* (): AsyncGenerator<ScannedFile> {
      const entries = batch;
      batch = [];
      const stats = await Promise.all(
        entries.map(async (d) => {
          const abs = path.join(dirAbs, d.name);
          try {
            return await (opts.followSymlinks ? stat(abs) : lstat(abs));
          } catch (err) {
            fail(abs, err);
            return undefined;
          }
        }),
      );
      for (let i = 0; i < entries.length; i++) {
        const st = stats[i];
        const d = entries[i] as Dirent;
        if (!st) continue;
        const childRel = rel === '' ? d.name : `${rel}/${d.name}`;
        if (st.isDirectory()) {
          if (filter.folder(childRel)) pending.push(childRel);
        } else if (st.isFile()) {
          if (filter.file(childRel)) yield { relPath: childRel, absPath: path.join(dirAbs, d.name), size: st.size, mtimeMs: st.mtimeMs };
        } else {
          opts.onSkip?.(path.join(dirAbs, d.name), st.isSymbolicLink() ? 'symlink' : 'special');
        }
      }
    };
    try {
      for await (const d of dir) {
        if (d.isSymbolicLink() && !opts.followSymlinks) {
          opts.onSkip?.(path.join(dirAbs, d.name), 'symlink');
          continue;
        }
        if (d.isDirectory()) {
          const childRel = rel === '' ? d.name : `${rel}/${d.name}`;
          if (filter.folder(childRel)) pending.push(childRel);
          continue;
        }
        const unknownType = !d.isFile() && !d.isSymbolicLink() && !d.isFIFO() && !d.isSocket() && !d.isBlockDevice() && !d.isCharacterDevice();
        if (d.isFile() || d.isSymbolicLink() || unknownType) {
          // Cheap early filter on the name before any stat.
          const childRel = rel === '' ? d.name : `${rel}/${d.name}`;
          if (d.isFile() && !filter.file(childRel)) continue;
          batch.push(d);
          if (batch.length >= STAT_BATCH) yield* flush();
          continue;
        }
        opts.onSkip?.(path.join(dirAbs, d.name), 'special');
      }
      if (batch.length > 0) yield* flush();
    } catch (err) {
      fail(dirAbs, err);
    }
  }
}
