import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { agentSetup, cleanupAgents, gatewayDb, gatewayUploads, sha256, storedSha256, waitFor } from './helpers/agent.js';
import { startFaultProxy } from './helpers/proxy.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/** Chunks the gateway acknowledged (stored), from its own records. */
function storedParts(db: import('better-sqlite3').Database, sessionId: string): number {
  return (db.prepare(`SELECT count(*) AS n FROM upload_parts WHERE session_id = ? AND state = 'stored'`).get(sessionId) as { n: number }).n;
}

describe('s3up agent: large files and delete mode', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice', max_file_size_mb: 500 }] });
  });
  after(async () => {
    await cleanupAgents();
    await t.stop();
  });

  it('kill -9 in the middle of a 100 MB chunked upload: the restart resumes from the acknowledged chunks', async () => {
    const link = await startFaultProxy(t.url);
    link.chunkDelayMs = 300; // a slow link, so the kill lands mid-way
    // Chunk requests the gateway accepted (2xx). A re-send refused with 409 while the gateway still held the
    // killed agent's claim on that chunk is a retry, not a chunk sent twice.
    const chunkRequests = () =>
      link.requests.filter((r) => r.method === 'POST' && /^\/upload\/chunked\/[^/]+\/chunk(\?|$)/.test(r.path) && r.status !== undefined && r.status < 300)
        .length;
    try {
      const a = agentSetup({ url: link.url, keys: t.keys }, 'alice', { upload: { concurrency: 1 } });
      const body = randomBytes(100 * 1000 * 1000);
      const file = path.join(a.watchDir, 'big.bin');
      writeFileSync(file, body);
      const p1 = a.start();
      // The upload id is in the ledger before the first chunk; wait for a few chunks the gateway acknowledged.
      const uploadId = await waitFor(
        () =>
          a.ledger((db) => (db.prepare('SELECT upload_id FROM queue WHERE local_path = ?').get(file) as { upload_id: string | null } | undefined)?.upload_id),
        'the upload id in the ledger',
      );
      await waitFor(() => gatewayDb(t, (db) => storedParts(db, uploadId) >= 3), 'three acknowledged chunks');
      await p1.kill9();
      const acked = gatewayDb(t, (db) => storedParts(db, uploadId));
      const total = gatewayDb(
        t,
        (db) => (db.prepare('SELECT total_chunks FROM upload_sessions WHERE session_id = ?').get(uploadId) as { total_chunks: number }).total_chunks,
      );
      assert.ok(acked < total, `killed mid-way (${acked} of ${total} chunks)`);
      assert.equal(gatewayUploads(t, 'alice').get('up/big.bin'), undefined, 'not finished before the kill');
      const requestsBefore = chunkRequests();

      // SIGTERM in the middle of the resumed upload: a checkpoint and exit 0.
      const p2 = a.start();
      const countParts = () => gatewayDb(t, (db) => storedParts(db, uploadId));
      await waitFor(() => countParts() >= acked + 2, 'two more chunks after the restart');
      const stopped = await p2.stop();
      assert.equal(stopped.code, 0, p2.stderr());
      assert.ok(p2.lines().some((l) => l.msg === 'stopped'));
      const acked2 = countParts();

      const p3 = a.start();
      try {
        const line = await waitFor(
          () => p3.lines().find((l) => l.msg === 'upload' && l.path === file && l.outcome === 'uploaded'),
          'the resumed upload',
          120_000,
        ).catch((err: Error) => {
          throw new Error(`${err.message}; agent log: ${JSON.stringify(p3.lines().filter((l) => l.msg === 'upload'))}`);
        });
        assert.equal(line.resume_upload_id, uploadId, 'the same gateway session');
        assert.equal(line.mode, 'resumable');
        assert.ok((line.chunks_skipped as number) >= acked2, `skipped ${line.chunks_skipped} acknowledged chunks`);
        assert.equal((line.chunks_sent as number) + (line.chunks_skipped as number), total);
      } finally {
        assert.equal((await p3.stop()).code, 0);
      }
      // From the gateway's records: one session for the path, completed; only the missing chunks were sent again.
      const sessions = gatewayDb(t, (db) =>
        db.prepare(`SELECT session_id, status FROM upload_sessions WHERE client = 'alice' AND path = 'up/big.bin'`).all(),
      ) as Array<{
        session_id: string;
        status: string;
      }>;
      assert.deepEqual(sessions, [{ session_id: uploadId, status: 'completed' }]);
      const sentAfterRestart = chunkRequests() - requestsBefore;
      // Each restart has only what the gateway lacked accepted again (plus at most the one chunk in flight when
      // the SIGTERM came: part concurrency is 1 here), never the whole file.
      assert.ok(sentAfterRestart <= total - acked + 1, `after the kill ${sentAfterRestart} chunks accepted for ${total - acked} missing chunks`);
      assert.equal(gatewayUploads(t, 'alice').get('up/big.bin'), 1);
      assert.equal(storedSha256(t, 'alice', 'up/big.bin'), sha256(body));
    } finally {
      await link.close();
    }
  });

  it('after_upload: delete removes local copies (plain and chunked) only once /exists confirms size and checksum; nothing remote is deleted', async () => {
    const a = agentSetup(t, 'alice', { after_upload: 'delete', upload: { resumable_threshold_mb: 1 } });
    const small = randomBytes(5000);
    const chunked = randomBytes(20 * 1024 * 1024 + 123);
    writeFileSync(path.join(a.watchDir, 'small.bin'), small);
    writeFileSync(path.join(a.watchDir, 'chunked.bin'), chunked);
    const p = a.start();
    try {
      await waitFor(() => !existsSync(path.join(a.watchDir, 'small.bin')) && !existsSync(path.join(a.watchDir, 'chunked.bin')), 'both local copies deleted');
      const deleted = p.lines().filter((l) => l.msg === 'local copy deleted (verified)');
      const byName = new Map(deleted.map((l) => [path.basename(l.path as string), l]));
      assert.equal(byName.get('small.bin')?.checksum_algorithm, 'sha256');
      assert.equal(byName.get('chunked.bin')?.checksum_algorithm, 'sha256-of-sha256s', 'the composite, computed locally');
      const st = (await a.status()) as { totals: { local_copies_deleted: number } };
      assert.equal(st.totals.local_copies_deleted, 2);
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
    assert.equal(storedSha256(t, 'alice', 'up/small.bin'), sha256(small));
    assert.equal(storedSha256(t, 'alice', 'up/chunked.bin'), sha256(chunked));
    const exists = (await (await fetch(`${t.url}/exists?path=up/chunked.bin`, { headers: t.auth('alice') })).json()) as { exists: boolean };
    assert.equal(exists.exists, true, 'the local delete deleted nothing remote');
    assert.equal(readFileSync(path.join(t.dir, 'uploads', 'backups', 'alice', 'up', 'small.bin')).length, small.length);
  });
});
