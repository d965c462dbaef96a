import { randomUUID } from 'node:crypto';
import type { Kysely } from 'kysely';
import type { Db } from '../db/index.js';
import type { TransferError } from '../transfer/target.js';
import type { FileStatus, FileUploadsTable, PushDatabase, SessionStatus, SyncSessionsTable } from './db.js';

export type SessionRow = SyncSessionsTable;
export type FileRow = FileUploadsTable;

/** Rows per INSERT (well below SQLite's 32,766 variables and PostgreSQL's 65,535 parameters). */
const INSERT_BATCH = 500;

export interface NewSession {
  projectId: string;
  sourceDir: string;
  targetKind: string;
  target: string;
  targetKey: string;
  bucketName: string | null;
  s3Prefix: string;
  configJson: string;
  triggerUrl: string | null;
}

/** What is known of one remote path, from earlier sessions. */
export interface KnownFile {
  session_id: string;
  status: FileStatus;
  size: number;
  mtime_ms: number;
  sha256: string | null;
  upload_id: string | null;
  updated_at: number;
}

/** Outcome of one file, written by the batched writer. */
export interface FileOutcome {
  relPath: string;
  status: 'uploaded' | 'failed';
  size: number;
  mtimeMs: number;
  sha256?: string;
  checksum?: string;
  checksumAlgorithm?: string;
  chunkSize?: number | null;
  error?: TransferError;
  permanent?: boolean;
  retried?: boolean;
}

/** The push state: projects, sessions, files, config history (spec 003). */
export class PushState {
  readonly db: Kysely<PushDatabase>;

  constructor(readonly handle: Db<PushDatabase>) {
    this.db = handle.db;
  }

  close(): Promise<void> {
    return this.handle.close();
  }

  async project(name: string, now = Date.now()): Promise<string> {
    const found = await this.db.selectFrom('projects').select('project_id').where('name', '=', name).executeTakeFirst();
    if (found) {
      await this.db.updateTable('projects').set({ updated_at: now }).where('project_id', '=', found.project_id).execute();
      return found.project_id;
    }
    const id = randomUUID();
    await this.db
      .insertInto('projects')
      .values({ project_id: id, name, created_at: now, updated_at: now })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
    const row = await this.db.selectFrom('projects').select('project_id').where('name', '=', name).executeTakeFirstOrThrow();
    return row.project_id;
  }

  async createSession(s: NewSession, now = Date.now()): Promise<string> {
    const id = randomUUID();
    await this.db.transaction().execute(async (trx) => {
      // A session of this project and target still "running" was stopped without a word (kill -9).
      await trx
        .updateTable('sync_sessions')
        .set({ status: 'interrupted', updated_at: now })
        .where('project_id', '=', s.projectId)
        .where('target_key', '=', s.targetKey)
        .where('status', '=', 'running')
        .execute();
      await trx
        .insertInto('sync_sessions')
        .values({
          session_id: id,
          project_id: s.projectId,
          status: 'running',
          source_dir: s.sourceDir,
          target_kind: s.targetKind,
          target: s.target,
          target_key: s.targetKey,
          bucket_name: s.bucketName,
          s3_prefix: s.s3Prefix,
          total_files: 0,
          files_uploaded: 0,
          files_skipped: 0,
          files_failed: 0,
          bytes_total: 0,
          bytes_uploaded: 0,
          started_at: now,
          finished_at: null,
          updated_at: now,
          config_json: s.configJson,
          trigger_url: s.triggerUrl,
          triggered_at: null,
          trigger_status: null,
        })
        .execute();
      await trx
        .insertInto('config_history')
        .values({ id: randomUUID(), project_id: s.projectId, session_id: id, config_json: s.configJson, created_at: now })
        .execute();
    });
    return id;
  }

  async reopenSession(sessionId: string, configJson: string, now = Date.now()): Promise<void> {
    const s = await this.session(sessionId);
    await this.db.transaction().execute(async (trx) => {
      await trx
        .updateTable('sync_sessions')
        .set({ status: 'running', finished_at: null, updated_at: now, config_json: configJson })
        .where('session_id', '=', sessionId)
        .execute();
      await trx
        .insertInto('config_history')
        .values({ id: randomUUID(), project_id: s.project_id, session_id: sessionId, config_json: configJson, created_at: now })
        .execute();
    });
  }

  async session(sessionId: string): Promise<SessionRow> {
    const row = await this.db.selectFrom('sync_sessions').selectAll().where('session_id', '=', sessionId).executeTakeFirst();
    if (!row) throw new Error(`no session ${sessionId} in this database (s3up sessions list shows them)`);
    return row;
  }

  async projectName(projectId: string): Promise<string> {
    const row = await this.db.selectFrom('projects').select('name').where('project_id', '=', projectId).executeTakeFirst();
    return row?.name ?? projectId;
  }

