import { randomUUID } from 'node:crypto';
import { mkdir, open, opendir, readdir, rename, rmdir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AppError, ErrorCode } from '../errors.js';
import { probeWritable } from './probe.js';
import { StagedFile, writeAllAt } from './staged-file.js';
import type { ByteRange, DeleteManyResult, GetResult, MultipartCapability, ObjectInfo, PutOptions, PutResult, StorageBackend, StoredPart } from './types.js';

/** Staging area inside the root, so the final rename never crosses a filesystem. */
export const FS_TMP_DIR = '.s3up-tmp';
const STALE_TMP_MS = 24 * 3600 * 1000;
/**
 * Bytes a staging file queues before backpressure: enough to batch a few socket
 * chunks per writev, small enough that chunks do not wait long (see Meter).
 */
const WRITE_HWM = 512 * 1024;
const READ_HWM = 1024 * 1024;
/** Write-behind: an fdatasync every 32 MiB while a large upload is written (see StagedFile). */
const SYNC_BEHIND_BYTES = 32 * 1024 * 1024;
const DISK_ERRORS = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'EACCES', 'EPERM', 'EMFILE', 'ENFILE', 'EEXIST']);

function statEtag(size: number, mtimeMs: number): string {
  return `"${size.toString(16)}-${Math.floor(mtimeMs).toString(16)}"`;
}

async function fsyncPath(p: string): Promise<void> {
  const fh = await open(p, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

interface DirSyncState {
  running?: Promise<void> | undefined;
  queued?: Promise<void> | undefined;
}

/**
 * Group commit for directory fsyncs. A caller that renamed a file into `dir`
 * needs an fsync of `dir` that STARTS after its rename. If none is running,
 * it starts one; if one is running (it may have started before the rename),
 * the caller waits for the next one, which every caller arriving meanwhile
 * shares. Many concurrent publishes into one folder then cost a few fsyncs
 * instead of one each, with the same guarantee for every caller.
 */
class DirSyncer {
  private readonly dirs = new Map<string, DirSyncState>();

  sync(dir: string): Promise<void> {
    let state = this.dirs.get(dir);
    if (!state) {
      state = {};
      this.dirs.set(dir, state);
    }
    const s = state;
    if (s.queued) return s.queued;
    if (!s.running) return this.start(dir, s);
    const queued = s.running
      .then(
        () => {},
        () => {},
      )
      .then(() => {
        s.queued = undefined;
        return this.start(dir, s);
      });
    s.queued = queued;
    return queued;
  }

  private start(dir: string, s: DirSyncState): Promise<void> {
    const p: Promise<void> = fsyncPath(dir).finally(() => {
      if (s.running === p) s.running = undefined;
      if (!s.running && !s.queued) this.dirs.delete(dir);
    });
    s.running = p;
    return p;
  }
}

function storageError(err: unknown, what: string): AppError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') return new AppError(ErrorCode.STORAGE_FULL, `storage is full (${what})`, undefined, { cause: err });
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS' || code === 'EIO') {
    return new AppError(ErrorCode.STORAGE_UNAVAILABLE, `storage is not writable (${what})`, undefined, { cause: err });
  }
  if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'EEXIST') {
    return new AppError(ErrorCode.CONFLICT, 'the path conflicts with an existing object or folder', undefined, { cause: err });
  }
  return new AppError(ErrorCode.STORAGE_ERROR, `storage error (${what})`, undefined, { cause: err });
}

/**
 * Objects are plain files below `root`; keys map to paths segment by segment.
 * Writes go to a temp file, are fsynced, then renamed into place (and the
 * folder fsynced), so a reader sees the old object or the whole new one.
 */
export class FsStorage implements StorageBackend {
  readonly kind = 'fs' as const;
  readonly root: string;
  readonly tmpDir: string;
  private readonly dirSyncer = new DirSyncer();
  /** Staging files of resumable uploads (a sub-folder, so the stale-temp cleaner leaves them to the engine). */
  readonly multipartDir: string;
  readonly multipart: MultipartCapability;

  private constructor(root: string) {
    this.root = path.resolve(root);
    this.tmpDir = path.join(this.root, FS_TMP_DIR);
    this.multipartDir = path.join(this.tmpDir, 'multipart');
    this.multipart = this.makeMultipart();
  }

