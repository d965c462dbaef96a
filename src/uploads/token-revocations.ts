import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';
import type { RevocationStore } from './tokens.js';

/** Revoked upload tokens in the database every gateway shares. */
export class DbRevocations implements RevocationStore {
  constructor(private readonly db: Kysely<Database>) {}

  async revoke(tokenId: string, client: string, expiresAt: number, now: number): Promise<void> {
    await this.db
      .insertInto('revoked_tokens')
      .values({ token_id: tokenId, client, revoked_at: now, expires_at: expiresAt })
      .onConflict((oc) => oc.columns(['token_id', 'client']).doNothing())
      .execute();
  }

  async isRevoked(tokenId: string, client: string): Promise<boolean> {
    const row = await this.db.selectFrom('revoked_tokens').select('token_id').where('token_id', '=', tokenId).where('client', '=', client).executeTakeFirst();
    return row !== undefined;
  }

  /** Forget revocations of tokens that have expired anyway. */
  async prune(now: number): Promise<number> {
    const r = await this.db.deleteFrom('revoked_tokens').where('expires_at', '<=', now).executeTakeFirst();
    return Number(r.numDeletedRows);
  }
}
