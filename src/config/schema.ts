import { z } from 'zod';

/** Client names become a path segment of every key: keep them boring. */
export const CLIENT_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

const port = z.coerce.number({ error: 'must be a port number (0-65535)' }).int('must be a port number (0-65535)').min(0).max(65535);
const BOOL_WORDS = ['1', '0', 'true', 'false', 'yes', 'no', 'on', 'off', ''] as const;
/** true/false, also from the environment: 1/0, yes/no, on/off in any case. */
const bool = z.union(
  [
    z.boolean(),
    z
      .string()
      .transform((v) => v.trim().toLowerCase())
      .pipe(z.enum(BOOL_WORDS))
      .transform((v) => v === '1' || v === 'true' || v === 'yes' || v === 'on'),
  ],
  { error: 'must be true or false (or 1/0, yes/no, on/off)' },
);

/** A web origin as browsers send it: scheme://host[:port], no path or trailing slash. */
export const ORIGIN_RE = /^https?:\/\/[A-Za-z0-9.-]+(:\d{1,5})?$|^https?:\/\/\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/;

export const clientSchema = z
  .object({
    name: z.string().regex(CLIENT_NAME_RE, 'must be 1-63 letters, digits, "_" or "-", starting with a letter or digit'),
    api_key: z.string().min(32, 'must be at least 32 characters (run `s3up-server keygen`)').optional(),
    api_key_sha256: z
      .string()
      .regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters (the SHA-256 of the key)')
      .optional(),
    /** Required: every client has an explicit upload limit. */
    max_file_size_mb: z.coerce
      .number({ error: "is required: the client's upload limit in MiB, a number such as 100" })
      .positive()
      .max(5 * 1024 * 1024),
    retention_days: z.coerce.number().positive().optional(),
    /** Web origins whose pages may call the gateway with this client's key or upload tokens (CORS). */
    cors_origins: z.array(z.string().regex(ORIGIN_RE, 'must be an origin: scheme://host[:port], no path')).default([]),
  })
  .strict()
  .refine((c) => (c.api_key === undefined) !== (c.api_key_sha256 === undefined), {
    message: 'exactly one of api_key or api_key_sha256 is required',
  });

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().min(1).default('127.0.0.1'),
        port: port.default(8080),
        tls: z
          .object({
            enabled: bool.default(false),
            cert_file: z.string().default(''),
            key_file: z.string().default(''),
          })
          .strict()
          .default({ enabled: false, cert_file: '', key_file: '' })
          .refine((t) => !t.enabled || (t.cert_file !== '' && t.key_file !== ''), {
            message: 'cert_file and key_file are required when TLS is enabled',
          }),
        shutdown_grace_seconds: z.coerce.number().min(0).max(3600).default(30),
        /** A request body that brings no byte for this long is cut (408 REQUEST_TIMEOUT). */
        body_idle_timeout_seconds: z.coerce.number().positive().max(86400).default(60),
        trust_proxy: bool.default(false),
        log_level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .strict()
      .default({
        host: '127.0.0.1',
        port: 8080,
        tls: { enabled: false, cert_file: '', key_file: '' },
        shutdown_grace_seconds: 30,
        body_idle_timeout_seconds: 60,
        trust_proxy: false,
        log_level: 'info',
      }),
    storage: z
      .object({
        backend: z.enum(['fs', 's3']).default('fs'),
        fs: z
          .object({ root: z.string().min(1).default('./data/uploads') })
          .strict()
          .default({ root: './data/uploads' }),
      })
      .strict()
      .default({ backend: 'fs', fs: { root: './data/uploads' } }),
    s3: z
      .object({
        endpoint: z.string().default(''),
        region: z.string().min(1).default('us-east-1'),
        bucket: z.string().default(''),
        path_prefix: z.string().default(''),
        access_key_id: z.string().default(''),
        secret_access_key: z.string().default(''),
        force_path_style: bool.default(false),
        part_size_mb: z.coerce.number().int().min(5).max(5120).default(8),
        queue_size: z.coerce.number().int().min(1).max(64).default(4),
      })
      .strict()
      .default({
        endpoint: '',
        region: 'us-east-1',
        bucket: '',
        path_prefix: '',
        access_key_id: '',
        secret_access_key: '',
        force_path_style: false,
        part_size_mb: 8,
        queue_size: 4,
      }),
    database: z
      .object({ url: z.string().min(1).default('sqlite:./data/s3up.db') })
      .strict()
      .default({ url: 'sqlite:./data/s3up.db' }),
    admin: z
      .object({
        token: z.string().default(''),
        /** Production lock: destructive admin actions (manual prune) are refused and shown disabled. */
        prod_lock: bool.default(false),
      })
      .strict()
      .default({ token: '', prod_lock: false })
      .refine((a) => a.token === '' || a.token.length >= 16, { message: 'token must be at least 16 characters' }),
    clients: z.array(clientSchema).default([]),
    /** Resumable (chunked, tus) and direct uploads. */
    uploads: z
      .object({
        /** Unfinished chunked/tus sessions expire after this many hours. */
        session_ttl_hours: z.coerce
          .number()
          .positive()
          .max(24 * 365)
          .default(24),
        /** How often the gateway aborts expired sessions and retries failed aborts. */
        sweep_interval_seconds: z.coerce.number().positive().max(86400).default(60),
        /** Lifetime of a presigned PUT URL or signed form key (clamped to 7 days). */
        direct_url_ttl_seconds: z.coerce.number().int().positive().default(900),
        /** HMAC secret for filesystem form keys; empty: generated once and kept in the storage root. */
        direct_signing_secret: z.string().default(''),
        /** Each gateway proves it is alive this often; the uploads of one silent for 3 intervals are settled by the sweeper. */
        heartbeat_seconds: z.coerce.number().positive().max(3600).default(10),
        /** HMAC secret of browser upload tokens (POST /tokens); empty: derived from the direct-upload secret. */
        token_secret: z.string().default(''),
        /** Longest lifetime a client may ask for an upload token. */
        token_max_ttl_seconds: z.coerce
          .number()
          .int()
          .positive()
          .max(7 * 86400)
          .default(86400),
      })
      .strict()
      .default({
        session_ttl_hours: 24,
        sweep_interval_seconds: 60,
        direct_url_ttl_seconds: 900,
        direct_signing_secret: '',
        heartbeat_seconds: 10,
        token_secret: '',
        token_max_ttl_seconds: 86400,
      })
      .refine((u) => u.direct_signing_secret === '' || u.direct_signing_secret.length >= 32, {
        message: 'direct_signing_secret must be at least 32 characters',
      })
      .refine((u) => u.token_secret === '' || u.token_secret.length >= 32, { message: 'token_secret must be at least 32 characters' }),
    /** Retention sweeper (spec 000): objects older than ttl_days (or a client's retention_days) are deleted. */
    retention: z
      .object({
        enabled: bool.default(true),
        ttl_days: z.coerce.number().positive().default(30),
        sweep_interval_minutes: z.coerce.number().positive().max(1440).default(5),
      })
      .strict()
      .default({ enabled: true, ttl_days: 30, sweep_interval_minutes: 5 }),
    /** Upload records (spec 001): periodic pruning of terminal records. Unset: no periodic prune. */
    runs: z
      .object({
        prune_max_runs: z.coerce.number().int().min(0).optional(),
        prune_max_age_days: z.coerce.number().positive().optional(),
        /** Manual prune (POST /runs/v1/prune, the dashboard's Prune) is offered at all. */
        prune_enabled: bool.default(true),
        /** Manual prune is refused and shown disabled (also admin.prod_lock). */
        prune_locked: bool.default(false),
      })
      .strict()
      .default({ prune_enabled: true, prune_locked: false }),
    /** Remote config: feature flags document (spec 001) and upload settings handed to agents by GET /config. */
    feature_flags: z
      .object({ config_path: z.string().min(1).default('./data/config/feature_flags.json') })
      .strict()
      .default({ config_path: './data/config/feature_flags.json' }),
    remote_config: z
      .object({
        chunk_size_mb: z.coerce.number().positive().max(5120).default(8),
        concurrency: z.coerce.number().int().min(1).max(64).default(4),
      })
      .strict()
      .default({ chunk_size_mb: 8, concurrency: 4 }),
    /** GET /metrics: admin token (x-admin-token or Bearer) unless public. */
    metrics: z
      .object({ public: bool.default(false) })
      .strict()
      .default({ public: false }),
  })
  .strict();

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type ClientConfig = z.output<typeof clientSchema>;
