import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DirectUploads, MAX_PRESIGN_SECONDS } from '../src/uploads/direct.js';
import { pgSkip } from './helpers/pg.js';
import { MiB, random, sha256hex } from './helpers/resumable.js';
import { type DbKind, startTestServer, type TestServer } from './helpers/server.js';

async function post(t: TestServer, client: string, url: string, body: unknown): Promise<Response> {
  return fetch(`${t.url}${url}`, { method: 'POST', headers: { ...t.auth(client), 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function formUpload(t: TestServer, client: string, key: string, data: Buffer): Promise<Response> {
  const form = new FormData();
  form.append('key', key);
  form.append('file', new Blob([data], { type: 'application/zip' }), 'run.zip');
  return fetch(`${t.url}/runs/upload`, { method: 'POST', headers: t.auth(client), body: form });
}

async function exists(t: TestServer, client: string, p: string): Promise<boolean> {
  const res = await fetch(`${t.url}/exists?path=${encodeURIComponent(p)}`, { headers: t.auth(client) });
  return ((await res.json()) as { exists: boolean }).exists;
}

/**
 * Recompute an AWS SigV4 query signature for the presigned URL with the given
 * header values: shows which request a real S3 accepts (s3rver checks nothing).
 */
function sigv4Matches(url: string, secret: string, headers: Record<string, string>): boolean {
  const u = new URL(url);
  const q = u.searchParams;
  const signature = q.get('X-Amz-Signature');
  const signed = (q.get('X-Amz-SignedHeaders') ?? '').split(';');
  const [, date, region, service] = (q.get('X-Amz-Credential') ?? '').split('/');
  const params = [...q.entries()].filter(([k]) => k !== 'X-Amz-Signature').sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const enc = (s: string) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
  const canonicalQuery = params.map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');
  const all: Record<string, string> = { host: u.host, ...headers };
  const canonicalHeaders = signed.map((h) => `${h}:${(all[h] ?? '').trim()}\n`).join('');
  const canonical = ['PUT', u.pathname, canonicalQuery, canonicalHeaders, signed.join(';'), 'UNSIGNED-PAYLOAD'].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', q.get('X-Amz-Date'), scope, createHash('sha256').update(canonical).digest('hex')].join('\n');
  let key: Buffer = createHmac('sha256', `AWS4${secret}`)
    .update(date ?? '')
    .digest();
  for (const part of [region, service, 'aws4_request'])
    key = createHmac('sha256', key)
      .update(part ?? '')
      .digest();
  return createHmac('sha256', key).update(toSign).digest('hex') === signature;
}

/** The SigV4 signing key for S3 (date yyyymmdd, region). */
function signingKey(secret: string, date: string, region: string): Buffer {
  let key: Buffer = createHmac('sha256', `AWS4${secret}`).update(date).digest();
  for (const part of [region, 's3', 'aws4_request']) key = createHmac('sha256', key).update(part).digest();
  return key;
}

interface PostPolicy {
  expiration: string;
  conditions: Array<unknown[] | Record<string, string>>;
}

/** Whether a presigned POST form verifies with the store's secret (a real S3 checks this; s3rver does not). */
function postPolicyMatches(fields: Record<string, string>, secret: string): boolean {
  const [, date, region] = (fields['X-Amz-Credential'] ?? '').split('/');
  const sig = createHmac('sha256', signingKey(secret, date ?? '', region ?? ''))
    .update(fields.Policy ?? '')
    .digest('hex');
  return sig === fields['X-Amz-Signature'];
}

/** POST the presigned form to the store: every field, then the file last. */
async function postForm(url: string, fields: Record<string, string>, data: Buffer): Promise<Response> {
  const form = new FormData();
  for (const [k, v] of Object.entries(fields)) form.append(k, v);
  form.append('file', new Blob([data]), 'run.zip');
  return fetch(url, { method: 'POST', body: form });
}

describe('direct uploads (s3 presigned PUT)', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ backend: 's3', clients: [{ name: 'alice' }, { name: 'bob' }, { name: 'small', max_file_size_mb: 1 }] });
  });
  after(async () => {
    await t.stop();
  });

  it('issues a presigned PUT bound to size and type; upload_complete verifies it with HEAD', async () => {
    const data = random(3000);
    const res = await post(t, 'alice', '/runs/upload-url', { path: 'runs/r1.zip', size: data.length, content_type: 'application/zip' });
    assert.equal(res.status, 200);
    const out = (await res.json()) as { url: string; key: string; ttl: number; headers: Record<string, string>; expiresAt: string; run_id: string };
    assert.equal(out.key, 'backups/alice/runs/r1.zip');
    assert.equal(out.ttl, 900);
    assert.ok(Math.abs(Date.parse(out.expiresAt) - (Date.now() + 900_000)) < 10_000);
    assert.deepEqual(out.headers, { 'content-type': 'application/zip', 'content-length': String(data.length) });
    assert.equal((out as { method?: string }).method, 'PUT');
    const q = new URL(out.url).searchParams;
    assert.equal(q.get('X-Amz-Expires'), '900');
    assert.deepEqual((q.get('X-Amz-SignedHeaders') ?? '').split(';').sort(), ['content-length', 'content-type', 'host']);
    // The signature covers the declared size and type: only that request verifies.
    const secret = t.s3rver?.secretAccessKey ?? '';
    assert.ok(sigv4Matches(out.url, secret, { 'content-length': String(data.length), 'content-type': 'application/zip' }));
    assert.ok(!sigv4Matches(out.url, secret, { 'content-length': String(data.length + 1), 'content-type': 'application/zip' }));
    assert.ok(!sigv4Matches(out.url, secret, { 'content-length': String(data.length), 'content-type': 'text/html' }));

    const queued = await t.server.ctx.runs.get(out.run_id);
    assert.equal(queued?.status, 'queued');
    assert.equal(queued?.kind, 'direct');
    const put = await fetch(out.url, { method: 'PUT', headers: out.headers, body: data });
    assert.equal(put.status, 200);
    const tel = await post(t, 'alice', '/telemetry', { event: 'upload_complete', key: out.key, size: data.length, durationMs: 12 });
    assert.equal(tel.status, 200);
    const telBody = (await tel.json()) as { outcome: string; run_status: string; run_id: string };
    assert.equal(telBody.outcome, 'verified');
    assert.equal(telBody.run_status, 'succeeded');
    assert.equal(telBody.run_id, out.run_id);
    assert.equal((await t.server.ctx.runs.get(out.run_id))?.status, 'succeeded');
  });

  it('refuses a presigned PUT with the wrong size (s3rver stores it; the gateway fails the run and removes it)', async () => {
    const res = await post(t, 'alice', '/runs/upload-url', { path: 'runs/wrong.zip', size: 100, content_type: 'application/zip' });
    const out = (await res.json()) as { url: string; key: string; run_id: string };
    // s3rver does not check signatures: a body of another size gets in. A real S3 refuses it (see the signature test above).
    const put = await fetch(out.url, { method: 'PUT', headers: { 'content-type': 'application/zip' }, body: random(150) });
    assert.equal(put.status, 200);
    const tel = await post(t, 'alice', '/telemetry', { event: 'upload_complete', key: out.key, size: 150, durationMs: 5 });
    const body = (await tel.json()) as { outcome: string; run_status: string };
    assert.equal(body.outcome, 'size_mismatch');
    assert.equal(body.run_status, 'failed');
    const run = await t.server.ctx.runs.get(out.run_id);
    assert.equal(run?.error_code, 'SIZE_MISMATCH');
    assert.equal(await exists(t, 'alice', 'runs/wrong.zip'), false);
    // Reported but never uploaded: failed as missing.
    const ghost = (await (await post(t, 'alice', '/runs/upload-url', { runId: 'ghost' })).json()) as { key: string; run_id: string; method: string };
    assert.equal(ghost.key, 'backups/alice/runs/ghost.zip');
    assert.equal(ghost.method, 'POST');
    const g = (await (await post(t, 'alice', '/telemetry', { event: 'upload_complete', key: ghost.key })).json()) as { outcome: string };
    assert.equal(g.outcome, 'missing');
    assert.equal((await t.server.ctx.runs.get(ghost.run_id))?.error_code, 'NOT_FOUND');
    // Another client's key is not found for bob.
    assert.equal((await post(t, 'bob', '/telemetry', { event: 'upload_complete', key: out.key })).status, 404);
  });

  it('without a size, issues a presigned POST whose signed policy bounds the length by the client limit', async () => {
    const res = await post(t, 'small', '/runs/upload-url', { runId: 'nosize' });
    assert.equal(res.status, 200);
    const out = (await res.json()) as { method: string; url: string; fields: Record<string, string>; key: string; ttl: number; run_id: string };
    assert.equal(out.method, 'POST');
    assert.equal(out.key, 'backups/small/runs/nosize.zip');
    assert.equal(new URL(out.url).pathname, `/${t.s3rver?.bucket}`);
    assert.equal(out.fields.key, out.key);
    assert.equal(out.fields['Content-Type'], 'application/zip');
    const policy = JSON.parse(Buffer.from(out.fields.Policy ?? '', 'base64').toString('utf8')) as PostPolicy;
    assert.ok(Math.abs(Date.parse(policy.expiration) - (Date.now() + out.ttl * 1000)) < 10_000);
    const conditions = policy.conditions.map((c) => JSON.stringify(c));
    assert.ok(conditions.includes(JSON.stringify(['content-length-range', 0, MiB])), `policy bounds the length by 1 MiB: ${conditions}`);
    assert.ok(conditions.includes(JSON.stringify({ key: out.key })));
    assert.ok(conditions.includes(JSON.stringify({ bucket: t.s3rver?.bucket })));
    assert.ok(conditions.includes(JSON.stringify({ 'Content-Type': 'application/zip' })));
    // The signature covers this policy: a wider range (or another key) does not verify.
    const secret = t.s3rver?.secretAccessKey ?? '';
    assert.ok(postPolicyMatches(out.fields, secret));
    const widened = { ...policy, conditions: policy.conditions.map((c) => (Array.isArray(c) && c[0] === 'content-length-range' ? [c[0], 0, 3 * MiB] : c)) };
    assert.ok(!postPolicyMatches({ ...out.fields, Policy: Buffer.from(JSON.stringify(widened)).toString('base64') }, secret));
    assert.ok(!postPolicyMatches(out.fields, 'another-secret'));

    // Within the limit: the form works against a real S3 server and the run settles.
    const ok = random(300 * 1024);
    const stored = await postForm(out.url, out.fields, ok);
    assert.ok(stored.status === 204 || stored.status === 200 || stored.status === 201, `POST form answered ${stored.status}`);
    const tel = (await (await post(t, 'small', '/telemetry', { event: 'upload_complete', key: out.key, size: ok.length })).json()) as {
      outcome: string;
      run_status: string;
    };
    assert.deepEqual([tel.outcome, tel.run_status], ['verified', 'succeeded']);
  });

  it('a direct upload over the client limit (s3rver ignores the policy) is never verified: run failed, object deleted', async () => {
    const out = (await (await post(t, 'small', '/runs/upload-url', { runId: 'toobig' })).json()) as {
      url: string;
      fields: Record<string, string>;
      key: string;
      run_id: string;
    };
    const big = random(3 * MiB);
    assert.ok((await postForm(out.url, out.fields, big)).ok);
    assert.equal((await t.server.ctx.pipeline.storage.head(out.key))?.size, big.length, 's3rver stored the 3 MiB body');
    const tel = await post(t, 'small', '/telemetry', { event: 'upload_complete', key: out.key, size: big.length });
    assert.equal(tel.status, 200);
    const body = (await tel.json()) as { outcome: string; run_status: string };
    assert.deepEqual([body.outcome, body.run_status], ['too_large', 'failed']);
    const run = await t.server.ctx.runs.get(out.run_id);
    assert.equal(run?.status, 'failed');
    assert.equal(run?.error_code, 'PAYLOAD_TOO_LARGE');
    assert.equal(await t.server.ctx.pipeline.storage.head(out.key), null, 'the oversized object is deleted');
    assert.equal(await exists(t, 'small', 'runs/toobig.zip'), false);
  });

  it('clamps the URL lifetime to S3s 7 days', () => {
    const d = new DirectUploads(t.server.ctx.db.db, t.server.ctx.pipeline, async () => Buffer.alloc(32), 30 * 24 * 3600);
    assert.equal(d.effectiveTtl(), MAX_PRESIGN_SECONDS);
  });
});

