import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GatewayClient } from '../src/client/index.js';
import { openPushDb } from '../src/push/db.js';
import { S3Target } from '../src/transfer/index.js';
import { bytes, eventually, sha256 } from './helpers/http.js';
import { createPgDatabase, PG_ADMIN_URL, type PgDatabase, pgSkip } from './helpers/pg.js';
import { type FaultProxy, startFaultProxy } from './helpers/proxy.js';
import { type S3rverProcess, startS3rver } from './helpers/s3rver.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const ROOT = path.resolve(import.meta.dirname, '..');

interface CliRun {
  child: ChildProcess;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function cli(args: string[], env: Record<string, string>): CliRun {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/bin/s3up.ts'), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, done };
}

const run = (args: string[], env: Record<string, string>) => cli(args, env).done;

function makeTree(root: string, files: Record<string, Buffer | string>): void {
  for (const [rel, data] of Object.entries(files)) {
    const p = path.join(root, rel);
    mkdirSync(path.dirname(p), { recursive: true });
    writeFileSync(p, data);
  }
}

/** The JSON summary line of a --json run. */
function summary(stdout: string): Record<string, unknown> {
  const line = stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .find((o) => o.event === 'summary');
  assert.ok(line, `no summary in: ${stdout}`);
  return line;
}

/** Succeeded runs per path at the gateway (its own records). */
async function gatewayRuns(t: TestServer): Promise<Map<string, number>> {
  const rows = await t.server.ctx.db.db.selectFrom('runs').select(['path', 'status']).where('client', '=', 'alice').execute();
  const out = new Map<string, number>();
  for (const r of rows) if (r.status === 'succeeded') out.set(r.path, (out.get(r.path) ?? 0) + 1);
  return out;
}

async function listAll(client: GatewayClient, prefix = ''): Promise<Map<string, { size: number; checksum: string }>> {
  const out = new Map<string, { size: number; checksum: string }>();
  for await (const o of client.listAll({ prefix })) out.set(o.path, { size: o.size, checksum: o.checksum });
  return out;
}

describe('s3up push through the gateway (SQLite state)', () => {
  let t: TestServer;
  let proxy: FaultProxy;
  let dir: string;
  let client: GatewayClient;
  let env: Record<string, string>;
  before(async () => {
    t = await startTestServer({ backend: 'fs' });
    proxy = await startFaultProxy(t.url);
    dir = mkdtempSync(path.join(os.tmpdir(), 's3up-push-'));
    client = new GatewayClient({ baseUrl: t.url, apiKey: t.keys.alice as string });
    env = { HOME: dir, XDG_DATA_HOME: path.join(dir, 'xdg'), S3UP_API_KEY: t.keys.alice as string };
  });
  after(async () => {
    await proxy?.close();
    await t?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('uploads a nested tree with filters; a re-run skips everything from the state alone', async () => {
    const src = path.join(dir, 'tree');
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 25; i++) files[`site${i % 3}/day${i % 4}/rec${i}.wav`] = bytes(1000 + i * 37);
    files['site0/photo.JPG'] = bytes(5000);
    files['site1/big.wav'] = bytes(3 * 1024 * 1024 + 11);
    makeTree(src, { ...files, 'notes.txt': 'skip me', 'site2/cache/tmp.wav': 'excluded', 'site0/day0/.DS_Store': 'x' });
    const config = path.join(dir, 'push.json');
    writeFileSync(config, JSON.stringify({ project_name: 'sensors', supported_extensions: ['.wav', '.jpg'], max_workers: 2, s3_prefix: 'ingest/' }));
    const args = [
      'push',
      src,
      '--config',
      config,
      '--server',
      proxy.url,
      '--exclude',
      '**/cache',
      '--workers',
      '4',
      '--resumable-threshold-mb',
      '1',
      '--chunk-size-mb',
      '1',
      '--json',
    ];
    const first = await run(args, env);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(first.stderr, '', 'stderr stays clean');
    const s1 = summary(first.stdout);
    assert.equal(s1.project, 'sensors');
    assert.equal(s1.files_uploaded, 27);
    assert.equal(s1.files_failed, 0);
    const remote = await listAll(client, 'ingest/');
    assert.deepEqual(
      [...remote.keys()].sort(),
      Object.keys(files)
        .map((f) => `ingest/${f}`)
        .sort(),
    );
    assert.equal(remote.get('ingest/site0/photo.JPG')?.checksum, sha256(files['site0/photo.JPG'] as Buffer));
    assert.match(remote.get('ingest/site1/big.wav')?.checksum ?? '', /-4$/, 'the large file went in resumable chunks');

    const runsBefore = await gatewayRuns(t);
    proxy.requests.length = 0;
    const second = await run(args, env);
    assert.equal(second.code, 0, second.stderr);
    const s2 = summary(second.stdout);
    assert.equal(s2.files_skipped, 27);
    assert.equal(s2.files_uploaded, 0);
    assert.deepEqual(proxy.requests, [], 'a no-op re-run asks the gateway nothing (no HEAD, no listing)');
    assert.deepEqual(await gatewayRuns(t), runsBefore);

    // A changed file is uploaded again; --checksum compares content.
    writeFileSync(path.join(src, 'site0/photo.JPG'), bytes(5001));
    const third = await run(args, env);
    assert.equal(summary(third.stdout).files_uploaded, 1);

    const list = await run(['sessions', 'list', '--json'], env);
    assert.equal(list.code, 0, list.stderr);
    const sessions = JSON.parse(list.stdout) as Array<Record<string, unknown>>;
    assert.equal(sessions.length, 3);
    assert.ok(sessions.every((s) => s.status === 'completed' && s.project === 'sensors'));
    const show = await run(['sessions', 'show', String(s1.session_id)], env);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /27 uploaded/);

    // The merged config is in config_history (flags won over the file), never a key.
    const db = await openPushDb(`sqlite:${path.join(dir, 'xdg', 's3up', 'push.db')}`);
    try {
      const hist = await db.db.selectFrom('config_history').select('config_json').execute();
      assert.equal(hist.length, 3);
      const cfg = JSON.parse(hist[0]?.config_json ?? '{}') as Record<string, unknown>;
      assert.equal(cfg.workers, 4);
      assert.equal(cfg.prefix, 'ingest/');
      assert.deepEqual(cfg.extensions, ['.wav', '.jpg']);
      assert.ok(!JSON.stringify(hist).includes(t.keys.alice as string));
    } finally {
      await db.close();
    }
  });

  it('kill -9 mid-push, then resume: nothing uploaded twice, every checksum verified', async () => {
    const src = path.join(dir, 'killed');
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 120; i++) files[`d${i % 7}/f${i}.bin`] = bytes(2000 + i);
    makeTree(src, files);
    const args = ['push', src, '--server', proxy.url, '--project', 'killed', '--prefix', 'k', '--workers', '4'];
    // The gateway answers 20 uploads; the next ones are stored but never acknowledged.
    proxy.holdAfter = 20;
    const p = cli(args, env);
    await eventually(async () => proxy.held >= 2, 60_000, 'uploads stored but not acknowledged');
    p.child.kill('SIGKILL');
    const killed = await p.done;
    assert.equal(killed.signal, 'SIGKILL');
    proxy.release();
    const sessions = JSON.parse((await run(['sessions', 'list', '--project', 'killed', '--json'], env)).stdout) as Array<{
      session_id: string;
      status: string;
    }>;
    assert.equal(sessions.length, 1);
    assert.equal(sessions[0]?.status, 'running', 'a killed push leaves its session open');

    const resumed = await run([...args, '--resume', sessions[0]?.session_id as string, '--json'], env);
    assert.equal(resumed.code, 0, resumed.stderr);
    const s = summary(resumed.stdout);
    assert.equal(s.files_failed, 0);
    const runs = await gatewayRuns(t);
    for (const rel of Object.keys(files)) assert.equal(runs.get(`k/${rel}`), 1, `k/${rel} uploaded exactly once`);
    const remote = await listAll(client, 'k/');
    assert.equal(remote.size, 120);
    for (const [rel, data] of Object.entries(files)) assert.equal(remote.get(`k/${rel}`)?.checksum, sha256(data), rel);
  });

  it('Ctrl-C stops cleanly and prints the resume command', async () => {
    const src = path.join(dir, 'ctrlc');
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 30; i++) files[`f${i}.bin`] = bytes(1000 + i);
    makeTree(src, files);
    proxy.holdAfter = proxy.uploadsAnswered + 3;
    const p = cli(['push', src, '--server', proxy.url, '--project', 'ctrlc', '--workers', '2'], env);
    // The handler is in place once the push has printed its start line.
    await eventually(async () => p.child.exitCode === null && proxy.held >= 1, 60_000, 'a held upload');
    await eventually(async () => proxy.held >= 1, 60_000, 'a held upload');
    p.child.kill('SIGINT');
    const res = await p.done;
    proxy.release();
    assert.equal(res.code, 130, res.stderr);
    const m = /s3up push .* --resume ([0-9a-f-]{36})/.exec(res.stderr);
    assert.ok(m, res.stderr);
    const show = JSON.parse((await run(['sessions', 'show', m[1] as string, '--json'], env)).stdout) as { status: string };
    assert.equal(show.status, 'interrupted');
    const again = await run(['push', src, '--server', proxy.url, '--project', 'ctrlc', '--resume', m[1] as string, '--json'], env);
    assert.equal(again.code, 0, again.stderr);
    const runs = await gatewayRuns(t);
    for (const rel of Object.keys(files)) assert.equal(runs.get(rel), 1, rel);
  });

