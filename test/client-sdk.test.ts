import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetchTransport, GatewayClient, GatewayError, type GatewayResponse, type Transport } from '../src/client/index.js';
import { sha256File, uploadFile } from '../src/client/node.js';
import { nodeTransport } from '../src/client/node-transport.js';
import { bytes, MiB, request, sha256 } from './helpers/http.js';
import { BACKENDS, startTestServer, type TestServer } from './helpers/server.js';

const ROOT = path.resolve(import.meta.dirname, '..');

const TRANSPORTS = { fetch: () => fetchTransport(), node: () => nodeTransport() } as const;
type TransportName = keyof typeof TRANSPORTS;

/** A transport that counts the requests it makes (the real transport does the work). */
function counting(name: TransportName, onResponse?: (res: GatewayResponse, n: number) => void): { transport: Transport; calls: () => number } {
  const inner = TRANSPORTS[name]();
  let n = 0;
  return {
    transport: async (url, req) => {
      n++;
      const res = await inner(url, req);
      onResponse?.(res, n);
      return res;
    },
    calls: () => n,
  };
}

const FAST_RETRY = { attempts: 4, baseDelayMs: 20, maxDelayMs: 100 };

async function text(res: GatewayResponse): Promise<Buffer> {
  return Buffer.from(await res.arrayBuffer());
}

