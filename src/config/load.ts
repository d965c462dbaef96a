import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parse as parseYaml, YAMLParseError } from 'yaml';
import type { z } from 'zod';
import { type ClientConfig, type Config, configSchema } from './schema.js';

/** A bad configuration: one line naming the source, the key and the problem. */
export class ConfigError extends Error {
  constructor(
    readonly source: string,
    readonly key: string,
    readonly problem: string,
  ) {
    super(`config error in ${source}${key ? `: ${key}` : ''}: ${problem}`);
    this.name = 'ConfigError';
  }
}

export interface ResolvedClient {
  name: string;
  /** SHA-256 of the API key; the plain key is never kept in memory after load. */
  keyHash: Buffer;
  maxFileSize: number;
  retentionDays: number | undefined;
  /** Web origins allowed to call with this client's credentials (CORS). */
  corsOrigins: readonly string[];
  /** Set on a client authenticated by an upload token: every path must lie under this prefix. */
  pathScope?: string | undefined;
}

export interface ResolvedConfig {
  raw: Config;
  source: string;
  host: string;
  port: number;
  tls: { cert: Buffer; key: Buffer } | undefined;
  shutdownGraceMs: number;
  /** A request body idle this long is cut (server.body_idle_timeout_seconds). */
  bodyIdleTimeoutMs: number;
  logLevel: Config['server']['log_level'];
  trustProxy: boolean;
  storage: { backend: 'fs'; root: string; pathPrefix: string } | { backend: 's3'; pathPrefix: string; s3: Config['s3'] };
  databaseUrl: string;
  adminToken: string | undefined;
  clients: ResolvedClient[];
  /** Absolute path of the feature-flags document (FEATURE_FLAGS_CONFIG_PATH). */
  featureFlagsPath: string;
  /** Set when the gateway runs on embedded defaults with a generated dev key. */
  devKey: { client: string; key: string; file: string; generated: boolean } | undefined;
  /** Things that work but that an operator should know about, logged at start (no secrets). */
  warnings: string[];
}

export interface LoadOptions {
  configPath?: string | undefined;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  host?: string | undefined;
  port?: number | undefined;
  /** Directory for the dev key when no config file is used (default ./data). */
  dataDir?: string;
}

export const DEV_CLIENT = 'dev';

export function sha256Hex(value: string): string {
  return createHash('sha256').update(value, 'utf8').digest('hex');
}

export function generateApiKey(): string {
  return `sk_${randomBytes(32).toString('base64url')}`;
}

/** Replace `${VAR}` and `${VAR:-default}` in every string value of a parsed YAML tree. */
function interpolate(node: unknown, env: NodeJS.ProcessEnv, source: string, keyPath: string): unknown {
  if (typeof node === 'string') {
    return node.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback?: string) => {
      const value = env[name];
      if (value !== undefined && value !== '') return value;
      if (fallback !== undefined) return fallback;
      throw new ConfigError(source, keyPath, `environment variable ${name} is not set (use \${${name}:-} for an empty default)`);
    });
  }
  if (Array.isArray(node)) return node.map((v, i) => interpolate(v, env, source, `${keyPath}[${i}]`));
  if (node !== null && typeof node === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(node)) out[k] = interpolate(v, env, source, keyPath ? `${keyPath}.${k}` : k);
    return out;
  }
  return node;
}

/** Environment variables that override config keys (spec 000 names plus a few of ours). */
const ENV_OVERRIDES: Array<[env: string, keyPath: string[]]> = [
  ['STORAGE_BACKEND', ['storage', 'backend']],
  ['S3_ENDPOINT', ['s3', 'endpoint']],
  ['S3_REGION', ['s3', 'region']],
  ['S3_BUCKET', ['s3', 'bucket']],
  ['S3_ACCESS_KEY', ['s3', 'access_key_id']],
  ['S3_SECRET_KEY', ['s3', 'secret_access_key']],
  ['S3_FORCE_PATH_STYLE', ['s3', 'force_path_style']],
  ['S3_PATH_PREFIX', ['s3', 'path_prefix']],
  ['FS_ROOT', ['storage', 'fs', 'root']],
  ['DATABASE_URL', ['database', 'url']],
  ['HOST', ['server', 'host']],
  ['PORT', ['server', 'port']],
  ['LOG_LEVEL', ['server', 'log_level']],
  ['BODY_IDLE_TIMEOUT_SECONDS', ['server', 'body_idle_timeout_seconds']],
  ['ADMIN_TOKEN', ['admin', 'token']],
  ['UPLOAD_SESSION_TTL_HOURS', ['uploads', 'session_ttl_hours']],
  ['UPLOAD_SWEEP_INTERVAL_SECONDS', ['uploads', 'sweep_interval_seconds']],
  ['UPLOAD_HEARTBEAT_SECONDS', ['uploads', 'heartbeat_seconds']],
  ['DIRECT_UPLOAD_TTL_SECONDS', ['uploads', 'direct_url_ttl_seconds']],
  ['DIRECT_UPLOAD_SECRET', ['uploads', 'direct_signing_secret']],
  ['RUNS_TTL_DAYS', ['retention', 'ttl_days']],
  ['SWEEP_INTERVAL_MINUTES', ['retention', 'sweep_interval_minutes']],
  ['SWEEPER_ENABLED', ['retention', 'enabled']],
  ['RUNS_PRUNE_MAX_RUNS', ['runs', 'prune_max_runs']],
  ['RUNS_PRUNE_MAX_AGE_DAYS', ['runs', 'prune_max_age_days']],
  ['FEATURE_FLAGS_CONFIG_PATH', ['feature_flags', 'config_path']],
  ['METRICS_PUBLIC', ['metrics', 'public']],
  ['RUNS_PRUNE_ENABLED', ['runs', 'prune_enabled']],
  ['RUNS_PRUNE_LOCKED', ['runs', 'prune_locked']],
  ['PROD_LOCK', ['admin', 'prod_lock']],
  ['UPLOAD_TOKEN_SECRET', ['uploads', 'token_secret']],
];