  it('retry after the gateway was down; a file failing every round becomes permanently failed', async () => {
    const src = path.join(dir, 'down');
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 6; i++) files[`r${i}.bin`] = bytes(3000 + i);
    makeTree(src, files);
    proxy.mode = 'down';
    const failed = await run(['push', src, '--server', proxy.url, '--project', 'down', '--json'], env);
    assert.equal(failed.code, 1);
    const s = summary(failed.stdout);
    assert.equal(s.files_failed, 6);
    const failures = s.failures as Array<{ error_code: string; error_status: number }>;
    assert.equal(failures[0]?.error_code, 'NETWORK_ERROR');

    // Still down: a retry round fails; with --max-retries 1 the files are failed for good.
    const stillDown = await run(['retry', String(s.session_id), '--max-retries', '1', '--json'], env);
    assert.equal(stillDown.code, 1);
    const shown = JSON.parse((await run(['sessions', 'show', String(s.session_id), '--json'], env)).stdout) as {
      failures: Array<{ permanent: number; retry_count: number }>;
    };
    assert.equal(shown.failures.length, 6);
    assert.ok(shown.failures.every((f) => f.permanent === 1 && f.retry_count === 1));

    // A new push of the same tree, the gateway back up after the first round.
    const second = await run(['push', src, '--server', proxy.url, '--project', 'down', '--json'], env);
    const s2 = summary(second.stdout);
    assert.equal(s2.files_failed, 6);
    proxy.mode = 'pass';
    const retried = await run(['retry', String(s2.session_id), '--auto', '--max-retries', '3', '--base-delay-ms', '10', '--json'], env);
    assert.equal(retried.code, 0, retried.stderr);
    const r = summary(retried.stdout);
    assert.equal(r.files_uploaded, 6);
    assert.equal(r.files_failed, 0);
    const remote = await listAll(client, '');
    for (const [rel, data] of Object.entries(files)) assert.equal(remote.get(rel)?.checksum, sha256(data));
  });

  it('push --retry --trigger-url: the receiver verifies the HMAC; a 503 is retried, a refusal is not', async () => {
    const secret = 'trigger-secret-for-tests';
    const received: Array<{ body: string; ok: boolean }> = [];
    let answer503 = 1;
    const receiver = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => {
        body += d;
      });
      req.on('end', () => {
        const ts = String(req.headers['x-s3up-timestamp']);
        const expected = `sha256=${createHmac('sha256', secret).update(`${ts}.${body}`).digest('hex')}`;
        const ok = req.headers['x-s3up-signature'] === expected && Math.abs(Date.now() / 1000 - Number(ts)) < 300;
        received.push({ body, ok });
        if (!ok) return void res.writeHead(401).end('bad signature');
        if (answer503-- > 0) return void res.writeHead(503, { 'retry-after': '0' }).end('busy');
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    try {
      const src = path.join(dir, 'trig');
      makeTree(src, { 'a.bin': bytes(100), 'b/c.bin': bytes(200) });
      const res = await run(
        ['push', src, '--server', proxy.url, '--project', 'trig', '--prefix', 'trig', '--retry', '--trigger-url', url, '--trigger-secret', secret, '--json'],
        env,
      );
      assert.equal(res.code, 0, res.stderr);
      assert.equal(received.length, 2, 'a 503 is retried');
      assert.ok(received.every((r) => r.ok));
      const payload = JSON.parse(received[1]?.body ?? '{}') as Record<string, unknown>;
      const s = summary(res.stdout);
      assert.equal(payload.session_id, s.session_id);
      assert.equal(payload.project, 'trig');
      assert.equal(payload.s3_prefix, 'trig/');
      assert.equal(payload.total_files, 2);
      assert.equal(payload.files_uploaded, 2);
      assert.equal(payload.files_failed, 0);
      assert.equal(payload.bytes, 300);
      for (const k of ['bucket_name', 'started_at', 'finished_at']) assert.ok(k in payload, k);

      // s3up trigger again, with the wrong secret: refused (401), not retried.
      const wrong = await run(['trigger', String(s.session_id), '--url', url, '--secret', 'not-the-secret', '--json'], { ...env });
      assert.equal(wrong.code, 1);
      assert.equal((JSON.parse(wrong.stdout) as { attempts: number; status: number }).attempts, 1);
      assert.equal(received.length, 3);
      const right = await run(['trigger', String(s.session_id), '--url', url], { ...env, S3UP_TRIGGER_SECRET: secret });
      assert.equal(right.code, 0, right.stdout + right.stderr);
      assert.equal(received.length, 4);
    } finally {
      receiver.closeAllConnections();
      await new Promise<void>((r) => receiver.close(() => r()));
    }
  });

  it('clear one-line errors for bad configuration (exit 2)', async () => {
    const bad = await run(['push', dir, '--server', proxy.url, '--workers', '0'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^s3up: push: invalid workers: .*\n$/);
    const both = await run(['push', dir, '--server', proxy.url, '--direct', 's3://bucket/x'], env);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /choose one target/);
    const cfg = path.join(dir, 'bad.json');
    writeFileSync(cfg, '{"workers": 4, "unknown_key": 1}');
    const unknown = await run(['push', dir, '--config', cfg], env);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown_key/);
  });
});