describe('direct uploads never reported (s3): settled after the URL expired', () => {
  it('an object over the limit fails the run PAYLOAD_TOO_LARGE and is deleted; one within it succeeds', async () => {
    const t = await startTestServer({
      backend: 's3',
      clients: [{ name: 'small', max_file_size_mb: 1 }],
      extra: { uploads: { direct_url_ttl_seconds: 60 }, retention: { enabled: true, ttl_days: 30, sweep_interval_minutes: 60 } },
    });
    try {
      type Issued = { url: string; fields: Record<string, string>; key: string; run_id: string; expiresAt: string };
      const big = (await (await post(t, 'small', '/runs/upload-url', { runId: 'lapsed-big' })).json()) as Issued;
      const fine = (await (await post(t, 'small', '/runs/upload-url', { runId: 'lapsed-fine' })).json()) as Issued;
      assert.ok((await postForm(big.url, big.fields, random(3 * MiB))).ok);
      const fineData = random(1000);
      assert.ok((await postForm(fine.url, fine.fields, fineData)).ok);
      // The sweeper's clock is moved instead of waiting. Expired, but an upload begun just
      // before may still be arriving: given as long again as the URL lived (60 s).
      const expiresAt = Math.max(Date.parse(big.expiresAt), Date.parse(fine.expiresAt));
      await t.server.ctx.sweeper.sweep({ now: expiresAt + 30_000 });
      assert.equal((await t.server.ctx.runs.get(big.run_id))?.status, 'queued');
      assert.equal((await t.server.ctx.runs.get(fine.run_id))?.status, 'queued');
      // Then settled from what the store holds.
      await t.server.ctx.sweeper.sweep({ now: expiresAt + 61_000 });
      const failed = await t.server.ctx.runs.get(big.run_id);
      assert.equal(failed?.status, 'failed');
      assert.equal(failed?.error_code, 'PAYLOAD_TOO_LARGE');
      assert.equal(await t.server.ctx.pipeline.storage.head(big.key), null, 'the oversized object is deleted');
      const ok = await t.server.ctx.runs.get(fine.run_id);
      assert.equal(ok?.status, 'succeeded');
      assert.equal(ok?.sha256, sha256hex(fineData));
    } finally {
      await t.stop();
    }
  });
});

