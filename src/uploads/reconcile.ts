import { ContentHasher } from '../checksum.js';
import { databaseUnavailable } from '../db/index.js';
import { type AppError, ErrorCode, isAppError } from '../errors.js';
import type { StorageBackend } from '../storage/types.js';
import type { Run, StoredObject } from './runs.js';

/** How a run must be settled once the database answers again. */
export type Settlement =
  | {
      to: 'succeeded';
      /** The object row of the publish (its bytes are in the store). */
      object: Omit<StoredObject, 'run_id' | 'uploaded_at'>;
      /** The key's publish lock, held until the record is written (rows follow publishes). */
      release?: (() => void) | undefined;
    }
  | { to: 'failed'; error: AppError };

interface Pending {
  runId: string;
  settlement: Settlement;
}

export interface RecordWriter {
  /** Write the run succeeded with its object row (one transaction). */
  commit(runId: string, object: Omit<StoredObject, 'run_id' | 'uploaded_at'>): Promise<Run>;
  /** Write the run failed. */
  failed(runId: string, err: AppError): Promise<Run>;
}

/**
 * Records this gateway owes the database: a run whose settlement could not be
 * written (the database went away after the upload was published or
 * refused). Each is retried, on a timer and from the sweeper, until the
 * database answers; meanwhile the run counts as held by this gateway (the
 * sweeper does not settle it another way). A published object whose run turns
 * out to be failed already is removed while the store still holds the bytes
 * this gateway wrote (the key's publish lock is held throughout).
 */
export class UnrecordedSettlements {
  private readonly pending = new Map<string, Pending>();
  private timer: NodeJS.Timeout | undefined;
  private retrying: Promise<number> | undefined;

  constructor(
    private readonly writer: RecordWriter,
    private readonly storage: StorageBackend,
    private readonly retryMs = 1000,
  ) {}

  get size(): number {
    return this.pending.size;
  }

  has(runId: string): boolean {
    return this.pending.has(runId);
  }

  /** Owe the settlement of run `runId`; retried until written. */
  add(runId: string, settlement: Settlement): void {
    this.releaseOf(runId);
    this.pending.set(runId, { runId, settlement });
    this.schedule();
  }

  /** Try every owed record once; how many were settled. */
  retry(): Promise<number> {
    this.retrying ??= this.retryAll().finally(() => {
      this.retrying = undefined;
    });
    return this.retrying;
  }

  /** Stop retrying (the gateway closes); what is still owed is settled by another gateway's sweeper. */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const id of [...this.pending.keys()]) this.releaseOf(id);
    this.pending.clear();
  }

  private releaseOf(runId: string): void {
    const p = this.pending.get(runId);
    if (p?.settlement.to === 'succeeded') p.settlement.release?.();
  }

  private schedule(): void {
    if (this.timer || this.pending.size === 0) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.retry().finally(() => this.schedule());
    }, this.retryMs);
    this.timer.unref();
  }

  private async retryAll(): Promise<number> {
    let settled = 0;
    for (const [id, p] of [...this.pending]) {
      if (await this.settle(p)) {
        this.releaseOf(id);
        this.pending.delete(id);
        settled++;
      }
    }
    return settled;
  }

  /** True once the record is settled (written, or found settled already). */
  private async settle({ runId, settlement }: Pending): Promise<boolean> {
    try {
      if (settlement.to === 'succeeded') await this.writer.commit(runId, settlement.object);
      else await this.writer.failed(runId, settlement.error);
      return true;
    } catch (err) {
      if (databaseUnavailable(err) !== undefined || !isAppError(err)) return false;
      // The run is gone (pruned): nothing left to record.
      if (err.code !== ErrorCode.INVALID_TRANSITION) return true;
      // Settled meanwhile: the earlier write landed after all, or the run was failed.
      if (settlement.to === 'succeeded' && err.details?.from === 'failed') {
        const o = settlement.object;
        try {
          const held = await storedDigest(this.storage, o.object_key);
          if (held && held.size === o.size && held.sha256 === o.sha256) await this.storage.delete(o.object_key);
        } catch {
          return false;
        }
      }
      return true;
    }
  }
}

/**
 * The size and SHA-256 of what the store holds at `key` (read in full), or
 * null when it holds nothing; with `chunkSize`, also the composite over
 * pieces of that size (a resumable upload's checksum).
 */
export async function storedDigest(
  storage: StorageBackend,
  key: string,
  chunkSize?: number,
): Promise<{ size: number; sha256: string; composite: string | undefined } | null> {
  const got = await storage.get(key);
  if (!got) return null;
  const hasher = new ContentHasher(chunkSize);
  for await (const chunk of got.body) hasher.update(chunk as Buffer);
  return { size: hasher.size, ...hasher.digest() };
}
