import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { stringify } from 'yaml';
import { loadConfig } from '../src/config/load.js';
import { createLogger, type RunningServer, startServer } from '../src/server/main.js';
import { createPgDatabase, type PgDatabase, pgSkip } from './helpers/pg.js';
import { ADMIN_TOKEN, BACKENDS, newKey, startTestServer, type TestServer } from './helpers/server.js';

type Json = Record<string, unknown>;

async function call(url: string, init: RequestInit = {}): Promise<{ status: number; body: Json | undefined; headers: Headers; text: string }> {
  const res = await fetch(url, init);
  const text = await res.text();
  let body: Json | undefined;
  try {
    body = text ? (JSON.parse(text) as Json) : undefined;
  } catch {
    body = undefined;
  }
  return { status: res.status, body, headers: res.headers, text };
}

function assertUnauthorized(r: { status: number; body: Json | undefined; headers: Headers; text: string }, what: string, secrets: string[] = []): void {
  assert.equal(r.status, 401, `${what}: ${r.text}`);
  assert.equal(r.body?.error_code, 'UNAUTHORIZED', what);
  assert.equal(typeof r.body?.message, 'string', what);
  assert.ok(String(r.body?.message ?? '').length > 0, what);
  assert.equal(typeof r.body?.request_id, 'string', what);
  assert.equal(r.headers.get('x-request-id'), r.body?.request_id, `${what}: request id header and body agree`);
  for (const s of secrets) assert.ok(!r.text.includes(s), `${what}: the error body echoes a secret`);
}

describe('auth: API keys', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ backend: 'fs' });
  });
  after(async () => {
    await t.stop();
  });

  it('accepts Authorization: Bearer and x-api-key', async () => {
    const alice = t.keys.alice ?? '';
    const put = await call(`${t.url}/objects/auth/a.txt`, { method: 'PUT', headers: { authorization: `Bearer ${alice}` }, body: 'A' });
    assert.equal(put.status, 200, put.text);
    assert.equal(put.body?.s3_key, 'backups/alice/auth/a.txt');
    for (const headers of <Array<Record<string, string>>>[
      { 'x-api-key': alice },
      { authorization: `bearer ${alice}` },
      { authorization: `Bearer   ${alice} ` },
    ]) {
      const get = await call(`${t.url}/download?path=auth/a.txt`, { headers });
      assert.equal(get.status, 200, JSON.stringify(headers));
      assert.equal(get.text, 'A');
    }
    // A non-Bearer Authorization does not hide a good x-api-key.
    const both = await call(`${t.url}/exists?path=auth/a.txt`, { headers: { authorization: 'Basic Zm9vOmJhcg==', 'x-api-key': alice } });
    assert.equal(both.status, 200);
    assert.equal(both.body?.exists, true);
  });

  it('a missing, wrong or malformed key is 401 with the error contract, on every client route', async () => {
    const alice = t.keys.alice ?? '';
    const bob = t.keys.bob ?? '';
    const wrong = newKey();
    const secrets = [alice, bob, wrong];
    const bad: Array<[string, Record<string, string>]> = [
      ['no key', {}],
      ['wrong key', { authorization: `Bearer ${wrong}` }],
      ['wrong x-api-key', { 'x-api-key': wrong }],
      ['key plus a character', { authorization: `Bearer ${alice}x` }],
      ['truncated key', { authorization: `Bearer ${alice.slice(0, -1)}` }],
      ['key with a different case', { authorization: `Bearer ${alice.toUpperCase()}` }],
      ['Bearer without a key', { authorization: 'Bearer' }],
      ['Bearer with a space only', { authorization: 'Bearer ' }],
      ['two tokens', { authorization: `Bearer ${alice} ${alice}` }],
      ['another scheme', { authorization: `Token ${alice}` }],
      ['the key without a scheme', { authorization: alice }],
      ['Basic', { authorization: `Basic ${Buffer.from(`alice:${alice}`).toString('base64')}` }],
      ['empty x-api-key', { 'x-api-key': '' }],
      ['a very long key', { authorization: `Bearer ${'k'.repeat(4000)}` }],
      ['the SHA-256 of the key', { authorization: `Bearer ${createHash('sha256').update(alice).digest('hex')}` }],
      ['wrong Bearer beats a good x-api-key', { authorization: `Bearer ${wrong}`, 'x-api-key': alice }],
      ['admin token is not a client key', { authorization: `Bearer ${ADMIN_TOKEN}` }],
    ];
    const routes: Array<[string, string, string?]> = [
      ['PUT', '/objects/auth/new.txt', 'x'],
      ['GET', '/objects/auth/a.txt'],
      ['DELETE', '/objects/auth/a.txt'],
      ['GET', '/download?path=auth/a.txt'],
      ['GET', '/exists?path=auth/a.txt'],
      ['POST', '/upload?path=auth/new.txt'],
    ];
    for (const [what, headers] of bad) {
      for (const [method, route, body] of routes) {
        const r = await call(`${t.url}${route}`, { method, headers, body });
        assertUnauthorized(r, `${what}: ${method} ${route}`, secrets);
      }
    }
    // HEAD gets the status without a body.
    const head = await fetch(`${t.url}/exists?path=auth/a.txt`, { method: 'HEAD' });
    assert.equal(head.status, 401);
    // Nothing was written or deleted by any of it.
    assert.deepEqual(readdirSync(path.join(t.dir, 'uploads', 'backups', 'alice', 'auth')), ['a.txt']);
  });

  it('refuses an unauthenticated upload before reading its body', async () => {
    const u = new URL(t.url);
    const started = Date.now();
    const result = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = http.request(
        { host: u.hostname, port: u.port, method: 'PUT', path: '/objects/auth/big.bin', headers: { 'content-length': String(1 << 30) } },
        (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => {
            body += d;
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on('error', reject);
      // Send a little of the announced gigabyte and never the rest.
      req.write(Buffer.alloc(64 * 1024));
    });
    assert.equal(result.status, 401);
    assert.equal((JSON.parse(result.body) as Json).error_code, 'UNAUTHORIZED');
    assert.ok(Date.now() - started < 5000);
    assert.ok(!existsSync(path.join(t.dir, 'uploads', 'backups', 'alice', 'auth', 'big.bin')));
  });

  it('/health and /ready need no key', async () => {
    const health = await call(`${t.url}/health`);
    assert.equal(health.status, 200);
    assert.equal(health.body?.status, 'ok');
    assert.equal(typeof health.body?.version, 'string');
    const withWrongKey = await call(`${t.url}/health`, { headers: { authorization: `Bearer ${newKey()}` } });
    assert.equal(withWrongKey.status, 200);
    const ready = await call(`${t.url}/ready`);
    assert.equal(ready.status, 200, ready.text);
  });
});

