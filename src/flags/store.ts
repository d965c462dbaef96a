import { createHash, randomUUID } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { AppError, ErrorCode } from '../errors.js';
import { probeWritable } from '../storage/probe.js';

const FLAG_NAME_RE = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
const CLIENT_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

export const flagSchema = z
  .object({
    /** Master switch; a disabled flag is off for everyone. */
    enabled: z.boolean().default(true),
    /** Share of clients (0-100) that get the flag, chosen by a stable hash of flag name and client. */
    rolloutPercent: z.number().min(0).max(100).default(100),
    /** Clients that always get the flag (when enabled), whatever the rollout. */
    clients: z.array(z.string().regex(CLIENT_RE)).max(1000).optional(),
    description: z.string().max(500).optional(),
  })
  .strict();

const uploadSettingsSchema = z
  .object({
    chunk_size_mb: z.number().positive().max(5120).optional(),
    concurrency: z.number().int().min(1).max(64).optional(),
  })
  .strict();

const flagsMap = z.record(z.string().regex(FLAG_NAME_RE, 'flag names are 1-64 letters, digits, "_", "-" or ".", starting with a letter'), flagSchema);

/** The whole document stored at FEATURE_FLAGS_CONFIG_PATH. */
export const flagsDocumentSchema = z
  .object({
    version: z.literal(1).default(1),
    flags: flagsMap.default({}),
    /** Server-wide overrides of the upload settings handed out by GET /config. */
    upload: uploadSettingsSchema.optional(),
    /** Per-client overrides of the upload settings. */
    clients: z.record(z.string().regex(CLIENT_RE), z.object({ upload: uploadSettingsSchema }).strict()).optional(),
  })
  .strict();

export type Flag = z.output<typeof flagSchema>;
export type FlagsDocument = z.output<typeof flagsDocumentSchema>;
export type UploadSettingsOverride = z.output<typeof uploadSettingsSchema>;

function describeZod(err: z.ZodError): string {
  const issue = err.issues[0];
  if (!issue) return 'invalid document';
  const where = issue.path.length > 0 ? issue.path.map(String).join('.') : '(document)';
  const what = issue.code === 'unrecognized_keys' ? `unknown key(s): ${issue.keys.join(', ')}` : issue.message;
  return `${where}: ${what}`;
}

export function parseFlagsDocument(input: unknown): FlagsDocument {
  const res = flagsDocumentSchema.safeParse(input);
  if (!res.success) throw new AppError(ErrorCode.INVALID_REQUEST, `invalid feature-flag document: ${describeZod(res.error)}`);
  return res.data;
}

/** Bucket 0-99 of a client for a flag: the first 32 bits of SHA-256("flag:client") mod 100. */
export function rolloutBucket(flag: string, client: string): number {
  return createHash('sha256').update(`${flag}:${client}`, 'utf8').digest().readUInt32BE(0) % 100;
}

export function isEnabledFor(name: string, flag: Flag, client: string): boolean {
  if (!flag.enabled) return false;
  if (flag.clients?.includes(client)) return true;
  return rolloutBucket(name, client) < flag.rolloutPercent;
}

/**
 * Feature flags and remote upload settings, kept in one JSON document on disk.
 * Every write is atomic (temp file, fsync, rename, fsync of the folder), and a
 * document is validated before it replaces the current one.
 */
export class FlagStore {
  private doc: FlagsDocument = { version: 1, flags: {} };
  /** Why the document on disk could not be loaded (the store then serves an empty one). */
  loadError: string | undefined;
  private writing: Promise<unknown> = Promise.resolve();

  /** Identity (mtime + size) of the file as last read or written, to notice edits by others. */
  private seen = '';
  private lastCheck = 0;

  /**
   * @param recheckMs how often (at most) reads look at the file for changes made
   * elsewhere: another gateway sharing it, or an operator editing it by hand.
   */
  constructor(
    readonly file: string,
    private readonly recheckMs = 2000,
  ) {}

  static async open(file: string, recheckMs?: number): Promise<FlagStore> {
    const s = new FlagStore(file, recheckMs);
    await s.reload();
    return s;
  }

