import { type FSWatcher, watch } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';

/**
 * Watch hints for one watched tree: one inotify watch per folder, through
 * Node's own `fs.watch` on each folder (libuv shares one inotify descriptor
 * between them), the way lsyncd watches a tree.
 *
 * Why not a library: measured on 100,000 files, chokidar needs one watch per
 * file (0.7-0.8 GB RSS), and @parcel/watcher keeps its own tree of every file
 * (~33 MB per 100,000 files, which put the agent over its memory budget) and
 * does not watch the subfolders of a folder created with them (`mkdir -p a/b`).
 * Watching folders is what the agent needs: a folder map and a callback.
 *
 * Events are hints, never the truth: the daemon re-checks every hinted path on
 * disk against the ledger, and a periodic rescan catches whatever the events
 * missed. Blind spots, and who closes them:
 * - A folder created with content (`mkdir -p a/b`, a tree moved into place):
 *   its files predate its watch. The daemon calls `watchTree(dir)` for every
 *   new folder it is told of, which watches it and every folder under it,
 *   and only then crawls it, so nothing written after the crawl is missed.
 * - A folder deleted or moved away: `forget(dir)` drops its watches (the
 *   daemon calls it when a hinted folder is gone); `regenerate()` also drops
 *   watches of folders no longer there.
 * - The kernel's queue overflow (`IN_Q_OVERFLOW`) is dropped by libuv without
 *   a word, and a folder cannot be watched once the inotify watch limit is
 *   exhausted: `watchTree` reports the limit through `onError`, and the daemon
 *   compares the watches held with the limit after each scan.
 */
export interface WatchHints {
  onPaths(paths: string[]): void;
  onError(err: Error): void;
}

/** Events are gathered this long and handed over as one batch (a write of a large file raises one event per write call). */
const BATCH_MS = 100;

export class TreeWatcher {
  private readonly folders = new Map<string, FSWatcher>();
  private pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly root: string,
    private readonly hints: WatchHints,
    private readonly recursive = true,
  ) {}

  /** Watch the root (a failure here is thrown: nothing can be watched) and, when recursive, every folder under it. */
  async start(): Promise<void> {
    this.add(this.root, true);
    if (this.recursive) await this.watchTree(this.root);
  }

  /**
   * Watch `dir` and every folder under it that is not watched yet. A folder that
   * cannot be watched (gone meanwhile, unreadable) is skipped; an exhausted
   * inotify limit stops the walk and is reported once through `onError`.
   */
  async watchTree(dir: string): Promise<void> {
    if (this.closed || !this.inside(dir) || (!this.recursive && dir !== this.root)) return;
    const stack = [dir];
    while (stack.length > 0 && !this.closed) {
      const d = stack.pop() as string;
      try {
        if (!this.folders.has(d)) this.add(d, false);
      } catch (err) {
        if (isWatchLimitError(err)) {
          this.hints.onError(err as Error);
          return;
        }
        continue; // gone again, or not a folder we may read: the rescan decides
      }
      if (!this.recursive) continue;
      const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory()) stack.push(path.join(d, e.name));
    }
  }

  /**
   * A folder appeared (created, moved in, or replaced by a new one of the same
   * name): watch it and everything under it afresh. A watch held under its name
   * may be of a folder deleted or moved away since, so it is dropped first.
   */
  async watchNewFolder(dir: string): Promise<void> {
    this.forget(dir);
    await this.watchTree(dir);
  }

  /** A folder is gone (deleted, or moved away): drop its watch and those of every folder under it. */
  forget(dir: string): void {
    if (dir === this.root || !this.folders.has(dir)) return;
    const prefix = `${dir}${path.sep}`;
    for (const [d, w] of this.folders) {
      if (d === dir || d.startsWith(prefix)) {
        w.close();
        this.folders.delete(d);
      }
    }
  }

  /** Before a periodic rescan: drop the watches of folders no longer there and watch every folder that lacks one. */
  async regenerate(): Promise<void> {
    if (this.closed) return;
    const seen = new Set<string>();
    const stack = [this.root];
    while (stack.length > 0) {
      const d = stack.pop() as string;
      seen.add(d);
      if (!this.recursive) break;
      const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory()) stack.push(path.join(d, e.name));
    }
    for (const [d, w] of this.folders) {
      if (!seen.has(d)) {
        w.close();
        this.folders.delete(d);
      }
    }
    if (!this.folders.has(this.root)) this.add(this.root, true);
    await this.watchTree(this.root);
  }

  /** Folders watched. */
  get watched(): number {
    return this.folders.size;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    for (const w of this.folders.values()) w.close();
    this.folders.clear();
  }

  private inside(dir: string): boolean {
    return dir === this.root || dir.startsWith(`${this.root}${path.sep}`);
  }

  /** One folder's watch. Throws what `fs.watch` throws (ENOENT, ENOSPC for the inotify limit, ...). */
  private add(dir: string, isRoot: boolean): void {
    const w = watch(dir, { persistent: true }, (_type, name) => {
      // An event about the watched folder itself (deleted, moved) comes named with its own
      // basename, so the hint is a path that is not there: harmless, and the parent's watch names
      // the folder too.
      this.push(name ? path.join(dir, name.toString()) : dir);
    });
    w.on('error', (err) => {
      // A watched folder that went away ends its watch; only the root's loss is worth a word.
      this.forget(dir);
      if (isRoot && !this.closed) this.hints.onError(err);
    });
    this.folders.set(dir, w);
  }

  private push(p: string): void {
    if (this.closed) return;
    this.pending.add(p);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      const batch = [...this.pending];
      this.pending = new Set();
      this.hints.onPaths(batch);
    }, BATCH_MS);
  }
}

/** inotify watches held by this process (from /proc/self/fdinfo), or undefined where that cannot be read. */
export async function inotifyWatchCount(pid: number | 'self' = 'self'): Promise<number | undefined> {
  try {
    const fds = await readdir(`/proc/${pid}/fdinfo`);
    let n = 0;
    for (const fd of fds) {
      const text = await readFile(`/proc/${pid}/fdinfo/${fd}`, 'utf8').catch(() => '');
      if (!text.includes('inotify wd:')) continue;
      for (const line of text.split('\n')) if (line.startsWith('inotify wd:')) n++;
    }
    return n;
  } catch {
    return undefined;
  }
}

/** Whether an error says the inotify limits are exhausted. */
export function isWatchLimitError(err: unknown): boolean {
  const msg = (err as Error)?.message ?? '';
  return /No space left on device|ENOSPC|Too many open files|EMFILE|inotify|file watchers/i.test(msg);
}
