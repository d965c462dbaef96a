import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import * as tus from 'tus-js-client';
import { MiB, random, sha256hex } from './helpers/resumable.js';
import { startTestServer } from './helpers/server.js';
import { mountTmpfs, requireRoot, rootSkip, unmountTmpfs } from './helpers/tools.js';
import { assertNothingAcknowledgedLost, assertRecordsTellTheTruth } from './helpers/truth.js';

/**
 * A tus upload whose store fails mid-PATCH (the disk fills up): the offset may
 * only count bytes the store holds, the failing PATCH answers a retryable
 * status, and once space returns the same client resumes and the object is
 * byte-exact. Needs root for a small tmpfs as the storage root.
 */
describe('tus: store failure mid-PATCH', { skip: rootSkip }, () => {
  it('never counts unstored bytes and resumes byte-exact once the disk has room again', async () => {
    requireRoot();
    const mnt = mountTmpfs('8m');
    let ts: Awaited<ReturnType<typeof startTestServer>> | undefined;
    try {
      const root = path.join(mnt, 'uploads');
      mkdirSync(root);
      ts = await startTestServer({ extra: { storage: { backend: 'fs', fs: { root } } } });
      const server = ts;
      // Leave about 2.5 MiB free: a 5 MiB upload fills the disk half way.
      const filler = path.join(mnt, 'filler');
      writeFileSync(filler, Buffer.alloc(Math.floor(5.5 * MiB)));
      const data = random(5 * MiB);
      const failures: number[] = [];
      const offsetsAtFailure: number[] = [];
      let uploadUrl: string | null = null;
      await new Promise<void>((resolve, reject) => {
        const u = new tus.Upload(data, {
          endpoint: `${server.url}/tus`,
          headers: server.auth('alice'),
          metadata: { filename: 'tus/full-disk.bin' },
          chunkSize: MiB,
          storeFingerprintForResuming: false,
          retryDelays: [0, 100, 200, 400, 800, 1000, 1000, 1000],
          onShouldRetry: (err) => {
            const status = (err as tus.DetailedError).originalResponse?.getStatus() ?? 0;
            failures.push(status);
            return status !== 0 && status >= 500;
          },
          onError: reject,
          onSuccess: () => resolve(),
          onAfterResponse: async (req, res) => {
            const location = res.getHeader('location');
            if (req.getMethod() === 'POST' && location) uploadUrl = new URL(location, server.url).toString();
            if (res.getStatus() < 500 || failures.length > 0 || uploadUrl === null) return;
            // The failed PATCH: ask the gateway what it holds, then free the disk.
            const head = await fetch(uploadUrl, { method: 'HEAD', headers: { ...server.auth('alice'), 'tus-resumable': '1.0.0' } });
            offsetsAtFailure.push(Number(head.headers.get('upload-offset')));
            rmSync(filler);
          },
        });
        u.start();
      });
      assert.ok(failures.length >= 1, 'the disk filled up, so at least one PATCH must have failed');
      for (const s of failures) assert.ok(s === 503 || s === 507, `a store failure answers 503 or 507, got ${s}`);
      for (const off of offsetsAtFailure) assert.ok(off < data.length, `after the failure the offset (${off}) must not reach the length`);
      const res = await fetch(`${server.url}/download?path=tus/full-disk.bin`, { headers: server.auth('alice') });
      assert.equal(res.status, 200);
      const got = Buffer.from(await res.arrayBuffer());
      assert.equal(got.length, data.length);
      assert.equal(sha256hex(got), sha256hex(data));
      const truth = await assertRecordsTellTheTruth({ kind: 'fs', root }, server.databaseUrl);
      assertNothingAcknowledgedLost(truth, [{ key: 'backups/alice/tus/full-disk.bin', bytes: data }]);
    } finally {
      await ts?.stop();
      unmountTmpfs(mnt);
    }
  });
});