  private async identity(): Promise<string> {
    try {
      const st = await stat(this.file);
      return `${st.mtimeMs}:${st.size}:${st.ino}`;
    } catch {
      return 'missing';
    }
  }

  /** Reload if the file changed since it was last read or written (checked at most every recheckMs). */
  async refresh(now = Date.now()): Promise<void> {
    if (now - this.lastCheck < this.recheckMs) return;
    this.lastCheck = now;
    await this.writing;
    if ((await this.identity()) !== this.seen) await this.reload();
  }

  async reload(): Promise<void> {
    this.seen = await this.identity();
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        this.doc = { version: 1, flags: {} };
        this.loadError = undefined;
        return;
      }
      this.loadError = `cannot read ${this.file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`;
      return;
    }
    try {
      this.doc = parseFlagsDocument(JSON.parse(text));
      this.loadError = undefined;
    } catch (err) {
      this.loadError = `${this.file} is not a valid document: ${err instanceof Error ? err.message : String(err)}`;
    }
  }

  get document(): FlagsDocument {
    return structuredClone(this.doc);
  }

  /**
   * Replace the document. A body with a `flags` key is a whole document; a
   * bare map of flags (spec 001: `{"roundFlowV2": {"rolloutPercent": 10}}`)
   * updates those flags, field by field, and leaves the rest.
   */
  async put(body: unknown): Promise<FlagsDocument> {
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      throw new AppError(ErrorCode.INVALID_REQUEST, 'invalid feature-flag document: expected a JSON object');
    }
    const run = async () => {
      const obj = body as Record<string, unknown>;
      let next: FlagsDocument;
      if ('flags' in obj || 'version' in obj || 'upload' in obj) {
        next = parseFlagsDocument(obj);
      } else {
        const merged: Record<string, unknown> = { ...this.doc.flags };
        for (const [name, patch] of Object.entries(obj)) {
          const cur = this.doc.flags[name];
          merged[name] = cur && patch !== null && typeof patch === 'object' && !Array.isArray(patch) ? { ...cur, ...patch } : patch;
        }
        next = parseFlagsDocument({ ...this.doc, flags: merged });
      }
      await this.writeAtomic(`${JSON.stringify(next, null, 2)}\n`);
      this.doc = next;
      this.loadError = undefined;
      return structuredClone(next);
    };
    // One writer at a time, so two PUTs never interleave their renames.
    const p = this.writing.then(run, run);
    this.writing = p.catch(() => {});
    return p;
  }

  private async writeAtomic(text: string): Promise<void> {
    const dir = path.dirname(this.file);
    const tmp = path.join(dir, `.${path.basename(this.file)}.${randomUUID()}.tmp`);
    try {
      await mkdir(dir, { recursive: true });
      const fh = await open(tmp, 'wx', 0o640);
      try {
        await fh.writeFile(text, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.file);
      this.seen = await this.identity();
      const d = await open(dir, 'r');
      try {
        await d.sync();
      } finally {
        await d.close();
      }
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw new AppError(
        ErrorCode.SERVICE_UNAVAILABLE,
        `the feature-flag store is not writable (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
        undefined,
        {
          cause: err,
        },
      );
    }
  }

  /** For /ready: the folder takes a write and the document on disk is valid. */
  async checkWritable(): Promise<void> {
    await this.refresh();
    if (this.loadError) throw Object.assign(new Error(this.loadError), { code: 'INVALID_FLAGS_DOCUMENT' });
    const dir = path.dirname(this.file);
    await mkdir(dir, { recursive: true });
    await probeWritable(dir, '.ready-');
  }

  /** The flags a client gets: name -> on/off. */
  evaluate(client: string): Record<string, boolean> {
    const out: Record<string, boolean> = {};
    for (const [name, flag] of Object.entries(this.doc.flags)) out[name] = isEnabledFor(name, flag, client);
    return out;
  }

  uploadOverrides(client: string): UploadSettingsOverride {
    return { ...this.doc.upload, ...this.doc.clients?.[client]?.upload };
  }
}
