/**
 * One publish at a time per storage key in this process: the lock is taken
 * once an upload is verified, held while the store makes it visible and while
 * its object row is written, so the rows of a key follow the order of its
 * publishes (two uploads racing on one key can never leave the record of one
 * describing the bytes of the other).
 */
export class KeyLocks {
  private readonly tails = new Map<string, Promise<void>>();

  /** Wait for the key; resolves with the function that releases it (idempotent). */
  async acquire(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    this.tails.set(key, tail);
    await previous;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}
