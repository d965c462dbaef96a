// The filesystem backend's staging-file writer (write-behind fdatasync, fsync
// before finish) on real files.
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { dropBytes, StagedFile } from '../src/storage/staged-file.js';
import { bytes } from './helpers/http.js';

/** This process's descriptors open on `file` (other descriptors come and go with the runtime). */
const fdsOn = (file: string) =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(file);
    } catch {
      return false; // closed meanwhile
    }
  }).length;

describe('StagedFile', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 's3up-staged-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('writes every byte in order, whatever the batching, and finishes after the last sync', async () => {
    const data = bytes(3 * 1024 * 1024 + 123);
    const file = path.join(dir, 'a.bin');
    const every = 64 * 1024;
    const out = new StagedFile(file, { syncEveryBytes: every, highWaterMark: 256 * 1024 });
    // Uneven chunks, so writev batches and partial buffers both happen.
    const chunks: Buffer[] = [];
    for (let at = 0, n = 1; at < data.length; at += n, n = (n * 7 + 13) % 100_000) chunks.push(data.subarray(at, at + n));
    let finishedWith = -1;
    out.on('finish', () => {
      finishedWith = readFileSync(file).length;
    });
    await pipeline(Readable.from(chunks), out);
    assert.equal(out.bytesWritten, data.length);
    // How many syncs overlap depends on the disk; what is guaranteed: the first
    // write past 64 KiB starts one (none is in flight yet), and never more than
    // one per 64 KiB written.
    assert.ok(out.syncs >= 1 && out.syncs <= Math.ceil(data.length / every), `syncs: ${out.syncs}`);
    assert.equal(finishedWith, data.length);
    assert.deepEqual(readFileSync(file), data);
  });

  it('starts one write-behind sync per syncEveryBytes written once the previous one is done', async () => {
    const every = 64 * 1024;
    const file = path.join(dir, 'paced.bin');
    const out = new StagedFile(file, { syncEveryBytes: every, highWaterMark: 1024 * 1024 });
    const write = (b: Buffer) => new Promise<void>((resolve, reject) => out.write(b, (err) => (err ? reject(err) : resolve())));
    const written: Buffer[] = [];
    const step = async (size: number) => {
      const b = bytes(size);
      written.push(b);
      await write(b);
      await out.settled();
    };
    // Paced writes: each waits for the write and for the sync it may have started,
    // so the count is determined by the bytes alone.
    await step(every - 1);
    assert.equal(out.syncs, 0, 'one byte short of the threshold: no sync');
    await step(1);
    assert.equal(out.syncs, 1, 'the threshold reached: one sync');
    for (let i = 0; i < 20; i++) await step(every);
    assert.equal(out.syncs, 21);
    await step(3 * every);
    assert.equal(out.syncs, 22, 'one sync per write that crosses the threshold, however large');
    await step(every / 2);
    assert.equal(out.syncs, 22);
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    assert.deepEqual(readFileSync(file), Buffer.concat(written));
  });

  it('writes an empty file; syncEveryBytes 0 means no write-behind', async () => {
    const file = path.join(dir, 'empty.bin');
    await pipeline(Readable.from([]), new StagedFile(file, { syncEveryBytes: 1, highWaterMark: 1024 }));
    assert.equal(readFileSync(file).length, 0);
    const none = new StagedFile(path.join(dir, 'no-wb.bin'), { syncEveryBytes: 0, highWaterMark: 1024 });
    await pipeline(Readable.from([bytes(100_000)]), none);
    assert.equal(none.syncs, 0);
  });

  it('never overwrites: an existing path fails the stream', async () => {
    const file = path.join(dir, 'exists.bin');
    writeFileSync(file, 'old');
    await assert.rejects(pipeline(Readable.from([Buffer.from('new')]), new StagedFile(file, { syncEveryBytes: 0, highWaterMark: 1024 })), { code: 'EEXIST' });
    assert.equal(readFileSync(file, 'utf8'), 'old');
  });

  it('a body that fails mid-way closes the file (no descriptor left open)', async () => {
    const file = path.join(dir, 'broken.bin');
    const body = new Readable({ read() {} });
    const out = new StagedFile(file, { syncEveryBytes: 1024, highWaterMark: 4096 });
    const done = pipeline(body, out);
    for (let i = 0; i < 50; i++) body.push(bytes(1000));
    // Mid-way: the file is open and bytes are flowing into it.
    while (fdsOn(file) === 0) await new Promise((r) => setTimeout(r, 5));
    assert.equal(fdsOn(file), 1);
    body.destroy(new Error('client went away'));
    await assert.rejects(done, /client went away/);
    // Closing waits for a write-behind sync in flight, so it may come just after the rejection.
    if (!out.closed) await new Promise((r) => out.once('close', r));
    assert.equal(fdsOn(file), 0);
  });

  it('dropBytes skips whole and partial buffers', () => {
    const bufs = [Buffer.from('abc'), Buffer.from(''), Buffer.from('defg')];
    assert.deepEqual(dropBytes(bufs, 0).map(String), ['abc', 'defg']);
    assert.deepEqual(dropBytes(bufs, 2).map(String), ['c', 'defg']);
    assert.deepEqual(dropBytes(bufs, 3).map(String), ['defg']);
    assert.deepEqual(dropBytes(bufs, 5).map(String), ['fg']);
    assert.deepEqual(dropBytes(bufs, 7).map(String), []);
  });
});