for (const db of ['sqlite', 'postgres'] as DbKind[]) {
  describe(`direct uploads (fs signed form key, ${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ backend: 'fs', db });
    });
    after(async () => {
      await t.stop();
    });

    it('issues a signed key, takes the form through the pipeline, once, for its client only', async () => {
      const data = random(5000);
      const res = await post(t, 'alice', '/runs/upload-url', { runId: 'run-42' });
      assert.equal(res.status, 200);
      const out = (await res.json()) as { formUrl: string; key: string; ttl: number; expiresAt: string; run_id: string };
      assert.equal(out.formUrl, '/runs/upload');
      assert.equal(out.ttl, 900);
      assert.equal((await t.server.ctx.runs.get(out.run_id))?.status, 'queued');
      const secretFile = path.join(t.dir, 'uploads', '.s3up-tmp', 'secrets', 'direct-upload.key');
      assert.equal(statSync(secretFile).mode & 0o777, 0o600);

      assert.equal((await formUpload(t, 'bob', out.key, data)).status, 403);
      const tampered = `${out.key.slice(0, -2)}${out.key.endsWith('AA') ? 'BB' : 'AA'}`;
      const bad = await formUpload(t, 'alice', tampered, data);
      assert.equal(bad.status, 403);
      assert.equal(((await bad.json()) as { error_code: string }).error_code, 'INVALID_UPLOAD_KEY');

      const up = await formUpload(t, 'alice', out.key, data);
      assert.equal(up.status, 200, await up.clone().text());
      const body = (await up.json()) as { s3_key: string; size: number; sha256: string; run_id: string };
      assert.equal(body.s3_key, 'backups/alice/runs/run-42.zip');
      assert.equal(body.sha256, sha256hex(data));
      assert.equal(body.run_id, out.run_id);
      const run = await t.server.ctx.runs.get(out.run_id);
      assert.equal(run?.status, 'succeeded');
      assert.equal(run?.kind, 'direct');
      const again = await formUpload(t, 'alice', out.key, data);
      assert.equal(again.status, 409);

      const tel = await post(t, 'alice', '/telemetry', { event: 'upload_complete', key: out.key, size: data.length, durationMs: 40 });
      assert.equal(((await tel.json()) as { outcome: string }).outcome, 'verified');
      assert.equal((await post(t, 'alice', '/telemetry', { event: 'upload_retry', key: out.key, attempt: 2 })).status, 200);
      assert.equal((await post(t, 'alice', '/telemetry', { event: 'bad event!' })).status, 400);
      const list = (await (await fetch(`${t.url}/telemetry`, { headers: t.auth('alice') })).json()) as {
        events: Array<{ event: string; outcome: string | null; detail: unknown; durationMs: number | null }>;
      };
      assert.deepEqual(
        list.events.map((e) => e.event),
        ['upload_retry', 'upload_complete'],
      );
      assert.deepEqual(list.events[0]?.detail, { attempt: 2 });
      assert.equal(list.events[1]?.durationMs, 40);
      const bobs = (await (await fetch(`${t.url}/telemetry`, { headers: t.auth('bob') })).json()) as { events: unknown[] };
      assert.deepEqual(bobs.events, []);
    });

    it('binds the key to the declared size and refuses expired keys', async () => {
      const sized = (await (
        await post(t, 'alice', '/runs/upload-url', { path: 'runs/sized.bin', size: 10, content_type: 'application/octet-stream' })
      ).json()) as {
        key: string;
        run_id: string;
      };
      const wrong = await formUpload(t, 'alice', sized.key, random(11));
      assert.equal(wrong.status, 400);
      assert.equal((await t.server.ctx.runs.get(sized.run_id))?.status, 'failed');
      assert.equal(await exists(t, 'alice', 'runs/sized.bin'), false);

      const direct = new DirectUploads(t.server.ctx.db.db, t.server.ctx.pipeline, async () => Buffer.alloc(32, 7), 1);
      const client = t.server.ctx.config.clients.find((c) => c.name === 'alice');
      assert.ok(client);
      const expiredKey = direct.sign({ v: 1, c: 'alice', p: 'runs/late.bin', r: sized.run_id, s: null, e: Date.now() - 1000 }, Buffer.alloc(32, 7));
      await assert.rejects(direct.verify(client, expiredKey), (err: { code?: string }) => err.code === 'UPLOAD_KEY_EXPIRED');
      // An expired key issued by the gateway itself is refused over HTTP too.
      const expired = await startTestServer({ backend: 'fs', db: 'sqlite', extra: { uploads: { direct_url_ttl_seconds: 1 } } });
      try {
        const k = (await (await post(expired, 'alice', '/runs/upload-url', { runId: 'late' })).json()) as { key: string; ttl: number };
        assert.equal(k.ttl, 1);
        await new Promise((r) => setTimeout(r, 1100));
        const late = await formUpload(expired, 'alice', k.key, random(10));
        assert.equal(late.status, 410);
        assert.equal(((await late.json()) as { error_code: string }).error_code, 'UPLOAD_KEY_EXPIRED');
      } finally {
        await expired.stop();
      }
    });
  });
}
