import type { FileHandle } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { Writable } from 'node:stream';

/** The buffers left after the first `n` bytes of `bufs` were written. */
export function dropBytes(bufs: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  let skip = n;
  for (const b of bufs) {
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

/** Write all of `bufs` at `position`, however many calls it takes; returns the bytes written. */
export async function writeAllAt(fh: FileHandle, bufs: Buffer[], position: number): Promise<number> {
  let at = position;
  let rest = bufs;
  while (rest.length > 0) {
    const { bytesWritten } = await fh.writev(rest, at);
    at += bytesWritten;
    rest = dropBytes(rest, bytesWritten);
  }
  return at - position;
}

export interface StagedFileOptions {
  /** Start an fdatasync each time this many bytes were written since the last one began (0: never). */
  syncEveryBytes: number;
  highWaterMark: number;
}

/**
 * A write stream for a staging file that is fsynced before it counts as
 * written: `finish` is emitted only after the last fsync succeeded.
 *
 * Why not `fs.createWriteStream(..., { flush: true })`: that stream leaves
 * every dirty page to the final fsync, so a 1 GiB upload ends with seconds of
 * waiting for the disk while the client has nothing more to send. Here the
 * pages are flushed behind the writes (an fdatasync every `syncEveryBytes`,
 * at most one in flight, while the next bytes keep arriving), and the final
 * fsync has little left to do. Measured on the 1 GiB benchmark: the gateway
 * went from 0.84 to 0.99 of the bare `pipeline` + fsync server.
 *
 * An error from a write-behind fdatasync fails the stream: after a failed
 * fsync, Linux may report the next one as successful although the pages were
 * dropped, so it must never be swallowed.
 */
export class StagedFile extends Writable {
  bytesWritten = 0;
  /** Write-behind fdatasyncs started so far (the final fsync not counted). */
  syncs = 0;
  private fh: FileHandle | undefined;
  private syncing: Promise<void> | undefined;
  private syncedFrom = 0;
  private syncError: Error | undefined;

  constructor(
    readonly path: string,
    private readonly opts: StagedFileOptions,
  ) {
    super({ highWaterMark: opts.highWaterMark });
  }

  override _construct(callback: (error?: Error | null) => void): void {
    open(this.path, 'wx', 0o640).then(
      (fh) => {
        this.fh = fh;
        callback();
      },
      (err: Error) => callback(err),
    );
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.append([chunk]).then(() => callback(), callback);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
    this.append(chunks.map((c) => c.chunk)).then(() => callback(), callback);
  }

  private async append(bufs: Buffer[]): Promise<void> {
    if (this.syncError) throw this.syncError;
    const fh = this.handle();
    this.bytesWritten += await writeAllAt(fh, bufs, this.bytesWritten);
    const every = this.opts.syncEveryBytes;
    if (every > 0 && !this.syncing && this.bytesWritten - this.syncedFrom >= every) {
      this.syncedFrom = this.bytesWritten;
      this.syncs++;
      this.syncing = fh.datasync().then(
        () => {
          this.syncing = undefined;
        },
        (err: Error) => {
          this.syncing = undefined;
          this.syncError = err;
        },
      );
    }
  }

  /** Resolves once no write-behind sync is in flight (a failed one fails the next write or the finish). */
  settled(): Promise<void> {
    return this.syncing ?? Promise.resolve();
  }

  override _final(callback: (error?: Error | null) => void): void {
    (async () => {
      await this.syncing;
      if (this.syncError) throw this.syncError;
      await this.handle().sync();
    })().then(() => callback(), callback);
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    (async () => {
      // Never close the file under a write-behind sync still running on it.
      await this.syncing;
      await this.fh?.close();
    })().then(
      () => callback(error),
      (closeErr: Error) => callback(error ?? closeErr),
    );
  }

  private handle(): FileHandle {
    if (!this.fh) throw new Error('staging file is not open');
    return this.fh;
  }
}