  static async open(root: string): Promise<FsStorage> {
    const s = new FsStorage(root);
    await mkdir(s.tmpDir, { recursive: true });
    await mkdir(s.multipartDir, { recursive: true });
    await s.removeStaleTemps();
    return s;
  }

  /** Map a key to its file, refusing anything that would land outside the root. */
  pathFor(key: string): string {
    const p = path.resolve(this.root, ...key.split('/'));
    if (!p.startsWith(this.root + path.sep) || p.startsWith(this.tmpDir + path.sep) || p === this.tmpDir) {
      throw new AppError(ErrorCode.INVALID_PATH, 'the key resolves outside the storage root');
    }
    return p;
  }

  tempPath(): string {
    return path.join(this.tmpDir, `${this.owner}.${randomUUID()}.part`);
  }

  async put(key: string, body: Readable | Buffer, opts: PutOptions = {}): Promise<PutResult> {
    const finalPath = this.pathFor(key);
    const tmp = this.tempPath();
    let published = false;
    try {
      const size = Buffer.isBuffer(body) ? await this.writeBuffer(tmp, body) : await this.writeStream(tmp, body);
      await opts.beforeCommit?.();
      await this.publish(tmp, finalPath);
      published = true;
      // No stat here: the size is what was written, and the ETag is derived from the file when it is read.
      return { size };
    } finally {
      if (!published) await unlink(tmp).catch(() => {});
    }
  }

  /** Write and fsync a staged temp file from a stream; returns the bytes written. */
  private async writeStream(tmp: string, body: Readable): Promise<number> {
    // Finishes only once fsynced, so the bytes are on disk before the rename publishes them.
    const out = new StagedFile(tmp, { syncEveryBytes: SYNC_BEHIND_BYTES, highWaterMark: WRITE_HWM });
    try {
      await pipeline(body, out);
    } catch (err) {
      // A body that fails before the file is even open would otherwise let the
      // open complete after the caller's unlink: wait for the stream to let go.
      if (!out.closed) await new Promise<void>((resolve) => out.once('close', () => resolve()));
      // Disk-side failures become storage errors; a client abort or a limit stays as it is.
      throw DISK_ERRORS.has((err as NodeJS.ErrnoException).code ?? '') ? storageError(err, 'write') : err;
    }
    return out.bytesWritten;
  }

  /** Write and fsync a staged temp file from memory: four calls, no stream machinery. */
  private async writeBuffer(tmp: string, buf: Buffer): Promise<number> {
    try {
      const fh = await open(tmp, 'wx', 0o640);
      try {
        await writeAllAt(fh, [buf], 0);
        await fh.sync();
      } catch (err) {
        // Report the write or fsync failure, not a failure to close after it.
        await fh.close().catch(() => {});
        throw err;
      }
      // Durable already: the close need not hold up the rename (one thread-pool round trip less).
      fh.close().catch(() => {});
    } catch (err) {
      throw storageError(err, 'write');
    }
    return buf.length;
  }

  /** Rename a fully written, fsynced temp file into place and make the rename durable. */
  async publish(tmp: string, finalPath: string): Promise<void> {
    const dir = path.dirname(finalPath);
    try {
      try {
        await rename(tmp, finalPath);
      } catch (err) {
        // The folder is usually there already: create it only when the rename says it is not.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        await mkdir(dir, { recursive: true });
        await rename(tmp, finalPath);
      }
      // Make the rename durable (shared with concurrent publishes into the same folder).
      await this.dirSyncer.sync(dir);
    } catch (err) {
      throw storageError(err, 'publish');
    }
  }

