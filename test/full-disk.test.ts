import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { complete, download, init, MiB, random, sendChunk, sha256hex } from './helpers/resumable.js';
import { startTestServer } from './helpers/server.js';
import { mountTmpfs, requireRoot, rootSkip, unmountTmpfs } from './helpers/tools.js';

/**
 * A full disk is the store's condition, not the client's fault: every upload
 * protocol answers 507 STORAGE_FULL (retryable) and, once there is room again,
 * the same request succeeds. Needs root for a small tmpfs as the storage root.
 */

/** Fill the filesystem of `file` to the last block. */
function fillDisk(file: string): void {
  try {
    writeFileSync(file, Buffer.alloc(64 * MiB));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    return;
  }
  throw new Error('the tmpfs did not fill up');
}

async function errorCode(res: Response): Promise<string> {
  return ((await res.json()) as { error_code: string }).error_code;
}

describe('full disk (fs store on a small tmpfs)', () => {
  it('a chunk, a tus PATCH and a plain upload answer 507 STORAGE_FULL, then succeed once space is freed', async (t) => {
    if (rootSkip) {
      t.skip(rootSkip);
      return;
    }
    requireRoot();
    const mnt = mountTmpfs('4m');
    let ts: Awaited<ReturnType<typeof startTestServer>> | undefined;
    try {
      const root = path.join(mnt, 'uploads');
      mkdirSync(root);
      ts = await startTestServer({ extra: { storage: { backend: 'fs', fs: { root } } } });
      const server = ts;
      const tusHeaders = { ...server.auth('alice'), 'tus-resumable': '1.0.0' };

      // Sessions are opened while there is room (their staging files exist).
      const data = random(MiB + 1000);
      const s = await init(server, 'alice', 'full/chunked.bin', data.length);
      assert.equal(s.chunk_size, MiB);
      assert.equal((await sendChunk(server, 'alice', s.file_id, 1, data.subarray(0, MiB))).status, 200);
      const data2 = random(2 * MiB);
      const s2 = await init(server, 'alice', 'full/chunked2.bin', data2.length);
      const tusData = random(1000);
      const created = await fetch(`${server.url}/tus`, {
        method: 'POST',
        headers: { ...tusHeaders, 'upload-length': String(tusData.length), 'upload-metadata': `path ${Buffer.from('full/tus.bin').toString('base64')}` },
      });
      assert.equal(created.status, 201);
      const tusUrl = new URL(created.headers.get('location') ?? '', server.url).toString();
      const patch = () =>
        fetch(tusUrl, {
          method: 'PATCH',
          headers: { ...tusHeaders, 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
          body: tusData,
        });
      const small = random(1000);
      const put = () => fetch(`${server.url}/objects/full/plain.bin`, { method: 'PUT', headers: server.auth('alice'), body: small });

      const filler = path.join(mnt, 'filler');
      fillDisk(filler);

      // The last chunk (1000 bytes) fails once it has all arrived; a whole 1 MiB chunk fails while its body still streams.
      const chunk = await sendChunk(server, 'alice', s.file_id, 2, data.subarray(MiB));
      assert.equal(chunk.status, 507, 'a chunk on a full disk is retryable, not UPLOAD_ABORTED');
      assert.equal(await errorCode(chunk), 'STORAGE_FULL');
      const big = await sendChunk(server, 'alice', s2.file_id, 1, data2.subarray(0, MiB));
      assert.equal(big.status, 507, `a chunk on a full disk is retryable, not UPLOAD_ABORTED: ${await big.clone().text()}`);
      assert.equal(await errorCode(big), 'STORAGE_FULL');
      const p = await patch();
      assert.equal(p.status, 507);
      const head = await fetch(tusUrl, { method: 'HEAD', headers: tusHeaders });
      assert.equal(head.headers.get('upload-offset'), '0', 'the refused PATCH counts no byte');
      const plain = await put();
      assert.equal(plain.status, 507);
      assert.equal(await errorCode(plain), 'STORAGE_FULL');
      // A streamed body (over 64 KiB) fails while it arrives.
      const streamed = await fetch(`${server.url}/objects/full/streamed.bin`, { method: 'PUT', headers: server.auth('alice'), body: random(MiB) });
      assert.equal(streamed.status, 507);
      assert.equal(await errorCode(streamed), 'STORAGE_FULL');

      rmSync(filler);
      assert.equal((await sendChunk(server, 'alice', s.file_id, 2, data.subarray(MiB))).status, 200);
      assert.equal((await complete(server, 'alice', s.file_id)).status, 200);
      for (const n of [1, 2]) assert.equal((await sendChunk(server, 'alice', s2.file_id, n, data2.subarray((n - 1) * MiB, n * MiB))).status, 200);
      assert.equal((await complete(server, 'alice', s2.file_id)).status, 200);
      assert.equal((await patch()).status, 204);
      assert.equal((await put()).status, 200);
      for (const [p2, want] of [
        ['full/chunked.bin', data],
        ['full/chunked2.bin', data2],
        ['full/tus.bin', tusData],
        ['full/plain.bin', small],
      ] as const) {
        const got = await download(server, 'alice', p2);
        assert.equal(got.status, 200, p2);
        assert.equal(sha256hex(got.body), sha256hex(want), p2);
      }
    } finally {
      await ts?.stop();
      unmountTmpfs(mnt);
    }
  });
});
