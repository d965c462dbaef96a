import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createPgDatabase, pgSkip } from './helpers/pg.js';
import { random, sha256hex } from './helpers/resumable.js';
import { BACKENDS, startTestServer, type TestServer } from './helpers/server.js';
import { assertNothingAcknowledgedLost, assertRecordsTellTheTruth } from './helpers/truth.js';

/**
 * Uploads racing on one key: whatever wins, the record the gateway serves
 * (`/exists` sha256, the download's ETag and X-S3up-Sha256) names the bytes
 * that are stored, never the other upload's.
 */
for (const backend of BACKENDS) {
  describe(`concurrent PUTs to one key (${backend})`, () => {
    let t: TestServer;
    before(async () => {
      t = await startTestServer({ backend });
    });
    after(async () => t.stop());

    it('the record always describes the stored bytes', async () => {
      const rounds = backend === 's3' ? 20 : 80;
      // The bodies of the last round on each key: the store must hold one of them.
      const lastRound = new Map<string, Buffer[]>();
      for (let round = 0; round < rounds; round++) {
        const bodies = Array.from({ length: 2 + (round % 3) }, () => random(1024 + (round % 7) * 4096));
        const key = `race/k${round % 4}.bin`;
        const answers = await Promise.all(
          bodies.map((b) => fetch(`${t.url}/objects/${key}`, { method: 'PUT', headers: t.auth('alice'), body: b }).then((r) => r.status)),
        );
        for (const s of answers) assert.equal(s, 200);
        lastRound.set(key, bodies);
        const dl = await fetch(`${t.url}/download?path=${key}`, { headers: t.auth('alice') });
        assert.equal(dl.status, 200);
        const got = Buffer.from(await dl.arrayBuffer());
        const sha = sha256hex(got);
        assert.ok(
          bodies.some((b) => sha256hex(b) === sha),
          'the stored object is one of the bodies',
        );
        assert.equal(dl.headers.get('etag'), `"${sha}"`, `round ${round}: ETag`);
        assert.equal(dl.headers.get('x-s3up-sha256'), sha, `round ${round}: X-S3up-Sha256`);
        const ex = (await (await fetch(`${t.url}/exists?path=${key}`, { headers: t.auth('alice') })).json()) as {
          sha256: string;
          checksum: string;
          checksum_algorithm: string;
          size: number;
        };
        assert.equal(ex.sha256, sha, `round ${round}: /exists sha256`);
        assert.equal(ex.checksum, sha);
        assert.equal(ex.checksum_algorithm, 'sha256');
        assert.equal(ex.size, got.length);
      }
      const store = backend === 's3' && t.s3rver ? { kind: 's3' as const, s3rver: t.s3rver } : { kind: 'fs' as const, root: `${t.dir}/uploads` };
      const truth = await assertRecordsTellTheTruth(store, t.databaseUrl);
      assertNothingAcknowledgedLost(
        truth,
        [...lastRound].flatMap(([key, bodies]) => bodies.map((bytes) => ({ key: `backups/alice/${key}`, bytes }))),
      );
    });
  });
}

/**
 * The same race across two gateways that share one PostgreSQL database and one
 * store: the publish lock of a key holds across gateways, so the record still
 * describes the stored bytes whichever gateway published last.
 */
describe('concurrent PUTs to one key through two gateways (PostgreSQL)', { skip: pgSkip }, () => {
  for (const backend of BACKENDS) {
    it(`the record always describes the stored bytes (${backend})`, async () => {
      const db = await createPgDatabase();
      const a = await startTestServer({ backend, databaseUrl: db.url });
      const b = await startTestServer({
        backend,
        databaseUrl: db.url,
        ...(a.s3rver ? { s3rver: a.s3rver } : {}),
        extra: backend === 'fs' ? { storage: { backend: 'fs', fs: { root: path.join(a.dir, 'uploads') } } } : {},
      });
      try {
        const rounds = backend === 's3' ? 20 : 60;
        const lastRound = new Map<string, Buffer[]>();
        for (let round = 0; round < rounds; round++) {
          const bodies = Array.from({ length: 2 + (round % 3) }, () => random(1024 + (round % 7) * 4096));
          const key = `race2/k${round % 4}.bin`;
          const answers = await Promise.all(
            bodies.map((body, i) => {
              const g = i % 2 === 0 ? a : b;
              return fetch(`${g.url}/objects/${key}`, { method: 'PUT', headers: g.auth('alice'), body }).then((r) => r.status);
            }),
          );
          for (const s of answers) assert.equal(s, 200);
          lastRound.set(key, bodies);
          const got = Buffer.from(await (await fetch(`${a.url}/download?path=${key}`, { headers: a.auth('alice') })).arrayBuffer());
          const sha = sha256hex(got);
          assert.ok(
            bodies.some((x) => sha256hex(x) === sha),
            'the stored object is one of the bodies',
          );
          for (const g of [a, b]) {
            const ex = (await (await fetch(`${g.url}/exists?path=${key}`, { headers: g.auth('alice') })).json()) as { sha256: string; size: number };
            assert.equal(ex.sha256, sha, `round ${round}: /exists sha256 through ${g === a ? 'A' : 'B'}`);
            assert.equal(ex.size, got.length);
          }
        }
        const store = backend === 's3' && a.s3rver ? { kind: 's3' as const, s3rver: a.s3rver } : { kind: 'fs' as const, root: path.join(a.dir, 'uploads') };
        const truth = await assertRecordsTellTheTruth(store, db.url);
        assertNothingAcknowledgedLost(
          truth,
          [...lastRound].flatMap(([key, bodies]) => bodies.map((bytes) => ({ key: `backups/alice/${key}`, bytes }))),
        );
      } finally {
        await b.stop();
        await a.stop();
        await db.drop();
      }
    });
  }
});