for (const backend of BACKENDS) {
  describe(`auth: clients are scoped to their own prefix (${backend})`, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ backend });
    });
    after(async () => {
      await t.stop();
    });

    it("alice can never read, test, overwrite or delete bob's objects", async () => {
      const alice = t.auth('alice');
      const bob = t.auth('bob');
      const secret = 'bob private bytes';
      const up = await call(`${t.url}/objects/shared/doc.txt`, { method: 'PUT', headers: bob, body: secret });
      assert.equal(up.status, 200, up.text);
      assert.equal(up.body?.s3_key, 'backups/bob/shared/doc.txt');

      const bobIntact = async (when: string) => {
        const r = await call(`${t.url}/download?path=shared/doc.txt`, { headers: bob });
        assert.equal(r.status, 200, when);
        assert.equal(r.text, secret, `bob's object changed ${when}`);
      };

      // Same path: alice's view of it is her own (empty) namespace.
      const get = await call(`${t.url}/download?path=shared/doc.txt`, { headers: alice });
      assert.equal(get.status, 404);
      assert.equal(get.body?.error_code, 'NOT_FOUND');
      assert.ok(!get.text.includes(secret));
      const getObj = await call(`${t.url}/objects/shared/doc.txt`, { headers: alice });
      assert.equal(getObj.status, 404);
      const exists = await call(`${t.url}/exists?path=shared/doc.txt`, { headers: alice });
      assert.equal(exists.status, 200);
      assert.equal(exists.body?.exists, false);
      assert.equal(exists.body?.size, null);
      assert.equal(exists.body?.sha256, null);
      assert.equal(exists.body?.s3_key, 'backups/alice/shared/doc.txt');
      const head = await fetch(`${t.url}/exists?path=shared/doc.txt`, { method: 'HEAD', headers: alice });
      assert.equal(head.status, 404);
      const del = await call(`${t.url}/objects/shared/doc.txt`, { method: 'DELETE', headers: alice });
      assert.equal(del.status, 404);
      await bobIntact('after alice deleted the same path');

      // Naming bob's prefix only nests under alice's.
      for (const p of ['bob/shared/doc.txt', 'backups/bob/shared/doc.txt']) {
        const r = await call(`${t.url}/download?path=${encodeURIComponent(p)}`, { headers: alice });
        assert.equal(r.status, 404, p);
      }
      // Climbing out is refused.
      for (const p of ['../bob/shared/doc.txt', '../../backups/bob/shared/doc.txt', '%2e%2e/bob/shared/doc.txt']) {
        for (const [method, url] of [
          ['GET', `/download?path=${encodeURIComponent(p)}`],
          ['GET', `/exists?path=${encodeURIComponent(p)}`],
          // Fully encoded: fetch would resolve a literal "/../" (or "/%2e%2e/") before sending.
          ['PUT', `/objects/${encodeURIComponent(p)}`],
          ['DELETE', `/objects/${encodeURIComponent(p)}`],
        ] as const) {
          const r = await call(`${t.url}${url}`, { method, headers: alice, body: method === 'PUT' ? 'overwrite' : undefined });
          assert.equal(r.status, 400, `${method} ${url}: ${r.text}`);
          assert.equal(r.body?.error_code, 'INVALID_PATH');
        }
      }

      // Alice writing "the same" path writes her own object.
      const over = await call(`${t.url}/objects/shared/doc.txt`, { method: 'PUT', headers: alice, body: 'alice bytes' });
      assert.equal(over.status, 200);
      assert.equal(over.body?.s3_key, 'backups/alice/shared/doc.txt');
      const form = new FormData();
      form.append('path', 'shared/doc.txt');
      form.append('file', new Blob(['alice form bytes']), 'doc.txt');
      const post = await call(`${t.url}/upload`, { method: 'POST', headers: alice, body: form });
      assert.equal(post.status, 200, post.text);
      assert.equal(post.body?.s3_key, 'backups/alice/shared/doc.txt');
      await bobIntact('after alice uploaded the same path');
      const bobExists = await call(`${t.url}/exists?path=shared/doc.txt`, { headers: bob });
      assert.equal(bobExists.body?.size, Buffer.byteLength(secret));
      assert.equal(bobExists.body?.sha256, createHash('sha256').update(secret).digest('hex'), "bob's record is his, not alice's");

      const aliceDel = await call(`${t.url}/objects/shared/doc.txt`, { method: 'DELETE', headers: alice });
      assert.equal(aliceDel.status, 200);
      assert.equal(aliceDel.body?.s3_key, 'backups/alice/shared/doc.txt');
      await bobIntact('after alice deleted her own copy');
    });
  });
}

