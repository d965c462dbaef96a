import type { Kysely } from 'kysely';
import type { Database } from '../db/schema.js';

/**
 * A named lease in the database, so that of several gateways sharing one
 * database only one runs a periodic job at a time. The holder renews it; a
 * lease that is not renewed expires and another gateway takes over.
 */
export class Lease {
  constructor(
    private readonly db: Kysely<Database>,
    readonly name: string,
    readonly holder: string,
  ) {}

  /** Take (or renew) the lease for `ttlMs`; false when another holder has it. */
  async acquire(ttlMs: number, now = Date.now()): Promise<boolean> {
    const expires_at = now + ttlMs;
    const res = await this.db
      .insertInto('leases')
      .values({ name: this.name, holder: this.holder, expires_at })
      .onConflict((oc) =>
        oc
          .column('name')
          .doUpdateSet({ holder: this.holder, expires_at })
          .where((eb) => eb.or([eb('leases.expires_at', '<', now), eb('leases.holder', '=', this.holder)])),
      )
      .executeTakeFirst();
    if (Number(res.numInsertedOrUpdatedRows ?? 0n) > 0) return true;
    // Some drivers report 0 for an upsert; read back to be sure.
    const row = await this.db.selectFrom('leases').select(['holder', 'expires_at']).where('name', '=', this.name).executeTakeFirst();
    return row?.holder === this.holder && row.expires_at === expires_at;
  }

  async release(): Promise<void> {
    await this.db.deleteFrom('leases').where('name', '=', this.name).where('holder', '=', this.holder).execute();
  }
}
