import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import * as tus from 'tus-js-client';
import { advisoryKey, PgAdvisoryLocks, UploadLocker } from '../src/uploads/upload-locks.js';
import { createPgDatabase, pgSkip } from './helpers/pg.js';
import { download, random, sha256hex } from './helpers/resumable.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/** A promise with its resolve exposed, for "was the holder asked to let go?". */
function flag(): { promise: Promise<void>; set: () => void; isSet: () => boolean } {
  let set!: () => void;
  let done = false;
  const promise = new Promise<void>((r) => {
    set = () => {
      done = true;
      r();
    };
  });
  return { promise, set, isSet: () => done };
}

/** Poll (bounded) until `check` is true. */
async function until(check: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (await check()) return;
    await sleep(20);
  }
  throw new Error(`gave up waiting for ${what}`);
}

/** The backend pid holding the advisory lock of `id`, if any. */
async function lockHolder(admin: pg.Client, id: string): Promise<number | undefined> {
  const key = BigInt.asUintN(64, BigInt(advisoryKey(id)));
  const r = await admin.query<{ pid: number }>(
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1",
    [(key >> 32n).toString(), (key & 0xffffffffn).toString()],
  );
  return r.rows[0]?.pid;
}

describe('upload locks in one gateway (in memory; SQLite)', () => {
  it('a second request asks the holder to let go, waits, and gets the lock once it is released', async () => {
    const locker = new UploadLocker(undefined, 5_000);
    const asked = flag();
    const first = locker.newLock('u1');
    await first.lock(new AbortController().signal, asked.set);
    let second = false;
    const secondLock = locker.newLock('u1');
    const p = secondLock
      .lock(new AbortController().signal, () => {})
      .then(() => {
        second = true;
      });
    await asked.promise;
    assert.equal(second, false, 'the second waits while the first holds the lock');
    await first.unlock();
    await p;
    assert.equal(second, true);
    // Another upload's lock is independent.
    const other = locker.newLock('u2');
    await other.lock(new AbortController().signal, () => {});
    await other.unlock();
    await secondLock.unlock();
  });

  it('gives up with 409 CONFLICT after its timeout, and at once when its request ends', async () => {
    const locker = new UploadLocker(undefined, 100);
    const holder = locker.newLock('u');
    await holder.lock(new AbortController().signal, () => {});
    await assert.rejects(
      locker.newLock('u').lock(new AbortController().signal, () => {}),
      (e: { code?: string; status?: number }) => {
        return e.code === 'CONFLICT' && e.status === 409;
      },
    );
    const patient = new UploadLocker(undefined, 60_000);
    const h2 = patient.newLock('v');
    await h2.lock(new AbortController().signal, () => {});
    const ac = new AbortController();
    const waiting = patient.newLock('v').lock(ac.signal, () => {});
    ac.abort();
    await assert.rejects(waiting, (e: { code?: string }) => e.code === 'UPLOAD_ABORTED');
    await h2.unlock();
    await holder.unlock();
  });
});

