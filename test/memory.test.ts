// The gateway's memory tuning (src/server/memory.ts): the buffer reclaimer runs
// young-generation collections only while bytes move through a real HTTP
// server's connections, and the young-generation hold keeps V8's new space at
// its initial size until released (checked in a child process: V8 flags are process-wide).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { type BufferReclaimer, startBufferReclaimer } from '../src/server/memory.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('buffer reclaimer', () => {
  let server: http.Server;
  let url: string;
  let reclaimer: BufferReclaimer;
  before(async () => {
    server = http.createServer((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => {
        n += c.length;
      });
      req.on('end', () => res.end(String(n)));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    reclaimer = startBufferReclaimer({ intervalMs: 10, settleCollections: 0 });
    reclaimer.track(server);
  });
  after(async () => {
    reclaimer.stop();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const upload = (bytes: number, chunk = 64 * 1024) =>
    new Promise<string>((resolve, reject) => {
      const req = http.request(`${url}/`, { method: 'PUT', headers: { 'content-length': String(bytes) } }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => {
          body += d;
        });
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      let sent = 0;
      const pump = () => {
        while (sent < bytes) {
          const n = Math.min(chunk, bytes - sent);
          sent += n;
          if (!req.write(Buffer.alloc(n))) {
            // Pace the upload so it spans several of the reclaimer's looks.
            req.once('drain', () => setTimeout(pump, 2));
            return;
          }
        }
        req.end();
      };
      pump();
    });

  it('collects nothing while no bytes move', async () => {
    await sleep(150);
    assert.equal(reclaimer.collections, 0);
  });

  it('collects while an upload streams, and stops when it is over', async () => {
    const before = reclaimer.collections;
    assert.equal(await upload(64 * 1024 * 1024), String(64 * 1024 * 1024));
    const during = reclaimer.collections - before;
    assert.ok(during >= 1, `expected collections while 64 MiB streamed, got ${during}`);
    await sleep(50);
    const settled = reclaimer.collections;
    await sleep(150);
    assert.equal(reclaimer.collections, settled, 'no collections once the connection is quiet');
  });
});

describe('young generation setting', () => {
  // Allocates 2M short-lived objects; V8 would grow new space to 16 MB semi-spaces.
  const probe = (setup: string, execArgv: string[] = []) => {
    const code = `
      import { holdYoungGeneration, releaseYoungGeneration } from ${JSON.stringify(path.join(ROOT, 'src/server/memory.ts'))};
      import v8 from 'node:v8';
      ${setup}
      let keep = [];
      for (let i = 0; i < 2e6; i++) { keep.push({ a: i, b: 'x' + i }); if (keep.length > 20000) keep = []; }
      const ns = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
      console.log(ns.space_size);`;
    const r = spawnSync(process.execPath, [...execArgv, '--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return Number(r.stdout.trim()) / (1024 * 1024);
  };

  it('holds new space at its initial size until released, and leaves an operator flag alone', () => {
    const grown = probe('');
    const fixed = probe('holdYoungGeneration();');
    const released = probe('holdYoungGeneration(); releaseYoungGeneration();');
    const operator = probe('holdYoungGeneration();', ['--max-semi-space-size=4']);
    assert.ok(grown >= 8, `without the setting new space grows (got ${grown} MB)`);
    // Loading tsx before the call lets it grow a step or two; the bin calls it before any other module.
    assert.ok(fixed <= 4, `with the setting new space stays small (got ${fixed} MB)`);
    assert.ok(released >= 8, `released, it grows again (got ${released} MB)`);
    assert.ok(operator >= 8 && operator < grown, `an operator's --max-semi-space-size=4 wins (got ${operator} MB)`);
  });
});
