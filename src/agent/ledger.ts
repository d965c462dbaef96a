import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type Database from 'better-sqlite3';
import { sqliteDriver } from '../db/sqlite-driver.js';

/**
 * The agent's ledger (spec 002's SQLite database), the truth about every file:
 * - `files`: the spec's table, one row per uploaded file (row exists = uploaded;
 *   its size and mtime are those of the uploaded content), plus its checksums.
 * - `queue`: the durable upload queue (spec 004's offline queue): work not yet done,
 *   files parked on a permanent refusal, files skipped as never stable, and the
 *   resumable upload id of a large file in flight.
 * - `baseline`: files that existed at the first scan with `upload_existing: false`
 *   (not uploaded, not in `files`; a later change uploads them).
 * - `daily`: per-day counters for the gateway's daily report; `meta`, `agent_state`.
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS files (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  local_path TEXT UNIQUE NOT NULL,
  remote_path TEXT NOT NULL,
  file_size INTEGER NOT NULL,
  mtime INTEGER NOT NULL,
  uploaded_at INTEGER NOT NULL,
  mtime_ms REAL NOT NULL,
  sha256 TEXT,
  checksum TEXT,
  checksum_algorithm TEXT,
  chunk_size INTEGER,
  local_deleted_at INTEGER
);
CREATE INDEX IF NOT EXISTS idx_files_local_path ON files(local_path);
CREATE INDEX IF NOT EXISTS idx_files_uploaded_at ON files(uploaded_at);
CREATE TABLE IF NOT EXISTS queue (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  local_path TEXT UNIQUE NOT NULL,
  remote_path TEXT NOT NULL,
  status TEXT NOT NULL,
  reason TEXT NOT NULL,
  seq INTEGER NOT NULL,
  enqueued_at INTEGER NOT NULL,
  next_attempt_at INTEGER NOT NULL,
  claimed INTEGER NOT NULL DEFAULT 0,
  phase TEXT,
  attempts INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  last_error_code TEXT,
  last_error_at INTEGER,
  seen_size INTEGER,
  seen_mtime_ms REAL,
  upload_id TEXT,
  upload_size INTEGER,
  upload_mtime_ms REAL
);
CREATE INDEX IF NOT EXISTS idx_queue_ready ON queue(status, claimed, seq);
CREATE TABLE IF NOT EXISTS baseline (
  local_path TEXT PRIMARY KEY,
  file_size INTEGER NOT NULL,
  mtime_ms REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS daily (
  date TEXT PRIMARY KEY,
  files_uploaded INTEGER NOT NULL DEFAULT 0,
  bytes INTEGER NOT NULL DEFAULT 0,
  failures INTEGER NOT NULL DEFAULT 0,
  reported_at INTEGER
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS agent_state (id INTEGER PRIMARY KEY CHECK (id = 1), updated_at INTEGER NOT NULL, state TEXT NOT NULL);
`;

/** queue.status */
export type QueueStatus = 'pending' | 'parked' | 'unstable';
/** Why a file is in the queue: a new or changed file to upload, or an uploaded one whose local copy awaits its verified delete. */
export type QueueReason = 'upload' | 'verify_delete';

export interface FileRow {
  local_path: string;
  remote_path: string;
  file_size: number;
  mtime: number;
  mtime_ms: number;
  uploaded_at: number;
  sha256: string | null;
  checksum: string | null;
  checksum_algorithm: string | null;
  chunk_size: number | null;
  local_deleted_at: number | null;
}

export interface QueueRow {
  id: number;
  local_path: string;
  remote_path: string;
  status: QueueStatus;
  reason: QueueReason;
  seq: number;
  enqueued_at: number;
  next_attempt_at: number;
  claimed: number;
  phase: string | null;
  attempts: number;
  failures: number;
  last_error: string | null;
  last_error_code: string | null;
  last_error_at: number | null;
  seen_size: number | null;
  seen_mtime_ms: number | null;
  upload_id: string | null;
  upload_size: number | null;
  upload_mtime_ms: number | null;
}

