import type { Kysely, Selectable } from 'kysely';
import { z } from 'zod';
import type { ClientReportsTable, Database } from '../db/schema.js';
import { AppError, ErrorCode } from '../errors.js';
import { isPlainText } from '../validate.js';

const plainTextMessage = 'must not contain NUL or control characters';
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);

/** The daily report an agent sends (spec 002). */
export const reportSchema = z
  .object({
    date: z
      .string()
      .regex(/^\d{4}-\d{2}-\d{2}$/, 'must be a UTC day as YYYY-MM-DD')
      .refine((d) => !Number.isNaN(Date.parse(`${d}T00:00:00Z`)) && new Date(`${d}T00:00:00Z`).toISOString().startsWith(d), 'is not a real date'),
    files_uploaded: count,
    bytes: count,
    failures: count,
    queue_depth: count,
    agent_version: z.string().max(100).refine(isPlainText, plainTextMessage).optional(),
    host: z.string().max(255).refine(isPlainText, plainTextMessage).optional(),
  })
  .strict();

export type ReportInput = z.output<typeof reportSchema>;
export type ReportRow = Selectable<ClientReportsTable>;

/** A report as the API shows it: the row without its bookkeeping, with an ISO time. */
export type ReportJson = Omit<ReportRow, 'client' | 'received_at' | 'first_received_at'> & { received_at: string };

export function reportToJson(r: ReportRow): ReportJson {
  return {
    date: r.date,
    files_uploaded: r.files_uploaded,
    bytes: r.bytes,
    failures: r.failures,
    queue_depth: r.queue_depth,
    agent_version: r.agent_version,
    host: r.host,
    received_at: new Date(r.received_at).toISOString(),
  };
}

export function parseReport(body: unknown): ReportInput {
  const res = reportSchema.safeParse(body);
  if (!res.success) {
    const issue = res.error.issues[0];
    const where = issue?.path.length ? issue.path.map(String).join('.') : 'body';
    const what = issue?.code === 'unrecognized_keys' ? `unknown field(s): ${issue.keys.join(', ')}` : (issue?.message ?? 'invalid');
    throw new AppError(ErrorCode.INVALID_REQUEST, `invalid report: ${where}: ${what}`);
  }
  return res.data;
}

/** Daily client reports, one row per (client, date); a resent report replaces the earlier one. */
export class ReportStore {
  constructor(private readonly db: Kysely<Database>) {}

  async upsert(client: string, r: ReportInput, now = Date.now()): Promise<{ row: ReportRow; created: boolean }> {
    const values = {
      files_uploaded: r.files_uploaded,
      bytes: r.bytes,
      failures: r.failures,
      queue_depth: r.queue_depth,
      agent_version: r.agent_version ?? null,
      host: r.host ?? null,
      received_at: now,
    };
    const before = await this.get(client, r.date);
    await this.db
      .insertInto('client_reports')
      .values({ client, date: r.date, ...values, first_received_at: now })
      .onConflict((oc) => oc.columns(['client', 'date']).doUpdateSet(values))
      .execute();
    const row = await this.get(client, r.date);
    if (!row) throw new AppError(ErrorCode.INTERNAL, 'the report was not stored');
    return { row, created: before === undefined };
  }

  async get(client: string, date: string): Promise<ReportRow | undefined> {
    return this.db.selectFrom('client_reports').selectAll().where('client', '=', client).where('date', '=', date).executeTakeFirst();
  }

  /** The newest report (by day) of every client that sent one. */
  async latestPerClient(): Promise<Map<string, ReportRow>> {
    const rows = await this.db
      .selectFrom('client_reports as r')
      .selectAll('r')
      .where((eb) =>
        eb(
          'r.date',
          '=',
          eb
            .selectFrom('client_reports as l')
            .select((e2) => e2.fn.max('l.date').as('d'))
            .whereRef('l.client', '=', 'r.client'),
        ),
      )
      .execute();
    return new Map(rows.map((r) => [r.client, r]));
  }

  /** When each client last sent a report. */
  async lastReceived(): Promise<Map<string, number>> {
    const rows = await this.db
      .selectFrom('client_reports')
      .select((eb) => ['client', eb.fn.max('received_at').as('at')])
      .groupBy('client')
      .execute();
    return new Map(rows.map((r) => [r.client, Number(r.at)]));
  }
}
