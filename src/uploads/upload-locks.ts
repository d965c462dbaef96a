import { createHash } from 'node:crypto';
import type { Lock, Locker, RequestRelease } from '@tus/server';
import type pg from 'pg';
import { AppError, ErrorCode } from '../errors.js';
import { Waiters } from './waiters.js';

/**
 * Exclusive access to one resumable upload for the length of a request, so
 * two requests never write the same upload's bytes at once (tus locking). The
 * rules are tus's: a request that wants a held upload asks the holder to let
 * go (its request is then cut after @tus/server's drain delay, keeping the
 * bytes it stored), and waits until it is free, at most `timeoutMs`; then it
 * is refused with 409 CONFLICT (tus clients retry it and resume from HEAD).
 *
 * Within one gateway, holders are kept in memory. With PostgreSQL, where
 * several gateways serve one upload, each also takes a PostgreSQL advisory
 * lock on a hash of the upload id, over one connection of its own (see
 * PgAdvisoryLocks); the request to let go travels by NOTIFY. SQLite serves one
 * gateway: the in-memory locks are the whole story there.
 */
export class UploadLocker implements Locker {
  private readonly holders = new Map<string, { release: RequestRelease; asked: boolean }>();
  private readonly waiters = new Waiters();

  constructor(
    private readonly shared: PgAdvisoryLocks | undefined,
    readonly timeoutMs = 30_000,
  ) {
    shared?.onReleaseRequested((id) => this.askToRelease(id));
    shared?.onUnlocked((id) => this.wake(id));
    shared?.onLost((ids) => {
      // The database let our locks go with the connection: the requests holding them must stop.
      for (const id of ids) this.askToRelease(id, true);
    });
  }

  newLock(id: string): Lock {
    return new UploadLock(this, id);
  }

  async close(): Promise<void> {
    await this.shared?.close();
  }

  /** @internal (UploadLock) */
  async acquire(id: string, signal: AbortSignal, release: RequestRelease): Promise<void> {
    const deadline = Date.now() + this.timeoutMs;
    // 1. This gateway: one holder per id.
    while (this.holders.has(id)) {
      this.askToRelease(id);
      await this.waitFor(id, signal, deadline, 1000);
    }
    this.holders.set(id, { release, asked: false });
    if (!this.shared) return;
    // 2. Every gateway on the database.
    try {
      let asked = false;
      while (!(await this.shared.tryLock(id))) {
        if (!asked) {
          asked = true;
          await this.shared.requestRelease(id);
        }
        // Woken by the holder's unlock notice; polled too, since a notice can be missed (connection loss).
        await this.waitFor(id, signal, deadline, 200);
      }
    } catch (err) {
      this.drop(id);
      throw err;
    }
  }

  /** @internal (UploadLock) */
  async release(id: string): Promise<void> {
    try {
      await this.shared?.unlock(id);
    } finally {
      this.drop(id);
    }
  }

  private drop(id: string): void {
    this.holders.delete(id);
    this.wake(id);
  }

  private wake(id: string): void {
    this.waiters.wake(id);
  }

  /** Ask this gateway's holder of `id` (if any) to finish; once per holder unless `force`. */
  private askToRelease(id: string, force = false): void {
    const h = this.holders.get(id);
    if (!h || (h.asked && !force)) return;
    h.asked = true;
    void Promise.resolve()
      .then(() => h.release())
      .catch(() => {});
  }

  /** Wait until `id` may be free (woken, or after `pollMs`); throws when `signal` aborts or the deadline passes. */
  private async waitFor(id: string, signal: AbortSignal, deadline: number, pollMs: number): Promise<void> {
    if (signal.aborted) throw new AppError(ErrorCode.UPLOAD_ABORTED, 'the request ended while waiting for the upload');
    const left = deadline - Date.now();
    if (left <= 0) {
      throw new AppError(ErrorCode.CONFLICT, 'another request is writing this upload; retry (HEAD tells the offset)');
    }
    await this.waiters.wait(id, Math.min(pollMs, left), signal);
  }
}

class UploadLock implements Lock {
  private held = false;
  constructor(
    private readonly locker: UploadLocker,
    private readonly id: string,
  ) {}

  async lock(signal: AbortSignal, cancelReq: RequestRelease): Promise<void> {
    await this.locker.acquire(this.id, signal, cancelReq);
    this.held = true;
  }

