import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { describe, it } from 'node:test';
import { PushStats } from '../src/push/engine.js';
import { createReporter } from '../src/push/progress.js';
import { eventually } from './helpers/http.js';

function sink(tty: boolean): { stream: PassThrough; writes: () => string[] } {
  const stream = new PassThrough();
  const out: string[] = [];
  stream.on('data', (d: Buffer) => out.push(d.toString()));
  Object.assign(stream, { isTTY: tty, columns: 160, cursorTo: () => true, clearLine: () => true, moveCursor: () => true });
  return { stream, writes: () => out };
}

describe('progress display', () => {
  it('on a TTY: a cli-progress bar, redrawn at most twice a second, with files, bytes and failures', async () => {
    const stats = new PushStats();
    const err = sink(true);
    const out = sink(false);
    const r = createReporter('tty', stats, { stdout: out.stream, stderr: err.stream }, 5);
    const t0 = Date.now();
    stats.toUpload = 10;
    stats.toUploadBytes = 10 * 1024 * 1024;
    stats.uploaded = 4;
    stats.failed = 1;
    stats.bytesSent = 5 * 1024 * 1024;
    stats.scanDone = true;
    await eventually(async () => err.writes().join('').includes('5/10 files'), 10_000, 'a frame');
    r.stop();
    const elapsed = (Date.now() - t0) / 1000;
    const frames = err.writes().filter((w) => w.includes('files')).length;
    assert.ok(frames <= Math.ceil(elapsed * 2) + 2, `${frames} frames in ${elapsed} s`);
    const text = err.writes().join('');
    assert.match(text, /5\.0 MiB\/10\.0 MiB/);
    assert.match(text, /1 failed/);
    assert.equal(out.writes().length, 0, 'nothing on stdout');
  });

  it('without a TTY: a progress line every interval; --json: events on stdout', async () => {
    const stats = new PushStats();
    stats.toUpload = 3;
    stats.uploaded = 2;
    stats.scanDone = true;
    const err = sink(false);
    const lines = createReporter('lines', stats, { stdout: sink(false).stream, stderr: err.stream }, 0.05);
    await eventually(async () => err.writes().some((w) => w.startsWith('2 of 3 files')), 10_000, 'a progress line');
    lines.stop();

    const out = sink(false);
    const json = createReporter('json', stats, { stdout: out.stream, stderr: sink(false).stream }, 0.05);
    json.event({ event: 'file', path: 'a.bin', status: 'uploaded', size: 3 });
    await eventually(async () => out.writes().some((w) => w.includes('"event":"progress"')), 10_000, 'a progress event');
    json.stop();
    const events = out
      .writes()
      .join('')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; uploaded?: number });
    assert.equal(events[0]?.event, 'file');
    assert.equal(events.find((e) => e.event === 'progress')?.uploaded, 2);
  });
});
