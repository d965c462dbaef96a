import { statSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, configIssue, readYamlConfig } from '../config/load.js';

const MB = 1024 * 1024;

/** Written by editors, office suites and downloaders while a file is not finished. */
export const DEFAULT_IGNORE = ['*.tmp', '*.part', '*.swp', '.~lock*', '~$*', '.#*'] as const;

const bool = z.union([z.boolean(), z.enum(['true', 'false']).transform((v) => v === 'true')], { error: 'must be true or false' });
const seconds = z.coerce.number({ error: 'must be a number of seconds' }).min(0);

const remotePrefix = z
  .string()
  .default('')
  .refine((p) => !p.split('/').some((seg) => seg === '.' || seg === '..'), 'must not contain "." or ".." segments')
  .transform((p) => {
    const trimmed = p.replace(/^\/+/, '').replace(/\/+$/, '');
    return trimmed === '' ? '' : `${trimmed}/`;
  });

/** client.yaml: the keys of spec 002 with its defaults, plus the agent's own (documented in docs/agent.md). */
export const agentConfigSchema = z
  .object({
    server: z
      .object({
        url: z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' }),
        api_key: z.string().min(1, 'is required'),
      })
      .strict(),
    database: z
      .object({ path: z.string().min(1).default('./data/agent.db') })
      .strict()
      .default({ path: './data/agent.db' }),
    watches: z
      .array(
        z
          .object({
            local_path: z.string().min(1, 'is required'),
            remote_prefix: remotePrefix,
            recursive: bool.default(true),
          })
          .strict(),
      )
      .min(1, 'at least one watch is required'),
    scan: z
      .object({
        upload_existing: bool.default(false),
        rescan_interval_minutes: z.coerce.number().positive().default(60),
      })
      .strict()
      .default({ upload_existing: false, rescan_interval_minutes: 60 }),
    stability: z
      .object({
        debounce_seconds: seconds.default(3),
        max_attempts: z.coerce.number().int().min(1).default(100),
      })
      .strict()
      .default({ debounce_seconds: 3, max_attempts: 100 }),
    upload: z
      .object({
        retry_attempts: z.coerce.number().int().min(1).default(3),
        retry_delay_seconds: seconds.default(5),
        max_retry_delay_seconds: seconds.default(300),
        /** Unset: the gateway's GET /config value, else 4. */
        concurrency: z.coerce.number().int().min(1).max(64).optional(),
        resumable_threshold_mb: z.coerce.number().positive().default(64),
        /** Unset: the gateway's GET /config value (chunk_size_bytes), else the gateway picks at init. */
        chunk_size_mb: z.coerce.number().int().positive().optional(),
      })
      .strict()
      .default({ retry_attempts: 3, retry_delay_seconds: 5, max_retry_delay_seconds: 300, resumable_threshold_mb: 64 }),
    ignore: z.array(z.string().min(1)).default([...DEFAULT_IGNORE]),
    after_upload: z.enum(['keep', 'delete']).default('keep'),
    reports: z
      .object({ enabled: bool.default(true), interval_minutes: z.coerce.number().positive().default(60) })
      .strict()
      .default({ enabled: true, interval_minutes: 60 }),
    log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .strict();

export type AgentConfigFile = z.output<typeof agentConfigSchema>;

export interface Watch {
  /** Absolute, without a trailing slash. */
  localPath: string;
  /** '' or ending with '/'. */
  remotePrefix: string;
  recursive: boolean;
}

export interface AgentConfig {
  source: string;
  serverUrl: string;
  apiKey: string;
  databasePath: string;
  watches: Watch[];
  uploadExisting: boolean;
  rescanIntervalMs: number;
  debounceMs: number;
  maxStabilityAttempts: number;
  retryAttempts: number;
  retryDelayMs: number;
  maxRetryDelayMs: number;
  /** Set in client.yaml; otherwise the gateway's advice or 4. */
  concurrency: number | undefined;
  resumableThreshold: number;
  chunkSize: number | undefined;
  ignore: string[];
  afterUpload: 'keep' | 'delete';
  reportsEnabled: boolean;
  reportIntervalMs: number;
  logLevel: AgentConfigFile['log_level'];
}

/** Load and validate client.yaml; a problem is one ConfigError naming the file, the key and what is wrong. */
export function loadAgentConfig(configPath: string, opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): AgentConfig {
  const cwd = opts.cwd ?? process.cwd();
  const source = path.resolve(cwd, configPath);
  const tree = readYamlConfig(source, opts.env ?? process.env);
  const parsed = agentConfigSchema.safeParse(tree);
  if (!parsed.success) throw configIssue(parsed.error, source);
  const c = parsed.data;

  const watches: Watch[] = c.watches.map((w, i) => {
    const localPath = path.resolve(cwd, w.local_path).replace(/\/+$/, '') || '/';
    let isDir = false;
    try {
      isDir = statSync(localPath).isDirectory();
    } catch (err) {
      throw new ConfigError(source, `watches[${i}].local_path`, `cannot read ${localPath} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (!isDir) throw new ConfigError(source, `watches[${i}].local_path`, `${localPath} is not a directory`);
    return { localPath, remotePrefix: w.remote_prefix, recursive: w.recursive };
  });
  for (const [i, a] of watches.entries()) {
    for (const [j, b] of watches.entries()) {
      if (i !== j && (a.localPath === b.localPath || a.localPath.startsWith(`${b.localPath}/`))) {
        throw new ConfigError(source, `watches[${i}].local_path`, `overlaps watches[${j}] (${b.localPath}): a file would be uploaded twice`);
      }
    }
  }

  return {
    source,
    serverUrl: c.server.url.replace(/\/+$/, ''),
    apiKey: c.server.api_key,
    databasePath: path.resolve(cwd, c.database.path),
    watches,
    uploadExisting: c.scan.upload_existing,
    rescanIntervalMs: c.scan.rescan_interval_minutes * 60_000,
    debounceMs: c.stability.debounce_seconds * 1000,
    maxStabilityAttempts: c.stability.max_attempts,
    retryAttempts: c.upload.retry_attempts,
    retryDelayMs: c.upload.retry_delay_seconds * 1000,
    maxRetryDelayMs: Math.max(c.upload.max_retry_delay_seconds, c.upload.retry_delay_seconds) * 1000,
    concurrency: c.upload.concurrency,
    resumableThreshold: Math.floor(c.upload.resumable_threshold_mb * MB),
    chunkSize: c.upload.chunk_size_mb === undefined ? undefined : c.upload.chunk_size_mb * MB,
    ignore: c.ignore,
    afterUpload: c.after_upload,
    reportsEnabled: c.reports.enabled,
    reportIntervalMs: c.reports.interval_minutes * 60_000,
    logLevel: c.log_level,
  };
}
