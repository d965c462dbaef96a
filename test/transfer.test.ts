import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fetchTransport, GatewayClient, GatewayError, judge, retryDelay } from '../src/client/index.js';
import {
  type FoundFile,
  fileChecksums,
  GatewayTarget,
  matchesRemote,
  S3Target,
  scanTree,
  statFound,
  uploadLocalFile,
  walkTree,
} from '../src/transfer/index.js';
import { bytes, MiB, sha256 } from './helpers/http.js';
import { pgSkip } from './helpers/pg.js';
import { type S3rverProcess, startS3rver } from './helpers/s3rver.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const FAST_RETRY = { attempts: 3, baseDelayMs: 10, maxDelayMs: 50 };

function tmp(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

function write(root: string, rel: string, data: Buffer | string): string {
  const p = path.join(root, rel);
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, data);
  return p;
}

describe('retry policy and verdicts', () => {
  it('full jitter is capped; Retry-After wins over a shorter backoff, within its own cap', () => {
    const policy = { attempts: 5, baseDelayMs: 100, maxDelayMs: 1000, maxRetryAfterMs: 30_000 };
    assert.equal(
      retryDelay(policy, 10, new Error('x'), () => 0.999),
      999,
    );
    assert.equal(
      retryDelay(policy, 0, { retryAfterMs: 5000 }, () => 0.5),
      5000,
    );
    assert.equal(
      retryDelay(policy, 0, { retryAfterMs: 120_000 }, () => 0.5),
      30_000,
    );
    assert.equal(
      retryDelay(policy, 3, { retryAfterMs: 10 }, () => 0.5),
      400,
    );
  });

  it('judges statuses and codes', () => {
    for (const [status, code] of [
      [0, 'NETWORK_ERROR'],
      [408, 'REQUEST_TIMEOUT'],
      [429, 'HTTP_429'],
      [500, 'INTERNAL'],
      [503, 'STORAGE_UNAVAILABLE'],
      [503, 'DATABASE_UNAVAILABLE'],
      [507, 'STORAGE_FULL'],
      [409, 'CONFLICT'],
    ] as const) {
      assert.equal(judge(status, code), 'transient', `${status} ${code}`);
    }
    for (const [status, code] of [
      [400, 'INVALID_PATH'],
      [400, 'CHECKSUM_MISMATCH'],
      [401, 'UNAUTHORIZED'],
      [403, 'FORBIDDEN'],
      [404, 'NOT_FOUND'],
      [409, 'INCOMPLETE_UPLOAD'],
      [410, 'SESSION_EXPIRED'],
      [413, 'PAYLOAD_TOO_LARGE'],
    ] as const) {
      assert.equal(judge(status, code), 'permanent', `${status} ${code}`);
    }
  });
});

