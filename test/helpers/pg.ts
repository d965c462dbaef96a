import { randomBytes } from 'node:crypto';
import pg from 'pg';

/**
 * PostgreSQL for tests. .ci/run starts a server and sets S3UP_TEST_PG_URL (an
 * admin URL); each suite gets a fresh database. In CI a missing server is a
 * failure, never a skip; on a developer machine without it the PostgreSQL
 * cases are skipped with this reason.
 */
export const PG_ADMIN_URL = process.env.S3UP_TEST_PG_URL;

export const pgSkip: string | false = PG_ADMIN_URL ? false : process.env.CI ? false : 'PostgreSQL not configured: set S3UP_TEST_PG_URL (see README, Testing)';

export interface PgDatabase {
  url: string;
  drop(): Promise<void>;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

export async function createPgDatabase(): Promise<PgDatabase> {
  if (!PG_ADMIN_URL) throw new Error('S3UP_TEST_PG_URL is not set: PostgreSQL tests cannot run');
  const name = `s3up_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return {
    url: withDatabase(PG_ADMIN_URL, name),
    async drop() {
      const c = new pg.Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}
