import assert from 'node:assert/strict';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chunkSizeFor, compositeChecksum } from '../src/uploads/resumable.js';
import { createPgDatabase, type PgDatabase, pgSkip } from './helpers/pg.js';
import { chunkOf, complete, composite, download, init, initUpload, MiB, md5b64, random, sendChunk, sha256hex, status, tempDir } from './helpers/resumable.js';
import { type S3rverProcess, startS3rver } from './helpers/s3rver.js';
import { BACKENDS, type Backend, type DbKind, startTestServer, type TestServer } from './helpers/server.js';

/** Three chunks on either backend: 1 MiB chunks on fs, 5 MiB (S3 minimum) on s3. */
function sizeFor(backend: Backend): number {
  return backend === 's3' ? 11 * MiB : Math.floor(2.5 * MiB);
}

function stagingFiles(t: TestServer): string[] {
  const dir = path.join(t.dir, 'uploads', '.s3up-tmp', 'multipart');
  return existsSync(dir) ? readdirSync(dir) : [];
}

describe('chunk sizing', () => {
  it('follows spec 004, raises to 5 MiB on S3 and keeps parts <= 10,000', () => {
    assert.equal(chunkSizeFor(10 * MiB, 'fs'), MiB);
    assert.equal(chunkSizeFor(50 * MiB, 'fs'), 5 * MiB);
    assert.equal(chunkSizeFor(500 * MiB, 'fs'), 10 * MiB);
    assert.equal(chunkSizeFor(10 * MiB, 's3'), 5 * MiB);
    const huge = 200 * 1024 * MiB; // 200 GiB
    const c = chunkSizeFor(huge, 's3');
    assert.ok(Math.ceil(huge / c) <= 10_000, `${Math.ceil(huge / c)} parts`);
    assert.equal(c % MiB, 0);
  });
  it('honours a client chunk_size only within the store rules', async () => {
    const t = await startTestServer({ backend: 'fs' });
    try {
      const eng = t.server.app.resumable;
      assert.equal(eng.negotiateChunkSize(1024 * MiB, 8 * MiB), 8 * MiB);
      assert.equal(eng.negotiateChunkSize(1024 * MiB, 8 * MiB + 1), 10 * MiB);
      assert.equal(eng.negotiateChunkSize(20_000 * MiB, MiB), 10 * MiB);
      const s = await init(t, 'alice', 'pref.bin', 50 * MiB, { chunk_size: 8 * MiB });
      assert.equal(s.chunk_size, 8 * MiB);
      assert.equal(s.total_chunks, 7);
    } finally {
      await t.stop();
    }
  });
  it('composite checksum is SHA-256 over the raw chunk digests', () => {
    const a = Buffer.from('hello ');
    const b = Buffer.from('world');
    const expected = composite(Buffer.concat([a, b]), 6);
    assert.equal(compositeChecksum([sha256hex(a), sha256hex(b)]), expected);
    // The worked example of docs/resumable-uploads.md.
    assert.equal(expected, '66189ed7991e1e0fce065399c5ca05fc15c281865a7a2991bdd667c1466a91a4-2');
  });
});

