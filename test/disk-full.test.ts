// A full disk under plain PUTs and chunked uploads: a small tmpfs is the
// filesystem root. Refusals are 507 STORAGE_FULL (retryable), nothing partial
// is published, once space returns the same uploads succeed byte-exact, and
// every record tells the truth. Needs root (mount); CI runs it as root.
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { put } from './helpers/http.js';
import { chunkOf, complete, init, MiB, random, sendChunk } from './helpers/resumable.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { mountTmpfs, requireRoot, rootSkip, unmountTmpfs } from './helpers/tools.js';
import { type Acknowledged, assertNothingAcknowledgedLost, assertRecordsTellTheTruth } from './helpers/truth.js';

/** An 8 MiB tmpfs holding the storage root, with a filler file leaving about `freeMiB` free. */
async function onSmallDisk(freeMiB: number, body: (ts: TestServer, root: string, freeSpace: () => void) => Promise<void>): Promise<void> {
  requireRoot();
  const mnt = mountTmpfs('8m');
  let ts: TestServer | undefined;
  try {
    const root = path.join(mnt, 'uploads');
    mkdirSync(root);
    ts = await startTestServer({ extra: { storage: { backend: 'fs', fs: { root } } } });
    const filler = path.join(mnt, 'filler');
    writeFileSync(filler, Buffer.alloc(Math.floor((8 - freeMiB) * MiB)));
    await body(ts, root, () => rmSync(filler, { force: true }));
  } finally {
    await ts?.stop();
    unmountTmpfs(mnt);
  }
}

describe('full disk (tmpfs as the filesystem root)', { skip: rootSkip }, () => {
  it('plain PUTs: 507 STORAGE_FULL when the disk fills, nothing partial stored, all succeed once space returns', async () => {
    await onSmallDisk(2.5, async (ts, root, freeSpace) => {
      const bodies = Array.from({ length: 6 }, () => random(MiB));
      const acknowledged: Acknowledged[] = [];
      const refused: number[] = [];
      // Six 1 MiB uploads into 2.5 MiB: some must be refused; one at a time, so which is determined by space alone.
      for (const [i, b] of bodies.entries()) {
        const res = await put(ts, 'alice', `full/f${i}.bin`, b);
        if (res.status === 200) acknowledged.push({ key: res.json<{ s3_key: string }>().s3_key, bytes: b });
        else {
          assert.equal(res.status, 507, res.body.toString());
          assert.equal(res.json<{ error_code: string }>().error_code, 'STORAGE_FULL');
          assert.ok(res.json<{ run_id?: string }>().run_id, 'the refusal carries its run');
          refused.push(i);
        }
      }
      assert.ok(refused.length >= 1, 'six 1 MiB bodies cannot fit in 2.5 MiB');
      await assertRecordsTellTheTruth({ kind: 'fs', root }, ts.databaseUrl);

      freeSpace();
      for (const i of refused) {
        const b = bodies[i] as Buffer;
        const res = await put(ts, 'alice', `full/f${i}.bin`, b);
        assert.equal(res.status, 200, res.body.toString());
        acknowledged.push({ key: res.json<{ s3_key: string }>().s3_key, bytes: b });
      }
      const truth = await assertRecordsTellTheTruth({ kind: 'fs', root }, ts.databaseUrl);
      assertNothingAcknowledgedLost(truth, acknowledged);
      assert.equal(truth.objects.length, 6);
    });
  });

  it('chunked: a chunk the disk cannot hold is 507, the session survives, the re-sent chunk completes byte-exact', async () => {
    await onSmallDisk(2.5, async (ts, root, freeSpace) => {
      const data = random(5 * MiB + 1234);
      const s = await init(ts, 'alice', 'full/chunked.bin', data.length, { chunk_size: MiB });
      const failed: number[] = [];
      for (let n = 1; n <= s.total_chunks; n++) {
        const res = await sendChunk(ts, 'alice', s.file_id, n, chunkOf(data, s.chunk_size, n));
        if (res.status === 200) continue;
        const body = (await res.json()) as { error_code: string };
        assert.equal(res.status, 507, JSON.stringify(body));
        assert.equal(body.error_code, 'STORAGE_FULL');
        failed.push(n);
      }
      assert.ok(failed.length >= 1, 'six chunks of 1 MiB cannot fit in 2.5 MiB');
      // The session is open on purpose: its run may be processing, nothing is published.
      const early = await assertRecordsTellTheTruth({ kind: 'fs', root }, ts.databaseUrl, { openRunsAllowed: [s.run_id] });
      assert.equal(early.objects.length, 0);

      freeSpace();
      for (const n of failed) {
        const res = await sendChunk(ts, 'alice', s.file_id, n, chunkOf(data, s.chunk_size, n));
        assert.equal(res.status, 200, await res.text());
      }
      const done = await complete(ts, 'alice', s.file_id);
      assert.equal(done.status, 200, await done.clone().text());
      const truth = await assertRecordsTellTheTruth({ kind: 'fs', root }, ts.databaseUrl);
      assertNothingAcknowledgedLost(truth, [{ key: s.s3_key, bytes: data }]);
    });
  });
});
