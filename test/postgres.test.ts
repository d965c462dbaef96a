import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sql } from 'kysely';
import { bytes, multipart, put, request, sha256, storedObject } from './helpers/http.js';
import { createPgDatabase, type PgDatabase, pgSkip } from './helpers/pg.js';
import { type S3rverProcess, startS3rver } from './helpers/s3rver.js';
import { BACKENDS, startTestServer, type TestServer } from './helpers/server.js';

for (const backend of BACKENDS) {
  describe(`gateway on PostgreSQL (${backend})`, { skip: pgSkip }, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ backend, db: 'postgres', clients: [{ name: 'alice' }, { name: 'small', max_file_size_mb: 1 }] });
    });
    after(async () => {
      await t?.stop();
    });

    it('runs the migrations at start', async () => {
      assert.equal(t.server.ctx.db.dialect, 'postgres');
      const names = await sql<{ name: string }>`select name from kysely_migration order by name`.execute(t.server.ctx.db.db);
      assert.ok(names.rows.some((r) => r.name === '0001_runs'));
      const ready = await request(`${t.url}/ready`);
      assert.equal(ready.status, 200, ready.body.toString());
    });

    it('records a successful raw upload with numeric columns as numbers', async () => {
      const data = bytes(200_000);
      const res = await put(t, 'alice', 'pg/raw.bin', data, { 'content-type': 'text/csv' });
      assert.equal(res.status, 200, res.body.toString());
      const run = await t.server.ctx.runs.get(res.json().run_id as string);
      assert.ok(run);
      assert.equal(run.status, 'succeeded');
      assert.equal(run.kind, 'raw');
      assert.equal(run.client, 'alice');
      assert.equal(run.object_key, 'backups/alice/pg/raw.bin');
      assert.equal(run.size, data.length);
      assert.equal(typeof run.size, 'number');
      assert.equal(run.sha256, sha256(data));
      assert.equal(run.content_type, 'text/csv');
      assert.equal(typeof run.started_at, 'number');
      assert.equal(typeof run.finished_at, 'number');
      assert.equal(typeof run.total_ms, 'number');
      const ex = (await request(`${t.url}/exists?path=pg/raw.bin`, { headers: t.auth('alice') })).json();
      assert.equal(ex.exists, true);
      assert.equal(ex.sha256, sha256(data));
    });

    it('records a multipart upload and failures with their error code', async () => {
      const data = bytes(5000);
      const form = multipart([
        { name: 'path', value: 'pg/form.bin' },
        { name: 'file', filename: 'form.bin', data },
      ]);
      const ok = await request(`${t.url}/upload`, { method: 'POST', headers: { ...t.auth('alice'), 'content-type': form.contentType }, body: form.body });
      assert.equal(ok.status, 200);
      assert.equal((await t.server.ctx.runs.get(ok.json().run_id as string))?.kind, 'multipart');

      const bad = await put(t, 'alice', 'pg/form.bin', bytes(10), { 'x-checksum-sha256': sha256(data) });
      assert.equal(bad.status, 400);
      const failed = await t.server.ctx.runs.get(bad.json().run_id as string);
      assert.equal(failed?.status, 'failed');
      assert.equal(failed?.error_code, 'CHECKSUM_MISMATCH');
      assert.deepEqual(await storedObject(t, 'backups/alice/pg/form.bin'), data);

      const big = await request(`${t.url}/objects/pg/big.bin`, { method: 'PUT', headers: t.auth('small'), body: bytes(2 * 1024 * 1024), chunked: true });
      assert.equal(big.status, 413);
      const tooBig = await t.server.ctx.runs.get(big.json().run_id as string);
      assert.equal(tooBig?.error_code, 'PAYLOAD_TOO_LARGE');
    });

    it('delete marks the run deleted', async () => {
      const res = (await put(t, 'alice', 'pg/del.bin', bytes(100))).json();
      assert.equal((await request(`${t.url}/objects/pg/del.bin`, { method: 'DELETE', headers: t.auth('alice') })).status, 200);
      assert.equal(typeof (await t.server.ctx.runs.get(res.run_id as string))?.deleted_at, 'number');
    });
  });
}