  /**
   * Resumable uploads on the filesystem: one staging file per upload, sized up
   * front (sparse), each part written in place at (partNumber-1)*partSize with
   * positional writes and fdatasync'ed before it is acknowledged. Completion is
   * fsync + rename: no byte is read back. The upload id carries the part size
   * ("<uuid>.<partSize>"), so any gateway on the same root can continue it.
   */
  private makeMultipart(): MultipartCapability {
    const stagingPath = (uploadId: string): { file: string; partSize: number } => {
      const m = /^([0-9a-f-]{36})\.(\d+)$/.exec(uploadId);
      if (!m) throw new AppError(ErrorCode.NOT_FOUND, 'unknown upload id');
      return { file: path.join(this.multipartDir, `${m[1]}.upload`), partSize: Number(m[2]) };
    };
    return {
      create: async (key, { partSize, totalSize }) => {
        this.pathFor(key);
        const uploadId = `${randomUUID()}.${partSize}`;
        const { file } = stagingPath(uploadId);
        try {
          // The folder may have been swept as empty: recreate it.
          await mkdir(this.multipartDir, { recursive: true });
          const fh = await open(file, 'wx', 0o640);
          try {
            await fh.truncate(totalSize);
          } finally {
            await fh.close();
          }
        } catch (err) {
          throw storageError(err, 'create staging file');
        }
        return uploadId;
      },
      uploadPart: async (_key, uploadId, partNumber, body, size): Promise<StoredPart> => {
        const { file, partSize } = stagingPath(uploadId);
        if (size > partSize) throw new AppError(ErrorCode.INVALID_REQUEST, `part ${partNumber} is larger than the part size`);
        let fh: Awaited<ReturnType<typeof open>>;
        try {
          fh = await open(file, 'r+');
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new AppError(ErrorCode.NOT_FOUND, 'the upload no longer exists');
          throw storageError(err, 'open staging file');
        }
        const position = (partNumber - 1) * partSize;
        let written = 0;
        try {
          if (Buffer.isBuffer(body)) {
            written = await writeAllAt(fh, [body], position);
          } else {
            // Coalesce socket-sized buffers into 512 KiB positional writes (fewer syscalls).
            let batch: Buffer[] = [];
            let batchBytes = 0;
            const flush = async (): Promise<void> => {
              written += await writeAllAt(fh, batch, position + written);
              batch = [];
              batchBytes = 0;
            };
            for await (const chunk of body) {
              const buf = chunk as Buffer;
              if (written + batchBytes + buf.length > size) throw new AppError(ErrorCode.SIZE_MISMATCH, `part ${partNumber} is longer than ${size} bytes`);
              batch.push(buf);
              batchBytes += buf.length;
              if (batchBytes >= WRITE_HWM) await flush();
            }
            if (batchBytes > 0) await flush();
          }
          if (written !== size) throw new AppError(ErrorCode.SIZE_MISMATCH, `part ${partNumber}: received ${written} bytes, expected ${size}`);
          await fh.datasync();
        } catch (err) {
          throw DISK_ERRORS.has((err as NodeJS.ErrnoException).code ?? '') ? storageError(err, 'write part') : err;
        } finally {
          await fh.close();
        }
        return { partNumber, etag: `"part-${partNumber}-${size.toString(16)}"`, size };
      },
      complete: async (key, uploadId, parts) => {
        const { file } = stagingPath(uploadId);
        const finalPath = this.pathFor(key);
        const total = parts.reduce((n, p) => n + p.size, 0);
        try {
          const fh = await open(file, 'r+');
          try {
            const st = await fh.stat();
            if (st.size !== total) await fh.truncate(total);
            await fh.sync();
          } finally {
            await fh.close();
          }
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new AppError(ErrorCode.NOT_FOUND, 'the upload no longer exists');
          throw storageError(err, 'complete');
        }
        await this.publish(file, finalPath);
        const st = await stat(finalPath);
        return { size: st.size, etag: statEtag(st.size, st.mtimeMs) };
      },
      abort: async (_key, uploadId) => {
        const { file } = stagingPath(uploadId);
        try {
          await unlink(file);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw storageError(err, 'abort');
        }
        return true;
      },
    };
  }

  async head(key: string): Promise<ObjectInfo | null> {
    const p = this.pathFor(key);
    try {
      const st = await stat(p);
      if (!st.isFile()) return null;
      return { key, size: st.size, lastModified: st.mtime, etag: statEtag(st.size, st.mtimeMs) };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return null;
      throw storageError(err, 'stat');
    }
  }