/** Every environment variable the gateway reads as configuration (tests and benchmarks clear them). */
export const CONFIG_ENV_VARS: readonly string[] = ['S3UP_CONFIG', 'S3UP_DATA_DIR', ...ENV_OVERRIDES.map(([name]) => name)];

function setPath(obj: Record<string, unknown>, keyPath: string[], value: unknown): void {
  let cur = obj;
  for (const k of keyPath.slice(0, -1)) {
    const next = cur[k];
    if (next === null || typeof next !== 'object' || Array.isArray(next)) cur[k] = {};
    cur = cur[k] as Record<string, unknown>;
  }
  cur[keyPath[keyPath.length - 1] as string] = value;
}

function formatIssuePath(p: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const seg of p) out += typeof seg === 'number' ? `[${seg}]` : out ? `.${String(seg)}` : String(seg);
  return out;
}

/** `keySources` names where a key's value came from when not the file (an environment variable, a command-line option). */
function firstIssue(error: z.ZodError, source: string, keySources: Map<string, string>): ConfigError {
  const issue = error.issues[0];
  if (!issue) return new ConfigError(source, '', 'invalid configuration');
  const key = formatIssuePath(issue.path);
  let problem = issue.message;
  if (issue.code === 'unrecognized_keys') problem = `unknown key(s): ${issue.keys.join(', ')}`;
  return new ConfigError(keySources.get(key) ?? source, key, problem);
}

function readFileOrThrow(file: string, source: string, key: string): Buffer {
  try {
    return readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'unreadable';
    throw new ConfigError(source, key, `cannot read ${file} (${code})`);
  }
}

/**
 * Read a YAML config file into a plain tree with `${VAR}` / `${VAR:-default}` replaced,
 * or throw a one-line ConfigError (never quoting the file, which may hold secrets).
 * The gateway's config and the agent's client.yaml are both read by it.
 */
