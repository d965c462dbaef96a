// A resumable upload whose completion its gateway never finished: the session
// is not left `completing` for good. The sweeper settles it from the run and
// the store: bytes the store published are recorded (the session completes);
// a completion that published nothing reopens the session, and the client's
// next complete assembles the same parts.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import Database from 'better-sqlite3';
import { openDatabase } from '../src/db/index.js';
import { spawnBin } from './helpers/bin.js';
import { pgSkip } from './helpers/pg.js';
import { chunkOf, complete, composite, download, init, MiB, random, sendChunk, status } from './helpers/resumable.js';
import { type DbKind, startTestServer, sweepUntil, type TestServer } from './helpers/server.js';
import { assertNothingAcknowledgedLost, assertRecordsTellTheTruth, type Store } from './helpers/truth.js';

const SWEEPING = { uploads: { heartbeat_seconds: 1 }, retention: { enabled: true, ttl_days: 30, sweep_interval_minutes: 60 } };

/** The same test server, reached at another gateway's URL. */
const at = (t: TestServer, url: string): TestServer => ({ ...t, url });

async function until<T>(check: () => Promise<T | undefined>, what: string): Promise<T> {
  for (let i = 0; i < 600; i++) {
    const got = await check();
    if (got !== undefined) return got;
    await sleep(50);
  }
  throw new Error(`gave up waiting for ${what}`);
}

/** The session row and its run, read from the gateway's database. */
async function rows(databaseUrl: string, sessionId: string) {
  const db = await openDatabase(databaseUrl);
  try {
    const s = await db.db.selectFrom('upload_sessions').selectAll().where('session_id', '=', sessionId).executeTakeFirstOrThrow();
    const run = await db.db.selectFrom('runs').selectAll().where('run_id', '=', s.run_id).executeTakeFirstOrThrow();
    return { session: s, run };
  } finally {
    await db.close();
  }
}

/** Upload every chunk of `data` as one chunked session through `t`. */
async function uploadParts(t: TestServer, p: string, data: Buffer, chunkSize: number) {
  const up = await init(t, 'alice', p, data.length, { chunk_size: chunkSize });
  for (let n = 1; n <= up.total_chunks; n++) {
    const res = await sendChunk(t, 'alice', up.file_id, n, chunkOf(data, up.chunk_size, n));
    assert.equal(res.status, 200, await res.text());
  }
  return up;
}

