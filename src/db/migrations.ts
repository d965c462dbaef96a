import type { Kysely, Migration, MigrationProvider } from 'kysely';

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
  // Issue 4: daily client reports, a lease so only one gateway sweeps at a time,
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
};

export const migrationProvider: MigrationProvider = {
  async getMigrations() {
    return migrations;
  },
};
