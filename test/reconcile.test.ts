// Records a gateway owes (a publish or a failure it could not record while
// the database was away) and runs no request holds any more are settled so
// that every record tells the truth: checked on a real gateway (SQLite, the
// filesystem store), through the pipeline's own settlements and the sweeper.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import type { StoredObject } from '../src/uploads/runs.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from './helpers/server.js';
import { assertRecordsTellTheTruth, records } from './helpers/truth.js';

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function objectOf(key: string, bytes: Buffer): Omit<StoredObject, 'run_id' | 'uploaded_at'> {
  return {
    object_key: key,
    client: 'alice',
    path: key.split('/').slice(2).join('/'),
    size: bytes.length,
    sha256: sha256(bytes),
    checksum: sha256(bytes),
    checksum_algorithm: 'sha256',
    chunk_size: null,
    content_type: null,
  };
}

describe('owed records and runs no request holds', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => {
    await t.stop();
  });

  it('an owed publish whose run was failed meanwhile is removed while the store holds those bytes, never a newer object', async () => {
    const { pipeline, storage, runs } = t.server.ctx;
    const settle = async (key: string, stored: Buffer, owed: Buffer) => {
      const run = await runs.create({ client: 'alice', kind: 'raw', path: key, objectKey: key, status: 'processing' });
      await storage.put(key, stored);
      await runs.transition(run.run_id, 'failed', { errorCode: 'UPLOAD_ABORTED', errorMessage: 'cut' });
      pipeline.unrecorded.add(run.run_id, { to: 'succeeded', object: objectOf(key, owed) });
      assert.ok(pipeline.holds(run.run_id), 'an owed run is held by its gateway');
      assert.equal(await pipeline.unrecorded.retry(), 1);
      assert.equal(pipeline.holds(run.run_id), false);
    };
    const ours = Buffer.from('the bytes this gateway published');
    await settle('backups/alice/owed/ours.bin', ours, ours);
    assert.equal(await storage.head('backups/alice/owed/ours.bin'), null, 'no object is left that no record describes');
    await assertRecordsTellTheTruth({ kind: 'fs', root: `${t.dir}/uploads` }, t.databaseUrl);

    const newer = Buffer.from('a newer upload of the same key, from elsewhere');
    await settle('backups/alice/owed/newer.bin', newer, ours);
    assert.equal((await storage.head('backups/alice/owed/newer.bin'))?.size, newer.length, 'a newer object is kept');
    await storage.delete('backups/alice/owed/newer.bin');
  });

  it("the sweeper settles this gateway's own runs that no request holds, from the store", async () => {
    const { pipeline, storage, runs } = t.server.ctx;
    const longAgo = Date.now() - 10 * 60_000;
    const open = (key: string) =>
      runs.create({ client: 'alice', kind: 'raw', path: key, objectKey: key, status: 'processing', owner: pipeline.owner }, longAgo);
    // Published before its record could be written: the store holds its bytes, no row describes them.
    const published = await open('backups/alice/own/published.bin');
    const bytes = Buffer.from('published, never recorded');
    await storage.put(published.object_key, bytes);
    // Cut before anything was published.
    const cut = await open('backups/alice/own/cut.bin');
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${t.url}/api/admin/sweep`, { method: 'POST', headers: { 'x-admin-token': ADMIN_TOKEN } });
      assert.equal(res.status, 200, await res.text());
      const { runs: all } = await records(t.databaseUrl);
      if (all.every((r) => r.status !== 'processing')) break;
    }
    const after = await runs.get(published.run_id);
    assert.equal(after?.status, 'succeeded');
    assert.equal(after?.sha256, sha256(bytes));
    assert.equal((await runs.get(cut.run_id))?.status, 'failed');
    const truth = await assertRecordsTellTheTruth({ kind: 'fs', root: `${t.dir}/uploads` }, t.databaseUrl);
    assert.deepEqual(
      truth.objects.map((o) => o.key),
      ['backups/alice/own/published.bin'],
    );
  });
});