describe('scanTree', () => {
  let root: string;
  before(() => {
    root = tmp('s3up-scan-');
    write(root, 'a.wav', 'a');
    write(root, 'b.JPG', 'bb');
    write(root, 'notes.txt', 'n');
    write(root, 'x/y/z/deep.wav', 'deep');
    write(root, 'x/skip/inner.wav', 'no');
    write(root, '.hidden/h.wav', 'h');
    write(root, 'node_modules/m.wav', 'm');
    symlinkSync(path.join(root, 'a.wav'), path.join(root, 'link.wav'));
    symlinkSync(path.join(root, 'x'), path.join(root, 'linkdir'));
    execFileSync('mkfifo', [path.join(root, 'pipe.wav')]);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  async function scan(opts: Parameters<typeof scanTree>[1] = {}) {
    const out: string[] = [];
    for await (const f of scanTree(root, opts)) out.push(f.relPath);
    return out.sort();
  }

  it('yields regular files with size and mtime; skips symlinks and specials by default', async () => {
    const skipped: string[] = [];
    const files: Record<string, number> = {};
    for await (const f of scanTree(root, { onSkip: (p, why) => skipped.push(`${path.basename(p)}:${why}`) })) files[f.relPath] = f.size;
    assert.deepEqual(Object.keys(files).sort(), ['.hidden/h.wav', 'a.wav', 'b.JPG', 'node_modules/m.wav', 'notes.txt', 'x/skip/inner.wav', 'x/y/z/deep.wav']);
    assert.equal(files['x/y/z/deep.wav'], 4);
    assert.deepEqual(skipped.sort(), ['link.wav:symlink', 'linkdir:symlink', 'pipe.wav:special']);
  });

  it('filters by extension (any case), include and exclude globs; an excluded folder is not entered', async () => {
    assert.deepEqual(await scan({ extensions: ['wav', '.jpg'], exclude: ['node_modules', '**/skip', '.hidden'] }), ['a.wav', 'b.JPG', 'x/y/z/deep.wav']);
    assert.deepEqual(await scan({ include: ['x/**'], exclude: ['x/skip/**'] }), ['x/y/z/deep.wav']);
  });

  it('follows symlinks when asked, without looping', async () => {
    const files = await scan({ followSymlinks: true, extensions: ['wav'] });
    assert.ok(files.includes('link.wav'));
    // The folder and the link to it are one folder: walked once, under one of its names.
    const deep = files.filter((f) => f.endsWith('y/z/deep.wav'));
    assert.equal(deep.length, 1, deep.join(', '));
  });

  it('the walk reads names only; the stat after it drops a file that vanished and reports one that changed type', async () => {
    const dir = tmp('s3up-walk-');
    try {
      for (let i = 0; i < 2500; i++) write(dir, `many/f${i}.dat`, '');
      write(dir, 'gone.dat', 'g');
      write(dir, 'now-a-pipe.dat', 'p');
      const found: FoundFile[] = [];
      const sizes: number[] = [];
      for await (const batch of walkTree(dir)) {
        // A batch holds at most one folder's files, up to a bound (never the whole folder of 2,500).
        sizes.push(batch.length);
        found.push(...batch);
      }
      assert.equal(found.length, 2502);
      assert.ok(Math.max(...sizes) < 2500, `batches ${sizes.join(',')}`);
      assert.ok(!('size' in (found[0] as object)), 'the walk does not stat');
      rmSync(path.join(dir, 'gone.dat'));
      rmSync(path.join(dir, 'now-a-pipe.dat'));
      execFileSync('mkfifo', [path.join(dir, 'now-a-pipe.dat')]);
      const skipped: string[] = [];
      const files = statFound(found, { onSkip: (p, why) => skipped.push(`${path.basename(p)}:${why}`) });
      assert.equal(files.length, 2500);
      assert.ok(files.every((f) => f.size === 0 && f.mtimeMs > 0 && f.relPath.startsWith('many/')));
      assert.deepEqual(skipped, ['now-a-pipe.dat:special']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('uploadLocalFile through the gateway', () => {
  let t: TestServer;
  let dir: string;
  let client: GatewayClient;
  let target: GatewayTarget;
  before(async () => {
    t = await startTestServer({ backend: 'fs', clients: [{ name: 'alice' }, { name: 'small', max_file_size_mb: 1 }] });
    dir = tmp('s3up-transfer-');
    client = new GatewayClient({ baseUrl: t.url, apiKey: t.keys.alice as string, retry: FAST_RETRY });
    target = new GatewayTarget(client);
  });
  after(async () => {
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a FIFO or a folder given as a file is refused as not a regular file, without waiting for a writer', async () => {
    const fifo = path.join(dir, 'named.pipe');
    execFileSync('mkfifo', [fifo]);
    mkdirSync(path.join(dir, 'a-folder'));
    for (const p of [fifo, path.join(dir, 'a-folder')]) {
      const res = await uploadLocalFile(target, { localPath: p, remotePath: 'up/not-a-file' });
      assert.equal(res.verdict, 'permanent', p);
      assert.equal(res.error?.code, 'LOCAL_NOT_A_FILE', p);
    }
    const gone = await uploadLocalFile(target, { localPath: path.join(dir, 'never-there'), remotePath: 'up/never-there' });
    assert.equal(gone.error?.code, 'LOCAL_ENOENT');
  });

  it('plain: streamed with its SHA-256; the local checksum is the one /exists reports', async () => {
    const data = bytes(300_000);
    const file = write(dir, 'plain.bin', data);
    const progress: number[] = [];
    const res = await uploadLocalFile(target, { localPath: file, remotePath: 'up/plain.bin', onProgress: (p) => progress.push(p.bytesSent) });
    assert.equal(res.verdict, 'ok', JSON.stringify(res.error));
    assert.equal(res.sha256, sha256(data));
    assert.equal(res.checksum, sha256(data));
    assert.equal(res.checksumAlgorithm, 'sha256');
    assert.equal(res.changedDuringUpload, false);
    assert.equal(progress.at(-1), data.length);
    const ex = await client.exists('up/plain.bin');
    assert.equal(ex.checksum, res.checksum);
    assert.equal(ex.checksum_algorithm, 'sha256');
    assert.equal(await matchesRemote(file, { checksum: ex.checksum as string, checksum_algorithm: 'sha256' }), true);
  });

  it('resumable: chunked with per-chunk checksums; the composite matches /exists and /list', async () => {
    const data = bytes(3 * MiB + 12345);
    const file = write(dir, 'big.bin', data);
    const res = await uploadLocalFile(target, { localPath: file, remotePath: 'up/big.bin', resumableThreshold: MiB, chunkSize: MiB, partConcurrency: 3 });
    assert.equal(res.verdict, 'ok', JSON.stringify(res.error));
    assert.equal(res.checksumAlgorithm, 'sha256-of-sha256s');
    assert.equal(res.chunkSize, MiB);
    const local = await fileChecksums(file, MiB);
    assert.equal(res.checksum, local.composite);
    assert.match(res.checksum as string, /-4$/);
    const ex = await client.exists('up/big.bin');
    assert.equal(ex.checksum, res.checksum);
    assert.equal(ex.chunk_size, MiB);
    assert.equal(await matchesRemote(file, { checksum: ex.checksum as string, checksum_algorithm: 'sha256-of-sha256s', chunk_size: ex.chunk_size }), true);
    const listed = await client.list({ prefix: 'up/' });
    const big = listed.objects.find((o) => o.path === 'up/big.bin');
    assert.equal(big?.checksum, res.checksum);
    assert.equal(big?.chunk_size, MiB);
    const got = await client.download('up/big.bin');
    assert.equal(sha256(Buffer.from(await got.arrayBuffer())), sha256(data));
  });

  it('resumes after the uploading process is killed (SIGKILL), sending only the missing chunks', async () => {
    const data = bytes(6 * MiB + 7);
    const file = write(dir, 'resume.bin', data);
    const idFile = path.join(dir, 'resume.id');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', path.join(ROOT, 'test/helpers/upload-child.ts'), t.url, t.keys.alice as string, file, 'up/resume.bin', idFile, '3'],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.stderr.on('data', (d) => {
      out += d;
    });
    const exit = await new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_c, sig) => resolve(sig)));
    assert.equal(exit, 'SIGKILL', out);
    const uploadId = readFileSync(idFile, 'utf8');
    const before = await client.chunkedStatus(uploadId);
    assert.equal(before.status, 'active');
    assert.equal(before.total_chunks, 7);
    const held = before.uploaded_chunks.length;
    assert.ok(held >= 3 && held < 7, `chunks held after the kill: ${held}`);
    const stored = await t.server.ctx.db.db.selectFrom('upload_parts').select('part_number').where('session_id', '=', uploadId).execute();
    assert.equal(stored.length, held, "the gateway's part records agree with status");

    // Count the chunk requests of the resumed upload.
    let chunkRequests = 0;
    const counting = new GatewayClient({
      baseUrl: t.url,
      apiKey: t.keys.alice as string,
      transport: fetchTransport(((input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]) => {
        if (String(input).includes('/chunk?')) chunkRequests++;
        return fetch(input, init);
      }) as typeof fetch),
    });
    const res = await uploadLocalFile(new GatewayTarget(counting), {
      localPath: file,
      remotePath: 'up/resume.bin',
      resumableThreshold: 1,
      chunkSize: MiB,
      resumeUploadId: uploadId,
      onUploadId: () => assert.fail('a resumed upload starts no new session'),
    });
    assert.equal(res.verdict, 'ok', JSON.stringify(res.error));
    assert.equal(res.result?.chunksSkipped, held);
    assert.equal(res.result?.chunksSent, 7 - held);
    assert.equal(chunkRequests, 7 - held);
    // The gateway's records: one chunked run for this object, and its parts stored once each.
    const db = t.server.ctx.db.db;
    const runs = await db.selectFrom('runs').select(['status', 'kind']).where('path', '=', 'up/resume.bin').execute();
    assert.deepEqual(runs, [{ status: 'succeeded', kind: 'chunked' }]);
    const ex = await client.exists('up/resume.bin');
    assert.equal(ex.checksum, (await fileChecksums(file, MiB)).composite);
    const got = await client.download('up/resume.bin');
    assert.equal(sha256(Buffer.from(await got.arrayBuffer())), sha256(data));
  });

  it('an unknown resume id starts a new session', async () => {
    const file = write(dir, 'fresh.bin', bytes(2 * MiB));
    let newId: string | undefined;
    const res = await uploadLocalFile(target, {
      localPath: file,
      remotePath: 'up/fresh.bin',
      resumableThreshold: 1,
      chunkSize: MiB,
      resumeUploadId: '00000000-0000-4000-8000-000000000000',
      onUploadId: (id) => {
        newId = id;
      },
    });
    assert.equal(res.verdict, 'ok', JSON.stringify(res.error));
    assert.ok(newId);
    assert.equal(res.result?.chunksSent, 2);
  });

  it('verdicts from real refusals: 401, 400 path, 413 permanent; a missing file permanent', async () => {
    const file = write(dir, 'v.bin', bytes(2 * MiB));
    const wrongKey = new GatewayTarget(new GatewayClient({ baseUrl: t.url, apiKey: 'sk_wrong_0123456789abcdef0123456789abcdef', retry: FAST_RETRY }));
    const r401 = await uploadLocalFile(wrongKey, { localPath: file, remotePath: 'v.bin' });
    assert.equal(r401.verdict, 'permanent');
    assert.equal(r401.error?.status, 401);
    assert.equal(r401.error?.code, 'UNAUTHORIZED');

    const r400 = await uploadLocalFile(target, { localPath: file, remotePath: 'bad\\name.bin' });
    assert.equal(r400.verdict, 'permanent');
    assert.equal(r400.error?.status, 400);
    assert.equal(r400.error?.code, 'INVALID_PATH');

    const small = new GatewayTarget(new GatewayClient({ baseUrl: t.url, apiKey: t.keys.small as string, retry: FAST_RETRY }));
    for (const resumableThreshold of [Number.MAX_SAFE_INTEGER, 1]) {
      const r413 = await uploadLocalFile(small, { localPath: file, remotePath: 'v.bin', resumableThreshold, chunkSize: MiB });
      assert.equal(r413.verdict, 'permanent', JSON.stringify(r413));
      assert.equal(r413.error?.status, 413);
      assert.equal(r413.error?.code, 'PAYLOAD_TOO_LARGE');
    }

    const gone = await uploadLocalFile(target, { localPath: path.join(dir, 'no-such-file'), remotePath: 'x.bin' });
    assert.equal(gone.verdict, 'permanent');
    assert.equal(gone.error?.code, 'LOCAL_ENOENT');
  });

  it('a stopped gateway is transient', async () => {
    const other = await startTestServer({ backend: 'fs' });
    const url = other.url;
    const key = other.keys.alice as string;
    await other.stop();
    const file = write(dir, 'down.bin', bytes(1000));
    const down = new GatewayTarget(new GatewayClient({ baseUrl: url, apiKey: key, retry: FAST_RETRY }));
    for (const resumableThreshold of [Number.MAX_SAFE_INTEGER, 1]) {
      const res = await uploadLocalFile(down, { localPath: file, remotePath: 'down.bin', resumableThreshold });
      assert.equal(res.verdict, 'transient');
      assert.equal(res.error?.status, 0);
      assert.equal(res.error?.code, 'NETWORK_ERROR');
    }
  });

  it('an AbortSignal stops the upload (transient, ABORTED)', async () => {
    const file = write(dir, 'abort.bin', bytes(4 * MiB));
    const ac = new AbortController();
    const res = await uploadLocalFile(target, {
      localPath: file,
      remotePath: 'up/abort.bin',
      resumableThreshold: 1,
      chunkSize: MiB,
      partConcurrency: 1,
      signal: ac.signal,
      onProgress: (p) => {
        if (p.bytesSent >= MiB) ac.abort(new Error('stop'));
      },
    });
    assert.equal(res.verdict, 'transient');
    assert.equal(res.error?.code, 'ABORTED');
  });
});

for (const db of ['sqlite', 'postgres'] as const) {
  describe(`GET /list (${db})`, { skip: db === 'postgres' ? pgSkip : false }, () => {
    let t: TestServer;
    let alice: GatewayClient;
    let bob: GatewayClient;
    before(async () => {
      t = await startTestServer({ backend: 'fs', db });
      alice = new GatewayClient({ baseUrl: t.url, apiKey: t.keys.alice as string, retry: FAST_RETRY });
      bob = new GatewayClient({ baseUrl: t.url, apiKey: t.keys.bob as string, retry: FAST_RETRY });
      for (const p of ['p/a.txt', 'p/b.txt', 'p/c/d.txt', 'p/c/e.txt', 'pz.txt', 'q/x.txt', 'p/é.txt']) await alice.upload(p, Buffer.from(p));
      for (const p of ['p/bob.txt', 'p/a.txt']) await bob.upload(p, Buffer.from(`bob ${p}`));
    });
    after(async () => t?.stop());

    it('lists only the calling client, under the prefix, page by page with an opaque cursor', async () => {
      const seen: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await alice.list({ prefix: 'p/', limit: 2, cursor });
        pages++;
        assert.ok(page.objects.length <= 2);
        seen.push(...page.objects.map((o) => o.path));
        cursor = page.next_cursor ?? undefined;
      } while (cursor);
      assert.deepEqual(seen.sort(), ['p/a.txt', 'p/b.txt', 'p/c/d.txt', 'p/c/e.txt', 'p/é.txt'].sort());
      assert.equal(pages, 3);
      const all: string[] = [];
      for await (const o of alice.listAll({ pageSize: 3 })) all.push(o.path);
      assert.equal(all.length, 7);
      assert.ok(!all.includes('p/bob.txt'));
      const pz = await alice.list({ prefix: 'p' });
      assert.equal(pz.objects.length, 6, 'a prefix need not end at a folder');
      const one = (await alice.list({ prefix: 'p/a.txt' })).objects[0];
      assert.equal(one?.size, 'p/a.txt'.length);
      assert.equal(one?.checksum, sha256('p/a.txt'));
      assert.equal(one?.checksum_algorithm, 'sha256');
      assert.equal(one?.sha256, sha256('p/a.txt'));
      assert.ok(one && Date.parse(one.uploaded_at) > 0);
      const bobs = (await bob.list({})).objects.map((o) => o.path);
      assert.deepEqual(bobs.sort(), ['p/a.txt', 'p/bob.txt']);
      assert.equal((await bob.list({ prefix: 'p/a.txt' })).objects[0]?.checksum, sha256('bob p/a.txt'));
    });

    it('refuses traversal and bad input with clear errors', async () => {
      for (const prefix of ['../', '..', 'p/../../', '%2e%2e/', '/etc', 'a\\b']) {
        const err = await alice.list({ prefix }).catch((e: unknown) => e);
        assert.ok(err instanceof GatewayError, prefix);
        assert.equal(err.status, 400, prefix);
        assert.equal(err.errorCode, 'INVALID_PATH', prefix);
      }
      for (const q of ['limit=0', 'limit=100000', 'limit=abc', 'cursor=!!', `cursor=${Buffer.from('x').toString('base64url')}`]) {
        const res = await fetch(`${t.url}/list?${q}`, { headers: t.auth('alice') });
        assert.equal(res.status, 400, q);
        assert.equal(((await res.json()) as { error_code: string }).error_code, 'INVALID_REQUEST', q);
      }
      assert.equal((await fetch(`${t.url}/list`)).status, 401);
    });
  });
}

describe('S3Target (push --direct) against s3rver', () => {
  let s3: S3rverProcess;
  let dir: string;
  before(async () => {
    s3 = await startS3rver('direct-target');
    dir = tmp('s3up-direct-');
  });
  after(async () => {
    await s3?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('uploads small and multipart files under the prefix and lists them; a missing bucket is permanent', async () => {
    const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
    Object.assign(process.env, env);
    const target = new S3Target({ url: 's3://direct-target/runs/2026', endpoint: s3.endpoint });
    const small = write(dir, 's.bin', bytes(1000));
    const big = write(dir, 'b.bin', bytes(12 * MiB + 5));
    const r1 = await uploadLocalFile(target, { localPath: small, remotePath: 'a/s.bin' });
    assert.equal(r1.verdict, 'ok', JSON.stringify(r1.error));
    const r2 = await uploadLocalFile(target, { localPath: big, remotePath: 'a/b.bin', resumableThreshold: 5 * MiB, chunkSize: 5 * MiB, partConcurrency: 2 });
    assert.equal(r2.verdict, 'ok', JSON.stringify(r2.error));
    const listed: Array<[string, number]> = [];
    for await (const o of target.list('')) listed.push([o.path, o.size]);
    assert.deepEqual(listed.sort(), [
      ['a/b.bin', 12 * MiB + 5],
      ['a/s.bin', 1000],
    ]);
    const missing = new S3Target({ url: 's3://no-such-bucket-here/x', endpoint: s3.endpoint });
    const r3 = await uploadLocalFile(missing, { localPath: small, remotePath: 's.bin' });
    assert.equal(r3.verdict, 'permanent', JSON.stringify(r3.error));
    assert.equal(r3.error?.status, 404);
    await target.close();
    await missing.close();
  });
});
