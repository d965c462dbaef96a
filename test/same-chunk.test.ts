import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { pgSkip } from './helpers/pg.js';
import { chunkOf, complete, composite, download, init, MiB, random, sendChunk, sha256hex } from './helpers/resumable.js';
import { type DbKind, startTestServer, type TestServer } from './helpers/server.js';
import { type Acknowledged, assertNothingAcknowledgedLost, assertRecordsTellTheTruth } from './helpers/truth.js';

/**
 * One chunk sent twice at once with different bytes: the store never holds a
 * mix of the two, and the checksum the gateway reports is computed from what
 * it stored. A concurrent re-send either waits its turn or gets 409.
 */
for (const db of ['sqlite', 'postgres'] as DbKind[]) {
  describe(`same chunk sent twice at once (fs, ${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ db });
    });
    after(async () => t?.stop());

    it('publishes one whole body per chunk, with a checksum of the stored bytes', async () => {
      const acknowledged: Acknowledged[] = [];
      for (let round = 0; round < 12; round++) {
        const p = `same-chunk/r${round}.bin`;
        const size = 2 * MiB;
        const session = await init(t, 'alice', p, size, { chunk_size: MiB });
        const second = random(MiB);
        const a = random(MiB);
        const b = random(MiB);
        assert.equal((await sendChunk(t, 'alice', session.file_id, 2, second)).status, 200);
        const [ra, rb] = await Promise.all([sendChunk(t, 'alice', session.file_id, 1, a), sendChunk(t, 'alice', session.file_id, 1, b)]);
        const statuses = [ra.status, rb.status].sort();
        assert.ok(
          (statuses[0] === 200 && statuses[1] === 200) || (statuses[0] === 200 && statuses[1] === 409),
          `round ${round}: one send succeeds and the other waits or gets 409, got ${statuses.join(', ')}`,
        );
        const done = await complete(t, 'alice', session.file_id);
        assert.equal(done.status, 200, `round ${round}: complete`);
        const result = (await done.json()) as { checksum: string };
        const got = await download(t, 'alice', p);
        assert.equal(got.status, 200);
        const first = chunkOf(got.body, session.chunk_size, 1);
        assert.ok(first.equals(a) || first.equals(b), `round ${round}: chunk 1 is one whole body, not a mix`);
        assert.ok(chunkOf(got.body, session.chunk_size, 2).equals(second));
        assert.equal(result.checksum, composite(got.body, session.chunk_size), `round ${round}: the reported checksum is of the stored bytes`);
        const ex = (await (await fetch(`${t.url}/exists?path=${p}`, { headers: t.auth('alice') })).json()) as {
          checksum: string;
          chunk_size: number;
          checksum_algorithm: string;
        };
        assert.equal(ex.checksum, composite(got.body, ex.chunk_size));
        assert.equal(ex.checksum_algorithm, 'sha256-of-sha256s');
        assert.equal(sha256hex(got.body).length, 64);
        acknowledged.push({ key: session.s3_key, bytes: got.body });
      }
      // Every record tells the truth: one object row per key, its checksum of the stored bytes, its run succeeded.
      assertNothingAcknowledgedLost(await assertRecordsTellTheTruth({ kind: 'fs', root: `${t.dir}/uploads` }, t.databaseUrl), acknowledged);
    });
  });
}
