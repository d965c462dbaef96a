import { Waiters } from './waiters.js';

/**
 * Locks shared by every gateway on one database (PostgreSQL advisory locks,
 * see PgAdvisoryLocks), as KeyLocks uses them.
 */
export interface SharedLocks {
  /** True when the lock was taken; false when another holds it. Throws when the database is unreachable. */
  tryLock(id: string): Promise<boolean>;
  unlock(id: string): Promise<void>;
  /** Called when any gateway lets go of a lock (a hint: waiters poll too). */
  onUnlocked(fn: (id: string) => void): void;
  close(): Promise<void>;
}

/** How often a waiter tries a shared lock again when no unlock notice woke it. */
const SHARED_POLL_MS = 100;

/**
 * One publish at a time per storage key: the lock is taken once an upload is
 * verified, held while the store makes it visible and while its object row is
 * written, so the rows of a key follow the order of its publishes (two uploads
 * racing on one key can never leave the record of one describing the bytes of
 * the other).
 *
 * In this process the holders of a key queue in memory. Gateways that share a
 * PostgreSQL database also take the key's advisory lock (`shared`), so the
 * order holds across gateways. While the database cannot be reached the
 * shared lock is skipped: such a publish cannot be recorded either, its record
 * is owed (see UnrecordedSettlements), and the in-process order still holds.
 */
export class KeyLocks {
  private readonly tails = new Map<string, Promise<void>>();
  private readonly waiters = new Waiters();

  constructor(
    private readonly shared?: SharedLocks,
    private readonly onSharedUnavailable?: (err: unknown) => void,
  ) {
    shared?.onUnlocked((id) => this.waiters.wake(id));
  }

  /** Wait for the key; resolves with the function that releases it (idempotent). */
  async acquire(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let releaseLocal!: () => void;
    const mine = new Promise<void>((resolve) => {
      releaseLocal = resolve;
    });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    const local = () => {
      releaseLocal();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
    const id = `publish:${key}`;
    const sharedHeld = this.shared ? await this.takeShared(id) : false;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (!sharedHeld || !this.shared) return local();
      // The next holder in this process waits for the shared unlock (one connection, in order).
      this.shared
        .unlock(id)
        .catch(() => {})
        .finally(local);
    };
  }

  async close(): Promise<void> {
    await this.shared?.close();
  }

  /** Take the shared lock of `id`, waiting while another gateway holds it; false when the database is away. */
  private async takeShared(id: string): Promise<boolean> {
    const shared = this.shared as SharedLocks;
    try {
      while (!(await shared.tryLock(id))) await this.waiters.wait(id, SHARED_POLL_MS);
      return true;
    } catch (err) {
      this.onSharedUnavailable?.(err);
      return false;
    }
  }
}