describe('upload locks across gateways (PostgreSQL advisory locks)', { skip: pgSkip }, () => {
  it('two gateways exclude each other; the holder is asked to let go; a lost connection releases its locks', async () => {
    const db = await createPgDatabase();
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    const a = new UploadLocker(new PgAdvisoryLocks(db.url), 30_000);
    const b = new UploadLocker(new PgAdvisoryLocks(db.url), 30_000);
    try {
      const askedA = flag();
      const lockA = a.newLock('up-1');
      await lockA.lock(new AbortController().signal, askedA.set);
      const pidA = await lockHolder(admin, 'up-1');
      assert.ok(pidA, 'gateway A holds the advisory lock');
      let bHas = false;
      const lockB = b.newLock('up-1');
      const pB = lockB
        .lock(new AbortController().signal, () => {})
        .then(() => {
          bHas = true;
        });
      await askedA.promise; // B's request to let go reached A (NOTIFY)
      assert.equal(bHas, false, 'B waits while A holds the lock');
      await lockA.unlock();
      await pB;
      assert.notEqual(await lockHolder(admin, 'up-1'), pidA, 'B holds it now');
      await lockB.unlock();
      assert.equal(await lockHolder(admin, 'up-1'), undefined, 'unlock releases it');

      // Connection loss: the database releases A's lock, and A's holder is told to stop.
      const lost = flag();
      const lockA2 = a.newLock('up-2');
      await lockA2.lock(new AbortController().signal, lost.set);
      const pid = await lockHolder(admin, 'up-2');
      assert.ok(pid);
      await admin.query('SELECT pg_terminate_backend($1)', [pid]);
      await lost.promise;
      const lockB2 = b.newLock('up-2');
      await lockB2.lock(new AbortController().signal, () => {});
      await lockA2.unlock(); // a no-op for the database: the lock went with the connection
      assert.ok(await lockHolder(admin, 'up-2'), 'B still holds up-2 after A unlocks its lost lock');
      await lockB2.unlock();
      // A reconnects for its next lock.
      const lockA3 = a.newLock('up-3');
      await lockA3.lock(new AbortController().signal, () => {});
      assert.ok(await lockHolder(admin, 'up-3'));
      await lockA3.unlock();
    } finally {
      await a.close();
      await b.close();
      await admin.end();
      await db.drop();
    }
  });

  it('tus-js-client across two gateways on one PostgreSQL; a PATCH to B while A holds the upload never interleaves', async () => {
    const ga = await startTestServer({ db: 'postgres' });
    let gb: TestServer | undefined;
    const admin = new pg.Client({ connectionString: ga.databaseUrl });
    await admin.connect();
    let stalled: http.ClientRequest | undefined;
    try {
      gb = await startTestServer({ databaseUrl: ga.databaseUrl, extra: { storage: { backend: 'fs', fs: { root: path.join(ga.dir, 'uploads') } } } });
      const b = gb;
      const tusHeaders = (t: TestServer) => ({ ...t.auth('alice'), 'tus-resumable': '1.0.0' });
      const data = random(300 * 1024);
      const created = await fetch(`${ga.url}/tus`, {
        method: 'POST',
        headers: { ...tusHeaders(ga), 'upload-length': String(data.length), 'upload-metadata': `path ${Buffer.from('tus/locked.bin').toString('base64')}` },
      });
      assert.equal(created.status, 201);
      const loc = created.headers.get('location') ?? '';
      const id = loc.split('/').pop() ?? '';

      // Gateway A: a PATCH whose body stops after 100 KiB (the request stays open and holds the upload).
      const aDone = new Promise<number>((resolve) => {
        stalled = http.request(new URL(loc, ga.url), {
          method: 'PATCH',
          headers: { ...tusHeaders(ga), 'upload-offset': '0', 'content-type': 'application/offset+octet-stream', 'content-length': String(data.length) },
        });
        stalled.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        stalled.on('error', () => resolve(0));
        stalled.write(data.subarray(0, 100 * 1024));
      });
      await until(async () => (await lockHolder(admin, id)) !== undefined, "gateway A's lock");

      // Gateway B: the whole body from offset 0. It asks A to let go and waits; A's request is then
      // cut, keeping what it stored; B finds the offset moved and answers 409 (tus: resume from HEAD).
      const rb = await fetch(new URL(loc, b.url), {
        method: 'PATCH',
        headers: { ...tusHeaders(b), 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
        body: data,
      });
      assert.equal(rb.status, 409, await rb.text());
      stalled?.destroy();
      await aDone;
      const head = await fetch(new URL(loc, b.url), { method: 'HEAD', headers: tusHeaders(b) });
      const offset = Number(head.headers.get('upload-offset'));
      assert.ok(offset > 0 && offset <= 100 * 1024, `the offset counts only A's bytes (${offset})`);

      // tus-js-client finishes the upload on gateway B.
      await new Promise<void>((resolve, reject) => {
        new tus.Upload(data, {
          uploadUrl: new URL(loc, b.url).toString(),
          headers: b.auth('alice'),
          chunkSize: 64 * 1024,
          retryDelays: [0, 200, 500],
          onError: reject,
          onSuccess: () => resolve(),
        }).start();
      });
      const got = await download(ga, 'alice', 'tus/locked.bin');
      assert.equal(got.status, 200);
      assert.equal(sha256hex(got.body), sha256hex(data));
    } finally {
      (stalled as http.ClientRequest | undefined)?.destroy();
      await admin.end();
      await gb?.stop();
      await ga.stop();
    }
  });
});
