import os from 'node:os';
import path from 'node:path';
import { type Kysely, type Migration, type MigrationProvider, Migrator } from 'kysely';
import { type Db, openDatabase } from '../db/index.js';

/**
 * The bulk CLI's own state (spec 003): projects, sync_sessions, file_uploads,
 * config_history. SQLite in the user's data folder by default, PostgreSQL
 * when shared. One list of migrations for both.
 *
 * A file's state machine:
 *   pending -> uploaded | skipped | failed;  failed -> retry -> uploaded | failed
 *   (failed with permanent = 1: the last retry round failed, or the failure can
 *   never succeed as it is).
 */
export type FileStatus = 'pending' | 'uploaded' | 'skipped' | 'failed' | 'retry';
export type SessionStatus = 'running' | 'completed' | 'interrupted' | 'failed';

export interface ProjectsTable {
  project_id: string;
  name: string;
  created_at: number;
  updated_at: number;
}

export interface SyncSessionsTable {
  session_id: string;
  project_id: string;
  status: SessionStatus;
  source_dir: string;
  /** 'gateway' | 's3' */
  target_kind: string;
  /** The gateway URL, or s3://bucket/prefix (never a key). */
  target: string;
  /** Identifies where objects land, for the skip decision across sessions: target + prefix. */
  target_key: string;
  bucket_name: string | null;
  s3_prefix: string;
  total_files: number;
  files_uploaded: number;
  files_skipped: number;
  files_failed: number;
  bytes_total: number;
  bytes_uploaded: number;
  started_at: number;
  finished_at: number | null;
  updated_at: number;
  /** The merged configuration (without secrets), JSON. */
  config_json: string;
  trigger_url: string | null;
  triggered_at: number | null;
  trigger_status: string | null;
}

export interface FileUploadsTable {
  session_id: string;
  project_id: string;
  target_key: string;
  rel_path: string;
  remote_path: string;
  size: number;
  mtime_ms: number;
  status: FileStatus;
  permanent: number;
  retry_count: number;
  sha256: string | null;
  checksum: string | null;
  checksum_algorithm: string | null;
  chunk_size: number | null;
  /** A resumable upload's session id, kept so a later run continues it. */
  upload_id: string | null;
  error_status: number | null;
  error_code: string | null;
  error_message: string | null;
  updated_at: number;
  uploaded_at: number | null;
}

export interface ConfigHistoryTable {
  id: string;
  project_id: string;
  session_id: string | null;
  config_json: string;
  created_at: number;
}

/** The remote listing of one session (streamed in once, read by the skip decision). */
export interface RemoteObjectsTable {
  session_id: string;
  path: string;
  size: number;
  checksum: string | null;
  checksum_algorithm: string | null;
  chunk_size: number | null;
}

export interface PushDatabase {
  projects: ProjectsTable;
  sync_sessions: SyncSessionsTable;
  file_uploads: FileUploadsTable;
  config_history: ConfigHistoryTable;
  remote_objects: RemoteObjectsTable;
}

const migrations: Record<string, Migration> = {
  '0001_push_state': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('projects')
        .addColumn('project_id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull().unique())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('sync_sessions')
        .addColumn('session_id', 'text', (c) => c.primaryKey())
        .addColumn('project_id', 'text', (c) => c.notNull().references('projects.project_id'))
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('source_dir', 'text', (c) => c.notNull())
        .addColumn('target_kind', 'text', (c) => c.notNull())
        .addColumn('target', 'text', (c) => c.notNull())
        .addColumn('target_key', 'text', (c) => c.notNull())
        .addColumn('bucket_name', 'text')
        .addColumn('s3_prefix', 'text', (c) => c.notNull())
        .addColumn('total_files', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('files_uploaded', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('files_skipped', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('files_failed', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('bytes_total', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('bytes_uploaded', 'bigint', (c) => c.notNull().defaultTo(0))
        .addColumn('started_at', 'bigint', (c) => c.notNull())
        .addColumn('finished_at', 'bigint')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('config_json', 'text', (c) => c.notNull())
        .addColumn('trigger_url', 'text')
        .addColumn('triggered_at', 'bigint')
        .addColumn('trigger_status', 'text')
        .execute();
      await db.schema.createIndex('sync_sessions_project_idx').on('sync_sessions').columns(['project_id', 'started_at']).execute();
      await db.schema
        .createTable('file_uploads')
        .addColumn('session_id', 'text', (c) => c.notNull().references('sync_sessions.session_id'))
        .addColumn('project_id', 'text', (c) => c.notNull())
        .addColumn('target_key', 'text', (c) => c.notNull())
        .addColumn('rel_path', 'text', (c) => c.notNull())
        .addColumn('remote_path', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('mtime_ms', 'double precision', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('permanent', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('retry_count', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('sha256', 'text')
        .addColumn('checksum', 'text')
        .addColumn('checksum_algorithm', 'text')
        .addColumn('chunk_size', 'bigint')
        .addColumn('upload_id', 'text')
        .addColumn('error_status', 'integer')
        .addColumn('error_code', 'text')
        .addColumn('error_message', 'text')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('uploaded_at', 'bigint')
        .addPrimaryKeyConstraint('file_uploads_pk', ['session_id', 'rel_path'])
        .execute();
      // The skip decision: what is known of a remote path across sessions.
      await db.schema.createIndex('file_uploads_remote_idx').on('file_uploads').columns(['project_id', 'target_key', 'remote_path']).execute();
      // Retry and statistics: a session's files by state.
      await db.schema.createIndex('file_uploads_session_status_idx').on('file_uploads').columns(['session_id', 'status']).execute();
      await db.schema
        .createTable('config_history')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('project_id', 'text', (c) => c.notNull())
        .addColumn('session_id', 'text')
        .addColumn('config_json', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('config_history_project_idx').on('config_history').columns(['project_id', 'created_at']).execute();
      await db.schema
        .createTable('remote_objects')
        .addColumn('session_id', 'text', (c) => c.notNull())
        .addColumn('path', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('checksum', 'text')
        .addColumn('checksum_algorithm', 'text')
        .addColumn('chunk_size', 'bigint')
        .addPrimaryKeyConstraint('remote_objects_pk', ['session_id', 'path'])
        .execute();
    },
  },
};

const provider: MigrationProvider = { getMigrations: async () => migrations };

/** Where the state lives unless --db / DATABASE_URL say otherwise: $XDG_DATA_HOME/s3up/push.db. */
export function defaultDbUrl(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_DATA_HOME && path.isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : path.join(env.HOME ?? os.homedir(), '.local', 'share');
  return `sqlite:${path.join(base, 's3up', 'push.db')}`;
}

/** A database URL from a flag: sqlite:<file>, postgres://..., or a plain file path. */
export function normalizeDbUrl(value: string): string {
  if (/^(sqlite:|postgres(ql)?:\/\/)/.test(value)) return value;
  return `sqlite:${path.resolve(value)}`;
}

export async function openPushDb(url: string): Promise<Db<PushDatabase>> {
  const db = await openDatabase<PushDatabase>(url, { poolSize: 4 });
  // Its own migration table: the state may share a PostgreSQL database with a gateway.
  const migrator = new Migrator({ db: db.db, provider, migrationTableName: 's3up_push_migration', migrationLockTableName: 's3up_push_migration_lock' });
  const { error } = await migrator.migrateToLatest();
  if (error) {
    await db.close();
    throw error instanceof Error ? error : new Error(String(error));
  }
  return db;
}
