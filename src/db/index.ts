import { mkdirSync } from 'node:fs';
import path from 'node:path';
import type SQLite from 'better-sqlite3';
import { Kysely, Migrator, PostgresDialect, type PostgresPool, type SqliteDatabase, SqliteDialect, sql } from 'kysely';
import { migrationProvider } from './migrations.js';
import type { Database } from './schema.js';
import { sqliteDriver } from './sqlite-driver.js';

export type Dialect = 'sqlite' | 'postgres';

export interface Db<T = Database> {
  db: Kysely<T>;
  dialect: Dialect;
  close(): Promise<void>;
}

const INT8_OID = 20;
const NUMERIC_OID = 1700;

/** Redact the password from a database URL so it can be logged. */
export function redactUrl(url: string): string {
  return url.replace(/(\/\/[^:/@]+:)[^@]*@/, '$1***@');
}

/**
 * Kysely prepares every statement anew; better-sqlite3 statements are reusable
 * (all calls are synchronous), so keep the most recent ones by SQL text. The
 * gateway issues a handful of distinct statements per upload.
 */
function withStatementCache(sqlite: SQLite.Database, max = 512): SqliteDatabase {
  const cache = new Map<string, SQLite.Statement>();
  return {
    close: () => sqlite.close(),
    prepare(text: string) {
      let stmt = cache.get(text);
      if (stmt === undefined) {
        stmt = sqlite.prepare(text);
        if (cache.size >= max) cache.delete(cache.keys().next().value as string);
        cache.set(text, stmt);
      }
      return stmt;
    },
  };
}

/**
 * Open the database at `url` (sqlite:<file> or postgres://). Only the driver
 * the URL needs is loaded: a SQLite gateway never loads pg, and the reverse.
 * `T` is the schema (the gateway's by default; the push state has its own).
 */
export async function openDatabase<T = Database>(url: string, opts: { poolSize?: number } = {}): Promise<Db<T>> {
  if (url.startsWith('sqlite:')) {
    const file = url.slice('sqlite:'.length);
    if (file !== ':memory:') mkdirSync(path.dirname(file), { recursive: true });
    const SQLiteDatabase = sqliteDriver();
    const sqlite = new SQLiteDatabase(file);
    // WAL: readers never block the writer; NORMAL sync is durable across
    // process crashes (a power cut may lose the last transactions, not corrupt).
    sqlite.pragma('journal_mode = WAL');
    sqlite.pragma('synchronous = NORMAL');
    sqlite.pragma('busy_timeout = 5000');
    sqlite.pragma('foreign_keys = ON');
    const db = new Kysely<T>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
    return { db, dialect: 'sqlite', close: () => db.destroy() };
  }
  const { default: pg } = await import('pg');
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.poolSize ?? 10,
    // bigint columns hold milliseconds and byte counts, all well below 2^53.
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === INT8_OID || oid === NUMERIC_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format ?? 'text')) as typeof pg.types.getTypeParser,
    },
  });
  // An idle client that loses its connection must not crash the process.
  pool.on('error', () => {});
  // Errors are told apart at the driver's edge, by type: a failure to get a
  // connection, or a query failure that is not the server's answer (a
  // DatabaseError carries a SQLSTATE), means the connection is gone.
  const lost = (err: unknown): unknown => (err instanceof pg.DatabaseError ? err : new ConnectionLost(err));
  const tagged = {
    connect: async () => {
      const client = await pool.connect().catch((err: unknown) => {
        throw new ConnectionLost(err);
      });
      // A checked-out client whose socket fails (reset, closed) emits 'error'
      // besides failing its query; without a listener that would crash the
      // process. The query's rejection reports it; a broken client is
      // discarded on release, not handed out again.
      let broken = false;
      const onError = (): void => {
        broken = true;
      };
      client.on('error', onError);
      return {
        query: (text: string, params: unknown[]) =>
          client.query(text, params as unknown[]).catch((err: unknown) => {
            const tagged = lost(err);
            if (tagged instanceof ConnectionLost) broken = true;
            return Promise.reject(tagged);
          }),
        release: () => {
          client.removeListener('error', onError);
          client.release(broken);
        },
      };
    },
    end: () => pool.end(),
  };
  const db = new Kysely<T>({ dialect: new PostgresDialect({ pool: tagged as unknown as PostgresPool }) });
  return { db, dialect: 'postgres', close: () => db.destroy() };
}

