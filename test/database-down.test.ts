// The database goes away under a running gateway: uploads are refused with
// 503 DATABASE_UNAVAILABLE before any byte is published, /ready names the
// failing check, and nothing secret (the connection string) reaches the client.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { createPgDatabase, PG_ADMIN_URL, type PgDatabase, pgSkip } from './helpers/pg.js';
import { startTestServer, type TestServer } from './helpers/server.js';

describe('database down (PostgreSQL dropped under the gateway)', { skip: pgSkip }, () => {
  let t: TestServer;
  let pgDb: PgDatabase;
  before(async () => {
    pgDb = await createPgDatabase();
    t = await startTestServer({ databaseUrl: pgDb.url });
  });
  after(async () => {
    await t?.stop();
    await pgDb?.drop();
  });

  it('answers 503 DATABASE_UNAVAILABLE, publishes nothing, and /ready fails on the database check', async () => {
    const ok = await fetch(`${t.url}/objects/before.txt`, { method: 'PUT', headers: t.auth('alice'), body: 'before' });
    assert.equal(ok.status, 200);

    // Terminate every session and remove the database: the pool's clients die, new ones cannot connect.
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    try {
      const name = new URL(pgDb.url).pathname.slice(1);
      await admin.query(`DROP DATABASE ${name} WITH (FORCE)`);
    } finally {
      await admin.end();
    }

    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${t.url}/objects/after-${i}.txt`, { method: 'PUT', headers: t.auth('alice'), body: 'after' });
      const body = (await res.json()) as { error_code: string; message: string; request_id: string };
      assert.equal(res.status, 503, JSON.stringify(body));
      assert.equal(body.error_code, 'DATABASE_UNAVAILABLE');
      assert.ok(body.request_id);
      assert.ok(!body.message.includes('postgres://'), body.message);
      assert.ok(!body.message.includes('s3up-test'), 'no password in the message');
      assert.equal(existsSync(path.join(t.dir, 'uploads', 'backups', 'alice', `after-${i}.txt`)), false);
    }
    // The object written before is still served from the store (records unavailable, bytes intact).
    const ready = await fetch(`${t.url}/ready`);
    assert.equal(ready.status, 503);
    const checks = ((await ready.json()) as { checks: Record<string, { status: string }> }).checks;
    assert.equal(checks.database?.status, 'fail');
    assert.equal(checks.storage?.status, 'ok');
  });
});
