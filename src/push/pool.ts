/** A bounded hand-off between a producer and workers: `put` waits while it is full. */
export class Channel<T> {
  private readonly items: T[] = [];
  private takers: Array<(v: T | undefined) => void> = [];
  private putters: Array<() => void> = [];
  private closed = false;

  constructor(private readonly capacity: number) {}

  async put(item: T): Promise<void> {
    while (this.items.length >= this.capacity && !this.closed) await new Promise<void>((r) => this.putters.push(r));
    if (this.closed) return;
    const taker = this.takers.shift();
    if (taker) taker(item);
    else this.items.push(item);
  }

  take(): Promise<T | undefined> {
    if (this.items.length > 0) {
      const item = this.items.shift() as T;
      this.putters.shift()?.();
      return Promise.resolve(item);
    }
    if (this.closed) return Promise.resolve(undefined);
    return new Promise((r) => this.takers.push(r));
  }

  /** No more items: waiting workers get undefined once the queue is drained. */
  close(): void {
    this.closed = true;
    for (const t of this.takers) t(undefined);
    this.takers = [];
    for (const p of this.putters) p();
    this.putters = [];
  }

  get size(): number {
    return this.items.length;
  }
}

/** Run `handle` over everything put into the channel with `n` workers; resolves when all are done. */
export async function runWorkers<T>(channel: Channel<T>, n: number, handle: (item: T) => Promise<void>): Promise<void> {
  await Promise.all(
    Array.from({ length: n }, async () => {
      for (let item = await channel.take(); item !== undefined; item = await channel.take()) await handle(item);
    }),
  );
}