for (const backend of BACKENDS) {
  describe(`chunked uploads (${backend}, sqlite)`, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ backend });
    });
    after(async () => {
      await t.stop();
    });

    it('takes chunks out of order and in parallel, and assembles the exact file', async () => {
      const data = random(sizeFor(backend));
      const sum = sha256hex(data);
      const s = await init(t, 'alice', 'big/ooo.bin', data.length, { content_type: 'application/x-test' });
      assert.equal(s.total_chunks, 3);
      assert.equal(s.chunk_size, backend === 's3' ? 5 * MiB : MiB);
      assert.ok(Date.parse(s.expires_at) > Date.now() + 23 * 3600 * 1000);
      const results = await Promise.all([3, 1, 2].map((n) => sendChunk(t, 'alice', s.file_id, n, chunkOf(data, s.chunk_size, n))));
      for (const r of results) assert.equal(r.status, 200, await r.clone().text());
      const st = (await (await status(t, 'alice', s.file_id)).json()) as { uploaded_chunks: number[]; missing: number[]; bytes_received: number };
      assert.deepEqual(st.uploaded_chunks, [1, 2, 3]);
      assert.deepEqual(st.missing, []);
      assert.equal(st.bytes_received, data.length);
      const done = await complete(t, 'alice', s.file_id);
      assert.equal(done.status, 200);
      const body = (await done.json()) as { s3_key: string; size: number; checksum: string; status: string };
      assert.equal(body.status, 'completed');
      assert.equal(body.size, data.length);
      assert.equal(body.s3_key, 'backups/alice/big/ooo.bin');
      assert.equal(body.checksum, composite(data, s.chunk_size));
      const got = await download(t, 'alice', 'big/ooo.bin');
      assert.equal(got.status, 200);
      assert.equal(sha256hex(got.body), sum);
      const run = await t.server.ctx.runs.get(s.run_id);
      assert.equal(run?.status, 'succeeded');
      assert.equal(run?.kind, 'chunked');
      if (backend === 'fs') assert.deepEqual(stagingFiles(t), []);
    });

    it('accepts a duplicate chunk idempotently and refuses a bad MD5 without recording it', async () => {
      const data = random(sizeFor(backend));
      const s = await init(t, 'alice', 'big/dup.bin', data.length);
      const c1 = chunkOf(data, s.chunk_size, 1);
      assert.equal((await sendChunk(t, 'alice', s.file_id, 1, c1)).status, 200);
      const again = await sendChunk(t, 'alice', s.file_id, 1, c1);
      assert.equal(again.status, 200);
      assert.equal(((await again.json()) as { status: string }).status, 'duplicate');
      // Same bytes without an MD5: rewritten harmlessly, still one chunk.
      const noMd5 = await sendChunk(t, 'alice', s.file_id, 1, c1, null);
      assert.equal(noMd5.status, 200);
      assert.equal(((await noMd5.json()) as { status: string }).status, 'duplicate');

      const c2 = chunkOf(data, s.chunk_size, 2);
      const badSha = await fetch(`${t.url}/upload/chunked/${s.file_id}/chunk?chunk_number=2`, {
        method: 'POST',
        headers: { ...t.auth('alice'), 'content-type': 'application/octet-stream', 'x-checksum-sha256': sha256hex(Buffer.from('no')) },
        body: c2,
      });
      assert.equal(badSha.status, 400);
      assert.equal(((await badSha.json()) as { error_code: string }).error_code, 'CHECKSUM_MISMATCH');
      const bad = await sendChunk(t, 'alice', s.file_id, 2, c2, md5b64(Buffer.from('not this')));
      assert.equal(bad.status, 400);
      assert.equal(((await bad.json()) as { error_code: string }).error_code, 'CHECKSUM_MISMATCH');
      const st = (await (await status(t, 'alice', s.file_id)).json()) as { uploaded_chunks: number[]; missing: number[]; bytes_received: number };
      assert.deepEqual(st.uploaded_chunks, [1]);
      assert.deepEqual(st.missing, [2, 3]);
      assert.equal(st.bytes_received, c1.length);

      // The spec's multipart form: chunk_number, chunk_md5, then the chunk.
      const form = new FormData();
      form.append('chunk_number', '2');
      form.append('chunk_md5', md5b64(c2));
      form.append('chunk', new Blob([c2]), 'chunk');
      const viaForm = await fetch(`${t.url}/upload/chunked/${s.file_id}/chunk`, { method: 'POST', headers: t.auth('alice'), body: form });
      assert.equal(viaForm.status, 200, await viaForm.clone().text());
      assert.equal(((await viaForm.json()) as { status: string }).status, 'received');

      // A chunk of the wrong length is refused before it is stored.
      const short = await sendChunk(t, 'alice', s.file_id, 3, chunkOf(data, s.chunk_size, 3).subarray(1));
      assert.equal(short.status, 400);
      assert.equal(((await short.json()) as { error_code: string }).error_code, 'SIZE_MISMATCH');

      // Missing chunk at complete: 409 with the list.
      const inc = await complete(t, 'alice', s.file_id);
      assert.equal(inc.status, 409);
      const incBody = (await inc.json()) as { error_code: string; missing: number[] };
      assert.equal(incBody.error_code, 'INCOMPLETE_UPLOAD');
      assert.deepEqual(incBody.missing, [3]);
      assert.equal((await download(t, 'alice', 'big/dup.bin')).status, 404);

      assert.equal((await sendChunk(t, 'alice', s.file_id, 3, chunkOf(data, s.chunk_size, 3))).status, 200);
      assert.equal((await complete(t, 'alice', s.file_id)).status, 200);
      assert.equal(sha256hex((await download(t, 'alice', 'big/dup.bin')).body), sha256hex(data));
    });

    it('scopes sessions to their client and validates input', async () => {
      const s = await init(t, 'alice', 'mine.bin', 10);
      const other = await status(t, 'bob', s.file_id);
      assert.equal(other.status, 404);
      assert.equal((await sendChunk(t, 'bob', s.file_id, 1, Buffer.alloc(10))).status, 404);
      assert.equal((await complete(t, 'bob', s.file_id)).status, 404);
      assert.equal((await fetch(`${t.url}/upload/chunked/${s.file_id}`, { method: 'DELETE', headers: t.auth('bob') })).status, 404);
      const out = await sendChunk(t, 'alice', s.file_id, 2, Buffer.alloc(10));
      assert.equal(out.status, 400);
      assert.equal(((await out.json()) as { error_code: string }).error_code, 'CHUNK_OUT_OF_RANGE');
      const traversal = await initUpload(t, 'alice', { path: '../bob/x', file_size: 10 });
      assert.equal(traversal.status, 400);
      assert.equal(((await traversal.json()) as { error_code: string }).error_code, 'INVALID_PATH');
      const tooBig = await initUpload(t, 'alice', { path: 'huge.bin', file_size: 101 * MiB });
      assert.equal(tooBig.status, 413);
      const noAuth = await fetch(`${t.url}/upload/chunked/${s.file_id}/status`);
      assert.equal(noAuth.status, 401);
    });

    it('verifies a declared composite checksum, and two concurrent completes make one object', async () => {
      const data = random(sizeFor(backend));
      const cs = chunkSizeFor(data.length, backend);
      const wrong = await init(t, 'alice', 'sum/wrong.bin', data.length, { checksum: composite(random(data.length), cs) });
      for (let n = 1; n <= wrong.total_chunks; n++) await sendChunk(t, 'alice', wrong.file_id, n, chunkOf(data, cs, n));
      const bad = await complete(t, 'alice', wrong.file_id);
      assert.equal(bad.status, 400);
      assert.equal(((await bad.json()) as { error_code: string }).error_code, 'CHECKSUM_MISMATCH');
      assert.equal((await download(t, 'alice', 'sum/wrong.bin')).status, 404);

      const s = await init(t, 'alice', 'sum/right.bin', data.length, { checksum: composite(data, cs) });
      for (let n = 1; n <= s.total_chunks; n++) await sendChunk(t, 'alice', s.file_id, n, chunkOf(data, cs, n));
      const [a, b] = await Promise.all([complete(t, 'alice', s.file_id), complete(t, 'alice', s.file_id)]);
      const statuses = [a.status, b.status].sort();
      assert.ok((statuses[0] === 200 && statuses[1] === 200) || (statuses[0] === 200 && statuses[1] === 409), `statuses ${statuses.join(',')}`);
      const bodies = [await a.json(), await b.json()] as Array<{ checksum?: string; error_code?: string }>;
      for (const body of bodies) if (body.checksum) assert.equal(body.checksum, composite(data, cs));
      assert.equal(sha256hex((await download(t, 'alice', 'sum/right.bin')).body), sha256hex(data));
      const runs = await t.server.ctx.db.db.selectFrom('runs').selectAll().where('object_key', '=', 'backups/alice/sum/right.bin').execute();
      assert.equal(runs.length, 1);
      assert.equal(runs[0]?.status, 'succeeded');
      // Completing again later returns the same result.
      const again = await complete(t, 'alice', s.file_id);
      assert.equal(again.status, 200);
    });

    it('aborts, and expires idle sessions through the sweeper', async () => {
      const data = random(sizeFor(backend));
      const s = await init(t, 'alice', 'gone/aborted.bin', data.length);
      assert.equal((await sendChunk(t, 'alice', s.file_id, 1, chunkOf(data, s.chunk_size, 1))).status, 200);
      const del = await fetch(`${t.url}/upload/chunked/${s.file_id}`, { method: 'DELETE', headers: t.auth('alice') });
      assert.equal(del.status, 200);
      const delBody = (await del.json()) as { status: string; store_cleanup: string };
      assert.equal(delBody.status, 'aborted');
      // s3rver cannot abort multipart uploads: the record says so and the sweeper retries.
      assert.equal(delBody.store_cleanup, backend === 's3' ? 'pending' : 'done');
      assert.equal((await sendChunk(t, 'alice', s.file_id, 2, chunkOf(data, s.chunk_size, 2))).status, 404);
      assert.equal((await t.server.ctx.runs.get(s.run_id))?.error_code, 'UPLOAD_ABORTED');

      const staged = stagingFiles(t).length;
      const e = await init(t, 'alice', 'gone/expired.bin', data.length);
      assert.equal((await sendChunk(t, 'alice', e.file_id, 1, chunkOf(data, e.chunk_size, 1))).status, 200);
      if (backend === 'fs') assert.equal(stagingFiles(t).length, staged + 1);
      const dry = await t.server.ctx.sweeper.sweep({ dryRun: true, now: Date.now() + 25 * 3600 * 1000 });
      const expiredDue = dry.tasks.find((x) => x.name === 'abort-expired-sessions')?.removed ?? 0;
      assert.ok(expiredDue >= 1, JSON.stringify(dry.tasks));
      // The retention sweeper (issue 4) runs the engine's sweep as one of its tasks.
      const report = await t.server.ctx.sweeper.sweep({ now: Date.now() + 25 * 3600 * 1000 });
      const task = report.tasks.find((x) => x.name === 'abort-expired-sessions');
      assert.ok(task && !task.error && task.removed >= 1, JSON.stringify(report.tasks));
      const swept = { expired: expiredDue };
      const st = (await (await status(t, 'alice', e.file_id)).json()) as { status: string; store_cleanup: string };
      assert.equal(st.status, 'expired');
      assert.equal(st.store_cleanup, backend === 's3' ? 'pending' : 'done');
      if (backend === 'fs') assert.equal(stagingFiles(t).length, staged + 1 - swept.expired);
      const late = await sendChunk(t, 'alice', e.file_id, 2, chunkOf(data, e.chunk_size, 2));
      assert.equal(late.status, 410);
      assert.equal(((await late.json()) as { error_code: string }).error_code, 'SESSION_EXPIRED');
      const run = await t.server.ctx.runs.get(e.run_id);
      assert.equal(run?.status, 'failed');
      assert.equal(run?.error_code, 'SESSION_EXPIRED');
      const row = await t.server.ctx.db.db.selectFrom('upload_sessions').selectAll().where('session_id', '=', e.file_id).executeTakeFirstOrThrow();
      if (backend === 's3') {
        assert.match(row.cleanup_error ?? '', /cannot abort/);
        // The sweeper retries the pending abort on its next pass and records the attempt.
        await t.server.app.resumable.sweepExpired(Date.now() + 26 * 3600 * 1000);
        const again = await t.server.ctx.db.db.selectFrom('upload_sessions').selectAll().where('session_id', '=', e.file_id).executeTakeFirstOrThrow();
        assert.ok(again.cleanup_attempts > row.cleanup_attempts);
      }
    });
  });
}

