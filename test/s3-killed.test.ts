// The S3 store process is killed (SIGKILL) in the middle of an upload and
// started again on the same folder: a failing request answers a retryable 503,
// no offset or chunk counts bytes the store did not take, the same upload then
// completes byte-exact, and every record tells the truth.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import * as tus from 'tus-js-client';
import { request } from './helpers/http.js';
import { chunkOf, complete, init, MiB, md5b64, random, sendChunk } from './helpers/resumable.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { assertNothingAcknowledgedLost, assertRecordsTellTheTruth } from './helpers/truth.js';

describe('S3 store killed mid-upload', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ backend: 's3' });
  });
  after(async () => t.stop());

  const store = () => {
    assert.ok(t.s3rver);
    return t.s3rver;
  };

  it('tus: the store dies during the PATCHes; the failing PATCH is 503, the offset never passes stored bytes, the client resumes byte-exact', async () => {
    const data = random(12 * MiB + 321);
    const failures: number[] = [];
    const offsetsAtFailure: number[] = [];
    let patches = 0;
    let uploadUrl: string | null = null;
    await new Promise<void>((resolve, reject) => {
      const u = new tus.Upload(data, {
        endpoint: `${t.url}/tus`,
        headers: t.auth('alice'),
        metadata: { filename: 'killed/tus.bin' },
        chunkSize: MiB,
        storeFingerprintForResuming: false,
        retryDelays: [0, 100, 200, 400, 800, 1000, 1000, 1000],
        onBeforeRequest: async (req) => {
          // The store dies before the third PATCH and stays down until a PATCH fails:
          // a part must reach it before the upload can complete, so one fails for sure.
          if (req.getMethod() === 'PATCH' && ++patches === 3) await store().kill();
        },
        onShouldRetry: (err) => {
          const status = (err as tus.DetailedError).originalResponse?.getStatus() ?? 0;
          failures.push(status);
          return status >= 500;
        },
        onAfterResponse: async (req, res) => {
          const location = res.getHeader('location');
          if (req.getMethod() === 'POST' && location) uploadUrl = new URL(location, t.url).toString();
          if (res.getStatus() < 500 || uploadUrl === null || failures.length > 0) return;
          const head = await fetch(uploadUrl, { method: 'HEAD', headers: { ...t.auth('alice'), 'tus-resumable': '1.0.0' } });
          offsetsAtFailure.push(Number(head.headers.get('upload-offset')));
          await store().restart();
        },
        onError: reject,
        onSuccess: () => resolve(),
      });
      u.start();
    });
    assert.ok(failures.length >= 1, 'with the store down, a PATCH must fail');
    for (const s of failures) assert.equal(s, 503, `a dead store answers 503, got ${s}`);
    for (const off of offsetsAtFailure) assert.ok(off < data.length, `after the failure the offset (${off}) must not reach the length`);
    const res = await fetch(`${t.url}/download?path=killed/tus.bin`, { headers: t.auth('alice') });
    assert.equal(res.status, 200);
    assert.ok(Buffer.from(await res.arrayBuffer()).equals(data), 'byte-exact');
    const truth = await assertRecordsTellTheTruth({ kind: 's3', s3rver: store() }, t.databaseUrl);
    assertNothingAcknowledgedLost(truth, [{ key: 'backups/alice/killed/tus.bin', bytes: data }]);
  });

  it('chunked: the store dies while a chunk streams in; that chunk is 503 and missing, re-sent after the restart it completes byte-exact', async () => {
    const data = random(15 * MiB + 77);
    const s = await init(t, 'alice', 'killed/chunked.bin', data.length);
    assert.equal(s.chunk_size, 5 * MiB);
    const first = await sendChunk(t, 'alice', s.file_id, 1, chunkOf(data, s.chunk_size, 1));
    assert.equal(first.status, 200, await first.text());

    // Chunk 2: half of it goes out, then the store is killed, then the rest.
    const chunk2 = chunkOf(data, s.chunk_size, 2);
    async function* body(): AsyncGenerator<Buffer> {
      yield chunk2.subarray(0, chunk2.length / 2);
      await store().kill();
      yield chunk2.subarray(chunk2.length / 2);
    }
    const cut = await request(`${t.url}/upload/chunked/${s.file_id}/chunk?chunk_number=2`, {
      method: 'POST',
      headers: { ...t.auth('alice'), 'content-type': 'application/octet-stream', 'content-md5': md5b64(chunk2), 'content-length': String(chunk2.length) },
      body: body(),
      timeoutMs: 120_000,
    });
    assert.equal(cut.status, 503, cut.body.toString());
    assert.equal(cut.json<{ error_code: string }>().error_code, 'STORAGE_UNAVAILABLE');
    const st = (await (await fetch(`${t.url}/upload/chunked/${s.file_id}/status`, { headers: t.auth('alice') })).json()) as { uploaded_chunks: number[] };
    assert.deepEqual(st.uploaded_chunks, [1], 'the cut chunk is not counted');

    await store().restart();
    for (let n = 2; n <= s.total_chunks; n++) {
      const res = await sendChunk(t, 'alice', s.file_id, n, chunkOf(data, s.chunk_size, n));
      assert.equal(res.status, 200, await res.text());
    }
    const done = await complete(t, 'alice', s.file_id);
    assert.equal(done.status, 200, await done.clone().text());
    const dl = await fetch(`${t.url}/download?path=killed/chunked.bin`, { headers: t.auth('alice') });
    assert.ok(Buffer.from(await dl.arrayBuffer()).equals(data), 'byte-exact');
    const truth = await assertRecordsTellTheTruth({ kind: 's3', s3rver: store() }, t.databaseUrl);
    assertNothingAcknowledgedLost(truth, [
      { key: 'backups/alice/killed/tus.bin', bytes: truth.objects.find((o) => o.key === 'backups/alice/killed/tus.bin')?.bytes ?? Buffer.alloc(0) },
      { key: s.s3_key, bytes: data },
    ]);
  });
});