  async get(key: string, range?: ByteRange): Promise<GetResult | null> {
    const p = this.pathFor(key);
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(p, 'r');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'EISDIR') return null;
      throw storageError(err, 'open');
    }
    // Stat the open handle, so the size matches the bytes we stream even if the
    // object is replaced meanwhile (a rename never changes an open file).
    let st: Awaited<ReturnType<typeof fh.stat>>;
    try {
      st = await fh.stat();
    } catch (err) {
      await fh.close();
      throw storageError(err, 'stat');
    }
    if (!st.isFile()) {
      await fh.close();
      return null;
    }
    // The stream owns the handle and closes it exactly once. (Closing the raw fd
    // and then the FileHandle as well would close a number that another request
    // may already have been given again.)
    const body = fh.createReadStream({ start: range?.start, end: range?.end, highWaterMark: READ_HWM });
    return { body, info: { key, size: st.size, lastModified: st.mtime, etag: statEtag(st.size, st.mtimeMs) } };
  }

  async delete(key: string): Promise<void> {
    const p = this.pathFor(key);
    try {
      await unlink(p);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw storageError(err, 'delete');
    }
  }

  async deleteMany(keys: string[], opts: { unmodifiedSince?: Date } = {}): Promise<DeleteManyResult> {
    const out: DeleteManyResult = { deleted: [], errors: [] };
    const since = opts.unmodifiedSince?.getTime();
    for (const key of keys) {
      try {
        // Re-checked just before the unlink: an object rewritten meanwhile stays.
        if (since !== undefined && ((await this.head(key))?.lastModified.getTime() ?? 0) >= since) continue;
        await this.delete(key);
        out.deleted.push(key);
      } catch (err) {
        out.errors.push({ key, message: (err as Error).message });
      }
    }
    return out;
  }

  /** Remove empty folders from `dir` up to (not including) `stopAt`. */
  async removeEmptyDirs(dir: string, stopAt: string = this.root): Promise<number> {
    let removed = 0;
    let cur = path.resolve(dir);
    const stop = path.resolve(stopAt);
    while (cur.startsWith(stop + path.sep) && cur !== this.tmpDir) {
      try {
        if ((await readdir(cur)).length > 0) break;
        await rmdir(cur);
        removed++;
      } catch {
        break;
      }
      cur = path.dirname(cur);
    }
    return removed;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const base = prefix === '' ? this.root : path.resolve(this.root, ...prefix.replace(/\/+$/, '').split('/'));
    if (base !== this.root && !base.startsWith(this.root + path.sep)) return;
    yield* this.walk(base);
  }

  private async *walk(dir: string): AsyncIterable<ObjectInfo> {
    let handle: Awaited<ReturnType<typeof opendir>>;
    try {
      handle = await opendir(dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw storageError(err, 'list');
    }
    for await (const entry of handle) {
      const full = path.join(dir, entry.name);
      if (full === this.tmpDir) continue;
      if (entry.isDirectory()) {
        yield* this.walk(full);
      } else if (entry.isFile()) {
        try {
          const st = await stat(full);
          const key = path.relative(this.root, full).split(path.sep).join('/');
          yield { key, size: st.size, lastModified: st.mtime, etag: statEtag(st.size, st.mtimeMs) };
        } catch {
          // removed while listing
        }
      }
    }
  }

  async check(): Promise<void> {
    try {
      await probeWritable(this.tmpDir, 'ready-');
    } catch (err) {
      throw storageError(err, 'write probe');
    }
  }

  /**
   * The gateway instance writing this store's temp files (their names start
   * with it), so the temp files of a gateway that died can be told apart.
   */
  owner = 'gw';

  /** Remove the temp files of streamed uploads whose gateway is not in `alive` (it was killed mid-upload). */
  async removeTempsOfDead(alive: ReadonlySet<string>): Promise<number> {
    let n = 0;
    for (const name of await readdir(this.tmpDir)) {
      const m = /^([^.]+)\.[0-9a-f-]{36}\.part$/.exec(name);
      if (!m || alive.has(m[1] as string)) continue;
      try {
        await unlink(path.join(this.tmpDir, name));
        n++;
      } catch {
        // raced with another cleaner
      }
    }
    return n;
  }

  private async removeStaleTemps(): Promise<void> {
    const now = Date.now();
    for (const name of await readdir(this.tmpDir)) {
      const p = path.join(this.tmpDir, name);
      try {
        const st = await stat(p);
        if (st.isFile() && now - st.mtimeMs > STALE_TMP_MS) await unlink(p);
      } catch {
        // raced with another cleaner
      }
    }
  }

  async close(): Promise<void> {}
}