/** The ways a secret may show up in text: as is, base64, hex, or as a JSON-serialized Buffer. */
function leaks(text: string, secret: string): string[] {
  const bytes = Buffer.from(secret, 'utf8');
  const forms: Array<[string, string]> = [
    ['plain', secret],
    ['base64', bytes.toString('base64').replace(/=+$/, '')],
    ['hex', bytes.toString('hex')],
    ['Buffer JSON', [...bytes].join(',')],
  ];
  return forms.filter(([, f]) => text.includes(f)).map(([name]) => name);
}

/** A pino destination that keeps everything written to it. */
class LogBuffer extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.text += chunk.toString('utf8');
    cb();
  }
}

async function startLoggedServer(opts: { databaseUrl?: string } = {}): Promise<{
  server: RunningServer;
  log: LogBuffer;
  keys: { alice: string; bob: string };
  dir: string;
  stop(): Promise<void>;
}> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 's3up-authlog-'));
  const keys = { alice: newKey(), bob: newKey() };
  const configPath = path.join(dir, 'server.yaml');
  writeFileSync(
    configPath,
    stringify({
      server: { host: '127.0.0.1', port: 0, log_level: 'trace' },
      storage: { backend: 'fs', fs: { root: path.join(dir, 'uploads') } },
      database: { url: opts.databaseUrl ?? `sqlite:${path.join(dir, 's3up.db')}` },
      admin: { token: ADMIN_TOKEN },
      clients: [
        { name: 'alice', api_key: keys.alice, max_file_size_mb: 1 },
        { name: 'bob', api_key_sha256: createHash('sha256').update(keys.bob).digest('hex'), max_file_size_mb: 1 },
      ],
    }),
  );
  const config = loadConfig({ configPath, env: {}, cwd: dir });
  const log = new LogBuffer();
  // The gateway's own logger (with its redaction rules), at its most verbose.
  const server = await startServer(config, { logger: createLogger('trace', log) });
  return {
    server,
    log,
    keys,
    dir,
    async stop() {
      await server.close(1000);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe('auth: secrets never reach the logs', () => {
  it('keys, admin token and wrong keys are absent from trace-level logs and error bodies', async () => {
    const s = await startLoggedServer();
    const url = s.server.url;
    const wrong = newKey();
    const secrets = [s.keys.alice, s.keys.bob, wrong, `${wrong}-admin`, ADMIN_TOKEN];
    const bodies: string[] = [];
    const send = async (route: string, init: RequestInit) => {
      const res = await fetch(`${url}${route}`, init);
      const text = await res.text();
      bodies.push(text);
      return res.status;
    };
    try {
      const { alice, bob } = s.keys;
      assert.equal(
        await send('/objects/log/a.txt', { method: 'PUT', headers: { authorization: `Bearer ${alice}`, 'x-admin-token': ADMIN_TOKEN }, body: 'a' }),
        200,
      );
      assert.equal(await send('/download?path=log/a.txt', { headers: { 'x-api-key': alice } }), 200);
      assert.equal(await send('/exists?path=log/a.txt', { headers: { authorization: `Bearer ${bob}` } }), 200);
      assert.equal(await send('/objects/log/a.txt', { headers: { authorization: `Bearer ${wrong}` } }), 401);
      assert.equal(await send('/objects/log/a.txt', { headers: { 'x-api-key': wrong } }), 401);
      assert.equal(await send('/objects/log/a.txt', { headers: { authorization: `Bearer ${alice} ${wrong}` } }), 401);
      assert.equal(await send('/objects/log/a.txt', { headers: { authorization: wrong } }), 401);
      assert.equal(await send('/health', { headers: { authorization: `Bearer ${alice}`, 'x-admin-token': ADMIN_TOKEN } }), 200);
      // An admin route, with the token and with a wrong one.
      assert.equal(await send('/runs/v1', { headers: { 'x-admin-token': ADMIN_TOKEN } }), 200);
      assert.equal(await send('/runs/v1', { headers: { 'x-admin-token': `${wrong}-admin` } }), 401);
      assert.equal(await send('/objects/log%2F..%2F..%2Fx', { method: 'PUT', headers: { authorization: `Bearer ${alice}` }, body: 'x' }), 400);
      assert.equal(
        await send('/objects/log/big.bin', { method: 'PUT', headers: { authorization: `Bearer ${alice}` }, body: Buffer.alloc(2 * 1024 * 1024) }),
        413,
      );
      assert.equal(await send('/nowhere', { headers: { authorization: `Bearer ${alice}`, 'x-admin-token': ADMIN_TOKEN } }), 404);
      // A body cut short by the client.
      await new Promise<void>((resolve) => {
        const u = new URL(url);
        const req = http.request({
          host: u.hostname,
          port: u.port,
          method: 'PUT',
          path: '/objects/log/cut.bin',
          headers: { authorization: `Bearer ${alice}`, 'content-length': '100000' },
        });
        req.on('error', () => resolve());
        req.write(Buffer.alloc(1000), () => setTimeout(() => req.destroy(), 100));
        req.on('close', () => resolve());
      });
      // A request the HTTP parser rejects: Node keeps its raw bytes (headers and all) on the error.
      await new Promise<void>((resolve) => {
        const sock = net.connect(s.server.port, '127.0.0.1', () => {
          sock.write(
            `PUT /objects/log/raw HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${alice}\r\nx-admin-token: ${ADMIN_TOKEN}\r\n` +
              'Content-Length: 1\r\nContent-Length: 2\r\n\r\nab',
          );
        });
        sock.on('data', (d: Buffer) => bodies.push(d.toString('utf8')));
        sock.on('close', () => resolve());
        sock.on('error', () => resolve());
      });
      await new Promise((r) => setTimeout(r, 200));
    } finally {
      await s.stop();
    }
    const log = s.log.text;
    assert.ok(log.includes('s3up-server listening'), 'the log was captured');
    assert.ok(log.split('\n').length > 20, 'trace logging produced output');
    assert.ok(log.includes('/objects/log/a.txt'), 'requests were logged');
    assert.ok(log.includes('HPE_'), 'the malformed request was logged');
    for (const secret of secrets) {
      assert.deepEqual(leaks(log, secret), [], `a secret reached the log: ${secret.slice(0, 8)}...`);
      for (const b of bodies) assert.deepEqual(leaks(b, secret), [], 'a secret reached a response');
    }
  });

  it('the database password is not logged', { skip: pgSkip }, async () => {
    let pgDb: PgDatabase | undefined;
    let s: Awaited<ReturnType<typeof startLoggedServer>> | undefined;
    try {
      pgDb = await createPgDatabase();
      const password = decodeURIComponent(new URL(pgDb.url).password);
      assert.ok(password.length >= 4, 'the test database URL carries a password');
      s = await startLoggedServer({ databaseUrl: pgDb.url });
      const r = await fetch(`${s.server.url}/ready`);
      assert.equal(r.status, 200);
      await s.stop();
      assert.ok(s.log.text.includes('s3up-server listening'));
      assert.ok(!s.log.text.includes(password), 'the database password reached the log');
      s = undefined;
    } finally {
      await s?.stop();
      await pgDb?.drop();
    }
  });
});