export function readYamlConfig(source: string, env: NodeJS.ProcessEnv): Record<string, unknown> {
  const text = readFileOrThrow(source, source, '').toString('utf8');
  let raw: unknown;
  try {
    raw = parseYaml(text) ?? {};
  } catch (err) {
    const where = err instanceof YAMLParseError && err.linePos ? `line ${err.linePos[0].line}` : '';
    // The first line only (the rest quotes the file, which may hold secrets), without its trailing colon.
    const msg = err instanceof Error ? (err.message.split('\n')[0] ?? 'invalid YAML').replace(/:\s*$/, '') : 'invalid YAML';
    throw new ConfigError(source, where, `not valid YAML: ${msg}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(source, '', 'the top level must be a mapping');
  }
  return interpolate(raw, env, source, '') as Record<string, unknown>;
}

/** The first problem of a failed zod parse as a ConfigError naming the key. */
export function configIssue(error: z.ZodError, source: string): ConfigError {
  return firstIssue(error, source, new Map());
}

function normalizePrefix(prefix: string, source: string): string {
  const trimmed = prefix.replace(/^\/+/, '').replace(/\/+$/, '');
  if (trimmed === '') return '';
  for (const seg of trimmed.split('/')) {
    if (seg === '' || seg === '.' || seg === '..' || /[\\\0-\x1f\x7f]/.test(seg)) {
      throw new ConfigError(source, 's3.path_prefix', `invalid segment "${seg}"`);
    }
  }
  return `${trimmed}/`;
}

function loadOrCreateDevKey(dir: string): { key: string; file: string; generated: boolean } {
  const file = path.join(dir, 'dev-api-key');
  try {
    const key = readFileSync(file, 'utf8').trim();
    if (key.length >= 32) return { key, file, generated: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  mkdirSync(dir, { recursive: true });
  const key = generateApiKey();
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  return { key, file, generated: true };
}

export function loadConfig(opts: LoadOptions = {}): ResolvedConfig {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  const configPath = opts.configPath ?? (env.S3UP_CONFIG || undefined);
  const source = configPath ? path.resolve(cwd, configPath) : 'embedded defaults';

  const raw: unknown = configPath ? readYamlConfig(source, env) : {};

  const tree = raw as Record<string, unknown>;
  const keySources = new Map<string, string>();
  for (const [name, keyPath] of ENV_OVERRIDES) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    setPath(tree, keyPath, value);
    keySources.set(keyPath.join('.'), `environment variable ${name}`);
  }
  if (opts.host !== undefined) {
    setPath(tree, ['server', 'host'], opts.host);
    keySources.set('server.host', 'the --host option');
  }
  if (opts.port !== undefined) {
    setPath(tree, ['server', 'port'], opts.port);
    keySources.set('server.port', 'the --port option');
  }
  const sourceOf = (key: string) => keySources.get(key) ?? source;

  const parsed = configSchema.safeParse(tree);
  if (!parsed.success) throw firstIssue(parsed.error, source, keySources);
  const config = parsed.data;

  const seen = new Set<string>();
  for (const [i, c] of config.clients.entries()) {
    if (seen.has(c.name)) throw new ConfigError(source, `clients[${i}].name`, `duplicate client name "${c.name}"`);
    seen.add(c.name);
  }

  let devKey: ResolvedConfig['devKey'];
  let clients: ClientConfig[] = config.clients;
  if (clients.length === 0) {
    if (configPath) throw new ConfigError(source, 'clients', 'at least one client is required');
    const dev = loadOrCreateDevKey(path.resolve(cwd, opts.dataDir ?? env.S3UP_DATA_DIR ?? './data'));
    devKey = { client: DEV_CLIENT, ...dev };
    clients = [{ name: DEV_CLIENT, api_key: dev.key, max_file_size_mb: 5 * 1024 * 1024, cors_origins: [] }];
  }

  const storage: ResolvedConfig['storage'] =
    config.storage.backend === 'fs'
      ? {
          backend: 'fs',
          root: path.resolve(cwd, config.storage.fs.root),
          pathPrefix: normalizePrefix(config.s3.path_prefix, source),
        }
      : { backend: 's3', pathPrefix: normalizePrefix(config.s3.path_prefix, source), s3: config.s3 };
  const warnings: string[] = [];
  if (storage.backend === 's3') {
    if (config.s3.bucket === '') throw new ConfigError(sourceOf('storage.backend'), 's3.bucket', 'a bucket is required when storage.backend is s3');
    const hasId = config.s3.access_key_id !== '';
    const hasSecret = config.s3.secret_access_key !== '';
    if (hasId !== hasSecret) {
      const missing = hasId ? 's3.secret_access_key' : 's3.access_key_id';
      throw new ConfigError(
        sourceOf(hasId ? 's3.access_key_id' : 's3.secret_access_key'),
        missing,
        `is required with ${hasId ? 's3.access_key_id' : 's3.secret_access_key'} (set both, or neither for the AWS SDK's default credentials)`,
      );
    }
    if (!hasId) {
      warnings.push(
        's3: no access_key_id / secret_access_key configured (S3_ACCESS_KEY, S3_SECRET_KEY): the AWS SDK looks for credentials in its default chain (AWS_* environment variables, ~/.aws profiles, an IAM role); requests fail if it finds none',
      );
    }
  }

  let tls: ResolvedConfig['tls'];
  if (config.server.tls.enabled) {
    tls = {
      cert: readFileOrThrow(path.resolve(cwd, config.server.tls.cert_file), source, 'server.tls.cert_file'),
      key: readFileOrThrow(path.resolve(cwd, config.server.tls.key_file), source, 'server.tls.key_file'),
    };
  }

  let databaseUrl = config.database.url;
  if (databaseUrl.startsWith('sqlite:')) {
    const file = databaseUrl.slice('sqlite:'.length);
    databaseUrl = file === ':memory:' ? databaseUrl : `sqlite:${path.resolve(cwd, file)}`;
  } else if (!/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError(sourceOf('database.url'), 'database.url', 'must start with sqlite: or postgres://');
  }

  return {
    raw: config,
    source,
    host: config.server.host,
    port: config.server.port,
    tls,
    shutdownGraceMs: config.server.shutdown_grace_seconds * 1000,
    bodyIdleTimeoutMs: Math.round(config.server.body_idle_timeout_seconds * 1000),
    logLevel: config.server.log_level,
    trustProxy: config.server.trust_proxy,
    storage,
    databaseUrl,
    adminToken: config.admin.token || undefined,
    clients: clients.map((c) => ({
      name: c.name,
      keyHash: Buffer.from(c.api_key_sha256 ?? sha256Hex(c.api_key ?? ''), 'hex'),
      maxFileSize: Math.floor(c.max_file_size_mb * 1024 * 1024),
      retentionDays: c.retention_days,
      corsOrigins: c.cors_origins,
    })),
    devKey,
    warnings,
    featureFlagsPath: path.resolve(cwd, config.feature_flags.config_path),
  };
}
