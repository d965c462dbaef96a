import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as tus from 'tus-js-client';
import { pgSkip } from './helpers/pg.js';
import { MiB, random, sha256hex } from './helpers/resumable.js';
import { BACKENDS, type Backend, startTestServer, type TestServer } from './helpers/server.js';

function sizeFor(backend: Backend): number {
  return backend === 's3' ? 11 * MiB : Math.floor(2.5 * MiB);
}

/** A TCP proxy that forwards to `port` and cuts every connection once `limit` request bytes in total have passed. */
async function cuttingProxy(port: number, limit: number): Promise<{ url: string; close(): Promise<void> }> {
  let seen = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.on('data', (d: Buffer) => {
      seen += d.length;
      if (seen >= limit) {
        const keep = d.length - (seen - limit);
        if (keep > 0) upstream.write(d.subarray(0, keep));
        // Let the gateway read what arrived, then drop both sides mid-request.
        setTimeout(() => {
          client.destroy();
          upstream.destroy();
        }, 100);
        client.pause();
        return;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => client.write(d));
    for (const s of [client, upstream]) {
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const addr = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${addr.port}`,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

function upload(file: Buffer, opts: tus.UploadOptions): Promise<tus.Upload> {
  return new Promise((resolve, reject) => {
    const u = new tus.Upload(file, {
      retryDelays: null,
      storeFingerprintForResuming: false,
      ...opts,
      onSuccess: () => resolve(u),
      onError: (err) => reject(err),
    });
    u.start();
  });
}

async function download(t: TestServer, client: string, p: string): Promise<Buffer> {
  const res = await fetch(`${t.url}/download?path=${encodeURIComponent(p)}`, { headers: t.auth(client) });
  assert.equal(res.status, 200);
  return Buffer.from(await res.arrayBuffer());
}

async function head(t: TestServer, client: string, uploadUrl: string): Promise<Response> {
  return fetch(new URL(uploadUrl, t.url), { method: 'HEAD', headers: { ...t.auth(client), 'tus-resumable': '1.0.0' } });
}

async function create(t: TestServer, client: string, size: number, p: string): Promise<string> {
  const res = await fetch(`${t.url}/tus`, {
    method: 'POST',
    headers: { ...t.auth(client), 'tus-resumable': '1.0.0', 'upload-length': String(size), 'upload-metadata': `path ${Buffer.from(p).toString('base64')}` },
  });
  assert.equal(res.status, 201, await res.clone().text());
  assert.ok(res.headers.get('upload-expires'), 'Upload-Expires is announced');
  return res.headers.get('location') as string;
}

for (const backend of BACKENDS) {
  describe(`tus (${backend}, sqlite)`, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ backend });
    });
    after(async () => {
      await t.stop();
    });

    it('advertises tus 1.0 with its extensions', async () => {
      const res = await fetch(`${t.url}/tus`, { method: 'OPTIONS' });
      assert.equal(res.status, 204);
      assert.equal(res.headers.get('tus-version'), '1.0.0');
      const ext = (res.headers.get('tus-extension') ?? '').split(',');
      for (const e of ['creation', 'creation-with-upload', 'termination', 'expiration', 'checksum']) assert.ok(ext.includes(e), e);
      assert.match(res.headers.get('tus-checksum-algorithm') ?? '', /sha1/);
      const noKey = await fetch(`${t.url}/tus`, { method: 'POST', headers: { 'tus-resumable': '1.0.0', 'upload-length': '1' } });
      assert.equal(noKey.status, 401);
    });

    it('uploads with tus-js-client, recorded as a tus run', async () => {
      const data = random(sizeFor(backend));
      const u = await upload(data, { endpoint: `${t.url}/tus`, headers: t.auth('alice'), metadata: { path: 'tus/one.bin', filetype: 'application/x-test' } });
      assert.ok(u.url?.includes('/tus/'));
      assert.equal(sha256hex(await download(t, 'alice', 'tus/one.bin')), sha256hex(data));
      const run = await t.server.ctx.db.db.selectFrom('runs').selectAll().where('object_key', '=', 'backups/alice/tus/one.bin').executeTakeFirstOrThrow();
      assert.equal(run.kind, 'tus');
      assert.equal(run.status, 'succeeded');
      assert.equal(run.size, data.length);
      // Small client chunks (less than a part) exercise the part buffering across PATCHes.
      const small = random(backend === 's3' ? 6 * MiB : Math.floor(1.5 * MiB));
      await upload(small, { endpoint: `${t.url}/tus`, headers: t.auth('alice'), metadata: { filename: 'tus/small-chunks.bin' }, chunkSize: 700 * 1024 });
      assert.equal(sha256hex(await download(t, 'alice', 'tus/small-chunks.bin')), sha256hex(small));
    });

    it('resumes after a PATCH cut off halfway', async () => {
      const data = random(sizeFor(backend));
      const cut = Math.floor(data.length * 0.55);
      const proxy = await cuttingProxy(t.server.port, cut);
      let url: string | null = null;
      try {
        const first = new tus.Upload(data, {
          endpoint: `${proxy.url}/tus`,
          headers: t.auth('alice'),
          metadata: { path: 'tus/resumed.bin' },
          retryDelays: null,
          storeFingerprintForResuming: false,
        });
        await new Promise<void>((resolve) => {
          first.options.onError = () => resolve();
          first.options.onSuccess = () => resolve();
          first.start();
        });
        url = first.url;
      } finally {
        await proxy.close();
      }
      assert.ok(url, 'the upload was created before the cut');
      const uploadPath = new URL(url).pathname;
      // The gateway kept what arrived: the offset is past zero and short of the end.
      let offset = 0;
      for (let i = 0; i < 50; i++) {
        const h = await head(t, 'alice', uploadPath);
        assert.equal(h.status, 200);
        offset = Number(h.headers.get('upload-offset'));
        if (offset > 0) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.ok(offset > 0 && offset < data.length, `offset ${offset} of ${data.length}`);
      // Another client cannot see or touch it.
      assert.equal((await head(t, 'bob', uploadPath)).status, 404);
      const bobPatch = await fetch(new URL(uploadPath, t.url), {
        method: 'PATCH',
        headers: { ...t.auth('bob'), 'tus-resumable': '1.0.0', 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream' },
        body: Buffer.alloc(10),
      });
      assert.equal(bobPatch.status, 404);
      // Resume with the stored URL, straight to the gateway.
      await upload(data, { uploadUrl: new URL(uploadPath, t.url).toString(), headers: t.auth('alice') });
      assert.equal(sha256hex(await download(t, 'alice', 'tus/resumed.bin')), sha256hex(data));
    });

    it('verifies Upload-Checksum (sha1), and terminates uploads', async () => {
      const data = random(4096);
      const loc = await create(t, 'alice', data.length, 'tus/checked.bin');
      const patch = (body: Buffer, sum: string, offset = 0) =>
        fetch(new URL(loc, t.url), {
          method: 'PATCH',
          headers: {
            ...t.auth('alice'),
            'tus-resumable': '1.0.0',
            'upload-offset': String(offset),
            'content-type': 'application/offset+octet-stream',
            'upload-checksum': `sha1 ${sum}`,
          },
          body,
        });
      const wrong = await patch(data.subarray(0, 1000), createHash('sha1').update('other').digest('base64'));
      assert.equal(wrong.status, 460);
      assert.equal((await head(t, 'alice', loc)).headers.get('upload-offset'), '0');
      const ok = await patch(data.subarray(0, 1000), createHash('sha1').update(data.subarray(0, 1000)).digest('base64'));
      assert.equal(ok.status, 204);
      assert.equal(ok.headers.get('upload-offset'), '1000');
      const rest = await patch(data.subarray(1000), createHash('sha1').update(data.subarray(1000)).digest('base64'), 1000);
      assert.equal(rest.status, 204);
      assert.equal(sha256hex(await download(t, 'alice', 'tus/checked.bin')), sha256hex(data));

      // creation-with-upload: the POST carries the first bytes.
      const withBody = await fetch(`${t.url}/tus`, {
        method: 'POST',
        headers: {
          ...t.auth('alice'),
          'tus-resumable': '1.0.0',
          'upload-length': '10',
          'upload-metadata': `path ${Buffer.from('tus/with-body.bin').toString('base64')}`,
          'content-type': 'application/offset+octet-stream',
        },
        body: Buffer.from('0123456789'),
      });
      assert.equal(withBody.status, 201);
      assert.equal(withBody.headers.get('upload-offset'), '10');
      assert.equal((await download(t, 'alice', 'tus/with-body.bin')).toString(), '0123456789');
      const emptyRes = await fetch(`${t.url}/tus`, {
        method: 'POST',
        headers: {
          ...t.auth('alice'),
          'tus-resumable': '1.0.0',
          'upload-length': '0',
          'upload-metadata': `path ${Buffer.from('tus/empty.bin').toString('base64')}`,
        },
      });
      assert.equal(emptyRes.status, 201);
      assert.equal((await download(t, 'alice', 'tus/empty.bin')).length, 0);
      const doomed = await create(t, 'alice', 100, 'tus/doomed.bin');
      assert.equal((await fetch(new URL(doomed, t.url), { method: 'DELETE', headers: { ...t.auth('bob'), 'tus-resumable': '1.0.0' } })).status, 404);
      const del = await fetch(new URL(doomed, t.url), { method: 'DELETE', headers: { ...t.auth('alice'), 'tus-resumable': '1.0.0' } });
      assert.equal(del.status, 204);
      assert.equal((await head(t, 'alice', doomed)).status, 410);
      const bad = await fetch(`${t.url}/tus`, {
        method: 'POST',
        headers: { ...t.auth('alice'), 'tus-resumable': '1.0.0', 'upload-length': '10', 'upload-metadata': `path ${Buffer.from('../x').toString('base64')}` },
      });
      assert.equal(bad.status, 400);
      assert.equal(((await bad.json()) as { error_code: string }).error_code, 'INVALID_PATH');
      const big = await fetch(`${t.url}/tus`, {
        method: 'POST',
        headers: { ...t.auth('alice'), 'tus-resumable': '1.0.0', 'upload-length': String(200 * MiB) },
      });
      assert.equal(big.status, 413);
    });
  });
}

describe('tus across gateways (s3, postgres)', { skip: pgSkip }, () => {
  it('resumes on a second gateway an upload a first gateway started', async () => {
    const a = await startTestServer({ backend: 's3', db: 'postgres' });
    const b = await startTestServer({ backend: 's3', databaseUrl: a.databaseUrl, s3rver: a.s3rver });
    try {
      const data = random(11 * MiB);
      const loc = await create(a, 'alice', data.length, 'tus/two.bin');
      const first = 6 * MiB + 123; // one full part and a tail held for the next PATCH
      const r1 = await fetch(new URL(loc, a.url), {
        method: 'PATCH',
        headers: { ...a.auth('alice'), 'tus-resumable': '1.0.0', 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
        body: data.subarray(0, first),
      });
      assert.equal(r1.status, 204);
      assert.equal(r1.headers.get('upload-offset'), String(first));
      await upload(data, { uploadUrl: new URL(loc, b.url).toString(), headers: b.auth('alice') });
      assert.equal(sha256hex(await download(a, 'alice', 'tus/two.bin')), sha256hex(data));
    } finally {
      await b.stop();
      await a.stop();
    }
  });
});