export async function migrate(db: Kysely<Database>): Promise<string[]> {
  const migrator = new Migrator({ db, provider: migrationProvider });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error instanceof Error ? error : new Error(String(error));
  return (results ?? []).filter((r) => r.status === 'Success').map((r) => r.migrationName);
}

/** Prove the database accepts a write (used by /ready). */
export async function checkWritable(db: Kysely<Database>, instanceId: string): Promise<void> {
  const at = Date.now();
  await db
    .insertInto('heartbeat')
    .values({ id: instanceId, at })
    .onConflict((oc) => oc.column('id').doUpdateSet({ at }))
    .execute();
}

export { sql };

const SQLITE_UNAVAILABLE = /^SQLITE_(BUSY|LOCKED|FULL|IOERR|READONLY|CANTOPEN|CORRUPT|NOTADB|PERM)/;
// SQLSTATE classes and codes that mean "the database cannot serve us now".
const PG_UNAVAILABLE = /^(08...|57P0[123]|3D000|28000|28P01|53...|58...|XX000)$/;

/**
 * If `err` says the database is unreachable, full or read-only, return a short
 * code for it (never the connection string); otherwise undefined.
 */
export function databaseUnavailable(err: unknown): string | undefined {
  const e = err as { code?: unknown; message?: unknown; severity?: unknown } | null | undefined;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  if (code !== undefined && SQLITE_UNAVAILABLE.test(code)) return code;
  // pg errors carry a severity and a five-character SQLSTATE.
  if (code !== undefined && typeof e?.severity === 'string' && PG_UNAVAILABLE.test(code)) return `SQLSTATE ${code}`;
  // Only outbound connections are refused: the S3 client's failures are mapped before they get here.
  if (code === 'ECONNREFUSED' || code === 'ENOTFOUND' || code === 'EAI_AGAIN') return code;
  if (err instanceof ConnectionLost) return 'connection lost';
  return undefined;
}

/** The PostgreSQL connection could not be had or broke during a query (see openDatabase). */
export class ConnectionLost extends Error {
  constructor(cause: unknown) {
    super('the database connection was lost', { cause });
    this.name = 'ConnectionLost';
  }
}

type WriteOp = {
  op: (db: Kysely<Database>) => Promise<unknown>;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
};

/**
 * Group commit for SQLite: writes issued in the same turn of the event loop
 * run in one transaction, so many concurrent uploads share one WAL append and
 * commit (measured: 0.17 -> 0.04 CPU-ms per insert at 8 per batch). Each caller
 * still resolves only after the commit, with its own result or error; a
 * failing statement does not undo the others (SQLite rolls back only that
 * statement). PostgreSQL does not need it: its pool commits in parallel.
 */
export class WriteBatcher {
  private queue: WriteOp[] = [];
  private scheduled = false;

  constructor(private readonly db: Kysely<Database>) {}

  run<T>(op: (db: Kysely<Database>) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ op, resolve: resolve as (value: unknown) => void, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          void this.flush();
        });
      }
    });
  }

  private async flush(): Promise<void> {
    const batch = this.queue;
    this.queue = [];
    this.scheduled = false;
    const only = batch.length === 1 ? batch[0] : undefined;
    if (only) {
      only.op(this.db).then(only.resolve, only.reject);
      return;
    }
    const results: Array<{ ok: boolean; value: unknown }> = [];
    try {
      await this.db.transaction().execute(async (trx) => {
        for (const item of batch) {
          try {
            results.push({ ok: true, value: await item.op(trx) });
          } catch (err) {
            results.push({ ok: false, value: err });
          }
        }
      });
    } catch (err) {
      for (const item of batch) item.reject(err);
      return;
    }
    batch.forEach((item, i) => {
      const r = results[i];
      if (r?.ok) item.resolve(r.value);
      else item.reject(r?.value);
    });
  }
}