  /** The most recent record of each of `remotePaths` for this project and target, across sessions. */
  async known(projectId: string, targetKey: string, remotePaths: readonly string[]): Promise<Map<string, KnownFile>> {
    const out = new Map<string, KnownFile>();
    if (remotePaths.length === 0) return out;
    const rows = await this.db
      .selectFrom('file_uploads')
      .select(['session_id', 'remote_path', 'status', 'size', 'mtime_ms', 'sha256', 'upload_id', 'updated_at'])
      .where('project_id', '=', projectId)
      .where('target_key', '=', targetKey)
      .where('remote_path', 'in', remotePaths as string[])
      .execute();
    for (const r of rows) {
      const prev = out.get(r.remote_path);
      const rank = (k: KnownFile) => (k.status === 'uploaded' || k.status === 'skipped' ? 1 : 0);
      const row: KnownFile = {
        session_id: r.session_id,
        status: r.status,
        size: Number(r.size),
        mtime_ms: Number(r.mtime_ms),
        sha256: r.sha256,
        upload_id: r.upload_id,
        updated_at: Number(r.updated_at),
      };
      // Prefer a completed record; among equals, the newest.
      if (!prev || rank(row) > rank(prev) || (rank(row) === rank(prev) && row.updated_at > prev.updated_at)) {
        out.set(r.remote_path, { ...row, upload_id: row.upload_id ?? prev?.upload_id ?? null });
      } else if (!prev.upload_id && row.upload_id) {
        prev.upload_id = row.upload_id;
      }
    }
    return out;
  }

  /** Insert (or, resuming a session, replace) a batch of file rows. */
  async putFiles(rows: FileRow[]): Promise<void> {
    for (let i = 0; i < rows.length; i += INSERT_BATCH) {
      const slice = rows.slice(i, i + INSERT_BATCH);
      await this.db
        .insertInto('file_uploads')
        .values(slice)
        .onConflict((oc) =>
          oc.columns(['session_id', 'rel_path']).doUpdateSet((eb) => ({
            remote_path: eb.ref('excluded.remote_path'),
            size: eb.ref('excluded.size'),
            mtime_ms: eb.ref('excluded.mtime_ms'),
            status: eb.ref('excluded.status'),
            sha256: eb.ref('excluded.sha256'),
            checksum: eb.ref('excluded.checksum'),
            upload_id: eb.ref('excluded.upload_id'),
            updated_at: eb.ref('excluded.updated_at'),
            uploaded_at: eb.ref('excluded.uploaded_at'),
          })),
        )
        .execute();
    }
  }

  async setUploadId(sessionId: string, relPath: string, uploadId: string): Promise<void> {
    await this.db
      .updateTable('file_uploads')
      .set({ upload_id: uploadId, updated_at: Date.now() })
      .where('session_id', '=', sessionId)
      .where('rel_path', '=', relPath)
      .execute();
  }

  /** Write a batch of outcomes in one transaction. */
  async recordOutcomes(sessionId: string, outcomes: readonly FileOutcome[], now = Date.now()): Promise<void> {
    if (outcomes.length === 0) return;
    await this.db.transaction().execute(async (trx) => {
      for (const o of outcomes) {
        await trx
          .updateTable('file_uploads')
          .set((eb) => ({
            status: o.status,
            size: o.size,
            mtime_ms: o.mtimeMs,
            sha256: o.sha256 ?? null,
            checksum: o.checksum ?? null,
            checksum_algorithm: o.checksumAlgorithm ?? null,
            chunk_size: o.chunkSize ?? null,
            upload_id: o.status === 'uploaded' ? null : eb.ref('upload_id'),
            permanent: o.permanent ? 1 : 0,
            retry_count: o.retried ? eb('retry_count', '+', 1) : eb.ref('retry_count'),
            error_status: o.error?.status ?? null,
            error_code: o.error?.code ?? null,
            error_message: o.error?.message ?? null,
            updated_at: now,
            uploaded_at: o.status === 'uploaded' ? now : null,
          }))
          .where('session_id', '=', sessionId)
          .where('rel_path', '=', o.relPath)
          .execute();
      }
    });
  }