export interface UploadedRecord {
  localPath: string;
  remotePath: string;
  size: number;
  mtimeMs: number;
  sha256: string | null;
  checksum: string | null;
  checksumAlgorithm: string | null;
  chunkSize: number | null;
}

export const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export class Ledger {
  readonly db: Database.Database;
  private seq = 0;
  /**
   * Whether a claim could find something: set by every write that can make an
   * entry due, cleared when a claim comes back short (then `dueAt` says when the
   * earliest waiting entry falls due). Spares the queue query on every pump.
   */
  private mayHaveDue = true;
  private dueAt = Number.POSITIVE_INFINITY;
  private readonly stmts;

  constructor(file: string, opts: { readonly?: boolean } = {}) {
    if (!opts.readonly) mkdirSync(path.dirname(file), { recursive: true });
    const SQLiteDatabase = sqliteDriver();
    this.db = new SQLiteDatabase(file, { readonly: opts.readonly ?? false, fileMustExist: opts.readonly ?? false });
    this.db.pragma('busy_timeout = 5000');
    if (!opts.readonly) {
      this.db.pragma('journal_mode = WAL');
      // A crash may lose the last moments of bookkeeping, never consistency; the
      // ledger is re-checked against the disk by the startup scan anyway.
      this.db.pragma('synchronous = NORMAL');
      this.db.exec(SCHEMA);
      this.seq = (this.db.prepare('SELECT coalesce(max(seq), 0) AS s FROM queue').get() as { s: number }).s;
    }
    const db = this.db;
    this.stmts = opts.readonly
      ? undefined
      : {
          file: db.prepare('SELECT * FROM files WHERE local_path = ?'),
          queue: db.prepare('SELECT * FROM queue WHERE local_path = ?'),
          baseline: db.prepare('SELECT file_size, mtime_ms FROM baseline WHERE local_path = ?'),
          insertQueue: db.prepare(
            `INSERT INTO queue (local_path, remote_path, status, reason, seq, enqueued_at, next_attempt_at)
             VALUES (@local_path, @remote_path, 'pending', @reason, @seq, @now, @now)
             ON CONFLICT(local_path) DO UPDATE SET status = 'pending', reason = excluded.reason, remote_path = excluded.remote_path,
               seq = excluded.seq, next_attempt_at = excluded.next_attempt_at, attempts = 0, failures = 0,
               last_error = NULL, last_error_code = NULL, seen_size = NULL, seen_mtime_ms = NULL, claimed = 0, phase = NULL,
               upload_id = NULL, upload_size = NULL, upload_mtime_ms = NULL`,
          ),
          insertBaseline: db.prepare('INSERT OR REPLACE INTO baseline (local_path, file_size, mtime_ms) VALUES (?, ?, ?)'),
          claim: db.prepare(
            `UPDATE queue SET claimed = 1, phase = 'stability' WHERE id IN (
               SELECT id FROM queue WHERE status = 'pending' AND claimed = 0 AND next_attempt_at <= ? ORDER BY seq LIMIT ?)
             RETURNING *`,
          ),
          nextDue: db.prepare(`SELECT min(next_attempt_at) AS t FROM queue WHERE status = 'pending' AND claimed = 0`),
          phase: db.prepare('UPDATE queue SET phase = ? WHERE local_path = ?'),
          backOfQueue: db.prepare(
            `UPDATE queue SET claimed = 0, phase = NULL, seq = @seq, next_attempt_at = @next, attempts = attempts + @attempt,
               failures = failures + @failure, last_error = coalesce(@error, last_error), last_error_code = coalesce(@code, last_error_code),
               last_error_at = CASE WHEN @error IS NULL THEN last_error_at ELSE @now END
             WHERE local_path = @local_path RETURNING attempts, failures`,
          ),
          setAside: db.prepare(
            `UPDATE queue SET status = @status, claimed = 0, phase = NULL, last_error = @error, last_error_code = @code, last_error_at = @now,
               seen_size = @size, seen_mtime_ms = @mtime WHERE local_path = @local_path`,
          ),
          drop: db.prepare('DELETE FROM queue WHERE local_path = ?'),
          setUploadId: db.prepare('UPDATE queue SET upload_id = ?, upload_size = ?, upload_mtime_ms = ? WHERE local_path = ?'),
          upsertFile: db.prepare(
            `INSERT INTO files (local_path, remote_path, file_size, mtime, uploaded_at, mtime_ms, sha256, checksum, checksum_algorithm, chunk_size)
             VALUES (@localPath, @remotePath, @size, @mtime, @now, @mtimeMs, @sha256, @checksum, @checksumAlgorithm, @chunkSize)
             ON CONFLICT(local_path) DO UPDATE SET remote_path = excluded.remote_path, file_size = excluded.file_size, mtime = excluded.mtime,
               uploaded_at = excluded.uploaded_at, mtime_ms = excluded.mtime_ms, sha256 = excluded.sha256, checksum = excluded.checksum,
               checksum_algorithm = excluded.checksum_algorithm, chunk_size = excluded.chunk_size, local_deleted_at = NULL`,
          ),
          dropBaseline: db.prepare('DELETE FROM baseline WHERE local_path = ?'),
          count: db.prepare(
            `INSERT INTO daily (date, files_uploaded, bytes, failures) VALUES (@date, @files, @bytes, @failures)
             ON CONFLICT(date) DO UPDATE SET files_uploaded = files_uploaded + @files, bytes = bytes + @bytes, failures = failures + @failures`,
          ),
          localDeleted: db.prepare('UPDATE files SET local_deleted_at = ? WHERE local_path = ?'),
          getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
          setMeta: db.prepare('INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)'),
          state: db.prepare('INSERT OR REPLACE INTO agent_state (id, updated_at, state) VALUES (1, ?, ?)'),
        };
  }

  private get s() {
    if (!this.stmts) throw new Error('the ledger is open read-only');
    return this.stmts;
  }

  close(): void {
    this.db.close();
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  file(localPath: string): FileRow | undefined {
    return this.s.file.get(localPath) as FileRow | undefined;
  }

  queued(localPath: string): QueueRow | undefined {
    return this.s.queue.get(localPath) as QueueRow | undefined;
  }

  baseline(localPath: string): { file_size: number; mtime_ms: number } | undefined {
    return this.s.baseline.get(localPath) as { file_size: number; mtime_ms: number } | undefined;
  }

  /** Put a file at the back of the queue, pending (a parked or skipped one starts over). */
  enqueue(localPath: string, remotePath: string, reason: QueueReason, now = Date.now()): void {
    this.mayHaveDue = true;
    this.s.insertQueue.run({ local_path: localPath, remote_path: remotePath, reason, seq: ++this.seq, now });
  }

  recordBaseline(localPath: string, size: number, mtimeMs: number): void {
    this.s.insertBaseline.run(localPath, size, mtimeMs);
  }

  /** Take up to `limit` due entries, oldest first, for this process. */
  claim(limit: number, now = Date.now()): QueueRow[] {
    if (!this.mayHaveDue && now < this.dueAt) return [];
    const rows = (this.s.claim.all(now, limit) as QueueRow[]).sort((a, b) => a.seq - b.seq);
    if (rows.length < limit) {
      this.mayHaveDue = false;
      this.dueAt = (this.s.nextDue.get() as { t: number | null }).t ?? Number.POSITIVE_INFINITY;
    }
    return rows;
  }

  /** When the next unclaimed pending entry is due (ms), or undefined (as of the last short claim). */
  nextDue(): number | undefined {
    if (this.mayHaveDue) this.dueAt = (this.s.nextDue.get() as { t: number | null }).t ?? Number.POSITIVE_INFINITY;
    return Number.isFinite(this.dueAt) ? this.dueAt : undefined;
  }

  /** A previous process's claims mean nothing after a restart. */
  releaseClaims(): void {
    this.mayHaveDue = true;
    this.db.prepare('UPDATE queue SET claimed = 0, phase = NULL WHERE claimed = 1').run();
  }

  setPhase(localPath: string, phase: 'stability' | 'uploading' | 'verifying'): void {
    this.s.phase.run(phase, localPath);
  }

  /** Back of the queue: unclaimed, due at `next`; counts an unstable attempt and/or a failure. */
  requeue(
    localPath: string,
    o: { next: number; attempt?: boolean; failure?: boolean; error?: string; code?: string; now?: number },
  ): { attempts: number; failures: number } | undefined {
    this.mayHaveDue = true;
    return this.s.backOfQueue.get({
      local_path: localPath,
      seq: ++this.seq,
      next: o.next,
      attempt: o.attempt ? 1 : 0,
      failure: o.failure ? 1 : 0,
      error: o.error ?? null,
      code: o.code ?? null,
      now: o.now ?? Date.now(),
    }) as { attempts: number; failures: number } | undefined;
  }

  /** Out of the queue until the file changes: parked (permanent refusal) or unstable (max_attempts). */
  setAside(localPath: string, status: 'parked' | 'unstable', o: { code: string; error: string; size: number | null; mtimeMs: number | null }): void {
    this.s.setAside.run({ local_path: localPath, status, code: o.code, error: o.error, size: o.size, mtime: o.mtimeMs, now: Date.now() });
  }

  drop(localPath: string): void {
    this.s.drop.run(localPath);
  }

  /** Saved before the first chunk is sent, so a restart resumes the same upload. */
  setUploadId(localPath: string, uploadId: string | null, size: number | null, mtimeMs: number | null): void {
    this.s.setUploadId.run(uploadId, size, mtimeMs, localPath);
  }

  /** One transaction: the file is uploaded (spec: insert or update its row), its queue entry is done, today's counters move. */
  recordUploaded(r: UploadedRecord, keepQueued: QueueReason | undefined, now = Date.now()): void {
    this.transaction(() => {
      this.s.upsertFile.run({ ...r, mtime: Math.floor(r.mtimeMs / 1000), now: Math.floor(now / 1000) });
      this.s.dropBaseline.run(r.localPath);
      if (keepQueued) this.enqueue(r.localPath, r.remotePath, keepQueued, now);
      else this.s.drop.run(r.localPath);
      this.s.count.run({ date: utcDay(now), files: 1, bytes: r.size, failures: 0 });
    });
  }

  countFailure(now = Date.now()): void {
    this.s.count.run({ date: utcDay(now), files: 0, bytes: 0, failures: 1 });
  }

  markLocalDeleted(localPath: string, now = Date.now()): void {
    this.s.localDeleted.run(Math.floor(now / 1000), localPath);
  }

  meta(key: string): string | undefined {
    return (this.s.getMeta.get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.s.setMeta.run(key, value);
  }

  writeState(state: unknown, now = Date.now()): void {
    this.s.state.run(now, JSON.stringify(state));
  }

  daily(date: string): { date: string; files_uploaded: number; bytes: number; failures: number; reported_at: number | null } | undefined {
    return this.db.prepare('SELECT * FROM daily WHERE date = ?').get(date) as
      | { date: string; files_uploaded: number; bytes: number; failures: number; reported_at: number | null }
      | undefined;
  }

  markReported(date: string, now = Date.now()): void {
    this.db.prepare('INSERT INTO daily (date, reported_at) VALUES (?, ?) ON CONFLICT(date) DO UPDATE SET reported_at = excluded.reported_at').run(date, now);
  }

  pendingCount(): number {
    return (this.db.prepare(`SELECT count(*) AS n FROM queue WHERE status = 'pending'`).get() as { n: number }).n;
  }

  /** After the gateway came back: entries waiting out a transient failure are due now. */
  retryNow(now = Date.now()): void {
    this.mayHaveDue = true;
    this.db.prepare(`UPDATE queue SET next_attempt_at = ? WHERE status = 'pending' AND claimed = 0 AND failures > 0 AND next_attempt_at > ?`).run(now, now);
  }
}
