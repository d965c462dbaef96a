import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { AsyncSubscription, Event } from '@parcel/watcher';

/**
 * Watch hints for one watched tree, from @parcel/watcher (inotify: one watch per
 * folder, ready in a fraction of a second on 100k files).
 *
 * Events are hints, never the truth: the daemon re-checks every hinted path on
 * disk against the ledger, and a periodic rescan catches whatever the events
 * missed. The watcher has two known blind spots this class closes:
 * - A folder created with its subfolders at once (`mkdir -p a/b`, a `mv` of a
 *   tree into place) is reported as one create of `a`; @parcel/watcher then
 *   watches `a` but not `a/b`, so files later written in `a/b` raise no event.
 *   On every new folder the daemon crawls it, and when it holds subfolders this
 *   class subscribes to it as an extra root (its own full watch set). Extra
 *   roots are dropped at the next regeneration (`regenerate()`, before each
 *   periodic rescan). Measured: releasing one of two overlapping subscriptions
 *   silently kills the other's shared inotify watches, so regeneration releases
 *   everything first, then subscribes afresh, and the daemon's rescan that
 *   follows finds what was written in between.
 * - The kernel's queue overflow is dropped silently by the library, and a
 *   folder it cannot watch (the inotify watch limit) is skipped silently:
 *   `watchGap()` compares the folders a scan saw with the watches this
 *   process holds, so the daemon can log it loudly and rescan.
 */
export interface WatchHints {
  onPaths(paths: string[]): void;
  onError(err: Error): void;
}

let generation = 0;

export class TreeWatcher {
  private main: AsyncSubscription | undefined;
  private readonly extras = new Map<string, AsyncSubscription>();
  private closed = false;

  constructor(
    readonly root: string,
    private readonly hints: WatchHints,
  ) {}

  private callback = (err: Error | null, events: Event[]): void => {
    if (this.closed) return;
    if (err) this.hints.onError(err);
    if (events.length > 0) this.hints.onPaths(events.map((e) => e.path));
  };

  private async subscribe(dir: string): Promise<AsyncSubscription> {
    const { subscribe } = await import('@parcel/watcher');
    // A path that never exists makes the options (and so the library's shared watcher) unique
    // to this subscription: a second subscribe on the same folder would otherwise join the
    // first one's watcher instead of walking the tree again.
    const marker = path.join(dir, `.s3up-watch-${process.pid}-${++generation}`);
    return subscribe(dir, this.callback, { ignore: [marker] });
  }

  async start(): Promise<void> {
    this.main = await this.subscribe(this.root);
  }

  /**
   * A folder appeared (created, or moved in) with subfolders already inside:
   * watch it as a root of its own, so files written in those subfolders raise events.
   */
  async watchNewTree(dir: string): Promise<void> {
    if (this.closed || this.extras.has(dir)) return;
    for (const known of this.extras.keys()) if (dir.startsWith(`${known}/`)) return;
    try {
      this.extras.set(dir, await this.subscribe(dir));
    } catch (err) {
      // Gone already, or no watch left: the rescan covers it; the daemon is told.
      this.hints.onError(err as Error);
    }
  }

  /** Release every subscription, then subscribe the root afresh (the caller rescans afterwards). */
  async regenerate(): Promise<void> {
    if (this.closed) return;
    const old = [this.main, ...this.extras.values()];
    this.main = undefined;
    this.extras.clear();
    for (const sub of old) await sub?.unsubscribe().catch(() => {});
    this.main = await this.subscribe(this.root);
  }

  get subscriptions(): number {
    return (this.main ? 1 : 0) + this.extras.size;
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [this.main, ...this.extras.values()];
    this.main = undefined;
    this.extras.clear();
    for (const sub of all) await sub?.unsubscribe().catch(() => {});
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
  return /No space left on device|ENOSPC|Too many open files|EMFILE|inotify/i.test(msg);
}
