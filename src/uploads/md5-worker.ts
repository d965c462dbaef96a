import { Worker } from 'node:worker_threads';
import { AppError, ErrorCode } from '../errors.js';

/** The messages exchanged with md5-thread.js. */
type Md5Request = { op: 'update'; id: number; slot: number; len: number } | { op: 'digest'; id: number } | { op: 'drop'; id: number };
type Md5Reply = { op: 'free'; slot: number } | { op: 'digest'; id: number; hex: string };

/**
 * MD5 off the main thread. MD5 runs at about 0.4 GB/s on one core here, a
 * quarter of SHA-256's speed: computed inline it would cap every chunked
 * upload that sends Content-MD5. One worker thread (md5-thread.js) hashes all
 * streams, so the MD5 runs on the second core while the main thread does HTTP,
 * SHA-256 and storage I/O.
 *
 * The main thread copies into one of a fixed set of slots of a SharedArrayBuffer
 * (4 MiB in all, no allocation per buffer) and the worker frees the slot once
 * hashed; a stream waits only when every slot is busy.
 *
 * A worker that fails (crashes, exits) takes the state of its hashes with it:
 * every hash it held fails with a retryable 503, and the next hash starts a
 * new worker. A hash never continues on another worker (it would be wrong).
 */
const SLOT = 256 * 1024;
const SLOTS = 16;

/** The worker's module, a real file next to this one (in src/ under tsx, in dist/ once built). */
const THREAD_URL = new URL('./md5-thread.js', import.meta.url);

class Md5Thread {
  readonly worker: Worker;
  readonly shared: Buffer;
  private readonly free: number[] = Array.from({ length: SLOTS }, (_, i) => i);
  private readonly slotWaiters: Array<() => void> = [];
  private readonly digests = new Map<number, { resolve: (hex: string) => void; reject: (err: Error) => void }>();
  /** Set once the worker is gone: every use fails with it. */
  failure: AppError | undefined;
  refs = 0;

  constructor(onGone: (t: Md5Thread) => void) {
    const sab = new SharedArrayBuffer(SLOT * SLOTS);
    this.shared = Buffer.from(sab);
    this.worker = new Worker(THREAD_URL, { workerData: { sab, slotSize: SLOT } });
    this.worker.on('message', (m: Md5Reply) => {
      if (m.op === 'free') {
        this.free.push(m.slot);
        this.slotWaiters.shift()?.();
      } else if (m.op === 'digest') {
        const d = this.digests.get(m.id);
        this.digests.delete(m.id);
        d?.resolve(m.hex);
      }
    });
    const gone = (why: string): void => {
      if (this.failure) return;
      this.failure = new AppError(ErrorCode.SERVICE_UNAVAILABLE, `the MD5 hasher stopped (${why}); send the chunk again`);
      onGone(this);
      for (const d of this.digests.values()) d.reject(this.failure);
      this.digests.clear();
      for (const w of this.slotWaiters.splice(0)) w();
    };
    this.worker.on('error', (err) => gone(err.message));
    this.worker.on('exit', (code) => gone(`exit code ${code}`));
    this.worker.unref();
  }

  post(m: Md5Request): void {
    if (this.failure) throw this.failure;
    this.worker.postMessage(m);
  }

  async takeSlot(): Promise<number> {
    for (;;) {
      if (this.failure) throw this.failure;
      const slot = this.free.pop();
      if (slot !== undefined) return slot;
      await new Promise<void>((r) => this.slotWaiters.push(r));
    }
  }

  digest(id: number): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.failure) {
        reject(this.failure);
        return;
      }
      this.digests.set(id, { resolve, reject });
      this.worker.postMessage({ op: 'digest', id } satisfies Md5Request);
    });
  }

  forget(id: number): void {
    this.digests.delete(id);
    if (!this.failure) this.worker.postMessage({ op: 'drop', id } satisfies Md5Request);
  }
}

let current: Md5Thread | undefined;
let nextId = 1;

function thread(): Md5Thread {
  current ??= new Md5Thread((t) => {
    if (current === t) current = undefined;
  });
  return current;
}

/** The running MD5 worker, if any (diagnostics, and tests that stop it mid-hash). */
export function md5Worker(): Worker | undefined {
  return current?.worker;
}

/** An incremental MD5 computed on the worker thread. */
export class OffThreadMd5 {
  private readonly id = nextId++;
  private readonly thread: Md5Thread;
  private done = false;

  constructor() {
    this.thread = thread();
    if (this.thread.refs++ === 0) this.thread.worker.ref();
  }

  /** Queue `buf` for hashing; waits only while every shared slot is busy. Rejects if the worker is gone. */
  async update(buf: Buffer): Promise<void> {
    const t = this.thread;
    for (let off = 0; off < buf.length; off += SLOT) {
      const piece = buf.subarray(off, off + SLOT);
      const slot = await t.takeSlot();
      piece.copy(t.shared, slot * SLOT);
      t.post({ op: 'update', id: this.id, slot, len: piece.length });
    }
  }

  async digest(): Promise<string> {
    try {
      return await this.thread.digest(this.id);
    } finally {
      this.release();
    }
  }

  /** Forget the hash (stream failed). */
  drop(): void {
    if (this.done) return;
    this.thread.forget(this.id);
    this.release();
  }

  private release(): void {
    if (this.done) return;
    this.done = true;
    if (--this.thread.refs === 0) this.thread.worker.unref();
  }
}