  async unlock(): Promise<void> {
    if (!this.held) return;
    this.held = false;
    await this.locker.release(this.id);
  }
}

const RELEASE_CHANNEL = 's3up_upload_release';
const UNLOCKED_CHANNEL = 's3up_upload_unlocked';

/** The advisory lock key of an upload: 64 bits of SHA-256 over a namespaced id (a collision only makes two uploads wait for each other). */
export function advisoryKey(id: string): string {
  return createHash('sha256').update(`s3up:upload:${id}`).digest().readBigInt64BE(0).toString();
}

/**
 * PostgreSQL session-level advisory locks over one dedicated connection (not
 * the pool: a session lock lives as long as its connection). The database
 * releases them when the connection is lost; then the holders are told
 * (`onLost`) and the next lock opens a new connection. The same connection
 * LISTENs for requests to let go of an upload and for unlock notices.
 */
export class PgAdvisoryLocks {
  private client: Promise<pg.Client> | undefined;
  private readonly held = new Set<string>();
  private releaseHandler: ((id: string) => void) | undefined;
  private unlockedHandler: ((id: string) => void) | undefined;
  private lostHandler: ((ids: string[]) => void) | undefined;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly applicationName = 's3up-upload-locks',
  ) {}

  onReleaseRequested(fn: (id: string) => void): void {
    this.releaseHandler = fn;
  }

  onLost(fn: (ids: string[]) => void): void {
    this.lostHandler = fn;
  }

  /** Another gateway (or this one) let go of an upload. */
  onUnlocked(fn: (id: string) => void): void {
    this.unlockedHandler = fn;
  }

  private connection(): Promise<pg.Client> {
    if (this.closed) return Promise.reject(new AppError(ErrorCode.SHUTTING_DOWN, 'the gateway is shutting down'));
    this.client ??= (async () => {
      const { default: pgm } = await import('pg');
      const c = new pgm.Client({ connectionString: this.url, application_name: this.applicationName });
      let gone = false;
      const lost = (): void => {
        if (gone) return;
        gone = true;
        this.client = undefined;
        const ids = [...this.held];
        this.held.clear();
        this.lostHandler?.(ids);
        c.end().catch(() => {});
      };
      c.on('error', lost);
      c.on('end', lost);
      c.on('notification', (n) => {
        if (!n.payload) return;
        if (n.channel === RELEASE_CHANNEL && this.held.has(n.payload)) this.releaseHandler?.(n.payload);
        if (n.channel === UNLOCKED_CHANNEL) this.unlockedHandler?.(n.payload);
      });
      try {
        await c.connect();
        await c.query(`LISTEN ${RELEASE_CHANNEL}`);
        await c.query(`LISTEN ${UNLOCKED_CHANNEL}`);
      } catch (err) {
        gone = true;
        this.client = undefined;
        c.end().catch(() => {});
        throw unavailable(err);
      }
      return c;
    })();
    return this.client;
  }

  async tryLock(id: string): Promise<boolean> {
    const c = await this.connection();
    try {
      const r = await c.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1::bigint) AS ok', [advisoryKey(id)]);
      if (r.rows[0]?.ok === true) {
        this.held.add(id);
        return true;
      }
      return false;
    } catch (err) {
      throw unavailable(err);
    }
  }

  async unlock(id: string): Promise<void> {
    if (!this.held.delete(id)) return; // lost with its connection: the database already let it go
    const c = await this.client;
    if (!c) return;
    try {
      // One round trip: unlock, then tell the waiters (in this order, within the statement).
      await c.query('SELECT pg_advisory_unlock($1::bigint), pg_notify($2, $3)', [advisoryKey(id), UNLOCKED_CHANNEL, id]);
    } catch {
      // The connection went: so did the lock.
    }
  }

  /** Ask the gateway holding `id` to let go (tus: the newer request wins). */
  async requestRelease(id: string): Promise<void> {
    const c = await this.connection();
    try {
      await c.query('SELECT pg_notify($1, $2)', [RELEASE_CHANNEL, id]);
    } catch (err) {
      throw unavailable(err);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const c = await this.client?.catch(() => undefined);
    this.client = undefined;
    this.held.clear();
    await c?.end().catch(() => {});
  }
}

function unavailable(err: unknown): AppError {
  return new AppError(ErrorCode.DATABASE_UNAVAILABLE, 'the database is unavailable (upload lock); retry later', undefined, { cause: err });
}
