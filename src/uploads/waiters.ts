/**
 * Callers waiting for something named by an id to be let go (a lock), woken
 * by `wake(id)` or after a poll interval (a wake-up can be missed: a notice
 * lost with its connection), or when their signal aborts.
 */
export class Waiters {
  private readonly byId = new Map<string, Set<() => void>>();

  /** Resolves when `id` is woken, after `ms`, or when `signal` aborts (whichever comes first). */
  wait(id: string, ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise<void>((resolve) => {
      let set = this.byId.get(id);
      if (!set) {
        set = new Set();
        this.byId.set(id, set);
      }
      const waiting = set;
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        waiting.delete(done);
        if (waiting.size === 0 && this.byId.get(id) === waiting) this.byId.delete(id);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener('abort', done, { once: true });
      waiting.add(done);
    });
  }

  /** Wake everyone waiting for `id`. */
  wake(id: string): void {
    const set = this.byId.get(id);
    if (!set) return;
    for (const done of [...set]) done();
  }
}