  /**
   * Recount a session's uploads and failures from its files and store the
   * totals (and a new status when given). `scan` carries what the walk found and
   * skipped (files the state already knew get no row of their own).
   */
  async finishSession(
    sessionId: string,
    status: SessionStatus | undefined,
    scan?: { found: number; foundBytes: number; skipped: number },
    now = Date.now(),
  ): Promise<SessionRow> {
    const counts = await this.db
      .selectFrom('file_uploads')
      .select((eb) => ['status', eb.fn.countAll<number>().as('n'), eb.fn.sum<number>('size').as('bytes')])
      .where('session_id', '=', sessionId)
      .groupBy('status')
      .execute();
    const n = (s: FileStatus) => Number(counts.find((c) => c.status === s)?.n ?? 0);
    const bytes = (s: FileStatus) => Number(counts.find((c) => c.status === s)?.bytes ?? 0);
    await this.db
      .updateTable('sync_sessions')
      .set({
        ...(scan ? { total_files: scan.found, files_skipped: scan.skipped, bytes_total: scan.foundBytes } : {}),
        files_uploaded: n('uploaded'),
        files_failed: n('failed') + n('retry'),
        bytes_uploaded: bytes('uploaded'),
        updated_at: now,
        ...(status ? { status, finished_at: status === 'running' ? null : now } : {}),
      })
      .where('session_id', '=', sessionId)
      .execute();
    await this.db.deleteFrom('remote_objects').where('session_id', '=', sessionId).execute();
    return this.session(sessionId);
  }

  async failedFiles(sessionId: string, limit: number): Promise<FileRow[]> {
    return this.db
      .selectFrom('file_uploads')
      .selectAll()
      .where('session_id', '=', sessionId)
      .where('status', 'in', ['failed', 'retry'])
      .where('permanent', '=', 0)
      .orderBy('rel_path')
      .limit(limit)
      .execute();
  }

  async markRetrying(sessionId: string, relPaths: readonly string[]): Promise<void> {
    if (relPaths.length === 0) return;
    await this.db
      .updateTable('file_uploads')
      .set({ status: 'retry', updated_at: Date.now() })
      .where('session_id', '=', sessionId)
      .where('rel_path', 'in', relPaths as string[])
      .execute();
  }

  async sessions(opts: { project?: string; limit?: number } = {}): Promise<Array<SessionRow & { project: string }>> {
    let q = this.db
      .selectFrom('sync_sessions')
      .innerJoin('projects', 'projects.project_id', 'sync_sessions.project_id')
      .selectAll('sync_sessions')
      .select('projects.name as project')
      .orderBy('sync_sessions.started_at', 'desc')
      .limit(opts.limit ?? 50);
    if (opts.project) q = q.where('projects.name', '=', opts.project);
    return q.execute();
  }

  async failures(
    sessionId: string,
    limit = 20,
  ): Promise<Array<Pick<FileRow, 'rel_path' | 'error_code' | 'error_message' | 'error_status' | 'permanent' | 'retry_count'>>> {
    return this.db
      .selectFrom('file_uploads')
      .select(['rel_path', 'error_code', 'error_message', 'error_status', 'permanent', 'retry_count'])
      .where('session_id', '=', sessionId)
      .where('status', 'in', ['failed', 'retry'])
      .orderBy('rel_path')
      .limit(limit)
      .execute();
  }

  async setTrigger(sessionId: string, url: string, status: string, now = Date.now()): Promise<void> {
    await this.db
      .updateTable('sync_sessions')
      .set({ trigger_url: url, trigger_status: status, triggered_at: now, updated_at: now })
      .where('session_id', '=', sessionId)
      .execute();
  }

  /** Stream the remote listing into remote_objects (one page in memory at a time). */
  async storeRemote(
    sessionId: string,
    objects: AsyncIterable<{ path: string; size: number; checksum: string | null; checksumAlgorithm: string | null; chunkSize: number | null }>,
  ): Promise<number> {
    await this.db.deleteFrom('remote_objects').where('session_id', '=', sessionId).execute();
    let batch: PushDatabase['remote_objects'][] = [];
    let n = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const rows = batch;
      batch = [];
      await this.db
        .insertInto('remote_objects')
        .values(rows)
        .onConflict((oc) => oc.columns(['session_id', 'path']).doNothing())
        .execute();
    };
    for await (const o of objects) {
      batch.push({ session_id: sessionId, path: o.path, size: o.size, checksum: o.checksum, checksum_algorithm: o.checksumAlgorithm, chunk_size: o.chunkSize });
      n++;
      if (batch.length >= INSERT_BATCH) await flush();
    }
    await flush();
    return n;
  }

  async remote(sessionId: string, paths: readonly string[]): Promise<Map<string, PushDatabase['remote_objects']>> {
    const out = new Map<string, PushDatabase['remote_objects']>();
    if (paths.length === 0) return out;
    const rows = await this.db
      .selectFrom('remote_objects')
      .selectAll()
      .where('session_id', '=', sessionId)
      .where('path', 'in', paths as string[])
      .execute();
    for (const r of rows) out.set(r.path, { ...r, size: Number(r.size), chunk_size: r.chunk_size === null ? null : Number(r.chunk_size) });
    return out;
  }
}
