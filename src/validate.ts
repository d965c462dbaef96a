import { AppError, ErrorCode } from './errors.js';

/**
 * The one rule for a text field a client sends (ids, keys, filters, names,
 * report fields, filenames): no NUL and no other control character.
 * PostgreSQL text cannot hold NUL (the query would fail), and control
 * characters break logs, headers and terminals. Paths have their own, stricter
 * rule (uploads/keys.ts) and content types theirs (uploads/content-type.ts).
 */
export const PLAIN_TEXT_PATTERN = '^[^\\u0000-\\u001f\\u007f]*$';
const PLAIN_TEXT = new RegExp(PLAIN_TEXT_PATTERN, 'u');

export function isPlainText(value: string): boolean {
  return PLAIN_TEXT.test(value);
}

/** The rule as a JSON-schema fragment, for route schemas (Fastify validates it before the handler runs). */
export function textSchema(extra: { maxLength?: number; description?: string } = {}) {
  return { type: 'string', pattern: PLAIN_TEXT_PATTERN, ...extra } as const;
}

/** The rule in code: `value` if it is absent or plain text, else 400 INVALID_REQUEST naming the field. */
export function plainText(field: string, value: string | undefined): string | undefined {
  if (value === undefined || isPlainText(value)) return value;
  throw new AppError(ErrorCode.INVALID_REQUEST, `${field} must not contain NUL or control characters`);
}

/** The range of a JavaScript Date: epoch milliseconds outside it name no time. */
export const MAX_EPOCH_MS = 8.64e15;
