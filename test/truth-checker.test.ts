// The fault-injection suites rely on helpers/truth.ts: it must catch each kind
// of lie (bytes changed under their record, an object without a record, a
// record without an object, a run left open, an acknowledged upload lost).
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { sqliteDriver } from '../src/db/sqlite-driver.js';
import { put } from './helpers/http.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { assertNothingAcknowledgedLost, assertRecordsTellTheTruth, type Store } from './helpers/truth.js';

describe('the "every record tells the truth" checker', () => {
  let t: TestServer;
  let store: Store;
  let root: string;
  let file: string;
  before(async () => {
    t = await startTestServer();
    root = path.join(t.dir, 'uploads');
    store = { kind: 'fs', root };
    const res = await put(t, 'alice', 'truth/a.bin', Buffer.from('the stored bytes'));
    assert.equal(res.status, 200);
    file = path.join(root, 'backups', 'alice', 'truth', 'a.bin');
  });
  after(async () => t.stop());

  const sqlite = () => new (sqliteDriver())(t.databaseUrl.slice('sqlite:'.length));

  it('passes on an honest store and catches every kind of lie', async () => {
    const truth = await assertRecordsTellTheTruth(store, t.databaseUrl);
    assert.equal(truth.objects.length, 1);
    assertNothingAcknowledgedLost(truth, [{ key: 'backups/alice/truth/a.bin', bytes: Buffer.from('the stored bytes') }]);
    assert.throws(
      () => assertNothingAcknowledgedLost(truth, [{ key: 'backups/alice/truth/a.bin', bytes: Buffer.from('other bytes') }]),
      /none of the acknowledged/,
    );
    assert.throws(() => assertNothingAcknowledgedLost(truth, [{ key: 'backups/alice/lost.bin', bytes: Buffer.from('x') }]), /acknowledged but not stored/);

    writeFileSync(file, 'other bytes, same key');
    await assert.rejects(assertRecordsTellTheTruth(store, t.databaseUrl), /row says 16 bytes.*\n.*is not the stored bytes'/);
    writeFileSync(file, 'the stored bytes');

    mkdirSync(path.join(root, 'backups', 'alice', 'stray'), { recursive: true });
    writeFileSync(path.join(root, 'backups', 'alice', 'stray', 'x.bin'), 'no record');
    await assert.rejects(assertRecordsTellTheTruth(store, t.databaseUrl), /stray\/x\.bin: stored \(9 bytes\) without an objects row/);
    rmSync(path.join(root, 'backups', 'alice', 'stray'), { recursive: true });

    const db = sqlite();
    try {
      const runId = (db.prepare('select run_id from objects').get() as { run_id: string }).run_id;
      db.prepare(`update runs set status = 'processing' where run_id = ?`).run(runId);
      await assert.rejects(assertRecordsTellTheTruth(store, t.databaseUrl), /is processing, not succeeded[\s\S]*is still processing/);
      db.prepare(`update runs set status = 'succeeded' where run_id = ?`).run(runId);
      rmSync(file);
      await assert.rejects(assertRecordsTellTheTruth(store, t.databaseUrl), /an objects row for an object the store does not hold/);
    } finally {
      db.close();
    }
  });
});
