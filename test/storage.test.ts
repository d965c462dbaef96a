import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pipeline, Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { ResolvedClient } from '../src/config/load.js';
import { AppError, ErrorCode } from '../src/errors.js';
import { FS_TMP_DIR, FsStorage } from '../src/storage/fs.js';
import { S3Storage } from '../src/storage/s3.js';
import type { StorageBackend } from '../src/storage/types.js';
import { Meter } from '../src/uploads/meter.js';
import { bytes, MiB, readAll, sha256 } from './helpers/http.js';
import { type S3rverProcess, startS3rver } from './helpers/s3rver.js';

/** A client whose limit is `max` bytes (what the meter checks against). */
const limited = (max: number): ResolvedClient => ({ name: 'c', keyHash: Buffer.alloc(32), maxFileSize: max, retentionDays: undefined, corsOrigins: [] });

/** A body streamed in `chunk`-sized pieces, as a socket would deliver it. */
function streamOf(data: Buffer, chunk = 64 * 1024): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < data.length; i += chunk) yield data.subarray(i, i + chunk);
    })(),
    { objectMode: false },
  );
}

/** A body that fails after `after` bytes. */
function failingStream(data: Buffer, after: number): Readable {
  return Readable.from(
    (async function* () {
      yield data.subarray(0, after);
      await new Promise((r) => setTimeout(r, 10));
      throw new Error('client went away');
    })(),
    { objectMode: false },
  );
}

async function read(s: StorageBackend, key: string, range?: { start: number; end: number }): Promise<Buffer | null> {
  const got = await s.get(key, range);
  return got ? readAll(got.body) : null;
}

async function keys(s: StorageBackend, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of s.list(prefix)) out.push(o.key);
  return out.sort();
}

const PART = 5 * MiB;

interface Subject {
  name: 'fs' | 's3';
  storage: StorageBackend;
  /** Files left in the staging folder (fs only). */
  temps(): string[];
}

