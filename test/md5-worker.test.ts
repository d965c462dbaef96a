import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { md5Worker, OffThreadMd5 } from '../src/uploads/md5-worker.js';
import { complete, download, init, MiB, md5b64, random, sendChunk, sha256hex } from './helpers/resumable.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/** Stop the running MD5 worker (if any) and wait until it is gone. */
async function stopWorker(): Promise<void> {
  const w = md5Worker();
  if (!w) return;
  const exited = new Promise((r) => w.once('exit', r));
  await w.terminate();
  await exited;
}

/** Wait (bounded) until a hash has started a worker. */
async function workerStarted(): Promise<NonNullable<ReturnType<typeof md5Worker>>> {
  for (let i = 0; i < 1000; i++) {
    const w = md5Worker();
    if (w) return w;
    await sleep(5);
  }
  throw new Error('no MD5 worker started');
}

describe('per-chunk MD5 worker', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer();
  });
  after(async () => {
    await t.stop();
  });

  it('is a real worker file and hashes like node:crypto (several shared slots)', async () => {
    const data = random(5 * MiB + 123);
    const h = new OffThreadMd5();
    for (let off = 0; off < data.length; off += 700_000) await h.update(data.subarray(off, off + 700_000));
    assert.equal(await h.digest(), createHash('md5').update(data).digest('hex'));
  });

  it('a worker that dies mid-hash fails the chunk with a retryable 503 (no hang), and the chunk then goes through', async () => {
    const data = random(2 * MiB);
    const s = await init(t, 'alice', 'md5/worker-dies.bin', data.length);
    const chunk = data.subarray(0, MiB);
    await stopWorker();
    // Chunked transfer encoding: the body stays open until the worker is gone.
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(`${t.url}/upload/chunked/${s.file_id}/chunk?chunk_number=1`, {
        method: 'POST',
        headers: { ...t.auth('alice'), 'content-type': 'application/octet-stream', 'content-md5': md5b64(chunk) },
      });
      req.on('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.write(chunk.subarray(0, MiB / 2));
      // The chunk's hash started the worker: stop it while the rest is still to come.
      workerStarted()
        .then(async (w) => {
          const exited = new Promise((r) => w.once('exit', r));
          await w.terminate();
          await exited;
          req.end(chunk.subarray(MiB / 2));
        })
        .catch(reject);
    });
    const res = await answer;
    assert.equal(res.status, 503, res.body);
    const err = JSON.parse(res.body) as { error_code: string; message: string };
    assert.equal(err.error_code, 'SERVICE_UNAVAILABLE');
    assert.match(err.message, /MD5 hasher stopped/);
    // Retry: a new worker hashes it.
    for (const n of [1, 2]) {
      const part = data.subarray((n - 1) * MiB, n * MiB);
      const r = await sendChunk(t, 'alice', s.file_id, n, part);
      assert.equal(r.status, 200, await r.text());
    }
    assert.equal((await complete(t, 'alice', s.file_id)).status, 200);
    const got = await download(t, 'alice', 'md5/worker-dies.bin');
    assert.equal(sha256hex(got.body), sha256hex(data));
  });

  it('a hash whose worker died never continues on a new one', async () => {
    const h = new OffThreadMd5();
    await h.update(random(1000));
    await stopWorker();
    const next = new OffThreadMd5();
    await next.update(Buffer.from('abc'));
    assert.equal(await next.digest(), createHash('md5').update('abc').digest('hex'));
    await assert.rejects(h.update(random(10)), (e: { code?: string }) => e.code === 'SERVICE_UNAVAILABLE');
    await assert.rejects(h.digest(), (e: { code?: string }) => e.code === 'SERVICE_UNAVAILABLE');
  });
});
