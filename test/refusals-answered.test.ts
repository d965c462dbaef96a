import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { MiB } from './helpers/http.js';
import { startTestServer, type TestServer } from './helpers/server.js';

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'refusal-client.mjs');

interface Outcome {
  status?: number;
  error_code?: string | null;
  request_id?: string | null;
  lost?: string;
}

/**
 * Every refusal is an answer: a request refused while its client is still
 * sending the body (a wrong key, an invalid path in a form or a URL, a form or
 * a streamed body over the limit) gets its JSON error, never a connection
 * reset. The requests come from Node's fetch (undici) in another process, the
 * client the SDK uses, with bodies from 1 KiB to 8 MiB.
 */
describe('refusals reach the client while it is still sending', () => {
  let t: TestServer;
  before(async () => {
    t = await startTestServer({ clients: [{ name: 'alice', max_file_size_mb: 1 }] });
  });
  after(async () => t.stop());

  const EXPECT: Record<string, { status: number; code: string; sizes: number[] }> = {
    'form-bad-path': { status: 400, code: 'INVALID_PATH', sizes: [1024, 200 * 1024, 900 * 1024] },
    'form-wrong-key': { status: 401, code: 'UNAUTHORIZED', sizes: [1024, 200 * 1024, 2 * MiB, 8 * MiB] },
    'form-over-limit': { status: 413, code: 'PAYLOAD_TOO_LARGE', sizes: [2 * MiB, 3 * MiB, 8 * MiB] },
    'raw-bad-path': { status: 400, code: 'INVALID_PATH', sizes: [1024, 200 * 1024, 900 * 1024] },
    'raw-wrong-key': { status: 401, code: 'UNAUTHORIZED', sizes: [1024, 2 * MiB, 8 * MiB] },
    'raw-streamed-over-limit': { status: 413, code: 'PAYLOAD_TOO_LARGE', sizes: [MiB + 1, 2 * MiB, 8 * MiB] },
  };

  async function run(jobs: Array<{ kind: string; size: number }>, concurrency: number): Promise<Outcome[]> {
    const { stdout } = await promisify(execFile)(process.execPath, [CLIENT, t.url, JSON.stringify({ key: t.keys.alice, jobs, concurrency })], {
      maxBuffer: 16 * MiB,
    });
    return JSON.parse(stdout) as Outcome[];
  }

  function check(jobs: Array<{ kind: string; size: number }>, outcomes: Outcome[]): string[] {
    const wrong: string[] = [];
    jobs.forEach((job, i) => {
      const o = outcomes[i] ?? { lost: 'no outcome' };
      const want = EXPECT[job.kind] as { status: number; code: string };
      if (o.status !== want.status || o.error_code !== want.code || typeof o.request_id !== 'string') {
        wrong.push(`${job.kind} (${job.size} B): ${JSON.stringify(o)}`);
      }
    });
    return wrong;
  }

  function mix(n: number): Array<{ kind: string; size: number }> {
    const kinds = Object.keys(EXPECT);
    return Array.from({ length: n }, (_, i) => {
      const kind = kinds[i % kinds.length] as string;
      const sizes = (EXPECT[kind] as { sizes: number[] }).sizes;
      return { kind, size: sizes[Math.floor(i / kinds.length) % sizes.length] as number };
    });
  }

  it('300 refused requests one after another: 300 JSON answers with the right error_code', async () => {
    const jobs = mix(300);
    const wrong = check(jobs, await run(jobs, 1));
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} of 300 refusals were not answered`);
  });

  it('300 refused requests, 8 at a time: 300 JSON answers with the right error_code', async () => {
    const jobs = mix(300);
    const wrong = check(jobs, await run(jobs, 8));
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} of 300 refusals were not answered`);
  });

  it('a refused small body is read to its end: the connection stays open', async () => {
    const res = await fetch(`${t.url}/objects/a%5cb.bin`, { method: 'PUT', headers: t.auth('alice'), body: Buffer.alloc(4096) });
    assert.equal(res.status, 400);
    assert.notEqual(res.headers.get('connection'), 'close');
    await res.arrayBuffer();
  });
});