const subjects: Array<{ name: 'fs' | 's3'; open(): Promise<Subject & { close(): Promise<void> }> }> = [
  {
    name: 'fs',
    async open() {
      const dir = mkdtempSync(path.join(os.tmpdir(), 's3up-storage-'));
      const storage = await FsStorage.open(dir);
      return {
        name: 'fs',
        storage,
        temps: () =>
          readdirSync(path.join(dir, FS_TMP_DIR), { recursive: true, withFileTypes: true })
            .filter((e) => e.isFile())
            .map((e) => e.name),
        async close() {
          await storage.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 's3',
    async open() {
      const s3rver: S3rverProcess = await startS3rver();
      const storage = new S3Storage({
        endpoint: s3rver.endpoint,
        region: 'us-east-1',
        bucket: s3rver.bucket,
        accessKeyId: s3rver.accessKeyId,
        secretAccessKey: s3rver.secretAccessKey,
        forcePathStyle: true,
        partSize: PART,
        queueSize: 2,
      });
      return {
        name: 's3',
        storage,
        temps: () => [],
        async close() {
          await storage.close();
          await s3rver.stop();
        },
      };
    },
  },
];

for (const subject of subjects) {
  describe(`storage conformance (${subject.name})`, () => {
    let sub: Subject & { close(): Promise<void> };
    let s: StorageBackend;
    before(async () => {
      sub = await subject.open();
      s = sub.storage;
    });
    after(async () => {
      await sub?.close();
    });

    it('put, head, get, delete', async () => {
      const data = bytes(300_000);
      const res = await s.put('c/a/one.bin', streamOf(data), { contentType: 'text/plain' });
      assert.equal(res.size, data.length);
      if (subject.name === 's3') assert.ok(res.etag && res.etag.length > 0);
      const info = await s.head('c/a/one.bin');
      assert.ok(info);
      assert.equal(info.key, 'c/a/one.bin');
      assert.equal(info.size, data.length);
      assert.ok(info.etag.length > 0);
      assert.ok(info.lastModified.getTime() > Date.now() - 60_000);
      if (subject.name === 's3') assert.equal(info.contentType, 'text/plain');
      const got = await s.get('c/a/one.bin');
      assert.ok(got);
      assert.equal(got.info.size, data.length);
      assert.equal(got.info.etag, info.etag);
      assert.deepEqual(await readAll(got.body), data);
      await s.delete('c/a/one.bin');
      assert.equal(await s.head('c/a/one.bin'), null);
      assert.equal(await s.get('c/a/one.bin'), null);
      await s.delete('c/a/one.bin'); // deleting a missing object is not an error
    });

    it('an empty object', async () => {
      const res = await s.put('c/empty.bin', streamOf(Buffer.alloc(0)));
      assert.equal(res.size, 0);
      assert.equal((await s.head('c/empty.bin'))?.size, 0);
      assert.deepEqual(await read(s, 'c/empty.bin'), Buffer.alloc(0));
    });

    it('a Buffer body (the small-upload path): stored, overwritten atomically, refused by beforeCommit', async () => {
      const data = bytes(4096);
      const res = await s.put('c/buf/one.bin', data, { contentType: 'application/octet-stream' });
      assert.equal(res.size, data.length);
      assert.deepEqual(await read(s, 'c/buf/one.bin'), data);
      const next = bytes(10);
      await s.put('c/buf/one.bin', next);
      assert.deepEqual(await read(s, 'c/buf/one.bin'), next);
      await assert.rejects(
        s.put('c/buf/one.bin', bytes(77), {
          beforeCommit: () => {
            throw new Error('refused');
          },
        }),
        /refused/,
      );
      assert.deepEqual(await read(s, 'c/buf/one.bin'), next);
      await s.put('c/buf/empty.bin', Buffer.alloc(0));
      assert.equal((await s.head('c/buf/empty.bin'))?.size, 0);
      assert.deepEqual(sub.temps(), []);
    });

    it('missing objects: head and get are null', async () => {
      assert.equal(await s.head('c/none/here.bin'), null);
      assert.equal(await s.get('c/none/here.bin'), null);
      assert.equal(await s.get('c/none/here.bin', { start: 0, end: 0 }), null);
    });

    it('get with a range returns exactly the bytes asked for and the full size', async () => {
      const data = bytes(10_000);
      await s.put('c/range.bin', streamOf(data, 1000));
      for (const [start, end] of [
        [0, 0],
        [0, 9],
        [1, 1],
        [5000, 5999],
        [9999, 9999],
        [9000, 9999],
      ] as const) {
        const got = await s.get('c/range.bin', { start, end });
        assert.ok(got);
        assert.equal(got.info.size, data.length, `size for ${start}-${end}`);
        assert.deepEqual(await readAll(got.body), data.subarray(start, end + 1), `bytes ${start}-${end}`);
      }
    });

    it('overwrite replaces the object', async () => {
      const a = bytes(1000);
      const b = bytes(2000);
      await s.put('c/over.bin', streamOf(a));
      await s.put('c/over.bin', streamOf(b));
      assert.deepEqual(await read(s, 'c/over.bin'), b);
      assert.equal((await s.head('c/over.bin'))?.size, b.length);
    });

    it('list returns every object below a prefix, and only those', async () => {
      await s.put('l/x/1.bin', streamOf(bytes(10)));
      await s.put('l/x/sub/2.bin', streamOf(bytes(20)));
      await s.put('l/xy/3.bin', streamOf(bytes(30)));
      await s.put('l/y/4.bin', streamOf(bytes(40)));
      assert.deepEqual(await keys(s, 'l/x/'), ['l/x/1.bin', 'l/x/sub/2.bin']);
      assert.deepEqual(await keys(s, 'l/'), ['l/x/1.bin', 'l/x/sub/2.bin', 'l/xy/3.bin', 'l/y/4.bin']);
      assert.deepEqual(await keys(s, 'l/none/'), []);
      const sizes: Record<string, number> = {};
      for await (const o of s.list('l/')) sizes[o.key] = o.size;
      assert.deepEqual(sizes, { 'l/x/1.bin': 10, 'l/x/sub/2.bin': 20, 'l/xy/3.bin': 30, 'l/y/4.bin': 40 });
      // The staging area is never listed.
      assert.ok((await keys(s, '')).every((k) => !k.startsWith(FS_TMP_DIR)));
    });

    it('check passes on a working store', async () => {
      await s.check();
    });

    it('put with beforeCommit throwing publishes nothing and keeps the old object', async () => {
      const old = bytes(5000);
      await s.put('c/commit.bin', streamOf(old));
      for (const size of [1000, 12 * MiB]) {
        let called = 0;
        await assert.rejects(
          s.put('c/commit.bin', streamOf(bytes(size)), {
            beforeCommit: () => {
              called++;
              throw new Error('refused');
            },
          }),
          /refused/,
        );
        assert.equal(called, 1);
        assert.deepEqual(await read(s, 'c/commit.bin'), old);
        await assert.rejects(
          s.put('c/commit-new.bin', streamOf(bytes(size)), {
            beforeCommit: async () => {
              throw new Error('refused');
            },
          }),
          /refused/,
        );
        assert.equal(await s.head('c/commit-new.bin'), null);
      }
      assert.deepEqual(sub.temps(), []);
    });

    it('through the verifying stream (meter): an over-limit body and a checksum mismatch publish nothing and keep the old object', async () => {
      const old = bytes(4000);
      await s.put('c/verified.bin', streamOf(old));
      for (const size of [200_000, 12 * MiB]) {
        // Over the limit: the meter stops the stream.
        const over = new Meter(limited(size - 1));
        pipeline(streamOf(bytes(size)), over, () => {});
        await assert.rejects(s.put('c/verified.bin', over), (e: AppError) => e.code === 'PAYLOAD_TOO_LARGE');
        assert.deepEqual(await read(s, 'c/verified.bin'), old, `${size}: the old object stays after an over-limit body`);
        // A checksum that does not match, found once every byte passed (as the upload pipeline checks it).
        const meter = new Meter(limited(size));
        pipeline(streamOf(bytes(size)), meter, () => {});
        await assert.rejects(
          s.put('c/verified.bin', meter, {
            beforeCommit: () => {
              if (meter.sha256 !== '0'.repeat(64)) throw new AppError(ErrorCode.CHECKSUM_MISMATCH, 'sha256 mismatch');
            },
          }),
          (e: AppError) => e.code === 'CHECKSUM_MISMATCH',
        );
        assert.equal(meter.bytes, size);
        assert.deepEqual(await read(s, 'c/verified.bin'), old, `${size}: the old object stays after a checksum mismatch`);
        const fresh = new Meter(limited(size));
        pipeline(streamOf(bytes(size)), fresh, () => {});
        await assert.rejects(
          s.put('c/verified-new.bin', fresh, {
            beforeCommit: () => {
              throw new AppError(ErrorCode.CHECKSUM_MISMATCH, 'sha256 mismatch');
            },
          }),
          (e: AppError) => e.code === 'CHECKSUM_MISMATCH',
        );
        assert.equal(await s.head('c/verified-new.bin'), null);
      }
      assert.deepEqual(sub.temps(), []);
    });

    it('beforeCommit runs once every byte is received, before the object is visible', async () => {
      const data = bytes(11 * MiB);
      let seen = -1;
      const body = streamOf(data);
      let consumed = 0;
      body.on('data', (c: Buffer) => {
        consumed += c.length;
      });
      await s.put('c/staged.bin', body, {
        beforeCommit: async () => {
          seen = consumed;
          // Not visible yet.
          assert.equal(await s.head('c/staged.bin'), null);
        },
      });
      assert.equal(seen, data.length);
      assert.deepEqual(await read(s, 'c/staged.bin'), data);
    });

    it('a body that fails mid-way publishes nothing and keeps the old object', async () => {
      const old = bytes(3000);
      await s.put('c/fail.bin', streamOf(old));
      for (const size of [100_000, 7 * MiB]) {
        await assert.rejects(s.put('c/fail.bin', failingStream(bytes(size), size)), /client went away/);
        assert.deepEqual(await read(s, 'c/fail.bin'), old);
        await assert.rejects(s.put('c/fail-new.bin', failingStream(bytes(size), size)), /client went away/);
        assert.equal(await s.head('c/fail-new.bin'), null);
      }
      assert.deepEqual(sub.temps(), []);
    });

    it('streams a body larger than the part size (12 MiB over 5 MiB parts)', async () => {
      const data = bytes(12 * MiB);
      const res = await s.put('c/big.bin', streamOf(data, 256 * 1024));
      assert.equal(res.size, data.length);
      assert.equal((await s.head('c/big.bin'))?.size, data.length);
      const back = await read(s, 'c/big.bin');
      assert.equal(back?.length, data.length);
      assert.equal(sha256(back as Buffer), sha256(data));
      // A range across the part boundary.
      assert.deepEqual(await read(s, 'c/big.bin', { start: PART - 10, end: PART + 9 }), data.subarray(PART - 10, PART + 10));
      // Exactly a multiple of the part size.
      const even = bytes(2 * PART);
      assert.equal((await s.put('c/even.bin', streamOf(even, 1024 * 1024))).size, even.length);
      assert.equal(sha256((await read(s, 'c/even.bin')) as Buffer), sha256(even));
    });

    it('many parts with reused part buffers: every part keeps its own bytes (7 parts, 3 buffers)', async () => {
      // S3: queue 2 means at most 3 part buffers, each refilled after its part is acknowledged.
      // Chunks of an odd size straddle part boundaries.
      const data = bytes(6 * PART + 12345);
      const res = await s.put('c/many.bin', streamOf(data, 99_991));
      assert.equal(res.size, data.length);
      const back = (await read(s, 'c/many.bin')) as Buffer;
      assert.equal(back.length, data.length);
      for (let i = 0; i < 7; i++) {
        assert.equal(sha256(back.subarray(i * PART, (i + 1) * PART)), sha256(data.subarray(i * PART, (i + 1) * PART)), `part ${i + 1}`);
      }
    });

    it('many concurrent reads and writes, some reads abandoned, all see the right bytes', async () => {
      // Regression: the filesystem backend closed each read's descriptor twice, so a
      // descriptor number handed to a concurrent read or write was closed under it.
      const files = Array.from({ length: 24 }, () => bytes(100_000));
      await Promise.all(files.map((f, i) => s.put(`c/conc/${i}.bin`, streamOf(f))));
      const rounds = subject.name === 'fs' ? 30 : 3;
      for (let round = 0; round < rounds; round++) {
        await Promise.all([
          ...files.map(async (f, i) => {
            const got = await s.get(`c/conc/${i}.bin`, i % 2 ? { start: 10, end: 50_009 } : undefined);
            assert.ok(got);
            if ((i + round) % 3 === 0) {
              got.body.destroy(); // abandoned (a client that went away)
              return;
            }
            assert.deepEqual(await readAll(got.body), i % 2 ? f.subarray(10, 50_010) : f);
          }),
          ...files.slice(0, 6).map(async (f, i) => {
            await s.put(`c/conc/w${i}.bin`, streamOf(f, 8192));
            assert.deepEqual(await read(s, `c/conc/w${i}.bin`), f);
          }),
        ]);
      }
    });

    it('a body that fails before the first byte leaves no staging file', async () => {
      // Regression: the filesystem backend unlinked the temp file before its open had
      // completed, so the file appeared afterwards and stayed (a few percent of tries).
      const tries = subject.name === 'fs' ? 200 : 5;
      for (let i = 0; i < tries; i++) {
        const body = new Readable({ read() {} });
        const p = s.put(`c/early-${i % 5}.bin`, body);
        const kill = () => body.destroy(new Error('gone at once'));
        if (i % 2) setImmediate(kill);
        else process.nextTick(kill);
        await assert.rejects(p, /gone at once/);
      }
      await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(sub.temps(), []);
      assert.equal(await s.head('c/early-0.bin'), null);
    });

    if (subject.name === 'fs') {
      it('fs: keys never resolve outside the root or into the staging area', async () => {
        const fs = s as FsStorage;
        for (const key of ['../x', 'a/../../x', `${FS_TMP_DIR}/x.part`, '']) {
          assert.throws(
            () => fs.pathFor(key),
            (err: unknown) => err instanceof AppError && err.code === 'INVALID_PATH',
            key,
          );
        }
        assert.equal(await fs.head('c/a'), null, 'a folder is not an object');
      });
    } else {
      it('s3: check fails with a storage error code for a missing bucket or a store that is down', async () => {
        const opts = { region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER', forcePathStyle: true, partSize: PART, queueSize: 1 };
        const s3 = s as S3Storage;
        const endpoint = (await s3.client.config.endpoint?.())?.port;
        const noBucket = new S3Storage({ ...opts, endpoint: `http://127.0.0.1:${endpoint}`, bucket: 'no-such-bucket' });
        await assert.rejects(noBucket.check(), (err: unknown) => err instanceof AppError && ['STORAGE_UNAVAILABLE', 'STORAGE_ERROR'].includes(err.code));
        await noBucket.close();
        const down = new S3Storage({ ...opts, endpoint: 'http://127.0.0.1:9', bucket: 'x' });
        await assert.rejects(down.check(), (err: unknown) => err instanceof AppError && err.code === 'STORAGE_UNAVAILABLE');
        await assert.rejects(down.put('k', streamOf(bytes(10))), (err: unknown) => err instanceof AppError && err.code === 'STORAGE_UNAVAILABLE');
        await down.close();
      });
    }
  });
}