describe('completions a gateway did not finish', () => {
  it('kill -9 after the store assembled the object and before the record: the sweeper records it and the session completes', async () => {
    const ts = await startTestServer({ backend: 's3', extra: SWEEPING });
    await ts.server.close();
    const a = spawnBin(['--config', ts.configPath, '--port', '0'], { cwd: ts.dir, timeoutMs: 60_000, env: { LOG_LEVEL: 'info' } });
    let b: ReturnType<typeof spawnBin> | undefined;
    let lock: Database.Database | undefined;
    const s3 = ts.s3rver;
    assert.ok(s3);
    try {
      const tA = at(ts, await a.listening);
      const data = random(11 * MiB + 4321);
      const up = await uploadParts(tA, 'stalled/assembled.bin', data, 5 * MiB);
      // The store stops answering: the completion waits inside CompleteMultipartUpload.
      s3.proc.kill('SIGSTOP');
      const completing = complete(tA, 'alice', up.file_id).catch(() => undefined);
      // Claimed, and its run names gateway A (both writes done).
      await until(async () => {
        const r = await rows(ts.databaseUrl, up.file_id);
        return r.session.status === 'completing' && Number(r.run.updated_at) === Number(r.session.updated_at) ? true : undefined;
      }, 'the completion to be claimed');
      // Now no record can be written: the database is locked by this test.
      lock = new Database(ts.databaseUrl.slice('sqlite:'.length));
      lock.exec('BEGIN IMMEDIATE');
      s3.proc.kill('SIGCONT');
      // The store assembles the object; the gateway cannot record it; then it dies.
      const s3c = new S3Client({
        endpoint: s3.endpoint,
        region: 'us-east-1',
        forcePathStyle: true,
        credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
      });
      await until(
        () =>
          s3c.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: up.s3_key })).then(
            () => true,
            () => undefined,
          ),
        'the store to publish',
      );
      s3c.destroy();
      a.proc.kill('SIGKILL');
      await a.exited;
      await completing;
      lock.exec('ROLLBACK');
      lock.close();
      lock = undefined;
      const before = await rows(ts.databaseUrl, up.file_id);
      assert.equal(before.session.status, 'completing', 'the gateway died with the session claimed');
      assert.equal(before.run.status, 'processing');

      b = spawnBin(['--config', ts.configPath, '--port', '0'], { cwd: ts.dir, timeoutMs: 60_000, env: { LOG_LEVEL: 'info' } });
      const tB = at(ts, await b.listening);
      const settled = await sweepUntil(
        tB.url,
        async () => {
          const r = await rows(ts.databaseUrl, up.file_id);
          return r.session.status === 'completing' ? undefined : r;
        },
        'the stalled completion to settle',
      );
      assert.equal(settled.session.status, 'completed');
      assert.equal(settled.run.status, 'succeeded');
      // The client's retried complete gets the result, with the composite of what it sent.
      const done = await complete(tB, 'alice', up.file_id);
      assert.equal(done.status, 200, await done.clone().text());
      const body = (await done.json()) as { checksum: string; size: number };
      assert.equal(body.size, data.length);
      assert.equal(body.checksum, composite(data, up.chunk_size));
      const got = await download(tB, 'alice', 'stalled/assembled.bin');
      assert.ok(got.body.equals(data), 'the stored bytes are the uploaded ones');
      const store: Store = { kind: 's3', s3rver: s3 };
      assertNothingAcknowledgedLost(await assertRecordsTellTheTruth(store, ts.databaseUrl), [{ key: up.s3_key, bytes: data }]);
    } finally {
      if (s3.proc.signalCode === null && s3.proc.exitCode === null) s3.proc.kill('SIGCONT');
      lock?.close();
      if (a.proc.exitCode === null && a.proc.signalCode === null) a.proc.kill('SIGKILL');
      await b?.stop();
      await ts.stop();
    }
  });

  for (const db of ['sqlite', 'postgres'] as DbKind[]) {
    it(`${db}: a gateway that died before the store assembled anything, or after the record, leaves nothing stalled`, {
      skip: db === 'postgres' ? pgSkip : false,
    }, async () => {
      const t = await startTestServer({ db, extra: SWEEPING });
      try {
        // Two sessions with every part stored, then left as a gateway that died leaves them:
        // claimed ("completing") by a run owner that never heartbeats.
        const first = random(2 * MiB + 17);
        const unassembled = await uploadParts(t, 'stalled/never-assembled.bin', first, MiB);
        const second = random(3 * MiB + 5);
        const recorded = await uploadParts(t, 'stalled/recorded.bin', second, MiB);
        // The second was assembled and recorded; the gateway died before the session row followed.
        assert.equal((await complete(t, 'alice', recorded.file_id)).status, 200);
        const conn = await openDatabase(t.databaseUrl);
        try {
          const long = Date.now() - 60_000;
          for (const id of [unassembled.file_id, recorded.file_id]) {
            const s = await conn.db.selectFrom('upload_sessions').select('run_id').where('session_id', '=', id).executeTakeFirstOrThrow();
            await conn.db.updateTable('upload_sessions').set({ status: 'completing', updated_at: long }).where('session_id', '=', id).execute();
            await conn.db.updateTable('runs').set({ owner: 'a-gateway-that-died', updated_at: long }).where('run_id', '=', s.run_id).execute();
          }
        } finally {
          await conn.close();
        }
        assert.equal((await complete(t, 'alice', unassembled.file_id)).status, 409, 'a claimed completion is retried, not failed');
        await sweepUntil(
          t.url,
          async () => {
            const r = [await rows(t.databaseUrl, unassembled.file_id), await rows(t.databaseUrl, recorded.file_id)];
            return r.every((x) => x.session.status !== 'completing') ? r : undefined;
          },
          'both stalled completions to settle',
        );
        // Nothing published: the session is active again and the client's complete assembles its parts.
        const reopened = await rows(t.databaseUrl, unassembled.file_id);
        assert.equal(reopened.session.status, 'active');
        assert.equal(reopened.run.status, 'processing');
        const st = (await (await status(t, 'alice', unassembled.file_id)).json()) as { uploaded_chunks: number[]; status: string };
        assert.equal(st.status, 'active', JSON.stringify(st));
        assert.deepEqual(st.uploaded_chunks, [1, 2, 3], 'its parts are still held');
        const res = await complete(t, 'alice', unassembled.file_id);
        assert.equal(res.status, 200, await res.clone().text());
        assert.ok((await download(t, 'alice', 'stalled/never-assembled.bin')).body.equals(first));
        // Recorded: only the session row was behind.
        const caughtUp = await rows(t.databaseUrl, recorded.file_id);
        assert.equal(caughtUp.session.status, 'completed');
        assert.equal(caughtUp.session.result_checksum, composite(second, recorded.chunk_size));
        const again = await complete(t, 'alice', recorded.file_id);
        assert.equal(again.status, 200);
        assert.equal(((await again.json()) as { checksum: string }).checksum, composite(second, recorded.chunk_size));
        const store: Store = t.s3rver ? { kind: 's3', s3rver: t.s3rver } : { kind: 'fs', root: path.join(t.dir, 'uploads') };
        assertNothingAcknowledgedLost(await assertRecordsTellTheTruth(store, t.databaseUrl), [
          { key: unassembled.s3_key, bytes: first },
          { key: recorded.s3_key, bytes: second },
        ]);
      } finally {
        await t.stop();
      }
    });
  }
});
