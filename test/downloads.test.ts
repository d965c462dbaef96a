import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readlinkSync } from 'node:fs';
import { get as httpGet } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { bytes, eventually, MiB, multipart, put, request, sha256 } from './helpers/http.js';
import { BACKENDS, startTestServer, type TestServer } from './helpers/server.js';

for (const backend of BACKENDS) {
  describe(`downloads (${backend})`, () => {
    let t: TestServer;
    const data = bytes(1000);
    const get = (client: string, p: string, headers: Record<string, string> = {}, method = 'GET') =>
      request(`${t.url}/download?path=${encodeURIComponent(p)}`, { method, headers: { ...t.auth(client), ...headers } });

    before(async () => {
      t = await startTestServer({ backend });
      assert.equal((await put(t, 'alice', 'dl/data.bin', data, { 'content-type': 'application/x-custom' })).status, 200);
    });
    after(async () => {
      await t?.stop();
    });

    describe('exists', () => {
      it('GET /exists describes an object', async () => {
        const before = Date.now();
        const body = bytes(321);
        const up = (await put(t, 'alice', 'dl/exists.bin', body)).json();
        const res = await request(`${t.url}/exists?path=dl/exists.bin`, { headers: t.auth('alice') });
        assert.equal(res.status, 200);
        const j = res.json();
        assert.equal(j.exists, true);
        assert.equal(j.size, 321);
        assert.equal(j.sha256, sha256(body));
        assert.equal(j.sha256, up.sha256);
        assert.equal(typeof j.uploaded_at, 'string');
        const at = Date.parse(String(j.uploaded_at));
        assert.ok(at >= before - 2000 && at <= Date.now() + 1000, `uploaded_at ${j.uploaded_at}`);
      });

      it('GET /exists says exists:false for a missing object (and for another client objects)', async () => {
        const res = await request(`${t.url}/exists?path=dl/nothing-here.bin`, { headers: t.auth('alice') });
        assert.equal(res.status, 200);
        assert.equal(res.json().exists, false);
        const other = await request(`${t.url}/exists?path=dl/data.bin`, { headers: t.auth('bob') });
        assert.equal(other.json().exists, false);
      });

      it('HEAD /exists is 200 or 404 with no body', async () => {
        const yes = await request(`${t.url}/exists?path=dl/data.bin`, { method: 'HEAD', headers: t.auth('alice') });
        assert.equal(yes.status, 200);
        assert.equal(yes.body.length, 0);
        assert.equal(yes.headers['x-s3up-size'], String(data.length));
        assert.equal(yes.headers['x-s3up-sha256'], sha256(data));
        const no = await request(`${t.url}/exists?path=dl/none.bin`, { method: 'HEAD', headers: t.auth('alice') });
        assert.equal(no.status, 404);
        assert.equal(no.body.length, 0);
      });

      it('needs the path and a key', async () => {
        const noPath = await request(`${t.url}/exists`, { headers: t.auth('alice') });
        assert.equal(noPath.status, 400);
        assert.ok(['PATH_REQUIRED', 'INVALID_REQUEST'].includes(String(noPath.json().error_code)));
        const bad = await request(`${t.url}/exists?path=../bob/x`, { headers: t.auth('alice') });
        assert.equal(bad.status, 400);
        assert.equal(bad.json().error_code, 'INVALID_PATH');
        const anon = await request(`${t.url}/exists?path=dl/data.bin`);
        assert.equal(anon.status, 401);
        assert.equal(anon.json().error_code, 'UNAUTHORIZED');
      });
    });

    describe('download', () => {
      it('GET /download returns the bytes with length, type, etag and accept-ranges', async () => {
        const res = await get('alice', 'dl/data.bin');
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, data);
        assert.equal(res.headers['content-length'], String(data.length));
        assert.equal(res.headers['content-type'], 'application/x-custom');
        assert.equal(res.headers['accept-ranges'], 'bytes');
        assert.equal(res.headers['x-content-type-options'], 'nosniff');
        assert.match(String(res.headers['content-disposition']), /filename="data\.bin"/);
        assert.ok(res.headers.etag);
      });

      it('Content-Type echoes the type of a multipart upload', async () => {
        const form = multipart([
          { name: 'path', value: 'dl/pic.png' },
          { name: 'file', filename: 'pic.png', data: bytes(100), contentType: 'image/png' },
        ]);
        const up = await request(`${t.url}/upload`, { method: 'POST', headers: { ...t.auth('alice'), 'content-type': form.contentType }, body: form.body });
        assert.equal(up.status, 200);
        const res = await get('alice', 'dl/pic.png');
        assert.equal(res.headers['content-type'], 'image/png');
      });

      const ranges: Array<[string, number, number]> = [
        ['bytes=0-9', 0, 9],
        ['bytes=100-199', 100, 199],
        ['bytes=-50', 950, 999],
        ['bytes=900-', 900, 999],
        ['bytes=990-5000', 990, 999],
        ['bytes=0-0', 0, 0],
        ['bytes=999-999', 999, 999],
        ['bytes=-5000', 0, 999],
      ];
      for (const [header, start, end] of ranges) {
        it(`Range ${header} -> 206 bytes ${start}-${end}`, async () => {
          const res = await get('alice', 'dl/data.bin', { range: header });
          assert.equal(res.status, 206);
          assert.equal(res.headers['content-range'], `bytes ${start}-${end}/${data.length}`);
          assert.equal(res.headers['content-length'], String(end - start + 1));
          assert.deepEqual(res.body, data.subarray(start, end + 1));
        });
      }

      for (const header of ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0', 'bytes=20-10']) {
        it(`Range ${header} -> 416 with the error contract`, async () => {
          const res = await get('alice', 'dl/data.bin', { range: header });
          assert.equal(res.status, 416);
          assert.equal(res.headers['content-range'], `bytes */${data.length}`);
          const j = res.json();
          assert.equal(j.error_code, 'RANGE_NOT_SATISFIABLE');
          assert.equal(typeof j.message, 'string');
          assert.equal(typeof j.request_id, 'string');
        });
      }

      it('a range on an empty object is 416; the whole empty object is 200', async () => {
        assert.equal((await put(t, 'alice', 'dl/empty.bin', Buffer.alloc(0))).status, 200);
        const whole = await get('alice', 'dl/empty.bin');
        assert.equal(whole.status, 200);
        assert.equal(whole.body.length, 0);
        assert.equal(whole.headers['content-length'], '0');
        const ranged = await get('alice', 'dl/empty.bin', { range: 'bytes=0-' });
        assert.equal(ranged.status, 416);
      });

      it('an unparseable or multi-range header serves the whole object', async () => {
        for (const header of ['bytes=0-1,5-6', 'items=0-1', 'bytes=abc']) {
          const res = await get('alice', 'dl/data.bin', { range: header });
          assert.equal(res.status, 200, header);
          assert.deepEqual(res.body, data);
        }
      });

      it('ETag with If-None-Match -> 304; another tag -> 200; If-Range with a stale tag -> 200 whole', async () => {
        const first = await get('alice', 'dl/data.bin');
        const etag = String(first.headers.etag);
        assert.equal(etag, `"${sha256(data)}"`);
        const again = await get('alice', 'dl/data.bin', { 'if-none-match': etag });
        assert.equal(again.status, 304);
        assert.equal(again.body.length, 0);
        const list = await get('alice', 'dl/data.bin', { 'if-none-match': `"nope", ${etag}` });
        assert.equal(list.status, 304);
        // If-None-Match compares weakly (RFC 9110): a W/ tag from a cache still matches.
        const weak = await get('alice', 'dl/data.bin', { 'if-none-match': `W/${etag}` });
        assert.equal(weak.status, 304);
        const other = await get('alice', 'dl/data.bin', { 'if-none-match': '"something-else"' });
        assert.equal(other.status, 200);
        assert.deepEqual(other.body, data);
        const ifRange = await get('alice', 'dl/data.bin', { range: 'bytes=0-9', 'if-range': '"stale"' });
        assert.equal(ifRange.status, 200);
        assert.deepEqual(ifRange.body, data);
        const ifRangeOk = await get('alice', 'dl/data.bin', { range: 'bytes=0-9', 'if-range': etag });
        assert.equal(ifRangeOk.status, 206);
      });

      it('the ETag changes when the object is overwritten', async () => {
        const a = bytes(200);
        const b = bytes(200);
        await put(t, 'alice', 'dl/etag.bin', a);
        const ta = (await get('alice', 'dl/etag.bin')).headers.etag;
        await put(t, 'alice', 'dl/etag.bin', b);
        const res = await get('alice', 'dl/etag.bin', { 'if-none-match': String(ta) });
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, b);
        assert.notEqual(res.headers.etag, ta);
      });

      it('HEAD /download has the headers and Content-Length but no body', async () => {
        const res = await get('alice', 'dl/data.bin', {}, 'HEAD');
        assert.equal(res.status, 200);
        assert.equal(res.headers['content-length'], String(data.length));
        assert.equal(res.headers['content-type'], 'application/x-custom');
        assert.equal(res.body.length, 0);
        const ranged = await get('alice', 'dl/data.bin', { range: 'bytes=10-19' }, 'HEAD');
        assert.equal(ranged.status, 206);
        assert.equal(ranged.headers['content-length'], '10');
        assert.equal(ranged.body.length, 0);
      });

      it('404 with the error contract for a missing object and for another client object', async () => {
        for (const [client, p] of [
          ['alice', 'dl/missing.bin'],
          ['bob', 'dl/data.bin'],
        ] as const) {
          const res = await get(client, p);
          assert.equal(res.status, 404);
          const j = res.json();
          assert.equal(j.error_code, 'NOT_FOUND');
          assert.equal(typeof j.message, 'string');
          assert.equal(typeof j.request_id, 'string');
          assert.equal(res.headers['x-request-id'], j.request_id);
        }
        const head = await get('alice', 'dl/missing.bin', {}, 'HEAD');
        assert.equal(head.status, 404);
      });

      it('GET /objects/<path> is an alias, with percent-encoded names', async () => {
        const body = bytes(777);
        const name = 'dl/dir with space/ünïcode #1.bin';
        const enc = name.split('/').map(encodeURIComponent).join('/');
        const up = await request(`${t.url}/objects/${enc}`, { method: 'PUT', headers: t.auth('alice'), body });
        assert.equal(up.status, 200, up.body.toString());
        assert.equal(up.json().s3_key, `backups/alice/${name}`);
        const res = await request(`${t.url}/objects/${enc}`, { headers: t.auth('alice') });
        assert.equal(res.status, 200);
        assert.deepEqual(res.body, body);
        const viaQuery = await get('alice', name);
        assert.deepEqual(viaQuery.body, body);
        const ranged = await request(`${t.url}/objects/${enc}`, { headers: { ...t.auth('alice'), range: 'bytes=-7' } });
        assert.equal(ranged.status, 206);
        assert.deepEqual(ranged.body, body.subarray(770));
      });

      it('DELETE /objects/<path>: then 404, exists:false, and the run gets deleted_at', async () => {
        const up = (await put(t, 'alice', 'dl/gone.bin', bytes(100))).json();
        const bobDel = await request(`${t.url}/objects/dl/gone.bin`, { method: 'DELETE', headers: t.auth('bob') });
        assert.equal(bobDel.status, 404);
        const del = await request(`${t.url}/objects/dl/gone.bin`, { method: 'DELETE', headers: t.auth('alice') });
        assert.equal(del.status, 200);
        assert.equal(del.json().deleted, true);
        assert.equal((await get('alice', 'dl/gone.bin')).status, 404);
        assert.equal((await request(`${t.url}/exists?path=dl/gone.bin`, { headers: t.auth('alice') })).json().exists, false);
        const run = await t.server.ctx.runs.get(up.run_id as string);
        assert.equal(typeof run?.deleted_at, 'number');
        assert.equal(run?.status, 'succeeded');
        const again = await request(`${t.url}/objects/dl/gone.bin`, { method: 'DELETE', headers: t.auth('alice') });
        assert.equal(again.status, 404);
        assert.equal(again.json().error_code, 'NOT_FOUND');
      });

      it('abandoned downloads release their file handles and store connections', async () => {
        const big = bytes(32 * MiB);
        assert.equal((await put(t, 'alice', 'dl/abandon.bin', big)).status, 200);
        // Descriptors of this process (the gateway runs in it) open on the object's file.
        const objectFds = () =>
          readdirSync('/proc/self/fd').filter((fd) => {
            try {
              return readlinkSync(`/proc/self/fd/${fd}`).endsWith('abandon.bin');
            } catch {
              return false;
            }
          }).length;
        // More clients than the S3 client's socket pool (64) read a little and vanish.
        await Promise.all(
          Array.from(
            { length: 80 },
            () =>
              new Promise<void>((resolve) => {
                const req = httpGet(`${t.url}/objects/dl/abandon.bin`, { headers: t.auth('alice'), agent: false }, (res) => {
                  res.once('data', () => {
                    req.destroy();
                    resolve();
                  });
                });
                req.on('error', () => resolve());
              }),
          ),
        );
        await eventually(async () => objectFds() === 0, 10_000, `the object's file handles to be closed (${objectFds()} open)`);
        const res = await get('alice', 'dl/abandon.bin');
        assert.equal(res.status, 200);
        assert.equal(sha256(res.body), sha256(big));
      });

      it('a 50 MB object streams back intact', async () => {
        const big = bytes(50 * MiB);
        const up = await put(t, 'alice', 'dl/big.bin', big);
        assert.equal(up.status, 200);
        assert.equal(up.json().sha256, sha256(big));
        const res = await fetch(`${t.url}/objects/dl/big.bin`, { headers: t.auth('alice') });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('content-length'), String(big.length));
        const hash = createHash('sha256');
        let n = 0;
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          hash.update(chunk);
          n += chunk.length;
        }
        assert.equal(n, big.length);
        assert.equal(hash.digest('hex'), sha256(big));
        const tail = await get('alice', 'dl/big.bin', { range: `bytes=${40 * MiB}-` });
        assert.equal(tail.status, 206);
        assert.deepEqual(tail.body, big.subarray(40 * MiB));
      });
    });
  });
}