/** Two gateways (or one restarted) on one database and one store. */
async function shared(
  backend: Backend,
  db: DbKind,
): Promise<{ dir: string; databaseUrl: string; s3rver?: S3rverProcess; pg?: PgDatabase; cleanup(): Promise<void> }> {
  const dir = tempDir();
  let pg: PgDatabase | undefined;
  let databaseUrl = `sqlite:${path.join(dir, 's3up.db')}`;
  if (db === 'postgres') {
    pg = await createPgDatabase();
    databaseUrl = pg.url;
  }
  const s3rver = backend === 's3' ? await startS3rver() : undefined;
  return {
    dir,
    databaseUrl,
    s3rver,
    pg,
    async cleanup() {
      await s3rver?.stop();
      await pg?.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function gateway(backend: Backend, env: Awaited<ReturnType<typeof shared>>): Promise<TestServer> {
  return startTestServer({
    backend,
    databaseUrl: env.databaseUrl,
    s3rver: env.s3rver,
    extra: { storage: { backend, fs: { root: path.join(env.dir, 'uploads') } } },
  });
}

const matrix: Array<{ backend: Backend; db: DbKind }> = [
  { backend: 'fs', db: 'sqlite' },
  { backend: 's3', db: 'sqlite' },
  { backend: 'fs', db: 'postgres' },
  { backend: 's3', db: 'postgres' },
];

for (const { backend, db } of matrix) {
  describe(`chunked uploads across gateways (${backend}, ${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    it('continues an upload after a gateway restart', async () => {
      const env = await shared(backend, db);
      try {
        const data = random(sizeFor(backend));
        const first = await gateway(backend, env);
        const s = await init(first, 'alice', 'restart/file.bin', data.length);
        assert.equal((await sendChunk(first, 'alice', s.file_id, 2, chunkOf(data, s.chunk_size, 2))).status, 200);
        await first.stop();
        const second = await gateway(backend, env);
        try {
          const st = (await (await status(second, 'alice', s.file_id)).json()) as { missing: number[] };
          assert.deepEqual(st.missing, [1, 3]);
          for (const n of [1, 3]) assert.equal((await sendChunk(second, 'alice', s.file_id, n, chunkOf(data, s.chunk_size, n))).status, 200);
          assert.equal((await complete(second, 'alice', s.file_id)).status, 200);
          assert.equal(sha256hex((await download(second, 'alice', 'restart/file.bin')).body), sha256hex(data));
        } finally {
          await second.stop();
        }
      } finally {
        await env.cleanup();
      }
    });

    // Several gateways share PostgreSQL (SQLite is one gateway's embedded database).
    if (db !== 'postgres') return;
    it('lets two gateways on one PostgreSQL take alternate chunks of one upload', async () => {
      const env = await shared(backend, db);
      try {
        const data = random(sizeFor(backend));
        const [a, b] = await Promise.all([gateway(backend, env), gateway(backend, env)]);
        try {
          const s = await init(a, 'alice', 'shared/file.bin', data.length);
          const sends = [1, 2, 3].map((n) => sendChunk(n % 2 === 1 ? a : b, 'alice', s.file_id, n, chunkOf(data, s.chunk_size, n)));
          for (const r of await Promise.all(sends)) assert.equal(r.status, 200);
          const st = (await (await status(a, 'alice', s.file_id)).json()) as { uploaded_chunks: number[] };
          assert.deepEqual(st.uploaded_chunks, [1, 2, 3]);
          const [ca, cb] = await Promise.all([complete(b, 'alice', s.file_id), complete(a, 'alice', s.file_id)]);
          assert.ok([ca.status, cb.status].includes(200));
          assert.equal(sha256hex((await download(a, 'alice', 'shared/file.bin')).body), sha256hex(data));
          assert.equal(sha256hex((await download(b, 'alice', 'shared/file.bin')).body), sha256hex(data));
        } finally {
          await Promise.all([a.stop(), b.stop()]);
        }
      } finally {
        await env.cleanup();
      }
    });
  });
}
