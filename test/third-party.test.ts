// Real third-party peers: curl talks to the gateway; rclone and the AWS CLI read
// what the gateway wrote to a real S3 server (s3rver), proving the objects are
// ordinary S3 objects at the documented keys with the uploaded bytes.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { startTestServer, type TestServer } from './helpers/server.js';
import { awsCli, curl, rclone, type Tool } from './helpers/tools.js';

const run = promisify(execFile);
// Each case names the tools it drives: skipped with an install hint outside CI
// when one is missing, and failing loudly under CI (helpers/tools.ts).
const CURL = curl();
const RCLONE = rclone();
const AWS = awsCli();
const skipUnless = (...tools: Tool[]): string | false => tools.map((x) => x.skip).find((s) => s !== false) ?? false;

function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

describe('third-party clients against the gateway and its S3 store', () => {
  let t: TestServer;
  let file: string;
  let data: Buffer;
  before(async () => {
    t = await startTestServer({ backend: 's3', clients: [{ name: 'alice', max_file_size_mb: 64 }] });
    data = randomBytes(20 * 1024 * 1024 + 123); // over the 8 MiB part size: a multipart upload on the store
    file = path.join(t.dir, 'payload.bin');
    writeFileSync(file, data);
  });
  after(async () => {
    await t.stop();
  });

  it('curl -T (Expect: 100-continue) uploads; rclone reads back the same bytes at the documented key', { skip: skipUnless(CURL, RCLONE) }, async () => {
    const { stdout } = await run(CURL.require(), [
      '-sS',
      '--fail-with-body',
      '-H',
      `Authorization: Bearer ${t.keys.alice}`,
      '-T',
      file,
      `${t.url}/objects/curl/payload.bin`,
    ]);
    const res = JSON.parse(stdout) as { s3_key: string; size: number; sha256: string };
    assert.equal(res.s3_key, 'backups/alice/curl/payload.bin');
    assert.equal(res.size, data.length);
    assert.equal(res.sha256, sha256(data));

    const s3 = t.s3rver;
    assert.ok(s3);
    // rclone refuses to start when AWS_CA_BUNDLE is set (shared/ENVIRONMENT.md).
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      RCLONE_CONFIG_STORE_TYPE: 's3',
      RCLONE_CONFIG_STORE_PROVIDER: 'Other',
      RCLONE_CONFIG_STORE_ENDPOINT: s3.endpoint,
      RCLONE_CONFIG_STORE_ACCESS_KEY_ID: s3.accessKeyId,
      RCLONE_CONFIG_STORE_SECRET_ACCESS_KEY: s3.secretAccessKey,
      RCLONE_CONFIG_STORE_FORCE_PATH_STYLE: 'true',
    };
    delete env.AWS_CA_BUNDLE;
    const cat = await run(RCLONE.require(), ['cat', `store:${s3.bucket}/backups/alice/curl/payload.bin`], {
      env,
      encoding: 'buffer',
      maxBuffer: 64 * 1024 * 1024,
    });
    assert.equal(sha256(cat.stdout), sha256(data));
    const ls = await run(RCLONE.require(), ['lsf', '-R', '--files-only', `store:${s3.bucket}`], { env });
    assert.deepEqual(ls.stdout.trim().split('\n'), ['backups/alice/curl/payload.bin']);
  });

  it('curl -F multipart uploads; the AWS CLI sees the object with its size and content type', { skip: skipUnless(CURL, AWS) }, async () => {
    const { stdout } = await run(CURL.require(), [
      '-sS',
      '--fail-with-body',
      '-H',
      `x-api-key: ${t.keys.alice}`,
      '-F',
      'path=forms/report.csv',
      '-F',
      `file=@${file};type=text/csv`,
      `${t.url}/upload`,
    ]);
    const res = JSON.parse(stdout) as { success: boolean; s3_key: string };
    assert.equal(res.success, true);
    const s3 = t.s3rver;
    assert.ok(s3);
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      AWS_ACCESS_KEY_ID: s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
      AWS_DEFAULT_REGION: 'us-east-1',
    };
    delete env.AWS_CA_BUNDLE;
    delete env.AWS_PROFILE;
    const head = await run(AWS.require(), ['s3api', 'head-object', '--endpoint-url', s3.endpoint, '--bucket', s3.bucket, '--key', res.s3_key], { env });
    const meta = JSON.parse(head.stdout) as { ContentLength: number; ContentType: string };
    assert.equal(meta.ContentLength, data.length);
    assert.equal(meta.ContentType, 'text/csv');
  });

  it('curl is refused before it sends the body when the file is over the limit', { skip: CURL.skip }, async () => {
    const big = path.join(t.dir, 'big.bin');
    writeFileSync(big, Buffer.alloc(65 * 1024 * 1024));
    const { stdout } = await run(CURL.require(), [
      '-sS',
      '-w',
      '\\n%{http_code} %{size_upload}',
      '-H',
      `Authorization: Bearer ${t.keys.alice}`,
      '-T',
      big,
      `${t.url}/objects/big.bin`,
    ]).catch((err: { stdout: string }) => ({ stdout: err.stdout }));
    const lines = stdout.trim().split('\n');
    const [code, uploaded] = (lines.at(-1) ?? '').split(' ');
    assert.equal(code, '413');
    assert.equal(JSON.parse(lines[0] ?? '{}').error_code, 'PAYLOAD_TOO_LARGE');
    // Expect: 100-continue was answered with the 413, so curl sent (almost) nothing.
    assert.ok(Number(uploaded) < 1024 * 1024, `curl uploaded ${uploaded} bytes`);
  });
});
