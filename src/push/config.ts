import { readFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';

/**
 * The push configuration: a JSON file (spec 003's names are accepted too),
 * then the environment, then flags (flags win). The merged result is
 * validated and stored in config_history (without secrets).
 */
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const PushConfigSchema = z
  .object({
    project: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'must be 1-128 letters, digits, ".", "_" or "-", starting with a letter or digit'),
    source_dir: z.string().min(1, 'is required'),
    /** Gateway target. */
    server: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
    /** Client-relative prefix at the gateway, e.g. "sensors/2024/". */
    prefix: z
      .string()
      .default('')
      .refine((p) => !p.split('/').some((s) => s === '..' || s === '.') && !p.startsWith('/'), 'must be a relative path without "." or ".." segments'),
    /** Direct S3 target: s3://bucket/prefix. */
    direct: z
      .string()
      .regex(/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?$/, 'must be s3://bucket/prefix')
      .optional(),
    endpoint: z.url({ error: 'must be a URL' }).optional(),
    region: z.string().optional(),
    path_style: z.boolean().optional(),
    extensions: z.array(z.string().min(1)).default([]),
    include: z.array(z.string().min(1)).default([]),
    exclude: z.array(z.string().min(1)).default([]),
    follow_symlinks: z.boolean().default(false),
    workers: int(1, 256).default(16),
    part_concurrency: int(1, 64).default(4),
    chunk_size_mb: int(1, 5120).default(8),
    resumable_threshold_mb: z.coerce.number().positive().default(64),
    checksum: z.boolean().default(false),
    remote_check: z.boolean().default(true),
    max_retries: int(0, 100).default(3),
    retry: z.boolean().default(false),
    trigger_url: z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' }).optional(),
    progress_interval_seconds: z.coerce.number().positive().max(3600).default(5),
  })
  .strict();

export type PushConfig = z.infer<typeof PushConfigSchema>;

/** spec 003's config names, accepted in the JSON file. */
const ALIASES: Record<string, string> = {
  project_name: 'project',
  local_directory: 'source_dir',
  local_dir: 'source_dir',
  directory: 'source_dir',
  supported_extensions: 'extensions',
  file_extensions: 'extensions',
  max_workers: 'workers',
  parallel_workers: 'workers',
  endpoint_url: 'trigger_url',
  s3_endpoint: 'endpoint',
  max_retry_attempts: 'max_retries',
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config ${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError(`config ${file} must be a JSON object`);
  const out: Record<string, unknown> = {};
  const obj = raw as Record<string, unknown>;
  for (const [k, v] of Object.entries(obj)) out[ALIASES[k] ?? k] = v;
  // spec 003: bucket_name + s3_prefix name a direct target.
  const bucket = out.bucket_name ?? out.bucket;
  delete out.bucket_name;
  delete out.bucket;
  const s3Prefix = out.s3_prefix;
  delete out.s3_prefix;
  if (typeof bucket === 'string' && bucket !== '' && out.direct === undefined) {
    out.direct = `s3://${bucket}/${typeof s3Prefix === 'string' ? s3Prefix.replace(/^\/+/, '') : ''}`;
  } else if (typeof s3Prefix === 'string' && out.prefix === undefined) {
    out.prefix = s3Prefix;
  }
  if (typeof out.source_dir === 'string') out.source_dir = path.resolve(path.dirname(file), out.source_dir);
  return out;
}

function list(value: string | undefined): string[] | undefined {
  return value === undefined
    ? undefined
    : value
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean);
}

function fromEnv(env: NodeJS.ProcessEnv): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const set = (k: string, v: unknown) => {
    if (v !== undefined && v !== '') out[k] = v;
  };
  set('server', env.S3UP_SERVER);
  set('project', env.S3UP_PROJECT);
  set('prefix', env.S3UP_PREFIX);
  set('workers', env.S3UP_WORKERS);
  set('extensions', list(env.S3UP_EXTENSIONS));
  set('trigger_url', env.S3UP_TRIGGER_URL);
  set('endpoint', env.S3UP_S3_ENDPOINT ?? env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL);
  return out;
}

export interface PushFlags {
  config?: string;
  project?: string;
  server?: string;
  prefix?: string;
  direct?: string;
  endpoint?: string;
  region?: string;
  pathStyle?: boolean;
  ext?: string[];
  include?: string[];
  exclude?: string[];
  followSymlinks?: boolean;
  workers?: string;
  partConcurrency?: string;
  chunkSizeMb?: string;
  resumableThresholdMb?: string;
  checksum?: boolean;
  remoteCheck?: boolean;
  maxRetries?: string;
  retry?: boolean;
  triggerUrl?: string;
  progressInterval?: string;
}

function fromFlags(f: PushFlags): Record<string, unknown> {
  const out: Record<string, unknown> = {
    project: f.project,
    server: f.server,
    prefix: f.prefix,
    direct: f.direct,
    endpoint: f.endpoint,
    region: f.region,
    path_style: f.pathStyle,
    extensions: f.ext?.flatMap((e) => list(e) ?? []),
    include: f.include,
    exclude: f.exclude,
    follow_symlinks: f.followSymlinks,
    workers: f.workers,
    part_concurrency: f.partConcurrency,
    chunk_size_mb: f.chunkSizeMb,
    resumable_threshold_mb: f.resumableThresholdMb,
    checksum: f.checksum,
    remote_check: f.remoteCheck === false ? false : undefined,
    max_retries: f.maxRetries,
    retry: f.retry,
    trigger_url: f.triggerUrl,
    progress_interval_seconds: f.progressInterval,
  };
  for (const k of Object.keys(out)) if (out[k] === undefined) delete out[k];
  return out;
}

/** Merge file < environment < flags, validate, and return the config or a one-line error. */
export function resolvePushConfig(dir: string | undefined, flags: PushFlags, env: NodeJS.ProcessEnv = process.env): PushConfig {
  const file = flags.config ? readConfigFile(path.resolve(flags.config)) : {};
  const merged: Record<string, unknown> = { ...file, ...fromEnv(env), ...fromFlags(flags) };
  if (dir !== undefined) merged.source_dir = path.resolve(dir);
  if (merged.source_dir === undefined) throw new ConfigError('no directory: s3up push <dir> (or "source_dir" in the config file)');
  if (merged.project === undefined)
    merged.project =
      path
        .basename(path.resolve(String(merged.source_dir)))
        .replace(/[^A-Za-z0-9._-]/g, '_')
        .replace(/^[._-]+/, '') || 'default';
  const parsed = PushConfigSchema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'config';
    const origin = flags.config ? ` (file ${flags.config}, environment and flags merged)` : '';
    throw new ConfigError(`invalid ${where}: ${issue?.message ?? 'invalid'}${origin}`);
  }
  const cfg = parsed.data;
  if (cfg.direct && cfg.server) throw new ConfigError('choose one target: --server (the gateway) or --direct s3://bucket/prefix, not both');
  return cfg;
}

/** The config as stored (config_history, sync_sessions.config_json): nothing secret is in it. */
export function configJson(cfg: PushConfig): string {
  return JSON.stringify(cfg);
}
