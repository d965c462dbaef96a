import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { agentGateway, agentSetup, allArrived, gatewayDb, gatewayUploads, sha256, waitFor } from './helpers/agent.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('s3up agent: a burst of files', () => {
  const gateway = agentGateway();

  it('a burst of 5,000 files: every one arrives exactly once with its checksum', async () => {
    const t = gateway();
    const a = agentSetup(t, 'alice', { stability: { debounce_seconds: 1 }, upload: { concurrency: 8 } });
    const p = a.start();
    const n = 5000;
    const expected = new Map<string, string>();
    try {
      await waitFor(() => p.lines().find((l) => l.msg === 'initial queue drained; watching'), 'the agent to watch');
      for (let d = 0; d < 10; d++) mkdirSync(path.join(a.watchDir, `burst${d}`));
      await sleep(200);
      for (let i = 0; i < n; i++) {
        const body = randomBytes(256 + (i % 512));
        const rel = `burst${i % 10}/f${i}.bin`;
        writeFileSync(path.join(a.watchDir, rel), body);
        expected.set(`up/${rel}`, sha256(body));
      }
      await waitFor(() => allArrived(t, 'alice', expected.keys()), 'all 5,000 files', 250_000, 1000);
      const st = await a.status();
      assert.equal((st.queue as { pending: number }).pending, 0);
    } finally {
      assert.equal((await p.stop()).code, 0);
    }
    const uploads = gatewayUploads(t, 'alice');
    const stored = gatewayDb(t, (db) => db.prepare(`SELECT path, sha256 FROM objects WHERE client = 'alice' AND path LIKE 'up/burst%'`).all()) as Array<{
      path: string;
      sha256: string;
    }>;
    const storedSha = new Map(stored.map((r) => [r.path, r.sha256]));
    for (const [k, sum] of expected) {
      assert.equal(uploads.get(k), 1, `${k} uploaded once`);
      assert.equal(storedSha.get(k), sum, `${k} checksum`);
    }
  });
});
