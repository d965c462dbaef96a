import { type Kysely, type Migration, type MigrationProvider, SqliteAdapter, sql } from 'kysely';

/**
 * One set of migrations for SQLite and PostgreSQL. Only portable column types
 * are used: text, bigint (milliseconds, sizes), double precision.
 * Migrations are append-only: never edit one that has shipped.
 */
const migrations: Record<string, Migration> = {
  '0001_runs': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('runs')
        .addColumn('run_id', 'text', (c) => c.primaryKey())
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('path', 'text', (c) => c.notNull())
        .addColumn('object_key', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint')
        .addColumn('sha256', 'text')
        .addColumn('content_type', 'text')
        .addColumn('filename', 'text')
        .addColumn('error_code', 'text')
        .addColumn('error_message', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('started_at', 'bigint')
        .addColumn('finished_at', 'bigint')
        .addColumn('total_ms', 'double precision')
        .addColumn('bytes_per_sec', 'double precision')
        .addColumn('deleted_at', 'bigint')
        .execute();
      // Newest-first listing with a (created_at, run_id) cursor, overall and per client.
      await db.schema.createIndex('runs_created_idx').on('runs').columns(['created_at', 'run_id']).execute();
      await db.schema.createIndex('runs_client_created_idx').on('runs').columns(['client', 'created_at', 'run_id']).execute();
      // "What is stored at this key": latest succeeded run for an object.
      await db.schema.createIndex('runs_object_idx').on('runs').columns(['object_key', 'status', 'finished_at']).execute();
      await db.schema.createIndex('runs_status_idx').on('runs').columns(['status', 'created_at']).execute();

      await db.schema
        .createTable('heartbeat')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('at', 'bigint', (c) => c.notNull())
        .execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('heartbeat').execute();
      await db.schema.dropTable('runs').execute();
    },
  },
  // Resumable upload sessions and their parts (our record: s3rver has no
  // ListParts), and telemetry events of direct uploads.
  '0002_resumable': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('upload_sessions')
        .addColumn('session_id', 'text', (c) => c.primaryKey())
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('protocol', 'text', (c) => c.notNull())
        .addColumn('run_id', 'text', (c) => c.notNull())
        .addColumn('path', 'text', (c) => c.notNull())
        .addColumn('object_key', 'text', (c) => c.notNull())
        .addColumn('file_size', 'bigint', (c) => c.notNull())
        .addColumn('chunk_size', 'bigint', (c) => c.notNull())
        .addColumn('total_chunks', 'bigint', (c) => c.notNull())
        .addColumn('content_type', 'text')
        .addColumn('declared_checksum', 'text')
        .addColumn('store_upload_id', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('cleanup', 'text', (c) => c.notNull())
        .addColumn('cleanup_attempts', 'bigint', (c) => c.notNull())
        .addColumn('cleanup_error', 'text')
        .addColumn('tus_offset', 'bigint', (c) => c.notNull())
        .addColumn('tus_tail', 'text')
        .addColumn('tus_metadata', 'text')
        .addColumn('result_size', 'bigint')
        .addColumn('result_checksum', 'text')
        .addColumn('result_etag', 'text')
        .addColumn('error_code', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('completed_at', 'bigint')
        .execute();
      await db.schema.createIndex('upload_sessions_status_expires_idx').on('upload_sessions').columns(['status', 'expires_at']).execute();
      await db.schema.createIndex('upload_sessions_cleanup_idx').on('upload_sessions').columns(['cleanup', 'updated_at']).execute();
      await db.schema.createIndex('upload_sessions_client_idx').on('upload_sessions').columns(['client', 'created_at']).execute();
      await db.schema
        .createTable('upload_parts')
        .addColumn('session_id', 'text', (c) => c.notNull())
        .addColumn('part_number', 'bigint', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('md5', 'text', (c) => c.notNull())
        .addColumn('sha256', 'text', (c) => c.notNull())
        .addColumn('etag', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('upload_parts_pk', ['session_id', 'part_number'])
        .execute();
      await db.schema
        .createTable('telemetry_events')
        .addColumn('event_id', 'text', (c) => c.primaryKey())
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('event', 'text', (c) => c.notNull())
        .addColumn('key', 'text')
        .addColumn('size', 'bigint')
        .addColumn('duration_ms', 'double precision')
        .addColumn('run_id', 'text')
        .addColumn('outcome', 'text')
        .addColumn('detail', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('telemetry_client_created_idx').on('telemetry_events').columns(['client', 'created_at', 'event_id']).execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('telemetry_events').execute();
      await db.schema.dropTable('upload_parts').execute();
      await db.schema.dropTable('upload_sessions').execute();
    },
  },
  // Daily client reports, a lease so only one gateway sweeps at a time,
  // and an index for status-filtered listings of one client.
  '0003_records': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('client_reports')
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('date', 'text', (c) => c.notNull())
        .addColumn('files_uploaded', 'bigint', (c) => c.notNull())
        .addColumn('bytes', 'bigint', (c) => c.notNull())
        .addColumn('failures', 'bigint', (c) => c.notNull())
        .addColumn('queue_depth', 'bigint', (c) => c.notNull())
        .addColumn('agent_version', 'text')
        .addColumn('host', 'text')
        .addColumn('received_at', 'bigint', (c) => c.notNull())
        .addColumn('first_received_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('client_reports_pk', ['client', 'date'])
        .execute();
      await db.schema.createIndex('client_reports_received_idx').on('client_reports').columns(['client', 'received_at']).execute();
      await db.schema
        .createTable('leases')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('holder', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('runs_client_status_created_idx').on('runs').columns(['client', 'status', 'created_at', 'run_id']).execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropIndex('runs_client_status_created_idx').execute();
      await db.schema.dropTable('leases').execute();
      await db.schema.dropTable('client_reports').execute();
    },
  },
  // The current state of each stored key (runs are the history of attempts):
  // written in the step that publishes, read by /exists, /download and retention.
  // Filled from the latest successful, undeleted run of every key.
  '0004_objects': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('objects')
        .addColumn('object_key', 'text', (c) => c.primaryKey())
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('path', 'text', (c) => c.notNull())
        .addColumn('size', 'bigint', (c) => c.notNull())
        .addColumn('sha256', 'text')
        .addColumn('checksum', 'text', (c) => c.notNull())
        .addColumn('checksum_algorithm', 'text', (c) => c.notNull())
        .addColumn('chunk_size', 'bigint')
        .addColumn('content_type', 'text')
        .addColumn('uploaded_at', 'bigint', (c) => c.notNull())
        .addColumn('run_id', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('objects_client_path_idx').on('objects').columns(['client', 'path']).execute();
      await sql`
        insert into objects (object_key, client, path, size, sha256, checksum, checksum_algorithm, chunk_size, content_type, uploaded_at, run_id)
        select r.object_key, r.client, r.path, r.size, r.sha256, r.sha256, 'sha256', null, r.content_type, r.finished_at, r.run_id
        from runs r
        where r.status = 'succeeded' and r.deleted_at is null and r.sha256 is not null and r.size is not null and r.finished_at is not null
          and not exists (
            select 1 from runs r2
            where r2.object_key = r.object_key and r2.status = 'succeeded' and r2.deleted_at is null
              and (r2.finished_at > r.finished_at or (r2.finished_at = r.finished_at and r2.run_id > r.run_id))
          )
      `.execute(db);
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('objects').execute();
    },
  },
  // A chunk is claimed before it is written, so two requests never write one part at once.
  '0005_part_claims': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .alterTable('upload_parts')
        .addColumn('state', 'text', (c) => c.notNull().defaultTo('stored'))
        .execute();
      await db.schema.alterTable('upload_parts').addColumn('claimed_at', 'bigint').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable('upload_parts').dropColumn('claimed_at').execute();
      await db.schema.alterTable('upload_parts').dropColumn('state').execute();
    },
  },
  // Open runs know who streams them and when they lapse, so a crash or an unused
  // direct key never leaves a run open for good.
  '0006_run_owners': {
    async up(db: Kysely<unknown>) {
      await db.schema.alterTable('runs').addColumn('owner', 'text').execute();
      await db.schema.alterTable('runs').addColumn('expires_at', 'bigint').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.alterTable('runs').dropColumn('expires_at').execute();
      await db.schema.alterTable('runs').dropColumn('owner').execute();
    },
  },
  // Rollups the admin dashboard reads at any number of records, kept by triggers
  // in the same transaction as the rows they count: uploads and bytes per hour
  // (of created_at), client, status and error code; objects and bytes stored per
  // client. Filled from what is there.
  '0007_admin_rollups': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('run_stats')
        .addColumn('bucket', 'bigint', (c) => c.notNull())
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull())
        .addColumn('error_code', 'text', (c) => c.notNull())
        .addColumn('uploads', 'bigint', (c) => c.notNull())
        .addColumn('bytes', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('run_stats_pk', ['bucket', 'client', 'status', 'error_code'])
        .execute();
      await db.schema
        .createTable('client_storage')
        .addColumn('client', 'text', (c) => c.primaryKey())
        .addColumn('objects', 'bigint', (c) => c.notNull())
        .addColumn('bytes', 'bigint', (c) => c.notNull())
        .execute();
      const bump = (row: 'new' | 'old', sign: '+' | '-') =>
        `insert into run_stats (bucket, client, status, error_code, uploads, bytes)
         values ((${row}.created_at / 3600000) * 3600000, ${row}.client, ${row}.status, coalesce(${row}.error_code, ''), ${sign}1, ${sign}coalesce(${row}.size, 0))
         on conflict (bucket, client, status, error_code)
         do update set uploads = run_stats.uploads + excluded.uploads, bytes = run_stats.bytes + excluded.bytes;`;
      const store = (row: 'new' | 'old', sign: '+' | '-') =>
        `insert into client_storage (client, objects, bytes) values (${row}.client, ${sign}1, ${sign}${row}.size)
         on conflict (client) do update set objects = client_storage.objects + excluded.objects, bytes = client_storage.bytes + excluded.bytes;`;
      const changed = `old.status <> new.status or old.client <> new.client or old.created_at <> new.created_at
        or coalesce(old.size, -1) <> coalesce(new.size, -1) or coalesce(old.error_code, '') <> coalesce(new.error_code, '')`;
      if (db.getExecutor().adapter instanceof SqliteAdapter) {
        await sql.raw(`create trigger runs_stats_ins after insert on runs begin ${bump('new', '+')} end`).execute(db);
        await sql.raw(`create trigger runs_stats_del after delete on runs begin ${bump('old', '-')} end`).execute(db);
        await sql.raw(`create trigger runs_stats_upd after update on runs when ${changed} begin ${bump('old', '-')} ${bump('new', '+')} end`).execute(db);
        await sql.raw(`create trigger objects_storage_ins after insert on objects begin ${store('new', '+')} end`).execute(db);
        await sql.raw(`create trigger objects_storage_del after delete on objects begin ${store('old', '-')} end`).execute(db);
        await sql
          .raw(`create trigger objects_storage_upd after update on objects when old.size <> new.size or old.client <> new.client
                begin ${store('old', '-')} ${store('new', '+')} end`)
          .execute(db);
      } else {
        await sql
          .raw(`create function s3up_run_stats() returns trigger language plpgsql as $$
                begin
                  if tg_op in ('UPDATE', 'DELETE') then ${bump('old', '-')} end if;
                  if tg_op in ('UPDATE', 'INSERT') then ${bump('new', '+')} end if;
                  return null;
                end $$`)
          .execute(db);
        await sql.raw('create trigger runs_stats_ins_del after insert or delete on runs for each row execute function s3up_run_stats()').execute(db);
        await sql.raw(`create trigger runs_stats_upd after update on runs for each row when (${changed}) execute function s3up_run_stats()`).execute(db);
        await sql
          .raw(`create function s3up_client_storage() returns trigger language plpgsql as $$
                begin
                  if tg_op in ('UPDATE', 'DELETE') then ${store('old', '-')} end if;
                  if tg_op in ('UPDATE', 'INSERT') then ${store('new', '+')} end if;
                  return null;
                end $$`)
          .execute(db);
        await sql
          .raw('create trigger objects_storage_ins_del after insert or delete on objects for each row execute function s3up_client_storage()')
          .execute(db);
        await sql
          .raw(`create trigger objects_storage_upd after update on objects for each row
                when (old.size <> new.size or old.client <> new.client) execute function s3up_client_storage()`)
          .execute(db);
      }
      await sql`
        insert into run_stats (bucket, client, status, error_code, uploads, bytes)
        select (created_at / 3600000) * 3600000, client, status, coalesce(error_code, ''), count(*), sum(coalesce(size, 0))
        from runs group by (created_at / 3600000) * 3600000, client, status, coalesce(error_code, '')
      `.execute(db);
      await sql`insert into client_storage (client, objects, bytes) select client, count(*), sum(size) from objects group by client`.execute(db);
    },
    async down(db: Kysely<unknown>) {
      const sqlite = db.getExecutor().adapter instanceof SqliteAdapter;
      for (const t of sqlite
        ? ['runs_stats_ins', 'runs_stats_del', 'runs_stats_upd', 'objects_storage_ins', 'objects_storage_del', 'objects_storage_upd']
        : []) {
        await sql.raw(`drop trigger if exists ${t}`).execute(db);
      }
      if (!sqlite) {
        await sql.raw('drop trigger if exists runs_stats_ins_del on runs').execute(db);
        await sql.raw('drop trigger if exists runs_stats_upd on runs').execute(db);
        await sql.raw('drop trigger if exists objects_storage_ins_del on objects').execute(db);
        await sql.raw('drop trigger if exists objects_storage_upd on objects').execute(db);
        await sql.raw('drop function if exists s3up_run_stats()').execute(db);
        await sql.raw('drop function if exists s3up_client_storage()').execute(db);
      }
      await db.schema.dropTable('client_storage').execute();
      await db.schema.dropTable('run_stats').execute();
    },
  },
  // Upload tokens revoked before their expiry (by id); kept until they would have expired.
  '0008_revoked_tokens': {
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('revoked_tokens')
        .addColumn('token_id', 'text', (c) => c.notNull())
        .addColumn('client', 'text', (c) => c.notNull())
        .addColumn('revoked_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addPrimaryKeyConstraint('revoked_tokens_pk', ['token_id', 'client'])
        .execute();
      await db.schema.createIndex('revoked_tokens_expires').on('revoked_tokens').column('expires_at').execute();
    },
    async down(db: Kysely<unknown>) {
      await db.schema.dropTable('revoked_tokens').execute();
    },
  },
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return migrations;
  },
};
