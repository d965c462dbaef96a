// What the tus routes (tus.ts) and the @tus/server datastore (tus-server.ts)
// share: the request context, the path, and the error that becomes a tus answer.
import { AsyncLocalStorage } from 'node:async_hooks';
import { getHashes } from 'node:crypto';
import type { ResolvedClient } from '../../config/load.js';
import type { BodyChecksum } from '../../uploads/resumable.js';

/** What a tus request carries into the datastore: who asks, and the PATCH's Upload-Checksum. */
interface TusRequestContext {
  client: ResolvedClient | undefined;
  checksum: BodyChecksum | undefined;
  requestId: string;
  /** Aborts when the PATCH body stops arriving. */
  signal: AbortSignal | undefined;
}

/** The calling client and checksum, for the datastore (set around each tus.handle call). */
export const tusContext = new AsyncLocalStorage<TusRequestContext>();

/** Upload-Checksum algorithms we verify (tus checksum extension). */
export const TUS_CHECKSUM_ALGORITHMS = ['sha1', 'sha256', 'md5'].filter((a) => getHashes().includes(a));

export const TUS_PATH = '/tus';

export class TusError extends Error {
  constructor(
    readonly status_code: number,
    readonly body: string,
  ) {
    super(body);
  }
}

export function currentClient(): ResolvedClient {
  const client = tusContext.getStore()?.client;
  if (!client) throw new TusError(401, 'Unauthorized\n');
  return client;
}