for (const [backend, transportName] of BACKENDS.flatMap((b) => (Object.keys(TRANSPORTS) as TransportName[]).map((n) => [b, n] as const))) {
  describe(`client SDK (${backend}, ${transportName} transport)`, () => {
    let t: TestServer;
    let dir: string;
    let client: GatewayClient;
    before(async () => {
      t = await startTestServer({ backend });
      dir = mkdtempSync(path.join(os.tmpdir(), 's3up-sdk-'));
      client = new GatewayClient({ baseUrl: `${t.url}/`, apiKey: t.keys.alice as string, retry: FAST_RETRY, transport: TRANSPORTS[transportName]() });
    });
    after(async () => {
      await t?.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    it('upload, exists, download (whole and range), delete', async () => {
      const data = bytes(100_000);
      const up = await client.upload('sdk/a b/one.bin', data, { contentType: 'application/x-sdk', sha256: sha256(data) });
      assert.equal(up.success, true);
      assert.equal(up.s3_key, 'backups/alice/sdk/a b/one.bin');
      assert.equal(up.size, data.length);
      assert.equal(up.sha256, sha256(data));
      const ex = await client.exists('sdk/a b/one.bin');
      assert.equal(ex.exists, true);
      assert.equal(ex.size, data.length);
      assert.equal(ex.sha256, sha256(data));
      const whole = await client.download('sdk/a b/one.bin');
      assert.equal(whole.status, 200);
      assert.equal(whole.headers.get('content-type'), 'application/x-sdk');
      assert.deepEqual(await text(whole), data);
      const part = await client.download('sdk/a b/one.bin', { range: { start: 10, end: 19 } });
      assert.equal(part.status, 206);
      assert.deepEqual(await text(part), data.subarray(10, 20));
      const tail = await client.download('sdk/a b/one.bin', { range: { start: 99_990 } });
      assert.deepEqual(await text(tail), data.subarray(99_990));
      await client.delete('sdk/a b/one.bin');
      assert.equal((await client.exists('sdk/a b/one.bin')).exists, false);
    });

    it('uploads a Blob and a stream factory', async () => {
      const data = bytes(50_000);
      const blob = await client.upload('sdk/blob.bin', new Blob([data]));
      assert.equal(blob.sha256, sha256(data));
      const stream = await client.upload(
        'sdk/stream.bin',
        () =>
          new ReadableStream<Uint8Array>({
            start(c) {
              c.enqueue(data.subarray(0, 20_000));
              c.enqueue(data.subarray(20_000));
              c.close();
            },
          }),
      );
      assert.equal(stream.sha256, sha256(data));
      assert.equal(stream.size, data.length);
    });

    it('uploadFile streams a file with its SHA-256 and the gateway verifies it', async () => {
      const file = path.join(dir, 'file.bin');
      const data = bytes(3 * MiB + 5);
      writeFileSync(file, data);
      assert.equal(await sha256File(file), sha256(data));
      const counted = counting(transportName);
      const c = new GatewayClient({ baseUrl: t.url, apiKey: t.keys.alice as string, transport: counted.transport, retry: FAST_RETRY });
      const res = await uploadFile(c, file, 'sdk/file.bin', { contentType: 'application/x-file' });
      assert.equal(res.sha256, sha256(data));
      assert.equal(res.size, data.length);
      assert.equal(counted.calls(), 1);
      const run = await t.server.ctx.runs.get(res.run_id);
      assert.equal(run?.sha256, sha256(data));
      assert.equal(run?.content_type, 'application/x-file');
    });

    it('GatewayError carries the error code, status and request id; 4xx is not retried', async () => {
      const counted = counting(transportName);
      const c = new GatewayClient({ baseUrl: t.url, apiKey: t.keys.alice as string, transport: counted.transport, retry: FAST_RETRY });
      const data = bytes(1000);
      const err = await c.upload('sdk/bad.bin', data, { sha256: sha256(Buffer.from('other')) }).catch((e: unknown) => e);
      assert.ok(err instanceof GatewayError);
      assert.equal(err.status, 400);
      assert.equal(err.errorCode, 'CHECKSUM_MISMATCH');
      assert.equal(typeof err.requestId, 'string');
      assert.ok((err.requestId as string).length > 0);
      assert.equal(err.retryable, false);
      assert.equal(typeof err.body?.run_id, 'string');
      assert.equal(counted.calls(), 1, 'a 4xx is not retried');

      const missing = await c.download('sdk/none.bin').catch((e: unknown) => e);
      assert.ok(missing instanceof GatewayError);
      assert.equal(missing.errorCode, 'NOT_FOUND');
      assert.equal(missing.status, 404);
      assert.equal(counted.calls(), 2);

      const wrongKey = new GatewayClient({ baseUrl: t.url, apiKey: 'sk_wrong_0123456789012345678901234567', transport: counted.transport, retry: FAST_RETRY });
      const unauth = await wrongKey.exists('x').catch((e: unknown) => e);
      assert.ok(unauth instanceof GatewayError);
      assert.equal(unauth.errorCode, 'UNAUTHORIZED');
      assert.equal(unauth.status, 401);
      assert.equal(counted.calls(), 3);
      assert.ok(!unauth.message.includes('sk_wrong'), 'the key is not echoed');

      // A dot segment is refused, not resolved away by the URL parser into another path.
      for (const p of ['sdk/../x', '../x', 'sdk/./x']) {
        const dots = await c.upload(p, data).catch((e: unknown) => e);
        assert.ok(dots instanceof GatewayError, p);
        assert.equal(dots.errorCode, 'INVALID_PATH');
        assert.equal(dots.retryable, false);
        const del = await c.delete(p).catch((e: unknown) => e);
        assert.ok(del instanceof GatewayError && del.errorCode === 'INVALID_PATH', p);
      }
      assert.equal((await client.exists('x')).exists, false);
      // The gateway refuses an encoded dot segment on its own as well.
      const raw = await fetch(`${t.url}/objects/sdk/%2e%2e%2fx`, { method: 'PUT', headers: { authorization: `Bearer ${t.keys.alice}` }, body: data });
      assert.equal(raw.status, 400);
      assert.equal(((await raw.json()) as { error_code: string }).error_code, 'INVALID_PATH');
    });

    it('retries a 503 (gateway shutting down) and re-sends the body', async () => {
      const closing = t.server.ctx.closing;
      closing.value = true;
      const seen: number[] = [];
      const counted = counting(transportName, (res) => {
        seen.push(res.status);
        // The "restarted" gateway is back after the first refusal.
        closing.value = false;
      });
      const c = new GatewayClient({ baseUrl: t.url, apiKey: t.keys.alice as string, transport: counted.transport, retry: FAST_RETRY });
      const file = path.join(dir, 'retry.bin');
      const data = bytes(200_000);
      writeFileSync(file, data);
      try {
        const res = await uploadFile(c, file, 'sdk/retry.bin');
        assert.equal(res.sha256, sha256(data));
      } finally {
        closing.value = false;
      }
      assert.deepEqual(seen, [503, 200]);
      assert.equal(counted.calls(), 2);
      assert.equal((await client.exists('sdk/retry.bin')).sha256, sha256(data));
    });

    it('an abort stops the request at once and is not taken for a network failure (never retried)', async () => {
      const counted = counting(transportName);
      const c = new GatewayClient({ baseUrl: t.url, apiKey: t.keys.alice as string, transport: counted.transport, retry: FAST_RETRY });
      const ac = new AbortController();
      let pulls = 0;
      const body = () =>
        new ReadableStream<Uint8Array>({
          pull(ctrl) {
            if (++pulls === 3) setImmediate(() => ac.abort());
            if (pulls > 160) ctrl.close();
            else ctrl.enqueue(new Uint8Array(64 * 1024));
          },
        });
      const err = await c.upload('sdk/aborted.bin', body, { size: 10 * MiB, signal: ac.signal }).catch((e: unknown) => e);
      assert.equal((err as Error)?.name, 'AbortError', String(err));
      assert.ok(!(err instanceof GatewayError));
      assert.equal(counted.calls(), 1);
      assert.equal((await client.exists('sdk/aborted.bin')).exists, false);
    });

    it('gives up after the configured attempts with a retryable error', async () => {
      t.server.ctx.closing.value = true;
      const counted = counting(transportName);
      const c = new GatewayClient({
        baseUrl: t.url,
        apiKey: t.keys.alice as string,
        transport: counted.transport,
        retry: { attempts: 3, baseDelayMs: 5, maxDelayMs: 10 },
      });
      try {
        const err = await c.exists('sdk/x').catch((e: unknown) => e);
        assert.ok(err instanceof GatewayError);
        assert.equal(err.status, 503);
        assert.equal(err.errorCode, 'SHUTTING_DOWN');
        assert.equal(err.retryable, true);
      } finally {
        t.server.ctx.closing.value = false;
      }
      assert.equal(counted.calls(), 3);
      // Nothing listening: a network error (status 0), retried, then reported.
      const dead = counting(transportName);
      const nobody = new GatewayClient({
        baseUrl: 'http://127.0.0.1:9',
        apiKey: 'k',
        transport: dead.transport,
        retry: { attempts: 2, baseDelayMs: 5, maxDelayMs: 10 },
      });
      const netErr = await nobody.health().catch((e: unknown) => e);
      assert.ok(netErr instanceof GatewayError);
      assert.equal(netErr.status, 0);
      assert.equal(netErr.errorCode, 'NETWORK_ERROR');
      assert.equal(dead.calls(), 2);
    });
  });
}

describe('s3up CLI (child process)', () => {
  let t: TestServer;
  let dir: string;
  before(async () => {
    t = await startTestServer({ backend: 'fs' });
    dir = mkdtempSync(path.join(os.tmpdir(), 's3up-cli-'));
  });
  after(async () => {
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: Buffer; stderr: string }> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/bin/s3up.ts'), ...args], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', HOME: dir, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const out: Buffer[] = [];
      let err = '';
      child.stdout.on('data', (d: Buffer) => out.push(d));
      child.stderr.on('data', (d: Buffer) => {
        err += d.toString();
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.on('error', reject);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout: Buffer.concat(out), stderr: err });
      });
    });
  }

  it('put, exists, get (to a file and to stdout) with the key in the environment', async () => {
    const file = path.join(dir, 'in.bin');
    const data = bytes(300_000);
    writeFileSync(file, data);
    const env = { S3UP_SERVER: t.url, S3UP_API_KEY: t.keys.alice as string };
    const put = await cli(['put', file, 'cli/in.bin'], env);
    assert.equal(put.code, 0, put.stderr);
    assert.equal(put.stderr, '', 'stderr stays clean');
    const res = JSON.parse(put.stdout.toString()) as Record<string, unknown>;
    assert.equal(res.sha256, sha256(data));
    assert.equal(res.s3_key, 'backups/alice/cli/in.bin');

    const ex = await cli(['exists', 'cli/in.bin'], env);
    assert.equal(ex.code, 0, ex.stderr);
    assert.equal((JSON.parse(ex.stdout.toString()) as Record<string, unknown>).sha256, sha256(data));

    const out = path.join(dir, 'out.bin');
    const get = await cli(['get', 'cli/in.bin', out], env);
    assert.equal(get.code, 0, get.stderr);
    assert.deepEqual(readFileSync(out), data);

    const toStdout = await cli(['get', 'cli/in.bin'], env);
    assert.equal(toStdout.code, 0, toStdout.stderr);
    assert.deepEqual(toStdout.stdout, data);
  });

  it('get never leaves a partial file under the destination name', async (ctx) => {
    const data = bytes(64 * MiB);
    const env = { S3UP_SERVER: t.url, S3UP_API_KEY: t.keys.alice as string };
    assert.equal((await request(`${t.url}/objects/cli/big.bin`, { method: 'PUT', headers: t.auth('alice'), body: data })).status, 200);
    const out = path.join(dir, 'big.out');
    const running = cli(['get', 'cli/big.bin', out], env);
    // Cut the connection once the download is under way.
    let cut = false;
    const watcher = (async () => {
      for (let i = 0; i < 2000 && !cut; i++) {
        // Whatever the CLI writes to (a staging file, or the destination itself).
        const part = readdirSync(dir).find((f) => f.startsWith('big.out'));
        if (part && statSync(path.join(dir, part)).size > 0) {
          t.server.app.server.closeAllConnections();
          cut = true;
        }
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    const res = await running;
    await watcher;
    ctx.diagnostic(cut ? `connection cut mid-download: ${res.stderr.trim()}` : 'the download finished before the cut');
    if (cut) {
      assert.equal(res.code, 1, 'an interrupted download fails');
      assert.equal(existsSync(out), false, 'no partial file at the destination');
    } else {
      // The download finished before the watcher saw it: then it must be whole.
      assert.equal(res.code, 0, res.stderr);
      assert.equal(sha256(readFileSync(out)), sha256(data));
    }
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.part')),
      [],
    );
    // And a complete download is verified and lands whole.
    const again = await cli(['get', 'cli/big.bin', out], env);
    assert.equal(again.code, 0, again.stderr);
    assert.equal(sha256(readFileSync(out)), sha256(data));
  });

  it('exit codes and messages: missing object, wrong key (not echoed), no key', async () => {
    const none = await cli(['exists', 'cli/none.bin', '--server', t.url, '--key', t.keys.alice as string]);
    assert.equal(none.code, 1);
    assert.equal((JSON.parse(none.stdout.toString()) as Record<string, unknown>).exists, false);

    const wrong = 'sk_wrong_key_0123456789abcdef0123456789';
    const bad = await cli(['get', 'cli/in.bin', '--server', t.url, '--key', wrong]);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /UNAUTHORIZED/);
    assert.match(bad.stderr, /request [0-9a-f-]{36}/);
    assert.ok(!bad.stderr.includes(wrong) && !bad.stdout.toString().includes(wrong), 'the key is never printed');

    const noKey = await cli(['exists', 'x', '--server', t.url]);
    assert.equal(noKey.code, 1);
    assert.match(noKey.stderr, /no API key/);
  });
});
