import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { eventually, fsTempFiles, MiB, multipart, readAll } from './helpers/http.js';
import { chunkOf, download, init, md5b64, random, sendChunk, sha256hex, status } from './helpers/resumable.js';
import { startTestServer, type TestServer } from './helpers/server.js';

interface Stalled {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
}

/**
 * Send `head` of a body announced at `length` bytes, then nothing more: the
 * client stalls without closing. Resolves with the gateway's answer.
 */
function stall(url: string, method: string, headers: Record<string, string>, length: number, head: Buffer): Promise<Stalled> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers: { ...headers, 'content-length': String(length) }, agent: false }, (res) => {
      readAll(res).then((b) => {
        req.destroy();
        const text = b.toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text === '' ? {} : (JSON.parse(text) as Record<string, unknown>) });
      }, reject);
    });
    req.on('error', reject);
    req.setTimeout(30_000, () => req.destroy(new Error('no answer to a stalled body')));
    req.flushHeaders();
    req.write(head);
  });
}

/**
 * A request body that stops arriving is cut after server.body_idle_timeout_seconds:
 * 408 REQUEST_TIMEOUT, the temp file removed, a plain upload's run failed; a
 * chunk or a tus PATCH leaves its session resumable.
 */
describe('stalled request bodies are cut (body_idle_timeout_seconds)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ extra: { server: { body_idle_timeout_seconds: 1 } } });
  });
  after(async () => t.stop());

  async function runOf(body: Record<string, unknown>): Promise<{ status: string; error_code: string | null }> {
    assert.equal(typeof body.run_id, 'string', 'the 408 carries the run_id');
    const res = await fetch(`${t.url}/runs/v1/${body.run_id}`, { headers: t.auth('alice') });
    assert.equal(res.status, 200);
    return (await res.json()) as { status: string; error_code: string | null };
  }

  async function noTempFiles(): Promise<void> {
    await eventually(async () => fsTempFiles(t).length === 0, 5000, 'no temp files left');
  }

  for (const [label, length] of [
    ['a small body', 40 * 1024],
    ['a streamed body', 3 * MiB],
  ] as const) {
    it(`plain PUT, ${label}: 408, run failed, no temp file`, async () => {
      const res = await stall(`${t.url}/objects/idle/put-${length}.bin`, 'PUT', t.auth('alice'), length, random(Math.floor(length / 3)));
      assert.equal(res.status, 408);
      assert.equal(res.body.error_code, 'REQUEST_TIMEOUT');
      assert.equal(res.headers.connection, 'close');
      const run = await runOf(res.body);
      assert.equal(run.status, 'failed');
      assert.equal(run.error_code, 'REQUEST_TIMEOUT');
      await noTempFiles();
      assert.equal((await download(t, 'alice', `idle/put-${length}.bin`)).status, 404);
    });
  }

  it('a body that arrived whole is not cut while its answer takes longer than the idle timeout', async () => {
    for (const size of [4 * 1024, 300 * 1024]) {
      const p = `idle/slow-publish-${size}.bin`;
      // Another publish of the same key holds its lock for longer than the idle timeout.
      const release = await t.server.ctx.pipeline.keyLocks.acquire(`backups/alice/${p}`);
      const timer = setTimeout(release, 2500);
      try {
        const data = random(size);
        const res = await fetch(`${t.url}/objects/${p}`, { method: 'PUT', headers: t.auth('alice'), body: data });
        assert.equal(res.status, 200, await res.clone().text());
        assert.equal(((await res.json()) as { sha256: string }).sha256, sha256hex(data));
      } finally {
        clearTimeout(timer);
        release();
      }
    }
  });

  it('multipart form: 408, run failed, no temp file', async () => {
    const full = multipart([
      { name: 'path', value: 'idle/form.bin' },
      { name: 'file', filename: 'form.bin', data: random(2 * MiB) },
    ]);
    const res = await stall(`${t.url}/upload`, 'POST', { ...t.auth('alice'), 'content-type': full.contentType }, full.body.length, full.body.subarray(0, MiB));
    assert.equal(res.status, 408);
    assert.equal(res.body.error_code, 'REQUEST_TIMEOUT');
    const run = await runOf(res.body);
    assert.equal(run.status, 'failed');
    assert.equal(run.error_code, 'REQUEST_TIMEOUT');
    await noTempFiles();
  });

  it('a chunk: 408, the chunk is missing, the upload resumes and completes', async () => {
    const data = random(2 * MiB);
    const s = await init(t, 'alice', 'idle/chunked.bin', data.length);
    const one = chunkOf(data, s.chunk_size, 1);
    const res = await stall(
      `${t.url}/upload/chunked/${s.file_id}/chunk?chunk_number=1`,
      'POST',
      { ...t.auth('alice'), 'content-type': 'application/octet-stream', 'content-md5': md5b64(one) },
      one.length,
      one.subarray(0, 100_000),
    );
    assert.equal(res.status, 408);
    assert.equal(res.body.error_code, 'REQUEST_TIMEOUT');
    const st = (await (await status(t, 'alice', s.file_id)).json()) as { status: string; missing: number[] };
    assert.equal(st.status, 'active');
    assert.deepEqual(st.missing, [1, 2]);
    for (let n = 1; n <= s.total_chunks; n++) assert.equal((await sendChunk(t, 'alice', s.file_id, n, chunkOf(data, s.chunk_size, n))).status, 200);
    const done = await fetch(`${t.url}/upload/chunked/${s.file_id}/complete`, { method: 'POST', headers: t.auth('alice') });
    assert.equal(done.status, 200);
    const got = await download(t, 'alice', 'idle/chunked.bin');
    assert.equal(sha256hex(got.body), sha256hex(data));
  });

  it('a tus PATCH: 408, the offset counts what arrived, the upload resumes byte-exact', async () => {
    const data = random(3 * MiB);
    const created = await fetch(`${t.url}/tus`, {
      method: 'POST',
      headers: {
        ...t.auth('alice'),
        'tus-resumable': '1.0.0',
        'upload-length': String(data.length),
        'upload-metadata': `path ${Buffer.from('idle/tus.bin').toString('base64')}`,
      },
    });
    assert.equal(created.status, 201);
    const url = new URL(created.headers.get('location') as string, t.url).toString();
    const tusHeaders = { ...t.auth('alice'), 'tus-resumable': '1.0.0', 'content-type': 'application/offset+octet-stream' };
    const res = await stall(url, 'PATCH', { ...tusHeaders, 'upload-offset': '0' }, data.length, data.subarray(0, Math.floor(1.5 * MiB)));
    assert.equal(res.status, 408);
    assert.equal(res.body.error_code, 'REQUEST_TIMEOUT');
    const head = await fetch(url, { method: 'HEAD', headers: { ...t.auth('alice'), 'tus-resumable': '1.0.0' } });
    assert.equal(head.status, 200);
    const offset = Number(head.headers.get('upload-offset'));
    assert.ok(offset <= 1.5 * MiB, `the offset (${offset}) counts only bytes that arrived`);
    const rest = await fetch(url, { method: 'PATCH', headers: { ...tusHeaders, 'upload-offset': String(offset) }, body: data.subarray(offset) });
    assert.equal(rest.status, 204);
    assert.equal(rest.headers.get('upload-offset'), String(data.length));
    const got = await download(t, 'alice', 'idle/tus.bin');
    assert.equal(sha256hex(got.body), sha256hex(data));
  });
});