describe('s3up push --direct to S3 (s3rver)', () => {
  let s3: S3rverProcess;
  let dir: string;
  before(async () => {
    s3 = await startS3rver('push-direct');
    dir = mkdtempSync(path.join(os.tmpdir(), 's3up-push-direct-'));
  });
  after(async () => {
    await s3?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('uploads with the default credential chain and an endpoint; no SDK warning; a re-run skips', async () => {
    const src = path.join(dir, 'tree');
    const files: Record<string, Buffer> = { 'a/1.wav': bytes(1000), 'a/2.wav': bytes(2000), 'b/big.wav': bytes(7 * 1024 * 1024) };
    makeTree(src, files);
    const env = { HOME: dir, XDG_DATA_HOME: path.join(dir, 'xdg'), AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey };
    const args = [
      'push',
      src,
      '--direct',
      's3://push-direct/field/run1',
      '--endpoint',
      s3.endpoint,
      '--resumable-threshold-mb',
      '5',
      '--chunk-size-mb',
      '5',
      '--json',
    ];
    const res = await run(args, env);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stderr, '', 'no NodeVersionSupportWarning or anything else on stderr');
    assert.equal(summary(res.stdout).files_uploaded, 3);
    Object.assign(process.env, { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey });
    const target = new S3Target({ url: 's3://push-direct/field/run1', endpoint: s3.endpoint });
    const listed = new Map<string, number>();
    for await (const o of target.list('')) listed.set(o.path, o.size);
    await target.close();
    assert.deepEqual(
      [...listed.entries()].sort(),
      Object.entries(files)
        .map(([k, v]) => [k, v.length])
        .sort(),
    );
    const again = await run(args, env);
    assert.equal(summary(again.stdout).files_skipped, 3);
  });
});

describe('s3up push with PostgreSQL state', { skip: pgSkip }, () => {
  let t: TestServer;
  let pg: PgDatabase;
  let dir: string;
  before(async () => {
    t = await startTestServer({ backend: 'fs' });
    pg = await createPgDatabase();
    dir = mkdtempSync(path.join(os.tmpdir(), 's3up-push-pg-'));
  });
  after(async () => {
    await t?.stop();
    await pg?.drop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('keeps sessions in PostgreSQL (--db); a re-run skips from the state', async () => {
    assert.ok(PG_ADMIN_URL);
    const src = path.join(dir, 'tree');
    makeTree(src, { 'x/1.bin': bytes(10), 'x/2.bin': bytes(20), 'y.bin': bytes(30) });
    const env = { HOME: dir, S3UP_API_KEY: t.keys.alice as string };
    const args = ['push', src, '--server', t.url, '--db', pg.url, '--json'];
    const first = await run(args, env);
    assert.equal(first.code, 0, first.stderr);
    assert.equal(summary(first.stdout).files_uploaded, 3);
    const second = await run(args, { ...env, DATABASE_URL: 'sqlite:/nonexistent/ignored.db' });
    assert.equal(summary(second.stdout).files_skipped, 3);
    const list = JSON.parse((await run(['sessions', 'list', '--json'], { ...env, DATABASE_URL: pg.url })).stdout) as unknown[];
    assert.equal(list.length, 2);
  });
});

describe('scan of a large tree (50,000 files)', () => {
  it('streams: memory stays flat while the files go by', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 's3up-scan50k-'));
    try {
      for (let d = 0; d < 250; d++) {
        const sub = path.join(dir, `d${d}`);
        mkdirSync(sub);
        for (let f = 0; f < 200; f++) writeFileSync(path.join(sub, `file-with-a-longish-name-${f}.dat`), '');
      }
      // A child with gc exposed (for the measurement only), so heap figures are after collection.
      const script = `
        import { scanTree } from ${JSON.stringify(path.join(ROOT, 'src/transfer/scan.ts'))};
        const samples = [];
        let n = 0;
        for await (const f of scanTree(${JSON.stringify(dir)})) {
          n++;
          if (n % 10000 === 0) { globalThis.gc(); samples.push(process.memoryUsage().heapUsed); }
        }
        console.log(JSON.stringify({ n, samples }));
      `;
      const file = path.join(os.tmpdir(), `s3up-scan50k-${process.pid}.mts`);
      writeFileSync(file, script);
      const out = await new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ['--expose-gc', '--import', 'tsx', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
        let s = '';
        child.stdout.on('data', (d: Buffer) => {
          s += d.toString();
        });
        child.on('close', (code) => (code === 0 ? resolve(s) : reject(new Error(`scan child exited ${code}`))));
      });
      const { n, samples } = JSON.parse(out) as { n: number; samples: number[] };
      assert.equal(n, 50_000);
      const growth = (samples.at(-1) as number) - (samples[0] as number);
      // Holding the 40,000 entries seen between the samples would take well over 8 MB.
      assert.ok(growth < 4 * 1024 * 1024, `heap grew ${growth} bytes between 10k and 50k files`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(path.join(os.tmpdir(), `s3up-scan50k-${process.pid}.mts`), { force: true });
    }
  });
});
