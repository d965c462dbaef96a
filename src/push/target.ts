import { DEFAULT_SERVER, GatewayClient } from '../client/gateway.js';
import { nodeTransport } from '../client/node-transport.js';
import { GatewayTarget } from '../transfer/gateway-target.js';
import { parseS3Url, S3Target } from '../transfer/s3-target.js';
import type { UploadTarget } from '../transfer/target.js';
import { VERSION } from '../version.js';
import type { PushConfig } from './config.js';
import { defaultDbUrl, normalizeDbUrl, openPushDb } from './db.js';
import { PushState } from './state.js';

export interface BuiltTarget {
  target: UploadTarget;
  kind: 'gateway' | 's3';
  /** For people and the session row (never a secret). */
  description: string;
  /** Where objects land: the skip decision is per project and this key. */
  targetKey: string;
  bucketName: string | null;
  prefix: string;
  close(): Promise<void>;
}

/** The gateway (--server, key from --api-key or S3UP_API_KEY) or S3 directly (--direct s3://bucket/prefix). */
export function buildTarget(
  cfg: Pick<PushConfig, 'server' | 'prefix' | 'direct' | 'endpoint' | 'region' | 'path_style' | 'workers' | 'part_concurrency'>,
  apiKey: string | undefined,
): BuiltTarget {
  if (cfg.direct) {
    const { bucket, prefix } = parseS3Url(cfg.direct);
    const target = new S3Target({
      url: cfg.direct,
      endpoint: cfg.endpoint,
      region: cfg.region,
      forcePathStyle: cfg.path_style,
      maxSockets: Math.max(16, cfg.workers * Math.min(cfg.part_concurrency, 4)),
    });
    return {
      target,
      kind: 's3',
      description: target.description,
      targetKey: `s3:${cfg.endpoint ?? 'aws'}:${bucket}/${prefix}`,
      bucketName: bucket,
      prefix,
      close: () => target.close(),
    };
  }
  const server = (cfg.server ?? DEFAULT_SERVER).replace(/\/+$/, '');
  if (!apiKey) throw new Error('no API key: pass --api-key or set S3UP_API_KEY (or push straight to S3 with --direct s3://bucket/prefix)');
  const prefix = cfg.prefix === '' || cfg.prefix.endsWith('/') ? cfg.prefix : `${cfg.prefix}/`;
  const client = new GatewayClient({
    baseUrl: server,
    apiKey,
    userAgent: `s3up-push/${VERSION}`,
    transport: nodeTransport(),
    retry: { attempts: 5, baseDelayMs: 250, maxDelayMs: 10_000, maxRetryAfterMs: 60_000 },
  });
  const target = new GatewayTarget(client, prefix);
  return {
    target,
    kind: 'gateway',
    description: `${server}${prefix ? `/${prefix}` : ''}`,
    targetKey: `gateway:${server}#${prefix}`,
    bucketName: null,
    prefix,
    close: async () => {},
  };
}

/** The state database: --db, then DATABASE_URL, then the XDG data folder. */
export async function openState(db: string | undefined, env: NodeJS.ProcessEnv): Promise<PushState> {
  const url = db ? normalizeDbUrl(db) : env.DATABASE_URL ? normalizeDbUrl(env.DATABASE_URL) : defaultDbUrl(env);
  return new PushState(await openPushDb(url));
}