describe('two gateways on one PostgreSQL database', { skip: pgSkip }, () => {
  let db: PgDatabase;
  let s3: S3rverProcess;
  const servers: TestServer[] = [];
  before(async () => {
    db = await createPgDatabase();
    s3 = await startS3rver();
  });
  after(async () => {
    for (const s of servers.reverse()) await s.stop();
    await s3?.stop();
    await db?.drop();
  });

  it('start together on a fresh database (migrations do not collide)', async () => {
    const [a, b] = await Promise.all([startTestServer({ backend: 'fs', databaseUrl: db.url }), startTestServer({ backend: 'fs', databaseUrl: db.url })]);
    servers.push(a, b);
    const names = await sql<{ name: string }>`select name from kysely_migration`.execute(a.server.ctx.db.db);
    assert.equal(new Set(names.rows.map((r) => r.name)).size, names.rows.length);
  });

  for (const backend of BACKENDS) {
    it(`share uploads and records (${backend}, shared store)`, async () => {
      const a = await startTestServer({ backend, databaseUrl: db.url, s3rver: s3 });
      servers.push(a);
      // B serves the same store: the same fs root, or the same bucket.
      const b = await startTestServer({
        backend,
        databaseUrl: db.url,
        s3rver: s3,
        extra: backend === 'fs' ? { storage: { backend: 'fs', fs: { root: path.join(a.dir, 'uploads') } } } : {},
      });
      servers.push(b);
      const p = `shared-${backend}`;

      const one = bytes(100_000);
      const upA = await put(a, 'alice', `${p}/one.bin`, one);
      assert.equal(upA.status, 200);
      const exB = (await request(`${b.url}/exists?path=${p}/one.bin`, { headers: b.auth('alice') })).json();
      assert.equal(exB.exists, true);
      assert.equal(exB.size, one.length);
      assert.equal(exB.sha256, sha256(one), 'B sees the record A wrote');
      const runOnB = await b.server.ctx.runs.get(upA.json().run_id as string);
      assert.equal(runOnB?.status, 'succeeded');

      // Both serve uploads at the same time; each sees the other's records and bytes.
      const files = Array.from({ length: 8 }, () => bytes(20_000));
      const results = await Promise.all(files.map((f, i) => put(i % 2 ? b : a, 'alice', `${p}/many-${i}.bin`, f)));
      for (const [i, r] of results.entries()) {
        assert.equal(r.status, 200, r.body.toString());
        const other = i % 2 ? a : b;
        assert.equal((await other.server.ctx.runs.get(r.json().run_id as string))?.sha256, sha256(files[i] as Buffer));
        const dl = await request(`${other.url}/download?path=${p}/many-${i}.bin`, { headers: other.auth('alice') });
        assert.equal(dl.status, 200);
        assert.deepEqual(dl.body, files[i]);
        assert.equal(dl.headers.etag, `"${sha256(files[i] as Buffer)}"`);
      }

      // Overwrite on B: A describes the new bytes.
      const two = bytes(3000);
      assert.equal((await put(b, 'alice', `${p}/one.bin`, two)).status, 200);
      const exA = (await request(`${a.url}/exists?path=${p}/one.bin`, { headers: a.auth('alice') })).json();
      assert.equal(exA.sha256, sha256(two));

      // Delete on A: gone on B, and the record says so.
      assert.equal((await request(`${a.url}/objects/${p}/one.bin`, { method: 'DELETE', headers: a.auth('alice') })).status, 200);
      assert.equal((await request(`${b.url}/exists?path=${p}/one.bin`, { headers: b.auth('alice') })).json().exists, false);
      assert.equal(typeof (await b.server.ctx.runs.get(upA.json().run_id as string))?.deleted_at, 'number');
    });
  }
});
